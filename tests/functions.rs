//! Function deployments end to end on the local control plane: `sis-sim` publishes on the
//! real `nats-server`, nvca's functions component (in process) pulls, writes the
//! ICMSRequest, creates pods that kwok runs on its GPU nodes, and reports to sis-sim.
//!
//! Each test has its own requests namespace, sis-sim and cluster ID. Node labels
//! `nvca.nvcf.nvidia.io/instance-type` (the agent's job) are written, as the agent would
//! write them, under the cluster-wide lock. Needs `scripts/testenv up`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, Node, Pod, Secret, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use kube::api::{ListParams, Patch, PatchParams};
use nvca::driver::{Backoff, DriverConfig};
use nvca::functions::ApiState;
use nvca::functions::executor::wire_update;
use nvca::functions::{
    FunctionsContext, FunctionsHandle, FunctionsSettings, Mode, Pacing, Placement,
};
use nvca::gpu::{DiscoveryOptions, Inventory, discover};
use nvca::kube::crd::ICMSRequest;
use nvca::machines::instance::{
    InstanceReport, LegacyAction, RequestState as WireRequestState, WireInstanceState, WireStatus,
};
use nvca::sim::SimHandle;
use nvca::sim::admin::{AdminClient, DeploymentSpec, FunctionSpec};
use nvca::sim::launch::{FunctionOptions, NICLLS_IMAGE};
use nvca::sim::state::RequestRecord;
use nvca::sis::client::{SisClient, SisConfig};
use nvca::sis::queue::{QueueConfig, QueueConsumer, QueueStream};
use nvca::sis::token::{TokenSource, vault_secrets_json, write_token_file};
use nvca::sis::types::{AckRequest, InstanceState, RequestStatusCode};
use nvca::store::Store;
use serde_json::json;
use support::pods::ready;
use support::testenv::{TestEnv, TestNamespace, eventually, testenv_with_namespace};
use tokio::sync::watch;

const NCA: &str = "nca-functions-test";
const WAIT: Duration = Duration::from_secs(60);
const H100: &str = "ON-PREM.GPU.H100";

/// Everything one test runs against.
struct World {
    env: TestEnv,
    ns: TestNamespace,
    sim: Option<SimHandle>,
    admin: AdminClient,
    sis: Arc<SisClient>,
    nats_url: String,
    cluster_id: String,
    store_dir: tempfile::TempDir,
    _token_dir: tempfile::TempDir,
    inventory: watch::Sender<Option<Arc<Inventory>>>,
    mode: watch::Sender<Mode>,
    handle: Option<FunctionsHandle>,
}

/// Label every GPU node with its instance type, as the agent's discovery does.
async fn label_gpu_nodes(env: &TestEnv) -> Inventory {
    let _lock = support::lock::cluster_wide_async().await;
    support::crds::from_operator(env).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let listed = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes")
        .items;
    let options = DiscoveryOptions::new("ON-PREM").expect("ON-PREM is a provider");
    let inventory = discover(&listed, &options, &|_| 0);
    for patch in &inventory.label_patches {
        nodes
            .patch(
                &patch.node,
                &PatchParams::default(),
                &Patch::Merge(&patch.merge_patch()),
            )
            .await
            .expect("label a GPU node");
    }
    inventory
}

impl World {
    async fn new(prefix: &str) -> World {
        Self::with(prefix, |_| {}).await
    }

    async fn with(prefix: &str, adjust: impl FnOnce(&mut FunctionsSettings)) -> World {
        let (env, ns) = testenv_with_namespace(prefix).await;
        let inventory = label_gpu_nodes(&env).await;
        let nats_url = support::nats::testenv_nats_url();
        let (sim, admin) = support::sim::start_on_nats(&nats_url).await;
        let token_dir = tempfile::tempdir().unwrap();
        let token_file = token_dir.path().join("secrets.json");
        write_token_file(
            &token_file,
            &vault_secrets_json(&admin.issue_token(None).await.unwrap()),
        )
        .unwrap();
        let sis = SisClient::new(
            SisConfig::new(sim.base_url()),
            TokenSource::vault_secrets(&token_file),
        )
        .unwrap();
        let cluster_name = format!("f-{}", &nvca::sim::state::uuid_v4()[..8]);
        let ids = sis
            .create_cluster(
                NCA,
                &support::cluster::on_prem_cluster(&cluster_name, NCA, "us-west-2"),
            )
            .await
            .unwrap();
        let mut settings = FunctionsSettings::new(Placement {
            namespace: ns.name.clone(),
            cluster_name,
            region: "us-west-2".to_string(),
            kai_scheduler: true,
            ..Placement::default()
        });
        settings.pacing = Pacing {
            poll: Duration::from_millis(200),
            in_progress: Duration::from_secs(1),
            max_skip: 2,
        };
        settings.rejudge = Duration::from_millis(500);
        settings.driver = DriverConfig {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
        };
        adjust(&mut settings);
        let (inventory, _) = watch::channel(Some(Arc::new(inventory)));
        let (mode, _) = watch::channel(Mode::None);
        let mut world = World {
            env,
            ns,
            sim: Some(sim),
            admin,
            sis: Arc::new(sis),
            nats_url,
            cluster_id: ids.cluster_id,
            store_dir: tempfile::tempdir().unwrap(),
            _token_dir: token_dir,
            inventory,
            mode,
            handle: None,
        };
        world.start(settings).await;
        world
    }

    fn queue(&self) -> QueueConfig {
        let mut queue = QueueConfig::new(&self.nats_url, &self.cluster_id);
        queue.fetch_wait = Duration::from_millis(300);
        queue
    }

    async fn start(&mut self, settings: FunctionsSettings) {
        self.start_as(self.env.client.clone(), settings).await;
    }

    /// The component with its own Kubernetes identity.
    async fn start_as(&mut self, client: kube::Client, settings: FunctionsSettings) {
        let queue = self.queue();
        let context = FunctionsContext::new(
            client,
            self.sis.clone(),
            queue,
            Store::open(self.store_dir.path()).expect("store opens"),
            settings,
            self.inventory.subscribe(),
            self.mode.subscribe(),
        );
        self.handle = Some(
            nvca::functions::start(context)
                .await
                .expect("function deployments start"),
        );
    }

    async fn function(&self, image: Option<&str>, chart: Option<&str>) -> String {
        let (function_id, _) = self
            .admin
            .create_function(&FunctionSpec {
                nca_id: NCA.into(),
                name: "echo".into(),
                container_image: image.map(str::to_string),
                helm_chart: chart.map(str::to_string),
                function_type: None,
            })
            .await
            .unwrap();
        function_id
    }

    /// Deploy `count` instances of `gpus` H100s each; returns (deployment id, request id).
    async fn deploy(&self, function_id: &str, count: u32, gpus: u32) -> (String, String) {
        self.deploy_on(H100, function_id, count, gpus).await
    }

    /// The same on instance type `instance_type` (of H100s).
    async fn deploy_on(
        &self,
        instance_type: &str,
        function_id: &str,
        count: u32,
        gpus: u32,
    ) -> (String, String) {
        let (deployment, published) = self
            .admin
            .deploy(&DeploymentSpec {
                function_id: function_id.into(),
                cluster_id: self.cluster_id.clone(),
                gpu: "H100".into(),
                instance_type: instance_type.into(),
                instance_type_name: Some(format!("{instance_type}_{gpus}x")),
                instance_count: count,
                gpu_count: Some(gpus),
                action: None,
            })
            .await
            .unwrap();
        (deployment, published[0].request_id.clone())
    }

    async fn request(&self, request_id: &str) -> RequestRecord {
        self.admin.state().await.unwrap().requests[request_id].clone()
    }

    /// What SIS heard of each instance of `request_id`, in order.
    async fn heard(&self, request_id: &str) -> Vec<(String, Vec<InstanceState>)> {
        self.request(request_id)
            .await
            .instances
            .into_iter()
            .map(|(id, instance)| (id, instance.history))
            .collect()
    }

    async fn pods(&self, request_id: &str) -> Vec<Pod> {
        let pods: Api<Pod> = self.ns.api();
        pods.list(&ListParams::default().labels(&format!("icms-request-id={request_id}")))
            .await
            .expect("list pods")
            .items
    }

    /// (delivered and unacked, waiting) on this cluster's creation consumer.
    async fn creation_backlog(&self) -> (usize, u64) {
        let client = async_nats::connect(&self.nats_url).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(QueueStream::Creation.name())
            .await
            .expect("the creation stream");
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&QueueStream::Creation.durable(&self.cluster_id))
            .await
            .expect("the cluster's creation consumer");
        let info = consumer.info().await.expect("consumer info");
        (info.num_ack_pending, info.num_pending)
    }

    async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop().await;
        }
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let js = async_nats::jetstream::new(client);
            for stream in QueueStream::ALL {
                if let Ok(s) = js.get_stream(stream.name()).await {
                    let _ = s.delete_consumer(&stream.durable(&self.cluster_id)).await;
                }
            }
        }
        if let Some(sim) = self.sim.take() {
            sim.stop().await;
        }
        self.ns.delete().await;
    }
}

#[tokio::test]
async fn a_deployment_runs_is_reported_and_terminates_without_leftovers() {
    let world = World::new("fn-e2e").await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (deployment, request_id) = world.deploy(&function, 2, 1).await;
    let name = format!("sr-{request_id}");

    let requests: Api<ICMSRequest> = world.ns.api();
    let request = eventually(WAIT, "the ICMSRequest", || {
        let requests = requests.clone();
        let name = name.clone();
        async move { requests.get_opt(&name).await.ok().flatten() }
    })
    .await;
    assert_eq!(request.spec.request_id, request_id);
    assert_eq!(
        request.metadata.labels.as_ref().unwrap()["icms-request-id"],
        request_id
    );

    let pods = eventually(WAIT, "two ready pods", || async {
        let pods = world.pods(&request_id).await;
        (pods.len() == 2 && pods.iter().all(ready)).then_some(pods)
    })
    .await;
    let mut names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, [format!("0-{name}"), format!("1-{name}")]);
    let spec = pods[0].spec.clone().unwrap();
    assert_eq!(spec.scheduler_name.as_deref(), Some("kai-scheduler"));
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, ["inference", "utils"]);
    assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "init");
    let secrets: Api<Secret> = world.ns.api();
    let maps: Api<ConfigMap> = world.ns.api();
    let services: Api<Service> = world.ns.api();
    assert!(secrets.get_opt(&name).await.unwrap().is_some());
    // As NVIDIA's agent for a container function: no Service and no ConfigMap; the
    // instance's name is in every container's env, the NVCF values in the inference
    // container's (read from the pod's metadata), the GPU count in the workers'.
    assert!(services.get_opt(&name).await.unwrap().is_none());
    assert!(maps.get_opt(&name).await.unwrap().is_none());
    let pod_name = pods[0].metadata.name.clone().unwrap();
    let value = |container: &str, key: &str| {
        let all = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        let container = all.clone().find(|c| c.name == container).unwrap();
        container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == key)
            .cloned()
            .unwrap_or_else(|| panic!("{} has no {key}", container.name))
    };
    for container in ["inference", "utils", "init"] {
        let instance = value(container, "NVCF_INSTANCE_ID");
        assert_eq!(
            instance.value.as_deref(),
            Some(pod_name.as_str()),
            "{container}"
        );
    }
    let function = value("inference", "NVCF_FUNCTION_ID").value_from.unwrap();
    assert_eq!(
        function.field_ref.unwrap().field_path,
        "metadata.labels['function-id']"
    );
    assert_eq!(
        value("utils", "ATTACHED_GPU_COUNT").value.as_deref(),
        Some("1")
    );
    assert_eq!(
        value("utils", "INFERENCE_READY_TIMEOUT").value.as_deref(),
        Some("2h0m0s")
    );

    let heard = eventually(WAIT, "SIS hears both instances running", || async {
        let heard = world.heard(&request_id).await;
        (heard.len() == 2
            && heard
                .iter()
                .all(|(_, states)| states.last() == Some(&InstanceState::Running)))
        .then_some(heard)
    })
    .await;
    for (instance, states) in &heard {
        assert_eq!(
            states,
            &[InstanceState::Starting, InstanceState::Running],
            "{instance}"
        );
    }
    let record = world.request(&request_id).await;
    assert_eq!(
        record.batches[0].acked_instances,
        Some(2),
        "SIS has the ack"
    );
    // Low-latency streaming (on by default): each update names the node's and the pod's
    // address, as the running pod has them.
    for pod in world.pods(&request_id).await {
        let status = pod.status.clone().unwrap_or_default();
        let ips = [
            status.host_ip.unwrap_or_default(),
            status.pod_ip.unwrap_or_default(),
        ];
        assert!(ips.iter().all(|ip| !ip.is_empty()), "{ips:?}");
        let name = pod.metadata.name.unwrap();
        assert_eq!(record.instances[&name].instance_ips, ips, "{name}");
    }
    let projected = eventually(WAIT, "the ICMSRequest shows the request completed", || {
        let requests = requests.clone();
        let name = name.clone();
        async move {
            let request = requests.get_opt(&name).await.ok().flatten()?;
            let status = request.status?.request_status;
            (status == "RequestCompleted").then_some(status)
        }
    })
    .await;
    assert_eq!(projected, "RequestCompleted");
    eventually(WAIT, "the creation message acked", || async {
        (world.creation_backlog().await == (0, 0)).then_some(())
    })
    .await;

    // NVIDIA's finalizer: deleting the ICMSRequest by hand waits for the deployment to end;
    // the pods it owns are not collected under it.
    requests
        .delete(&name, &kube::api::DeleteParams::background())
        .await
        .expect("delete the ICMSRequest");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = requests.get(&name).await.expect("held by its finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(
        held.metadata.finalizers.as_deref(),
        Some(&["nvca.finalizers.nvidia.io".to_string()][..])
    );
    let pods = world.pods(&request_id).await;
    assert!(pods.len() == 2 && pods.iter().all(ready), "{pods:?}");

    world.admin.undeploy(&deployment).await.unwrap();
    eventually(WAIT, "pods, ICMSRequest, Secret gone", || async {
        let gone = world.pods(&request_id).await.is_empty()
            && requests.get_opt(&name).await.ok()?.is_none()
            && secrets.get_opt(&name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let heard = eventually(WAIT, "SIS hears both instances terminated", || async {
        let heard = world.heard(&request_id).await;
        heard
            .iter()
            .all(|(_, states)| states.last() == Some(&InstanceState::Terminated))
            .then_some(heard)
    })
    .await;
    for (instance, states) in &heard {
        assert_eq!(
            states,
            &[
                InstanceState::Starting,
                InstanceState::Running,
                InstanceState::ShuttingDown,
                InstanceState::Terminated
            ],
            "{instance}"
        );
    }
    let handle = world.handle.as_ref().unwrap();
    let summary = handle.driver.summary(&request_id).expect("the machine");
    assert!(summary.is_final, "{summary:?}");
    // NVIDIA counts each instance's success once, when first running; a take-down on
    // request is no result.
    assert_eq!(handle.metrics.results(""), 2);
    world.stop().await;
}

#[tokio::test]
async fn a_message_delivered_twice_makes_one_machine_and_one_workload() {
    let world = World::new("fn-dup").await;
    world
        .admin
        .set_faults(serde_json::json!({"duplicateMessages": true}))
        .await
        .unwrap();
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (_, request_id) = world.deploy(&function, 1, 1).await;
    eventually(WAIT, "SIS hears the instance running", || async {
        let heard = world.heard(&request_id).await;
        (heard.len() == 1 && heard[0].1.last() == Some(&InstanceState::Running)).then_some(())
    })
    .await;
    eventually(WAIT, "both copies acked", || async {
        (world.creation_backlog().await == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(world.pods(&request_id).await.len(), 1);
    let handle = world.handle.as_ref().unwrap();
    assert_eq!(handle.driver.names(), std::slice::from_ref(&request_id));
    assert_eq!(
        world.heard(&request_id).await[0].1,
        [InstanceState::Starting, InstanceState::Running]
    );
    world.stop().await;
}

#[tokio::test]
async fn a_request_short_of_gpus_goes_back_to_the_queue_until_they_are_there() {
    let world = World::new("fn-short").await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    // Two instances of 8 GPUs: the inventory the test starts with says none are free.
    world.inventory.send_modify(|inventory| {
        let mut less = inventory.as_deref().cloned().unwrap_or_default();
        if let Some(counts) = less.gpus.get_mut("H100") {
            counts.available = 8;
        }
        *inventory = Some(Arc::new(less));
    });
    let (_, request_id) = world.deploy(&function, 2, 8).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests: Api<ICMSRequest> = world.ns.api();
    assert!(
        requests
            .get_opt(&format!("sr-{request_id}"))
            .await
            .unwrap()
            .is_none(),
        "nothing is written for a request that does not fit"
    );
    assert!(world.handle.as_ref().unwrap().driver.names().is_empty());
    let (unacked, waiting) = world.creation_backlog().await;
    assert_eq!(
        unacked + waiting as usize,
        1,
        "the message is still on the queue"
    );
    assert!(
        world.request(&request_id).await.batches[0]
            .acked_instances
            .is_none()
    );

    world.inventory.send_modify(|inventory| {
        let mut more = inventory.as_deref().cloned().unwrap_or_default();
        if let Some(counts) = more.gpus.get_mut("H100") {
            counts.available = 16;
        }
        *inventory = Some(Arc::new(more));
    });
    eventually(
        WAIT,
        "the request is taken once the GPUs are there",
        || async {
            (world.request(&request_id).await.batches[0].acked_instances == Some(2)).then_some(())
        },
    )
    .await;
    world.stop().await;
}

#[tokio::test]
async fn a_helm_function_is_refused_with_a_terminal_report_an_event_and_an_ack() {
    let world = World::new("fn-helm").await;
    let function = world
        .function(
            None,
            Some("https://helm.ngc.nvidia.com/x/charts/echo-1.0.0.tgz"),
        )
        .await;
    let (_, request_id) = world.deploy(&function, 1, 1).await;
    let record = eventually(WAIT, "SIS hears the instance terminated", || async {
        let record = world.request(&request_id).await;
        (record.instances.values().next()?.instance_state == InstanceState::Terminated)
            .then_some(record)
    })
    .await;
    let (instance_id, instance) = record.instances.iter().next().unwrap();
    assert_eq!(instance_id, &format!("0-sr-{request_id}"));
    assert_eq!(
        instance.termination_cause.as_deref(),
        Some("instance-terminated-precondition-failure")
    );
    assert!(
        instance
            .health_info
            .error_log
            .as_deref()
            .is_some_and(|log| log.contains("Helm functions")),
        "{instance:?}"
    );
    eventually(WAIT, "the message acked", || async {
        (world.creation_backlog().await == (0, 0)).then_some(())
    })
    .await;
    let events: Api<KubeEvent> = world.ns.api();
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|event| event.reason)
        .collect();
    assert!(
        reasons.iter().any(|reason| reason == "RequestRefused"),
        "{reasons:?}"
    );
    assert!(world.pods(&request_id).await.is_empty());
    world.stop().await;
}

#[tokio::test]
async fn no_message_is_taken_while_requests_cannot_be_written_and_each_is_taken_once_they_can() {
    // The requests namespace does not exist yet: every write would fail.
    let later = support::testenv::namespace_name("fn-later");
    let chosen = later.clone();
    let world = World::with("fn-wait", move |settings| {
        settings.placement.namespace = chosen
    })
    .await;
    let handle = world.handle.as_ref().expect("running");
    let state = handle.requests_api.borrow().clone();
    match &state {
        ApiState::Missing(why) => assert!(
            why.contains(&format!("namespace {later} does not exist")) && why.contains("operator"),
            "{why}"
        ),
        other => panic!("the missing namespace is not seen: {other:?}"),
    }
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (_, request_id) = world.deploy(&function, 1, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Not pulled (nor given back): SIS has no acknowledgement, and nothing was written.
    let record = world.request(&request_id).await;
    assert!(record.batches[0].acked_instances.is_none() && record.instances.is_empty());
    assert_eq!(
        handle
            .metrics
            .given_back_count(nvca::functions::metrics::GivenBack::WriteFailed),
        0
    );

    let namespace = world.env.namespace_named(later).await;
    let mut api = handle.requests_api.clone();
    tokio::time::timeout(Duration::from_secs(15), api.wait_for(ApiState::is_served))
        .await
        .expect("the namespace is seen within 15 s")
        .expect("the state is followed");
    eventually(WAIT, "the request runs once it can be written", || async {
        let record = world.request(&request_id).await;
        let instance = record.instances.values().next()?;
        (instance.instance_state == InstanceState::Running).then_some(())
    })
    .await;
    world.stop().await;
    namespace.delete().await;
}

/// A client acting as ServiceAccount `<namespace>/limited`, which may read the requests
/// namespace, its ICMSRequests and pods, and publish Events, but write no ICMSRequest: an
/// agent whose ClusterRole lacks that right.
async fn client_that_may_not_write_requests(env: &TestEnv, namespace: &str) -> kube::Client {
    let read = ["get", "list", "watch"];
    let rule = |group: &str, resources: &[&str], verbs: &[&str], names: Option<&str>| {
        json!({"apiGroups": [group], "resources": resources, "verbs": verbs,
               "resourceNames": names.map(|n| vec![n])})
    };
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "limited"},
        "rules": [
            rule("", &["namespaces"], &["get"], Some(namespace)),
            rule("nvca.nvcf.nvidia.io", &["icmsrequests"], &read, None),
            rule("", &["pods"], &read, None),
            rule("events.k8s.io", &["events"], &["create", "patch"], None),
        ]
    }))
    .expect("a Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "limited"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited"},
        "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}]
    }))
    .expect("a RoleBinding");
    let post = PostParams::default();
    Api::<Role>::namespaced(env.client.clone(), namespace)
        .create(&post, &role)
        .await
        .expect("create Role limited");
    Api::<RoleBinding>::namespaced(env.client.clone(), namespace)
        .create(&post, &binding)
        .await
        .expect("create RoleBinding limited");
    let mut config = env.config.clone();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:limited"));
    kube::Client::try_from(config).expect("an impersonating client")
}

#[tokio::test]
async fn a_request_that_cannot_be_written_for_good_is_refused_at_sis_acked_and_never_retried() {
    let mut world = World::new("fn-forbidden").await;
    world.handle.take().expect("running").stop().await;
    let limited = client_that_may_not_write_requests(&world.env, &world.ns.name).await;
    let mut settings = FunctionsSettings::new(Placement {
        namespace: world.ns.name.clone(),
        cluster_name: "forbidden".to_string(),
        region: "us-west-2".to_string(),
        kai_scheduler: true,
        ..Placement::default()
    });
    settings.pacing.poll = Duration::from_millis(200);
    world.start_as(limited, settings).await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (_, request_id) = world.deploy(&function, 1, 1).await;
    let record = eventually(WAIT, "SIS hears the instance terminated", || async {
        let record = world.request(&request_id).await;
        (record.instances.values().next()?.instance_state == InstanceState::Terminated)
            .then_some(record)
    })
    .await;
    let instance = record.instances.values().next().unwrap();
    let log = instance.health_info.error_log.clone().unwrap_or_default();
    assert_eq!(
        instance.termination_cause.as_deref(),
        Some("instance-terminated-precondition-failure"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "creating ICMSRequest {}/sr-{request_id}",
            world.ns.name
        )) && log.contains("forbidden")
            && log.contains("ClusterRole nvca"),
        "{log}"
    );
    eventually(WAIT, "the message acked", || async {
        (world.creation_backlog().await == (0, 0)).then_some(())
    })
    .await;
    // Acked, not given back; the refusal's Event names the reason.
    let handle = world.handle.as_ref().expect("running");
    assert_eq!(
        handle
            .metrics
            .given_back_count(nvca::functions::metrics::GivenBack::WriteFailed),
        0
    );
    let events: Api<KubeEvent> = world.ns.api();
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("RequestRefused"))
        .filter_map(|event| event.message)
        .collect();
    assert!(
        notes.iter().any(|note| note.contains("forbidden")),
        "{notes:?}"
    );
    world.stop().await;
}

#[tokio::test]
async fn an_instance_sis_lists_but_the_cluster_does_not_run_is_reported_terminated() {
    let mut world = World::new("fn-sync").await;
    world.handle.take().expect("running").stop().await;
    // A request taken and reported running by someone else: nvca never saw it.
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (_, request_id) = world.deploy(&function, 1, 1).await;
    let other = QueueConsumer::connect(world.queue()).await.unwrap();
    let taken = eventually(WAIT, "the message", || async {
        other.fetch_creations().await.ok()?.messages.pop()
    })
    .await;
    taken.acker.ack().await.unwrap();
    let batch = taken.body.message_batch_id.clone();
    world
        .sis
        .acknowledge(
            &request_id,
            &AckRequest {
                status: RequestStatusCode::PendingFulfillment,
                message_batch_id: batch,
                instance_count: Some(1),
                reservation_id: None,
                capacity_type: None,
            },
        )
        .await
        .unwrap();
    let ghost = format!("0-sr-{request_id}");
    let mut running = wire_update(&InstanceReport {
        instance_id: ghost.clone(),
        instance_state: WireInstanceState::Running,
        status: WireStatus::Fulfilled,
        request_state: WireRequestState::Active,
        action: LegacyAction::RequestSpotInstances,
        termination_cause: None,
        system_failure: None,
        error_log: None,
    });
    running.health_info = Default::default();
    world
        .sis
        .report_instance(&request_id, &ghost, &running)
        .await
        .unwrap();

    let mut settings = FunctionsSettings::new(Placement {
        namespace: world.ns.name.clone(),
        ..Placement::default()
    });
    settings.pacing.poll = Duration::from_millis(200);
    settings.sis_sync = Duration::from_millis(500);
    world.start(settings).await;
    let record = eventually(WAIT, "SIS hears the ghost terminated", || async {
        let record = world.request(&request_id).await;
        (record.instances[&ghost].instance_state == InstanceState::Terminated).then_some(record)
    })
    .await;
    assert_eq!(
        record.instances[&ghost].termination_cause.as_deref(),
        Some("instance-terminated-sync-action")
    );
    assert!(world.pods(&request_id).await.is_empty());
    world.stop().await;
}

#[tokio::test]
async fn a_pod_never_scheduled_fails_for_no_capacity_within_the_configured_timeout() {
    let world = World::with("fn-nocap", |settings| {
        settings.timeouts.scheduling = Duration::from_secs(2);
    })
    .await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    // No node carries this instance type: the pod waits for a node that never comes.
    let (_, request_id) = world
        .deploy_on("ON-PREM.GPU.H100-NOWHERE", &function, 1, 1)
        .await;
    let record = eventually(WAIT, "SIS hears the instance terminated", || async {
        let record = world.request(&request_id).await;
        (record.instances.values().next()?.instance_state == InstanceState::Terminated)
            .then_some(record)
    })
    .await;
    let instance = record.instances.values().next().unwrap();
    assert_eq!(
        instance.history,
        [InstanceState::Starting, InstanceState::Terminated]
    );
    assert_eq!(
        instance.termination_cause.as_deref(),
        Some("instance-terminated-no-capacity")
    );
    assert_eq!(
        instance.system_failure.as_deref(),
        Some("instance-terminated-no-capacity")
    );
    let requests: Api<ICMSRequest> = world.ns.api();
    eventually(WAIT, "the pod and the ICMSRequest gone", || async {
        let gone = world.pods(&request_id).await.is_empty()
            && requests
                .get_opt(&format!("sr-{request_id}"))
                .await
                .ok()?
                .is_none();
        gone.then_some(())
    })
    .await;
    let handle = world.handle.as_ref().unwrap();
    assert_eq!(handle.metrics.results("no_capacity"), 1);
    assert!(
        handle
            .metrics
            .render()
            .contains("workload_status=\"failure\",failure_category=\"no_capacity\"} 1")
    );
    world.stop().await;
}

/// A node of the test's own, run by the test's own kwok with the fault stages: pods on it
/// fail the way real ones do. The node has no `nvidia.com/gpu.present` label, so GPU
/// discovery (and every other test) ignores it; its instance type is its own.
struct FaultyNode {
    name: String,
    kwok: std::process::Child,
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

const FAULTY: &str = "ON-PREM.GPU.H100-FAULTS";

impl FaultyNode {
    async fn start(env: &TestEnv) -> FaultyNode {
        let name = format!("nvca-faults-{}", &nvca::sim::state::uuid_v4()[..8]);
        let bin = std::env::var("NVCA_TESTENV_BIN")
            .ok()
            .or_else(|| {
                support::testenv::parse_env_file(
                    &std::fs::read_to_string(support::testenv::default_env_file()).ok()?,
                )
                .get("NVCA_TESTENV_BIN")
                .cloned()
            })
            .expect("NVCA_TESTENV_BIN: run scripts/testenv up");
        let kubeconfig = support::testenv::Endpoints::discover()
            .expect("the test environment")
            .kubeconfig;
        let shipped = std::path::Path::new(&bin).join("../share/kwok-stages");
        let stages = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/functions/kwok-fault-stages.yaml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(std::path::Path::new(&bin).join("kwok"));
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("-c")
            .arg(shipped.join("node-fast-node-initialize.yaml"))
            .arg("-c")
            .arg(shipped.join("node-heartbeat-with-lease-node-heartbeat-with-lease.yaml"))
            .arg("-c")
            .arg(shipped.join("pod-fast-pod-delete.yaml"))
            .arg("-c")
            .arg(&stages)
            .arg("--manage-all-nodes=false")
            .arg(format!(
                "--manage-nodes-with-annotation-selector=nvca.test/kwok={name}"
            ))
            .arg("--node-lease-duration-seconds=40")
            .arg("--cidr=10.250.0.1/24")
            .arg("--node-ip=127.0.0.1")
            .arg(format!("--server-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let kwok = command.spawn().expect("the test's kwok starts");
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": {"nvca.test/kwok": name},
                "labels": {"type": "kwok", "nvca.nvcf.nvidia.io/instance-type": FAULTY},
            },
            "status": {
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"},
            }
        }))
        .unwrap();
        let nodes: Api<Node> = Api::all(env.client.clone());
        nodes
            .create(&Default::default(), &node)
            .await
            .expect("create the faulty node");
        eventually(WAIT, "the faulty node Ready", || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move {
                let node = nodes.get(&name).await.ok()?;
                node.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
        FaultyNode {
            name,
            kwok,
            kubectl: std::path::Path::new(&bin).join("kubectl"),
            kubeconfig,
        }
    }
}

/// Also when the test fails: the node goes, the test's kwok stops.
impl Drop for FaultyNode {
    fn drop(&mut self) {
        let _ = self.kwok.kill();
        let _ = self.kwok.wait();
        let _ = std::process::Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["delete", "node", &self.name, "--wait=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn pods_that_fail_as_real_ones_do_are_reported_with_nvidias_causes() {
    let world = World::with("fn-faults", |settings| {
        settings.timeouts.image_pull = Duration::from_secs(1);
        settings.timeouts.restart_loop = Duration::from_secs(1);
        settings.timeouts.degradation = Duration::from_secs(2);
        // kwok may turn the worker not ready within a second of its start, which NVIDIA
        // judges as never ready: the start-up timeout, same class.
        settings.timeouts.startup = Duration::from_secs(2);
    })
    .await;
    let node = FaultyNode::start(&world.env).await;
    let cases = [
        ("faults/image-pull:1", "image-pull-issues", "image_pull"),
        (
            "faults/crash-loop:1",
            "container-restart-loop",
            "container_restart_loop",
        ),
        ("faults/degrades:1", "degraded-worker", "degraded_worker"),
    ];
    let mut requests = Vec::new();
    for (image, _, _) in cases {
        let function = world.function(Some(image), None).await;
        let (_, request_id) = world.deploy_on(FAULTY, &function, 1, 1).await;
        requests.push(request_id);
    }
    for ((image, cause, category), request_id) in cases.iter().zip(&requests) {
        let record = eventually(WAIT, &format!("SIS hears {image} terminated"), || async {
            let record = world.request(request_id).await;
            (record.instances.values().next()?.instance_state == InstanceState::Terminated)
                .then_some(record)
        })
        .await;
        let instance = record.instances.values().next().unwrap();
        assert_eq!(
            instance.termination_cause.as_deref(),
            Some(*cause),
            "{image}"
        );
        assert_eq!(
            instance.history.first(),
            Some(&InstanceState::Starting),
            "{image}"
        );
        // NVIDIA's errorLog: the cause, then the state of each container as last seen
        // (the fault node's kwok stages give the inference container's alone).
        let log = instance.health_info.error_log.clone().unwrap_or_default();
        assert!(
            log.starts_with(&format!("pod terminated due to state {cause}: "))
                && log.contains("\n---\nCONTAINER inference ")
                && log.ends_with("\n---\n"),
            "{image}: {log}"
        );
        assert!(instance.health_info.error_source.is_none(), "{image}");
        eventually(WAIT, &format!("the pod of {image} gone"), || async {
            world.pods(request_id).await.is_empty().then_some(())
        })
        .await;
        assert_eq!(
            world.handle.as_ref().unwrap().metrics.results(category),
            1,
            "{image}"
        );
    }
    let degraded = world.request(&requests[2]).await;
    assert!(
        degraded
            .instances
            .values()
            .next()
            .unwrap()
            .history
            .contains(&InstanceState::Running),
        "the degrading worker was running first"
    );
    drop(node);
    world.stop().await;
}

#[tokio::test]
async fn cordon_stops_new_work_and_drain_takes_running_work_down() {
    let world = World::new("fn-drain").await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (_, running) = world.deploy(&function, 1, 1).await;
    eventually(WAIT, "the first deployment running", || async {
        let heard = world.heard(&running).await;
        (heard.len() == 1 && heard[0].1.last() == Some(&InstanceState::Running)).then_some(())
    })
    .await;

    world.mode.send_replace(Mode::CordonOnly);
    let (_, waiting) = world.deploy(&function, 1, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        world.request(&waiting).await.batches[0]
            .acked_instances
            .is_none(),
        "no new work while cordoned"
    );
    assert_eq!(
        world.heard(&running).await[0].1.last(),
        Some(&InstanceState::Running),
        "running work stays"
    );

    world.mode.send_replace(Mode::CordonAndDrain);
    let record = eventually(WAIT, "the running deployment drained", || async {
        let record = world.request(&running).await;
        (record.instances.values().next()?.instance_state == InstanceState::Terminated)
            .then_some(record)
    })
    .await;
    assert_eq!(
        record
            .instances
            .values()
            .next()
            .unwrap()
            .termination_cause
            .as_deref(),
        Some("instance-terminated-service-maintenance")
    );
    eventually(WAIT, "its pod gone", || async {
        world.pods(&running).await.is_empty().then_some(())
    })
    .await;
    assert!(world.pods(&waiting).await.is_empty());
    world.stop().await;
}

#[tokio::test]
async fn a_lost_store_is_rebuilt_from_icms_requests_and_pods_without_repeating_anything() {
    let mut world = World::new("fn-rebuild").await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    let (deployment, request_id) = world.deploy(&function, 2, 1).await;
    eventually(WAIT, "both instances running", || async {
        let heard = world.heard(&request_id).await;
        (heard.len() == 2
            && heard
                .iter()
                .all(|(_, states)| states.last() == Some(&InstanceState::Running)))
        .then_some(())
    })
    .await;
    let uids = |pods: Vec<Pod>| {
        let mut uids: Vec<String> = pods.into_iter().filter_map(|p| p.metadata.uid).collect();
        uids.sort();
        uids
    };
    let before = uids(world.pods(&request_id).await);

    world.handle.take().expect("running").stop().await;
    world.store_dir = tempfile::tempdir().unwrap();
    let mut settings = FunctionsSettings::new(Placement {
        namespace: world.ns.name.clone(),
        ..Placement::default()
    });
    settings.pacing.poll = Duration::from_millis(200);
    world.start(settings).await;
    let handle = world.handle.as_ref().unwrap();
    let summary = handle.driver.summary(&request_id).expect("rebuilt");
    assert_eq!(summary.state, "running", "{summary:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        uids(world.pods(&request_id).await),
        before,
        "no pod made again"
    );
    for (instance, states) in world.heard(&request_id).await {
        assert_eq!(
            states,
            [InstanceState::Starting, InstanceState::Running],
            "{instance}: nothing reported twice"
        );
    }

    world.admin.undeploy(&deployment).await.unwrap();
    eventually(WAIT, "SIS hears both terminated, pods gone", || async {
        let heard = world.heard(&request_id).await;
        (heard
            .iter()
            .all(|(_, states)| states.last() == Some(&InstanceState::Terminated))
            && world.pods(&request_id).await.is_empty())
        .then_some(())
    })
    .await;
    world.stop().await;
}

#[tokio::test]
async fn acking_a_message_again_after_a_restart_is_answered() {
    // The machine's AckMessage may run twice (a crash between the ack and its record):
    // JetStream must answer the second ack too, or the machine would wait forever.
    let mut world = World::new("fn-reack").await;
    world.handle.take().expect("running").stop().await;
    let function = world.function(Some("nvcr.io/test/echo:1"), None).await;
    world.deploy(&function, 1, 1).await;
    let consumer = QueueConsumer::connect(world.queue()).await.unwrap();
    let taken = eventually(WAIT, "the message", || async {
        consumer.fetch_creations().await.ok()?.messages.pop()
    })
    .await;
    let reply = taken.acker.reply().to_string();
    consumer.acker(&reply).ack().await.expect("first ack");
    let again = QueueConsumer::connect(world.queue()).await.unwrap();
    again.acker(&reply).ack().await.expect("the same ack again");
    assert_eq!(world.creation_backlog().await, (0, 0));
    world.stop().await;
}

/// Everything the agent logs, for the test that checks credentials never reach the logs
/// (all tests of this binary log here while it runs, at every level of nvca's own).
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let writer = move || LogSink(sink.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("nvca=trace,info"))
            .with_writer(writer)
            .try_init();
        logs
    })
    .clone()
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A private registry (issue 16): the pod gets a pull Secret naming only the registry its
/// image comes from, the function's secrets agent runs beside it, and the credentials are
/// in that Secret and the request's, and nowhere else the agent writes: not its logs,
/// its store, `nvca-state dump`, the ICMSRequest, the pods or the Events.
#[tokio::test]
async fn a_private_registry_function_gets_its_pull_secret_and_the_credentials_go_nowhere_else() {
    let logs = captured_logs();
    let mut world = World::new("fn-registry").await;
    let unique = support::testenv::namespace_name("pw");
    let password = format!("pass-{unique}");
    let other_password = format!("other-{unique}");
    let options: FunctionOptions = serde_json::from_value(json!({
        "registryCredentials": [
            {"registry": "registry.example.com:5000", "username": "robot", "password": password},
            {"registry": "other.example.com", "username": "robot", "password": other_password},
        ],
        "containerEnvironment": [{"key": "MODEL", "value": "llama"}],
        "secrets": [{"name": "API_KEY", "value": "not-sent"}],
    }))
    .unwrap();
    let (function, _) = world
        .admin
        .create_function_with(
            &FunctionSpec {
                nca_id: NCA.into(),
                name: "private".into(),
                container_image: Some("registry.example.com:5000/team/echo:1".into()),
                helm_chart: None,
                function_type: None,
            },
            &options,
        )
        .await
        .unwrap();
    let (_, request_id) = world.deploy(&function, 1, 1).await;
    let pods = eventually(WAIT, "the pod ready", || async {
        let pods = world.pods(&request_id).await;
        (pods.len() == 1 && pods.iter().all(ready)).then_some(pods)
    })
    .await;
    let spec = pods[0].spec.clone().unwrap();
    let pull: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|reference| reference.name.clone())
        .collect();
    let name = format!("workload-sr-{request_id}-regcred-0");
    assert_eq!(
        pull,
        std::slice::from_ref(&name),
        "only the image's registry"
    );
    let secrets: Api<Secret> = world.ns.api();
    let secret = secrets.get(&name).await.expect("the pull Secret");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let auths = config["auths"].as_object().unwrap();
    assert_eq!(
        auths.keys().collect::<Vec<_>>(),
        ["registry.example.com:5000"]
    );
    let auth = auths["registry.example.com:5000"]["auth"].as_str().unwrap();
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, auth).unwrap(),
        format!("robot:{password}").as_bytes()
    );
    assert!(
        secrets
            .get_opt(&format!("workload-sr-{request_id}-regcred-1"))
            .await
            .unwrap()
            .is_none(),
        "the other registry's credential gets no Secret"
    );
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        containers,
        ["ess", "inference", "utils"],
        "the secrets agent runs"
    );
    eventually(WAIT, "SIS hears it running", || async {
        let record = world.request(&request_id).await;
        (record.instances.values().next()?.instance_state == InstanceState::Running).then_some(())
    })
    .await;

    // Where the credentials must not be: in the cluster, beside the Secrets that hold them …
    let encoded = |text: &str| {
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("robot:{text}"),
        )
    };
    let leaks = |text: &str| {
        [password.as_str(), other_password.as_str()]
            .iter()
            .flat_map(|p| [p.to_string(), encoded(p)])
            .filter(|needle| text.contains(needle.as_str()))
            .collect::<Vec<_>>()
    };
    let requests: Api<ICMSRequest> = world.ns.api();
    let events: Api<KubeEvent> = world.ns.api();
    for (what, text) in [
        (
            "the ICMSRequest",
            serde_json::to_string(&requests.list(&ListParams::default()).await.unwrap()).unwrap(),
        ),
        ("the pods", serde_json::to_string(&pods).unwrap()),
        (
            "the Events",
            serde_json::to_string(&events.list(&ListParams::default()).await.unwrap()).unwrap(),
        ),
    ] {
        assert!(leaks(&text).is_empty(), "{what} hold a credential");
    }
    // … and on this machine: the agent's logs, its store and what `nvca-state dump` shows.
    if let Some(handle) = world.handle.take() {
        handle.stop().await;
    }
    let log = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        log.contains(&request_id),
        "the capture holds this test's logs"
    );
    assert!(leaks(&log).is_empty(), "the logs hold a credential");
    // This process still holds the store's lock: dump a copy, as an SRE would a backup.
    let copy = tempfile::tempdir().unwrap();
    for file in walk(world.store_dir.path()) {
        let relative = file.strip_prefix(world.store_dir.path()).unwrap();
        let target = copy.path().join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["dump", "-o", "json", "--store"])
        .arg(copy.path())
        .output()
        .expect("nvca-state runs");
    let errors = String::from_utf8_lossy(&dump.stderr).to_string();
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(dump.contains(&request_id), "{dump}{errors}");
    assert!(
        leaks(&dump).is_empty(),
        "nvca-state dump shows a credential"
    );
    for file in walk(world.store_dir.path()) {
        let bytes = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_string();
        assert!(
            leaks(&bytes).is_empty(),
            "store file {} holds a credential",
            file.display()
        );
    }
    world.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Function shapes nvca does not build yet are refused by name at SIS, never run as a
/// plain container; a streaming function runs with NVIDIA's streaming utils sidecar.
#[tokio::test]
async fn llm_and_telemetry_functions_are_refused_by_name_and_streaming_ones_run() {
    let world = World::new("fn-shapes").await;
    let shapes = [
        (
            "LLM",
            json!({"models": [{"name": "m", "version": "1", "uri": "https://models.example.com/m",
                "llmConfig": {"uris": ["/v1/chat/completions"], "tokenRateLimit": "100-S",
                    "tokenizer": "t", "routingMethod": "round-robin"}}]}),
            Some("LLM functions"),
        ),
        (
            "DEFAULT",
            json!({"telemetries": {"logsTelemetry": {
                "name": "logs", "endpoint": "https://otlp.example.com", "protocol": "HTTP",
                "provider": "OTEL_COLLECTOR", "types": ["LOGS"]}}}),
            Some("telemetry"),
        ),
        ("STREAMING", json!({}), None),
    ];
    for (function_type, options, refusal) in shapes {
        let options: FunctionOptions = serde_json::from_value(options).unwrap();
        let (function, _) = world
            .admin
            .create_function_with(
                &FunctionSpec {
                    nca_id: NCA.into(),
                    name: format!("shape-{}", function_type.to_lowercase()),
                    container_image: Some("nvcr.io/team/echo:1".into()),
                    helm_chart: None,
                    function_type: Some(function_type.into()),
                },
                &options,
            )
            .await
            .unwrap();
        let (_, request_id) = world.deploy(&function, 1, 1).await;
        match refusal {
            Some(words) => {
                let record = eventually(WAIT, "SIS hears the refusal", || async {
                    let record = world.request(&request_id).await;
                    (record.instances.values().next()?.instance_state == InstanceState::Terminated)
                        .then_some(record)
                })
                .await;
                let instance = record.instances.values().next().unwrap();
                assert_eq!(
                    instance.termination_cause.as_deref(),
                    Some("instance-terminated-precondition-failure")
                );
                let log = instance.health_info.error_log.clone().unwrap_or_default();
                assert!(log.contains(words), "{function_type}: {log}");
                assert!(world.pods(&request_id).await.is_empty());
            }
            None => {
                let pods = eventually(WAIT, "the streaming pod", || async {
                    let pods = world.pods(&request_id).await;
                    (pods.len() == 1).then_some(pods)
                })
                .await;
                let spec = pods[0].spec.clone().unwrap();
                let utils = spec.containers.iter().find(|c| c.name == "utils").unwrap();
                assert_eq!(
                    utils.image.as_deref(),
                    Some(NICLLS_IMAGE),
                    "NICLLS_CONTAINER"
                );
                let env = utils.env.clone().unwrap_or_default();
                assert!(env.iter().any(|var| var.name == "ZONE_DNS"), "{env:?}");
            }
        }
    }
    world.stop().await;
}
