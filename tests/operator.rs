//! `nvca-operator run`, the real binary as a child process, against the local control
//! plane of `scripts/testenv`: install (every object of the agent, in NVIDIA's order,
//! status and conditions), drift repair, ordered uninstall, and a SIGKILL at each step of
//! the uninstall, each followed by a restart on the same store.
//!
//! The operator's namespace is a fresh test namespace, but `nvca-system`, `nvcf-backend`
//! and ClusterRole/webhook configurations `nvca` are cluster-global names: the tests take
//! a file lock so that only one of them (in any test process) owns them at a time, clean
//! leftovers before they start and clean up after themselves even when they fail.
//!
//! The agent's `/healthz` is served by a small fake on a loopback port, given to the
//! operator with `--agent-health-url`: the real agent arrives with a later issue, and
//! under kwok its pod never runs a container anyway. The wire is the real one (HTTP GET,
//! NVIDIA's JSON).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use nvca::kube::agent_config::AgentConfigFile;
use nvca::kube::crd::{ICMSRequest, NVCFBackend};
use serde_json::json;
use support::child::Process;
use support::testenv::{TestEnv, TestNamespace, eventually, testenv_with_namespace};

const BACKEND: &str = "ncp-local";
const FINALIZER: &str = "nvca-operator.finalizers.nvidia.io";
const WAIT: Duration = Duration::from_secs(90);

const DTO: &str = r#"clusterId: ""
clusterGroupId: ""
clusterName: "ncp-local"
clusterDescription: "ncp-local"
clusterGroupName: "nvcf-default"
ncaID: "nca-test"
nvcaVersion: "2.52.1"
oAuthClientId: ""
cloudProvider: "NCP"
region: "us-west-1"
attributes: []
capabilities: ["DynamicGPUDiscovery","SelfHosted","KAIScheduler"]
gpusB64: ""
icmsConfig:
  icmsServiceURL: "http://127.0.0.1:9/sis"
agent:
  natsURL: "nats://127.0.0.1:9"
"#;

/// Provisioning steps, in NVIDIA's order, as the status names them.
const PROVISION: [&str; 10] = [
    "SystemNamespace",
    "RequestsNamespace",
    "PullSecrets",
    "WebhookCerts",
    "NetworkPolicies",
    "Rbac",
    "Service",
    "WebhookConfigurations",
    "AgentConfig",
    "AgentDeployment",
];
const CLEANUP: [&str; 7] = [
    "IcmsRequests",
    "WorkloadNamespaces",
    "SystemNamespace",
    "RequestsNamespace",
    "WebhookConfigurations",
    "ClusterRbac",
    "MirroredSecrets",
];

/// `nvca-operator run` as a child process (SIGKILL when dropped), against the test's
/// namespace and fake agent; `extra` flags are appended.
fn start_operator(
    env: &TestEnv,
    namespace: &str,
    store: &Path,
    health_url: &str,
    log: &Path,
    extra: &[&str],
) -> Process {
    let kubeconfig = env
        .endpoints
        .kubeconfig
        .to_str()
        .expect("kubeconfig path is UTF-8");
    let mut args = vec![
        "run",
        "--system-namespace",
        namespace,
        "--kubeconfig",
        kubeconfig,
        "--store",
        store.to_str().expect("store path is UTF-8"),
        "--listen",
        "127.0.0.1:0",
        "--listen-admin",
        "127.0.0.1:0",
        "--agent-health-url",
        health_url,
        "--agent-health-interval",
        "1s",
        "--image-pull-secrets",
        "regcred",
        "--log-level",
        "info,nvca=debug",
        // A restarted operator (another identity) waits this long for the killed one's
        // Lease.
        "--leader-lease-duration",
        "3s",
    ];
    args.extend_from_slice(extra);
    Process::start(env!("CARGO_BIN_EXE_nvca-operator"), &args, &[], log)
}

/// A fake agent `/healthz` on a loopback port (the real agent is a later issue).
async fn fake_agent() -> String {
    use axum::Router;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake agent");
    let address = listener.local_addr().expect("fake agent address");
    let app = Router::new().route(
        "/healthz",
        get(|| async {
            axum::Json(json!({
                "Status": "healthy",
                "K8sVersion": "v1.37.2",
                "GPUUsage": {"H100": {"Capacity": 8, "Available": 6, "Allocated": 2}}
            }))
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/healthz")
}

/// Remove every cluster-global object of the agent, and wait until the namespaces are
/// gone. Used before a test (leftovers of a failed run) and after it.
async fn clean_globals(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let quiet = |r: Result<_, kube::Error>| match r {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(e) => eprintln!("cleaning up: {e}"),
    };
    for name in ["nvca-system", "nvcf-backend", "nvca-modelcache-init"] {
        quiet(
            namespaces
                .delete(name, &DeleteParams::background())
                .await
                .map(|_| ()),
        );
    }
    let dp = DeleteParams::background();
    quiet(
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete("nvca", &dp)
            .await
            .map(|_| ()),
    );
    quiet(
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete("nvca", &dp)
            .await
            .map(|_| ()),
    );
    quiet(
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete("nvca", &dp)
            .await
            .map(|_| ()),
    );
    quiet(
        Api::<ClusterRole>::all(client.clone())
            .delete("nvca", &dp)
            .await
            .map(|_| ()),
    );
    eventually(WAIT, "namespaces nvca-system and nvcf-backend gone", || {
        let namespaces = namespaces.clone();
        async move {
            for name in ["nvca-system", "nvcf-backend", "nvca-modelcache-init"] {
                if namespaces.get_opt(name).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}

/// Strips the finalizer of a backend left behind, so its test namespace can go.
async fn release_backend(client: &Client, namespace: &str) {
    let backends: Api<NVCFBackend> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"finalizers": null}});
    let _ = backends
        .patch(BACKEND, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
}

/// One test's world: lock, namespace with the chart's ConfigMaps and a pull secret,
/// a fake agent, a store directory.
struct World {
    _lock: std::fs::File,
    env: TestEnv,
    ns: TestNamespace,
    store: tempfile::TempDir,
    health_url: String,
}

impl World {
    async fn new(prefix: &str) -> World {
        let lock = support::lock::cluster_wide_async().await;
        let (env, ns) = testenv_with_namespace(prefix).await;
        support::crds::from_chart(&env.client).await;
        clean_globals(&env.client).await;
        let configmaps: Api<ConfigMap> = ns.api();
        let cm = |name: &str, data: BTreeMap<String, String>| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        configmaps
            .create(
                &PostParams::default(),
                &cm(
                    "nvcfbackend-self-managed",
                    BTreeMap::from([("cluster-dto.yaml".to_string(), DTO.to_string())]),
                ),
            )
            .await
            .expect("create nvcfbackend-self-managed");
        configmaps
            .create(
                &PostParams::default(),
                &cm(
                    "nvca-cluster-registration",
                    BTreeMap::from([
                        ("clusterId".to_string(), "cluster-1".to_string()),
                        ("clusterGroupId".to_string(), "group-1".to_string()),
                    ]),
                ),
            )
            .await
            .expect("create nvca-cluster-registration");
        ns.create_pull_secret("regcred").await;
        let health_url = fake_agent().await;
        World {
            _lock: lock,
            env,
            ns,
            store: tempfile::tempdir().expect("store directory"),
            health_url,
        }
    }

    fn operator(&self) -> Process {
        self.operator_as(&[], "store", "operator.log")
    }

    /// An operator with its own store directory and log, and `extra` flags.
    fn operator_as(&self, extra: &[&str], store: &str, log: &str) -> Process {
        start_operator(
            &self.env,
            &self.ns.name,
            &self.store.path().join(store),
            &self.health_url,
            &self.store.path().join(log),
            extra,
        )
    }

    fn backends(&self) -> Api<NVCFBackend> {
        self.ns.api()
    }

    async fn backend_status(&self) -> Option<serde_json::Value> {
        let backend = self.backends().get_opt(BACKEND).await.ok()??;
        serde_json::to_value(backend.status?).ok()
    }

    /// Waits until the backend's status says `phase` (and, if given, `step`).
    async fn wait_phase(&self, phase: &str, step: Option<&str>) -> serde_json::Value {
        eventually(
            WAIT,
            &format!("NVCFBackend phase {phase} step {step:?}"),
            || async {
                let status = self.backend_status().await?;
                (status["phase"] == phase && step.is_none_or(|s| status["step"] == s))
                    .then_some(status)
            },
        )
        .await
    }

    /// The notes of the Events about the backend with `reason`, oldest first.
    async fn event_notes(&self, reason: &str) -> Vec<String> {
        let events: Api<KubeEvent> = self.ns.api();
        let mut list: Vec<KubeEvent> = events
            .list(&ListParams::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(BACKEND)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect();
        list.sort_by_key(|e| {
            e.event_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        list.into_iter().filter_map(|e| e.note).collect()
    }

    /// Delete the NVCFBackend and wait for the operator to finish the uninstall.
    async fn uninstall(&self) {
        self.backends()
            .delete(BACKEND, &DeleteParams::background())
            .await
            .expect("delete the NVCFBackend");
        self.wait_uninstalled().await;
    }

    async fn wait_uninstalled(&self) {
        eventually(
            Duration::from_secs(180),
            "NVCFBackend released and gone",
            || async {
                self.backends()
                    .get_opt(BACKEND)
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        let client = &self.env.client;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for name in ["nvca-system", "nvcf-backend"] {
            assert!(
                namespaces
                    .get_opt(name)
                    .await
                    .expect("read namespace")
                    .is_none(),
                "namespace {name} is left"
            );
        }
        assert!(
            Api::<ClusterRole>::all(client.clone())
                .get_opt("nvca")
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            Api::<ClusterRoleBinding>::all(client.clone())
                .get_opt("nvca")
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .get_opt("nvca")
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .get_opt("nvca")
                .await
                .expect("read")
                .is_none()
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Whatever happened, leave no finalizer or global object behind (fresh runtime:
        // this may run while the test's runtime unwinds).
        let config = self.env.config.clone();
        let namespace = self.ns.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = Client::try_from(config) else {
                    return;
                };
                release_backend(&client, &namespace).await;
                let _ = tokio::time::timeout(Duration::from_secs(60), clean_globals(&client)).await;
            });
        })
        .join();
    }
}

/// A log line without its terminal colours.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn install_applies_every_object_in_nvidias_order_and_reports_health_and_repairs_drift() {
    let world = World::new("operator-install").await;
    let mut operator = world.operator();
    let client = world.env.client.clone();

    // The NVCFBackend is built from the chart's ConfigMaps, the registration's IDs first.
    let status = world.wait_phase("Ready", None).await;
    let backend = world
        .backends()
        .get(BACKEND)
        .await
        .expect("the NVCFBackend");
    assert!(
        backend.finalizers().iter().any(|f| f == FINALIZER),
        "{:?}",
        backend.finalizers()
    );
    let cluster = backend
        .spec
        .fields
        .cluster_config
        .clone()
        .expect("clusterConfig");
    assert_eq!(
        (
            cluster.cluster_id.as_str(),
            cluster.cluster_group_id.as_str()
        ),
        ("cluster-1", "group-1")
    );

    // Every step was announced once, in NVIDIA's order.
    let notes = world.event_notes("Provisioning").await;
    let expected: Vec<String> = PROVISION
        .iter()
        .enumerate()
        .map(|(i, step)| format!("applying {step} ({} of 10)", i + 1))
        .collect();
    assert_eq!(notes, expected, "Provisioning Events");
    assert!(!world.event_notes("Provisioned").await.is_empty());

    // Every object, with NVIDIA's names, labels and ports.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let system = namespaces
        .get("nvca-system")
        .await
        .expect("namespace nvca-system");
    assert_eq!(
        labels(&system.metadata)["app.kubernetes.io/managed-by"],
        "nvca-operator"
    );
    assert_eq!(
        system.annotations()["nvcf.nvidia.io/cluster-name"],
        "ncp-local"
    );
    let requests = namespaces
        .get("nvcf-backend")
        .await
        .expect("namespace nvcf-backend");
    assert_eq!(
        labels(&requests.metadata)["nvca.nvcf.nvidia.io/workload-instance-type"],
        "pod_spec"
    );
    Api::<ResourceQuota>::namespaced(client.clone(), "nvca-system")
        .get("nvca-system")
        .await
        .expect("quota");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "nvca-system");
    let copy = secrets.get("regcred").await.expect("pull secret copy");
    assert_eq!(
        labels(&copy.metadata)["app.kubernetes.io/managed-by"],
        "nvca-mirror"
    );
    let server = secrets
        .get("nvca-webhook-tls-server-certs")
        .await
        .expect("server cert");
    assert_eq!(server.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = secrets.get("nvca-webhook-tls-ca-certs").await.expect("CA");
    let ca_pem = ca
        .data
        .as_ref()
        .and_then(|d| d.get("ca.pem"))
        .expect("ca.pem")
        .clone();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "nvca-system");
    let policies = configmaps
        .get("nvca-namespace-networkpolicies")
        .await
        .expect("network policies");
    assert!(
        policies
            .data
            .unwrap()
            .contains_key("allow-egress-internet-no-internal-no-api")
    );
    Api::<ServiceAccount>::namespaced(client.clone(), "nvca-system")
        .get("nvca")
        .await
        .expect("SA nvca");
    Api::<ClusterRole>::all(client.clone())
        .get("nvca")
        .await
        .expect("ClusterRole nvca");
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get("nvca")
        .await
        .expect("binding");
    assert_eq!(binding.role_ref.name, "nvca");
    let service = Api::<Service>::namespaced(client.clone(), "nvca-system")
        .get("nvca")
        .await
        .expect("Service");
    let ports: Vec<(Option<String>, i32)> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("nvca".to_string()), 8000),
            (Some("webhooks".to_string()), 8443)
        ]
    );
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("nvca")
        .await
        .expect("mutating");
    for webhook in mutating.webhooks.unwrap() {
        assert_eq!(
            webhook.client_config.ca_bundle.as_ref(),
            Some(&ca_pem),
            "{}",
            webhook.name
        );
    }
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get("nvca")
        .await
        .expect("validating");
    let agent_config = configmaps.get("agent-config").await.expect("agent-config");
    let file =
        AgentConfigFile::parse(&agent_config.data.unwrap()["config.yaml"]).expect("config.yaml");
    assert_eq!(file.cluster.id, "cluster-1");
    assert_eq!(file.agent.nats_url, "nats://127.0.0.1:9");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nvca-system");
    let deployment = deployments.get("nvca").await.expect("Deployment nvca");
    let containers: Vec<String> = deployment
        .spec
        .template
        .spec
        .clone()
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(containers, ["agent", "webhook"]);

    // Status: NVIDIA's fields and nvca's conditions; the fake agent's health arrives.
    assert_eq!(status["version"], "2.52.1");
    assert_eq!(
        status["observedGeneration"],
        backend.metadata.generation.expect("generation")
    );
    let status = eventually(WAIT, "agentStatus healthy", || async {
        let status = world.backend_status().await?;
        (status["agentStatus"] == "healthy").then_some(status)
    })
    .await;
    assert_eq!(status["gpuUsage"]["H100"]["available"], 6);
    assert_eq!(status["kubernetesVersion"], "v1.37.2");
    // NVIDIA's status fields: what was applied, beside the conditions.
    assert_eq!(status["clusterConfig"]["clusterID"], "cluster-1");
    assert_eq!(status["accountConfig"]["ncaID"], "nca-test");
    assert_eq!(
        status["icmsConfig"]["icmsServiceURL"],
        "http://127.0.0.1:9/sis"
    );
    assert!(
        status["k8sClusterNetworkCIDRs"]
            .as_array()
            .is_some_and(|cidrs| !cidrs.is_empty()),
        "{status}"
    );
    let conditions = status["conditions"].as_array().expect("conditions");
    let condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .expect(kind)
    };
    assert_eq!(condition("Ready")["status"], "True");
    assert_eq!(condition("AgentHealthy")["status"], "True");
    assert!(condition("Ready")["lastTransitionTime"].is_string());

    // The machine is visible to `nvca-state` through the running operator's admin endpoint.
    let dump = Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["dump", "--kind", "backend", "-o", "json", "--store"])
        .arg(world.store.path().join("store"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("run nvca-state dump");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "nvca-state dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let key = format!("{}/{BACKEND}", world.ns.name);
    assert!(text.contains(&key) && text.contains("\"ready\""), "{text}");

    // Drift: the Deployment is deleted; it comes back, and an Event says so.
    let old_uid = deployment.uid().expect("uid");
    deployments
        .delete("nvca", &DeleteParams::background())
        .await
        .expect("delete Deployment nvca");
    eventually(WAIT, "Deployment nvca applied again", || async {
        let back = deployments.get_opt("nvca").await.ok()??;
        (back.uid()? != old_uid).then_some(())
    })
    .await;
    let drift = world.event_notes("DriftDetected").await;
    assert!(
        drift
            .iter()
            .any(|note| note.contains("Deployment nvca-system/nvca was deleted")),
        "{drift:?}"
    );
    world.wait_phase("Ready", None).await;

    // Drift by modification: someone else scales the Deployment; it is put back.
    let scale = json!({"spec": {"replicas": 3}});
    let params = PatchParams {
        field_manager: Some("kubectl-edit".to_string()),
        ..PatchParams::default()
    };
    deployments
        .patch("nvca", &params, &Patch::Merge(&scale))
        .await
        .expect("scale Deployment nvca");
    eventually(WAIT, "Deployment nvca back at one replica", || async {
        let back = deployments.get_opt("nvca").await.ok()??;
        (back.spec.replicas == Some(1)).then_some(())
    })
    .await;
    let drift = world.event_notes("DriftDetected").await;
    assert!(
        drift.iter().any(
            |note| note.contains("Deployment nvca-system/nvca was modified")
                && note.contains("kubectl-edit")
        ),
        "{drift:?}"
    );
    world.wait_phase("Ready", None).await;

    // A webhook someone set to fail open: it is put back to NVIDIA's failurePolicy.
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(world.env.client.clone());
    let open = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]);
    hooks
        .patch(
            "nvca",
            &params,
            &Patch::<()>::Json(serde_json::from_value(open).expect("a JSON patch")),
        )
        .await
        .expect("edit MutatingWebhookConfiguration nvca");
    eventually(WAIT, "the webhook back at failurePolicy Fail", || async {
        let back = hooks.get_opt("nvca").await.ok()??;
        let policy = back.webhooks?.first()?.failure_policy.clone()?;
        (policy == "Fail").then_some(())
    })
    .await;
    let drift = world.event_notes("DriftDetected").await;
    assert!(
        drift
            .iter()
            .any(|note| note.contains("MutatingWebhookConfiguration nvca was modified")),
        "{drift:?}"
    );
    world.wait_phase("Ready", None).await;

    // /metrics beside /healthz: the prefix, reconciles and the ready machine.
    let log = strip_ansi(&operator.log_text());
    let address = log
        .lines()
        .find(|line| line.contains("health endpoint listening"))
        .and_then(|line| line.split("address=").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .expect("the health endpoint's address in the log");
    let metrics = nvca::tls::http_client()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for expected in [
        "nvca_operator_reconciles_total",
        "nvca_operator_machines{state=\"ready\"} 1",
        "nvca_operator_leader 1",
        "nvca_operator_step_duration_seconds_count{step=\"AgentDeployment\"}",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected:?} missing in:\n{metrics}"
        );
    }

    world.uninstall().await;
    operator.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_one_leads_and_the_other_takes_over_when_it_dies() {
    let world = World::new("operator-leader").await;
    let mut first = world.operator_as(
        &["--leader-election-identity", "replica-a"],
        "store-a",
        "a.log",
    );
    world.wait_phase("Ready", None).await;
    let second = world.operator_as(
        &["--leader-election-identity", "replica-b"],
        "store-b",
        "b.log",
    );
    let leases: Api<Lease> = world.ns.api();
    let holder = || async {
        leases
            .get_opt("nvca-operator")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    eventually(WAIT, "replica-b waiting for the Lease", || async {
        second
            .log_text()
            .contains("another replica leads; waiting for the Lease")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(holder().await.as_deref(), Some("replica-a"));
    let waiting = second.log_text();
    assert!(
        !waiting.contains("NVCFBackend written") && !waiting.contains("nvca-operator running"),
        "the waiting replica acted:\n{waiting}"
    );

    // The leader dies without releasing the Lease; the other takes over once it expires
    // and acts: a deleted Deployment comes back.
    first.kill();
    eventually(WAIT, "replica-b holds the Lease", || async {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(world.env.client.clone(), "nvca-system");
    eventually(WAIT, "replica-b provisioned the backend", || async {
        second
            .log_text()
            .contains("nvca-operator running")
            .then_some(())
    })
    .await;
    world.wait_phase("Ready", None).await;
    let old_uid = deployments
        .get("nvca")
        .await
        .expect("Deployment nvca")
        .uid()
        .expect("uid");
    deployments
        .delete("nvca", &DeleteParams::background())
        .await
        .expect("delete Deployment nvca");
    eventually(
        WAIT,
        "Deployment nvca applied again by replica-b",
        || async {
            let back = deployments.get_opt("nvca").await.ok()??;
            (back.uid()? != old_uid).then_some(())
        },
    )
    .await;
    world.uninstall().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nvcfbackend_as_nvidias_operator_writes_it_is_adopted() {
    let world = World::new("operator-adopt").await;
    // Field names of NVIDIA's Go types (pkg/apis/nvcf/v1/nvcfbackend_types.go); values
    // are this test's.
    let written_by_nvidia = json!({
        "apiVersion": "nvcf.nvidia.io/v1",
        "kind": "NVCFBackend",
        "metadata": {"name": BACKEND, "finalizers": [FINALIZER]},
        "spec": {
            "version": "2.50.0",
            "nvcaImageConfig": {"repository": "nvcr.io/nvidia/nvcf-byoc/nvca", "tag": "2.50.0",
                                "pullPolicy": "IfNotPresent", "pullSecretName": "regcred"},
            "accountConfig": {"ncaID": "nca-test"},
            "clusterConfig": {"clusterID": "cluster-1", "clusterName": BACKEND,
                              "clusterGroupName": "nvcf-default", "clusterGroupID": "group-1",
                              "cloudProvider": "NCP", "gpuDiscovery": {"dynamic": {}},
                              "region": "us-west-1", "logLevel": "info",
                              "k8sClusterNetworkCIDRs": ["10.0.0.0/8"], "attributes": []},
            "featureGate": {"values": ["DynamicGPUDiscovery", "SelfHosted"]},
            "oauthConfig": {"tokenURL": "", "clientID": "", "publicKeysetEndpoint": "",
                            "clientSecretsEnvFile": ""},
            "icmsConfig": {"icmsServiceURL": "http://127.0.0.1:9/sis", "tokenURL": ""},
            "vaultConfig": {"enabled": false, "address": ""},
            "webhookConfig": {"listenPort": 8443, "servicePort": 8443},
            "agentConfig": {"natsURL": "nats://127.0.0.1:9"},
            "clusterSource": "self-hosted",
            "overrides": {"clusterConfig": {"logLevel": "debug"}}
        }
    });
    let backend: NVCFBackend =
        serde_json::from_value(written_by_nvidia).expect("NVIDIA's NVCFBackend reads");
    let params = PostParams {
        field_manager: Some("nvca-operator-go".to_string()),
        ..PostParams::default()
    };
    world
        .backends()
        .create(&params, &backend)
        .await
        .expect("the served schema accepts NVIDIA's object");
    let status = json!({"status": {"version": "2.50.0", "agentStatus": "healthy",
        "lastUpdated": "2026-11-30T10:00:00Z"}});
    world
        .backends()
        .patch_status(BACKEND, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("NVIDIA's status");

    let _operator = world.operator();
    let status = world.wait_phase("Ready", None).await;
    assert_eq!(status["version"], "2.52.1", "the chart's version now");
    let adopted = world
        .backends()
        .get(BACKEND)
        .await
        .expect("the NVCFBackend");
    let spec = serde_json::to_value(&adopted.spec).expect("spec");
    assert_eq!(
        spec["overrides"]["clusterConfig"]["logLevel"], "debug",
        "{spec}"
    );
    assert_eq!(spec["webhookConfig"]["listenPort"], 8443, "{spec}");
    assert_eq!(
        spec["nvcaImageConfig"]["pullSecretName"], "regcred",
        "{spec}"
    );
    assert_eq!(spec["clusterConfig"]["clusterID"], "cluster-1", "{spec}");
    assert_eq!(
        adopted
            .finalizers()
            .iter()
            .filter(|f| *f == FINALIZER)
            .count(),
        1,
        "{:?}",
        adopted.finalizers()
    );
    Api::<Deployment>::namespaced(world.env.client.clone(), "nvca-system")
        .get("nvca")
        .await
        .expect("Deployment nvca");
    world.uninstall().await;
}

/// Names of the CRDs the operator installs (the chart ships NVCFBackend's).
const OPERATOR_CRDS: [&str; 4] = [
    "icmsrequests.nvca.nvcf.nvidia.io",
    "miniservices.nvca.nvcf.nvidia.io",
    "storagerequests.nvca.nvcf.nvidia.io",
    "nvsnapfunctionstates.nvsnap.nvcf.nvidia.io",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_installs_its_crds_owned_by_the_charts_and_puts_back_a_deleted_one() {
    let world = World::new("operator-crds").await;
    let _operator = world.operator();
    world.wait_phase("Ready", None).await;
    let crds: Api<CustomResourceDefinition> = Api::all(world.env.client.clone());
    let chart_crd = crds
        .get("nvcfbackends.nvcf.nvidia.io")
        .await
        .expect("the chart's CRD");
    for name in OPERATOR_CRDS {
        let crd = support::crds::established(&crds, name, WAIT).await;
        let owners = crd.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners.iter().any(|o| o.kind == "CustomResourceDefinition"
                && o.name == "nvcfbackends.nvcf.nvidia.io"
                && Some(&o.uid) == chart_crd.metadata.uid.as_ref()),
            "{name}: owners {owners:?}"
        );
        let managers: Vec<String> = crd
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| f.manager)
            .collect();
        assert!(
            managers.iter().any(|m| m == "nvca-operator"),
            "{name}: {managers:?}"
        );
    }

    // Deleted while the operator runs: back within its 30 s look, as a new object. Objects
    // of the kind left by other tests would hold the deletion: their finalizers go first.
    let requests: Api<ICMSRequest> = Api::all(world.env.client.clone());
    for request in requests
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let api: Api<ICMSRequest> = Api::namespaced(
            world.env.client.clone(),
            &request.namespace().unwrap_or_default(),
        );
        let _ = api
            .patch(
                &request.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    let old = crds.get(OPERATOR_CRDS[0]).await.expect("the CRD");
    crds.delete(OPERATOR_CRDS[0], &DeleteParams::default())
        .await
        .expect("delete the ICMSRequest CRD");
    let back = eventually(Duration::from_secs(60), "the CRD applied again", || async {
        let crd =
            support::crds::established(&crds, OPERATOR_CRDS[0], Duration::from_secs(60)).await;
        (crd.metadata.uid != old.metadata.uid).then_some(crd)
    })
    .await;
    assert!(
        back.metadata
            .owner_references
            .is_some_and(|o| !o.is_empty())
    );
}

/// `nvca-state doctor` on the cluster alone (no store): its report.
fn doctor(world: &World) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["doctor", "--store", "/nonexistent/nvca-store"])
        .args(["--operator-namespace", &world.ns.name, "--kubeconfig"])
        .arg(&world.env.endpoints.kubeconfig)
        .env_remove("NVCA_STORE")
        .output()
        .expect("run nvca-state doctor");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn doctors_fix_for_webhooks_without_their_service_is_what_the_operator_does() {
    let world = World::new("operator-doctor").await;
    let operator = world.operator();
    world.wait_phase("Ready", None).await;
    drop(operator);
    // Deleted while the operator is down: nothing puts it back.
    let services: Api<Service> = Api::namespaced(world.env.client.clone(), "nvca-system");
    services
        .delete("nvca", &DeleteParams::default())
        .await
        .expect("delete Service nvca");
    let finding =
        "FAIL  webhook configurations nvca: call Service nvca-system/nvca, which does not exist";
    let report = doctor(&world);
    assert!(report.contains(finding), "{report}");
    assert!(
        report.contains("at its next start (`kubectl -n <operator-namespace> rollout restart"),
        "{report}"
    );

    // The fix, as doctor words it: the operator starts again and finds the Service missing.
    let _operator = world.operator();
    eventually(WAIT, "Service nvca-system/nvca applied again", || async {
        services.get_opt("nvca").await.ok().flatten()
    })
    .await;
    let report = doctor(&world);
    assert!(!report.contains(finding), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_cleans_up_in_nvidias_order_then_releases_the_finalizer() {
    let world = World::new("operator-uninstall").await;
    let _operator = world.operator();
    world.wait_phase("Ready", None).await;

    world.uninstall().await;
    let notes = world.event_notes("CleaningUp").await;
    let expected: Vec<String> = CLEANUP
        .iter()
        .enumerate()
        .map(|(i, step)| format!("deleting {step} ({} of 7)", i + 1))
        .collect();
    assert_eq!(notes, expected, "CleaningUp Events");
    let released = world.event_notes("Released").await;
    assert_eq!(
        released,
        [format!("clean-up complete; removed finalizer {FINALIZER}")]
    );
    let copies: Api<Secret> = Api::all(world.env.client.clone());
    let left = copies
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=nvca-mirror"))
        .await
        .expect("list copies");
    assert!(left.items.is_empty(), "pull-secret copies left");
}

/// The chart's pre-delete hook as its own ServiceAccount: the full name this test's
/// release gets (cluster-scoped names must not collide with other tests'), its hook
/// objects applied, and a kubeconfig acting as the hook.
async fn pre_delete_hook(world: &World) -> (Vec<serde_json::Value>, std::path::PathBuf) {
    let fullname = format!(
        "nvca-operator-{}",
        &world.ns.name[world.ns.name.len() - 8..]
    );
    let objects = support::hook::render(&world.ns.name, &fullname);
    support::hook::apply_rbac(&world.env.client, &objects).await;
    let kubeconfig = support::hook::impersonating_kubeconfig(
        &world.env.endpoints.kubeconfig,
        &world.ns.name,
        &format!("{fullname}-pre-delete-cleanup"),
        world.store.path(),
    );
    (objects, kubeconfig)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_pre_delete_hook_uninstalls_through_the_running_operator() {
    let world = World::new("operator-hook").await;
    let _operator = world.operator();
    world.wait_phase("Ready", None).await;

    let (objects, kubeconfig) = pre_delete_hook(&world).await;
    let (ok, log) = support::hook::run_job(&objects, &kubeconfig, &[]);
    assert!(ok, "the hook failed:\n{log}");
    assert!(
        log.contains("deleted; the operator uninstalls the agent"),
        "{log}"
    );
    assert!(log.contains("nothing of NVCA's agent is left"), "{log}");
    world.wait_uninstalled().await;
    // The operator uninstalled it, in its order: nothing was left for force.
    let released = world.event_notes("Released").await;
    assert_eq!(
        released,
        [format!("clean-up complete; removed finalizer {FINALIZER}")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pre_delete_hook_removes_what_is_left_when_no_operator_uninstalls() {
    let world = World::new("operator-hook-alone").await;
    let mut operator = world.operator();
    world.wait_phase("Ready", None).await;
    operator.kill();

    let (objects, kubeconfig) = pre_delete_hook(&world).await;
    let (ok, log) = support::hook::run_job(&objects, &kubeconfig, &["--drain-timeout", "3s"]);
    assert!(ok, "the hook failed:\n{log}");
    assert!(
        log.contains("the operator did not finish uninstalling in time"),
        "{log}"
    );
    assert!(log.contains("removed finalizers"), "{log}");
    world.wait_uninstalled().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_at_every_cleanup_step_resumes_at_that_step() {
    let world = World::new("operator-kill").await;
    let mut operator = world.operator();
    world.wait_phase("Ready", None).await;
    let namespaces: Api<Namespace> = Api::all(world.env.client.clone());

    // Every write of the status is a watch event: each step is seen the moment the
    // operator starts it (the status names a step before its work runs).
    let watch = kube::runtime::watcher(
        world.backends(),
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={BACKEND}")),
    );
    let mut watch = std::pin::pin!(watch);
    world
        .backends()
        .delete(BACKEND, &DeleteParams::background())
        .await
        .expect("delete the NVCFBackend");

    let mut seen: Vec<String> = Vec::new();
    let mut killed_at: Vec<String> = Vec::new();
    let mut mid_step: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("uninstall unfinished; steps seen {seen:?}"))
            .expect("the watch goes on")
            .expect("watch event");
        let backend = match event {
            kube::runtime::watcher::Event::Apply(b)
            | kube::runtime::watcher::Event::InitApply(b) => b,
            kube::runtime::watcher::Event::Delete(_) => break,
            _ => continue,
        };
        let status = serde_json::to_value(&backend.status).expect("status as JSON");
        let step = match status["phase"].as_str() {
            Some("CleaningUp") => status["step"].as_str().unwrap_or_default().to_string(),
            Some("Releasing") => "Releasing".to_string(),
            _ => continue,
        };
        if seen.last() == Some(&step) {
            continue;
        }
        seen.push(step.clone());
        // SIGKILL at the first sight of the step, then a new operator on the same store.
        operator.kill();
        killed_at.push(step.clone());
        let held = match step.as_str() {
            "SystemNamespace" => Some("nvca-system"),
            "RequestsNamespace" => Some("nvcf-backend"),
            _ => None,
        };
        if let Some(name) = held
            && namespaces
                .get_opt(name)
                .await
                .expect("read namespace")
                .is_some()
        {
            mid_step.push(step.clone());
        }
        operator = world.operator_as(&[], "store", &format!("operator-{}.log", killed_at.len()));
    }
    world.wait_uninstalled().await;

    // Every step was seen, once each and in order: no restart went back to an earlier
    // step or skipped one.
    let mut expected: Vec<String> = CLEANUP.iter().map(|s| s.to_string()).collect();
    expected.push("Releasing".to_string());
    assert_eq!(seen, expected, "steps as the status showed them");
    assert_eq!(killed_at, expected, "a SIGKILL at each step");
    // The namespace steps wait for Kubernetes: those kills landed while the step worked.
    assert_eq!(mid_step, ["SystemNamespace", "RequestsNamespace"]);
    let released = world.event_notes("Released").await;
    assert_eq!(
        released,
        [format!("clean-up complete; removed finalizer {FINALIZER}")]
    );
    // An Event may be lost to a kill between the status write and its publication; a
    // restart never announces a step a second time.
    let notes = world.event_notes("CleaningUp").await;
    for step in CLEANUP {
        let count = notes
            .iter()
            .filter(|n| n.contains(&format!("deleting {step} ")))
            .count();
        assert!(count <= 1, "{step} announced {count} times: {notes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_drains_while_function_deployments_remain_then_cleans_up() {
    let world = World::new("operator-drain").await;
    let _operator = world.operator();
    world.wait_phase("Ready", None).await;
    let client = world.env.client.clone();

    // A function deployment, as the agent records it.
    let requests: Api<nvca::kube::crd::ICMSRequest> =
        Api::namespaced(client.clone(), "nvcf-backend");
    let request = serde_json::from_value(json!({
        "apiVersion": "nvca.nvcf.nvidia.io/v2beta1",
        "kind": "ICMSRequest",
        "metadata": {"name": "sr-r1", "namespace": "nvcf-backend"},
        "spec": {"requestId": "r1", "ncaId": "nca-test", "action": "FUNCTION_CREATE"}
    }))
    .expect("an ICMSRequest");
    requests
        .create(&PostParams::default(), &request)
        .await
        .expect("create ICMSRequest sr-r1");

    world
        .backends()
        .delete(BACKEND, &DeleteParams::background())
        .await
        .expect("delete the NVCFBackend");
    let status = world.wait_phase("Draining", None).await;
    let deleting = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Deleting").cloned())
        .expect("condition Deleting");
    assert_eq!(deleting["reason"], "FunctionDeploymentsRemain");
    let message = deleting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sr-r1") && message.contains("nvca-state force-cleanup"),
        "{message}"
    );

    // The agent is told to drain, as NVIDIA's clean-up tells it.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "nvca-system");
    let file = eventually(WAIT, "agent-config in maintenance", || async {
        let cm = configmaps.get_opt("agent-config").await.ok()??;
        let file = AgentConfigFile::parse(cm.data?.get("config.yaml")?).ok()?;
        file.agent.maintenance_mode.is_some().then_some(file)
    })
    .await;
    // NVIDIA's agent accepts only its mode names here.
    assert_eq!(
        file.agent.maintenance_mode.as_deref(),
        Some("CordonAndDrain")
    );
    assert!(
        file.agent
            .feature_flags
            .iter()
            .any(|f| f == "CordonAndDrainMaintenance")
    );
    // And restarted into it: an agent reads its config at start (NVIDIA's only then).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nvca-system");
    eventually(WAIT, "the agent's pod rolls into maintenance", || async {
        let deployment = deployments.get_opt("nvca").await.ok()??;
        let digest = deployment
            .spec
            .template
            .metadata?
            .annotations?
            .remove("nvca.nvcf.nvidia.io/config-digest")?;
        let text = configmaps
            .get_opt("agent-config")
            .await
            .ok()??
            .data?
            .remove("config.yaml")?;
        (digest == nvca::kube::resources::deployment::digest(&text)).then_some(())
    })
    .await;
    assert!(
        world
            .event_notes("FunctionDeploymentsRemain")
            .await
            .iter()
            .any(|n| n.contains("sr-r1")),
        "no Event names the remaining deployment"
    );
    // Nothing was deleted while draining.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt("nvca-system")
            .await
            .expect("read")
            .is_some()
    );

    // NVCF undeploys: the request goes, the clean-up runs to the end.
    requests
        .delete("sr-r1", &DeleteParams::background())
        .await
        .expect("delete sr-r1");
    world.wait_uninstalled().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_registration_reaches_the_agent_without_a_restart() {
    let world = World::new("operator-reregister").await;
    let _operator = world.operator();
    world.wait_phase("Ready", None).await;
    let client = world.env.client.clone();
    let generation = world
        .backends()
        .get(BACKEND)
        .await
        .expect("the NVCFBackend")
        .metadata
        .generation;

    // What `nvca-self-managed bootstrap` writes after a manual re-registration.
    let configmaps: Api<ConfigMap> = world.ns.api();
    let patch = json!({"data": {"clusterId": "cluster-2", "clusterGroupId": "group-2"}});
    configmaps
        .patch(
            "nvca-cluster-registration",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("update nvca-cluster-registration");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nvca-system");
    eventually(
        WAIT,
        "the agent's token audience follows the new cluster ID",
        || async {
            let deployment = deployments.get_opt("nvca").await.ok()??;
            let volumes = deployment.spec.template.spec?.volumes?;
            let token = volumes.into_iter().find(|v| v.name == "nvca-token")?;
            let audience = token
                .projected?
                .sources?
                .into_iter()
                .next()?
                .service_account_token?
                .audience?;
            (audience == "nvcf-icms:cluster-2").then_some(())
        },
    )
    .await;
    let agent_config = Api::<ConfigMap>::namespaced(client.clone(), "nvca-system")
        .get("agent-config")
        .await
        .expect("agent-config");
    let file = AgentConfigFile::parse(&agent_config.data.expect("data")["config.yaml"])
        .expect("config.yaml");
    assert_eq!(
        (file.cluster.id.as_str(), file.cluster.group_id.as_str()),
        ("cluster-2", "group-2")
    );
    let status = world.wait_phase("Ready", None).await;
    let backend = world
        .backends()
        .get(BACKEND)
        .await
        .expect("the NVCFBackend");
    assert!(backend.metadata.generation > generation, "the spec changed");
    assert_eq!(
        status["observedGeneration"],
        backend.metadata.generation.expect("generation")
    );

    world.uninstall().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_agent_config_merge_is_laid_over_and_a_change_rolls_the_agent() {
    let world = World::new("operator-merge").await;
    let client = world.env.client.clone();
    // Installed with the chart's merge, as NVIDIA's default values have it.
    let merge = |text: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some("agent-config-merge".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "config.yaml".to_string(),
            text.to_string(),
        )])),
        ..ConfigMap::default()
    };
    let configmaps: Api<ConfigMap> = world.ns.api();
    configmaps
        .create(
            &PostParams::default(),
            &merge("cluster:\n  validationPolicy:\n    name: Unrestricted\n"),
        )
        .await
        .expect("create agent-config-merge");
    let _operator = world.operator();
    world.wait_phase("Ready", None).await;
    let agent_configs: Api<ConfigMap> = Api::namespaced(client.clone(), "nvca-system");
    let read = || async {
        let cm = agent_configs
            .get("agent-config")
            .await
            .expect("agent-config");
        AgentConfigFile::parse(&cm.data.expect("data")["config.yaml"]).expect("config.yaml")
    };
    let file = read().await;
    assert_eq!(
        file.cluster.other["validationPolicy"]["name"],
        "Unrestricted"
    );
    assert_eq!(file.cluster.id, "cluster-1");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nvca-system");
    let digest = || async {
        let deployment = deployments.get("nvca").await.expect("Deployment nvca");
        deployment
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|mut a| a.remove("nvca.nvcf.nvidia.io/config-digest"))
    };
    let before = digest().await.expect("config digest");

    // `helm upgrade` with another merge: the agent's config follows and its pod rolls.
    configmaps
        .replace(
            "agent-config-merge",
            &PostParams::default(),
            &merge("agent:\n  logLevel: debug\n"),
        )
        .await
        .expect("update agent-config-merge");
    eventually(WAIT, "agent-config carries the new merge", || async {
        let file = read().await;
        (file.agent.log_level == "debug").then_some(())
    })
    .await;
    eventually(WAIT, "the agent's pod template rolls", || async {
        digest().await.filter(|after| *after != before).map(|_| ())
    })
    .await;
    world.wait_phase("Ready", None).await;
    world.uninstall().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_changed_while_no_operator_ran_is_applied_again_at_start() {
    // As after an operator upgrade whose build writes the agent's config differently:
    // the next operator finds agent-config other than it would write it, and applies it.
    let world = World::new("operator-restart-drift").await;
    let mut operator = world.operator();
    world.wait_phase("Ready", None).await;
    operator.kill();
    let configmaps: Api<ConfigMap> = Api::namespaced(world.env.client.clone(), "nvca-system");
    let patch = json!({"data": {"config.yaml": "agent:\n  icmsurl: http://elsewhere:8080\n"}});
    configmaps
        .patch(
            "agent-config",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("edit agent-config");

    let _operator = world.operator_as(&[], "store", "operator-2.log");
    eventually(WAIT, "agent-config written again", || async {
        let cm = configmaps.get_opt("agent-config").await.ok()??;
        let file = AgentConfigFile::parse(cm.data?.get("config.yaml")?).ok()?;
        (file.cluster.id == "cluster-1" && !file.agent.icms_url.contains("elsewhere")).then_some(())
    })
    .await;
    let notes = world.event_notes("DriftDetected").await;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("ConfigMap nvca-system/agent-config was modified")),
        "{notes:?}"
    );
    world.wait_phase("Ready", None).await;
    world.uninstall().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_another_operator_wrote_is_replaced_not_left_failed() {
    // NVIDIA's operator's Deployment nvca has volumes of the names this one mounts, of
    // other kinds: a server-side apply over it is refused (422, two volume types).
    let world = World::new("operator-adopt").await;
    let client = world.env.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nvca-system"}})).expect("ns"),
        )
        .await
        .expect("create nvca-system");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "nvca-system");
    let labels = json!({"app.kubernetes.io/instance": "nvca", "app.kubernetes.io/managed-by": "nvca-operator", "app.kubernetes.io/name": "nvca"});
    let theirs: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "nvca", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "agent", "image": "example.invalid/nvca:3.0.4",
                        "args": ["/usr/bin/nvca", "--config", "/var/run/nvca/config.yaml"]}],
                    "volumes": [{"name": "nvca-token", "emptyDir": {}}],
                }
            }
        }
    }))
    .expect("a Deployment");
    deployments
        .create(&PostParams::default(), &theirs)
        .await
        .expect("NVIDIA's operator's Deployment");

    let _operator = world.operator();
    world.wait_phase("Ready", None).await;
    let ours = deployments.get("nvca").await.expect("Deployment nvca");
    let token = ours
        .spec
        .template
        .spec
        .expect("pod spec")
        .volumes
        .expect("volumes")
        .into_iter()
        .find(|v| v.name == "nvca-token")
        .expect("the token volume");
    assert!(
        token.projected.is_some() && token.empty_dir.is_none(),
        "{token:?}"
    );
    world.uninstall().await;
}

#[test]
fn an_install_for_another_cluster_source_stops_the_operator_naming_the_value() {
    let output = Command::new(env!("CARGO_BIN_EXE_nvca-operator"))
        .arg("run")
        .env("NVCA_CLUSTER_SOURCE", "ngc-managed")
        .output()
        .expect("run nvca-operator");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "cluster source \"ngc-managed\"",
        "nvca runs self-managed clusters only",
        "set ngcConfig.clusterSource: self-managed",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}
