//! Crash safety of function deployments with real agent processes (issue 7): the
//! `nvca` (agent) binary, as a child process on the local control plane with sis-sim and
//! the testenv's NATS, is killed by its own crash point (`NVCA_CRASH_AT`,
//! `src/driver/crash_point.rs`) at every state the function machine persists on the way
//! from a creation message to `running` and from an undeploy to `terminated`, and after
//! each effect that talks to Kubernetes, SIS or NATS. It must die by SIGKILL, and a
//! restart on the same store without the crash point must give what an uncrashed agent
//! gives:
//!
//! - one set of objects: pods `0-sr-<id>` and `1-sr-<id>`, the ICMSRequest, its Secret
//!   (and no ConfigMap, no Service), and after the undeploy none of them;
//! - SIS heard each instance `starting`, `running`, `shutting-down`, `terminated`, each
//!   once, and had the request acknowledged (`PUT /v1/sirs/{id}`) for two instances;
//! - both JetStream consumers of the cluster end with nothing waiting and nothing
//!   delivered but un-acked;
//! - the ICMSRequest showed `RequestCompleted` while the instances ran, and the machine
//!   ends `terminated` with nothing pending.
//!
//! Every case has its own sis-sim cluster, agent config and store; the cases share one
//! namespace (the agent's system and requests namespace) and run a few at a time. The
//! agent writes instance-type labels on the shared GPU nodes, so the test holds the
//! cluster-wide lock. Needs `scripts/testenv up`.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::Api;
use kube::api::ListParams;
use nvca::kube::crd::ICMSRequest;
use nvca::machines::function::STATE_NAMES;
use nvca::sim::SimHandle;
use nvca::sim::admin::{AdminClient, DeploymentSpec, FunctionSpec, TokenRequest};
use nvca::sim::state::RequestRecord;
use nvca::sis::queue::QueueStream;
use nvca::sis::types::InstanceState;
use nvca::sis::{SisClient, SisConfig, TokenSource};
use serde_json::Value;
use support::child::Process;
use support::testenv::{TestEnv, TestNamespace, testenv};

const NCA: &str = "nca-functions-crash";
const H100: &str = "ON-PREM.GPU.H100";
/// Each wait of a case; generous, the cases run side by side on two cores.
const WAIT: Duration = Duration::from_secs(90);
/// Cases at a time.
const PARALLEL: usize = 3;

/// When a case's crash point is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// From the creation message to `running`.
    Deploy,
    /// From the undeploy to `terminated` (the deployment ran under an agent without it).
    Terminate,
}

/// Every state the machine persists in a deployment and its termination, and `Why` for
/// those it does not.
const DEPLOY_STATES: [&str; 4] = ["received", "acknowledged", "instances_starting", "running"];
const TERMINATE_STATES: [&str; 2] = ["terminating", "terminated"];
/// States no step of this flow persists: a function machine is created together with its
/// first step (`Driver::create_with`), so `idle` is never written; `failed` needs an
/// instance to fail.
const NOT_IN_THIS_FLOW: [&str; 2] = ["idle", "failed"];

/// The effects that talk to Kubernetes, SIS or NATS, with the arrival to die at: the n-th
/// run of that effect in the phase (`ProjectRequest@4` writes `RequestCompleted`,
/// `ReportInstance@4` is the last `running` report of a deployment, `@3` the first
/// `terminated` of a termination). `RecordEvent` is not run in this flow.
const DEPLOY_EFFECTS: [&str; 9] = [
    "RecordRequest",
    "ProjectRequest",
    "ProjectRequest@4",
    "AcknowledgeRequest",
    "AckMessage",
    "CreateInstance",
    "CreateInstance@2",
    "ReportInstance",
    "ReportInstance@4",
];
const TERMINATE_EFFECTS: [&str; 5] = [
    "ReportInstance",
    "DeleteInstance",
    "DeleteInstance@2",
    "ReportInstance@3",
    "RemoveRequest",
];

#[derive(Clone)]
struct Case {
    point: String,
    phase: Phase,
}

impl Case {
    fn name(&self) -> String {
        let phase = match self.phase {
            Phase::Deploy => "deployment",
            Phase::Terminate => "termination",
        };
        format!("{phase} {}", self.point)
    }
}

fn cases() -> Vec<Case> {
    let states = |phase, names: &[&str]| -> Vec<Case> {
        names
            .iter()
            .map(|name| Case {
                point: format!("function:persisted:{name}"),
                phase,
            })
            .collect()
    };
    let effects = |phase, names: &[&str]| -> Vec<Case> {
        names
            .iter()
            .map(|name| Case {
                point: format!("function:effect:{name}"),
                phase,
            })
            .collect()
    };
    [
        states(Phase::Deploy, &DEPLOY_STATES),
        states(Phase::Terminate, &TERMINATE_STATES),
        effects(Phase::Deploy, &DEPLOY_EFFECTS),
        effects(Phase::Terminate, &TERMINATE_EFFECTS),
    ]
    .concat()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

fn http() -> reqwest::Client {
    nvca::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

/// Polls `probe` every 250 ms until it returns `Some`; an error naming `what` after
/// `WAIT` (a case fails without stopping the others).
async fn until<T, F, Fut>(what: &str, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {WAIT:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// What every case shares: the control plane, one namespace, one sis-sim and its function.
struct Harness {
    env: TestEnv,
    sim: Option<SimHandle>,
    admin: AdminClient,
    management: SisClient,
    function_id: String,
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl Harness {
    async fn start() -> Harness {
        let lock = support::lock::cluster_wide_async().await;
        let env = testenv().await;
        support::crds::from_operator(&env).await;
        let (sim, admin) = support::sim::start_on_nats(&env.endpoints.nats_url).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let token_file = dir.path().join("management-token");
        let token = admin.issue_token(None).await.expect("a token");
        std::fs::write(&token_file, &token).expect("token file");
        let management = SisClient::new(
            SisConfig::new(sim.base_url()),
            TokenSource::projected(&token_file),
        )
        .expect("SIS client");
        let (function_id, _) = admin
            .create_function(&FunctionSpec {
                nca_id: NCA.into(),
                name: "echo".into(),
                container_image: Some("nvcr.io/test/echo:1".into()),
                helm_chart: None,
                function_type: None,
            })
            .await
            .expect("sis-sim creates the function");
        Harness {
            env,
            sim: Some(sim),
            admin,
            management,
            function_id,
            dir,
            _lock: lock,
        }
    }

    /// A cluster of its own at sis-sim, and an agent config and store for it.
    async fn cluster(&self, label: &str) -> Result<Cluster, String> {
        // Its own namespace: an agent owns its requests namespace (it rebuilds every
        // ICMSRequest there it has no machine for).
        let ns = self.env.namespace("fn-crash").await;
        let name = format!("crash-{:08x}", rand::random::<u32>());
        let ids = self
            .management
            .create_cluster(
                NCA,
                &support::cluster::on_prem_cluster(&name, NCA, "us-west-1"),
            )
            .await
            .map_err(|error| format!("sis-sim cannot create a cluster: {error}"))?;
        let dir = self.dir.path().join(label.replace([' ', ':', '@'], "-"));
        std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
        let token_file = dir.join("token");
        let token = self
            .admin
            .issue_token_with(TokenRequest {
                authorities: None,
                cluster_id: Some(ids.cluster_id.clone()),
            })
            .await
            .map_err(|error| format!("sis-sim issues no agent token: {error}"))?;
        std::fs::write(&token_file, token).map_err(|error| error.to_string())?;
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join("config.yaml");
        let text = support::agent_config::AgentConfig {
            cluster_id: &ids.cluster_id,
            group_id: &ids.cluster_group_id,
            name: &name,
            nca: NCA,
            sis_url: &self
                .sim
                .as_ref()
                .map(SimHandle::base_url)
                .unwrap_or_default(),
            nats_url: &self.env.endpoints.nats_url,
            feature_flags: &["DynamicGPUDiscovery", "SelfHosted"],
            token_file: &token_file,
            health: &format!("127.0.0.1:{}", free_port()),
            admin_addr: &admin_addr,
            namespace: &ns.name,
        }
        .yaml();
        std::fs::write(&config, text).map_err(|error| error.to_string())?;
        Ok(Cluster {
            ns,
            id: ids.cluster_id,
            store: dir.join("store"),
            dir: dir.clone(),
            starts: std::cell::Cell::new(0),
            config,
            admin_addr,
            kubeconfig: self.env.endpoints.kubeconfig.clone(),
            nats_url: self.env.endpoints.nats_url.clone(),
        })
    }

    /// Deploy two single-GPU instances on `cluster`; (deployment id, request id).
    async fn deploy(&self, cluster: &Cluster) -> Result<(String, String), String> {
        let (deployment, published) = self
            .admin
            .deploy(&DeploymentSpec {
                function_id: self.function_id.clone(),
                cluster_id: cluster.id.clone(),
                gpu: "H100".into(),
                instance_type: H100.into(),
                instance_type_name: Some(format!("{H100}_1x")),
                instance_count: 2,
                gpu_count: Some(1),
                action: None,
            })
            .await
            .map_err(|error| format!("sis-sim cannot deploy: {error}"))?;
        let request = published
            .first()
            .ok_or("sis-sim published nothing")?
            .request_id
            .clone();
        Ok((deployment, request))
    }

    async fn request(&self, request_id: &str) -> Option<RequestRecord> {
        self.admin
            .state()
            .await
            .ok()?
            .requests
            .get(request_id)
            .cloned()
    }

    /// What SIS heard of each instance, in order.
    async fn heard(&self, request_id: &str) -> Vec<(String, Vec<InstanceState>)> {
        self.request(request_id)
            .await
            .map(|record| {
                record
                    .instances
                    .into_iter()
                    .map(|(id, instance)| (id, instance.history))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn pods(&self, cluster: &Cluster, request_id: &str) -> Option<Vec<Pod>> {
        let pods: Api<Pod> = cluster.ns.api();
        let selector = format!("icms-request-id={request_id}");
        Some(
            pods.list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items,
        )
    }

    /// Names of the request's ICMSRequest, Secret, ConfigMap and Service that exist (only
    /// the first two should).
    async fn objects(&self, cluster: &Cluster, request_id: &str) -> Option<Vec<&'static str>> {
        let ns = &cluster.ns;
        let name = format!("sr-{request_id}");
        let mut found = Vec::new();
        if ns.api::<ICMSRequest>().get_opt(&name).await.ok()?.is_some() {
            found.push("ICMSRequest");
        }
        if ns.api::<Secret>().get_opt(&name).await.ok()?.is_some() {
            found.push("Secret");
        }
        if ns.api::<ConfigMap>().get_opt(&name).await.ok()?.is_some() {
            found.push("ConfigMap");
        }
        if ns.api::<Service>().get_opt(&name).await.ok()?.is_some() {
            found.push("Service");
        }
        Some(found)
    }

    async fn projected(&self, cluster: &Cluster, request_id: &str) -> Option<String> {
        let request = cluster
            .ns
            .api::<ICMSRequest>()
            .get_opt(&format!("sr-{request_id}"))
            .await
            .ok()??;
        Some(request.status?.request_status)
    }

    /// Both instances ran: one set of objects, SIS heard `starting` then `running` of each,
    /// had the ack, the message is acked, the ICMSRequest says completed.
    async fn running(&self, cluster: &Cluster, request_id: &str) -> Result<(), String> {
        until("SIS hears both instances running", || async {
            let heard = self.heard(request_id).await;
            (heard.len() == 2
                && heard
                    .iter()
                    .all(|(_, states)| states.last() == Some(&InstanceState::Running)))
            .then_some(())
        })
        .await?;
        until("the ICMSRequest shows RequestCompleted", || async {
            (self.projected(cluster, request_id).await.as_deref() == Some("RequestCompleted"))
                .then_some(())
        })
        .await?;
        until("the machine running with nothing pending", || async {
            let machine = cluster.machine(request_id).await?;
            (machine["state"] == "running"
                && machine["pending"].as_array().is_some_and(Vec::is_empty))
            .then_some(())
        })
        .await?;
        until("the creation message acked", || async {
            (cluster.backlog(QueueStream::Creation).await == Some((0, 0))).then_some(())
        })
        .await?;
        let pods = self
            .pods(cluster, request_id)
            .await
            .ok_or("cannot list pods")?;
        let mut names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        names.sort();
        check(
            names == [format!("0-sr-{request_id}"), format!("1-sr-{request_id}")],
            || format!("pods {names:?}, not one per instance"),
        )?;
        let objects = self
            .objects(cluster, request_id)
            .await
            .ok_or("cannot read objects")?;
        check(objects == ["ICMSRequest", "Secret"], || {
            format!("objects of the request: {objects:?}")
        })?;
        for (instance, states) in self.heard(request_id).await {
            check(
                states == [InstanceState::Starting, InstanceState::Running],
                || format!("SIS heard {instance}: {states:?}"),
            )?;
        }
        let record = self
            .request(request_id)
            .await
            .ok_or("SIS lost the request")?;
        let acked: Vec<Option<u32>> = record.batches.iter().map(|b| b.acked_instances).collect();
        check(acked == [Some(2)], || {
            format!("SIS's acknowledgements by batch: {acked:?}")
        })
    }

    /// The undeploy finished: nothing left, SIS heard each state once, both queues empty.
    async fn terminated(&self, cluster: &Cluster, request_id: &str) -> Result<(), String> {
        until("pods and objects of the request gone", || async {
            let pods = self.pods(cluster, request_id).await?;
            let objects = self.objects(cluster, request_id).await?;
            (pods.is_empty() && objects.is_empty()).then_some(())
        })
        .await?;
        until("SIS hears both instances terminated", || async {
            let heard = self.heard(request_id).await;
            heard
                .iter()
                .all(|(_, states)| states.last() == Some(&InstanceState::Terminated))
                .then_some(())
        })
        .await?;
        until("the machine terminated with nothing pending", || async {
            let machine = cluster.machine(request_id).await?;
            (machine["state"] == "terminated"
                && machine["pending"].as_array().is_some_and(Vec::is_empty))
            .then_some(())
        })
        .await?;
        for stream in QueueStream::ALL {
            until(&format!("{} acked", stream.name()), || async {
                (cluster.backlog(stream).await == Some((0, 0))).then_some(())
            })
            .await?;
        }
        let heard = self.heard(request_id).await;
        check(heard.len() == 2, || format!("SIS heard of {heard:?}"))?;
        for (instance, states) in heard {
            check(
                states
                    == [
                        InstanceState::Starting,
                        InstanceState::Running,
                        InstanceState::ShuttingDown,
                        InstanceState::Terminated,
                    ],
                || format!("SIS heard {instance}: {states:?}"),
            )?;
        }
        Ok(())
    }
}

/// One case's cluster: its agent config, store and log.
struct Cluster {
    ns: TestNamespace,
    id: String,
    config: PathBuf,
    store: PathBuf,
    /// Holds `agent-<n>.log` of the n-th agent started on it.
    dir: PathBuf,
    starts: std::cell::Cell<u32>,
    admin_addr: String,
    kubeconfig: PathBuf,
    nats_url: String,
}

impl Cluster {
    /// Start the agent on this cluster's store, with `crash_at` as its crash point.
    async fn start_agent(&self, crash_at: Option<&str>) -> Result<Process, String> {
        let path = |p: &Path| p.display().to_string();
        let (config, store, kubeconfig) = (
            path(&self.config),
            path(&self.store),
            path(&self.kubeconfig),
        );
        let args = [
            "--config",
            &config,
            "--store",
            &store,
            "--kubeconfig",
            &kubeconfig,
            "--inventory-quiet",
            "200ms",
            "--inventory-max-delay",
            "1s",
            "--sis-backoff-initial",
            "200ms",
            "--sis-backoff-max",
            "1s",
            "--sis-timeout",
            "5s",
            "--nats-auth",
            "none",
        ];
        let mut envs = vec![("RUST_LOG", "info,nvca=debug")];
        if let Some(point) = crash_at {
            envs.push((nvca::driver::crash_point::VARIABLE, point));
        }
        self.starts.set(self.starts.get() + 1);
        let log_path = self.log();
        let _ = std::fs::write(&log_path, format!("--- crash point {crash_at:?}\n"));
        let mut agent = Process::start(env!("CARGO_BIN_EXE_nvca"), &args, &envs, &log_path);
        // Deploy only once the agent pulls: its consumers exist then.
        until("the agent's function deployments running", || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let exited = agent.child.try_wait().ok().flatten();
            async move {
                match exited {
                    Some(status) => Some(Err(format!(
                        "the agent exited at start ({status}):\n{}",
                        tail(&log)
                    ))),
                    None => log
                        .contains("function deployments running")
                        .then_some(Ok(())),
                }
            }
        })
        .await??;
        Ok(agent)
    }

    /// The log of the agent started last.
    fn log(&self) -> PathBuf {
        self.dir.join(format!("agent-{}.log", self.starts.get()))
    }

    /// Waits for the agent to die by its own SIGKILL at `point`.
    async fn killed(&self, agent: &mut Process, point: &str) -> Result<(), String> {
        let status = until(&format!("the agent to die at {point}"), || {
            let exited = agent.child.try_wait().ok().flatten();
            async move { exited }
        })
        .await
        .map_err(|error| format!("{error}; log:\n{}", agent.log_tail()))?;
        check(status.signal() == Some(libc::SIGKILL), || {
            format!(
                "the agent ended by {status}, not SIGKILL; log:\n{}",
                agent.log_tail()
            )
        })?;
        let log = agent.log_text();
        check(log.contains("crash point reached"), || {
            format!(
                "the agent was killed, but not at its crash point; log:\n{}",
                tail(&log)
            )
        })
    }

    /// SIGTERM, and a clean exit.
    async fn stop(&self, agent: &mut Process) -> Result<(), String> {
        let pid = agent.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|error| error.to_string())?;
        let status = until("the agent to stop after SIGTERM", || {
            let exited = agent.child.try_wait().ok().flatten();
            async move { exited }
        })
        .await?;
        check(status.success(), || {
            format!("the agent stopped with {status}")
        })
    }

    /// The function machine `request_id` as the agent's admin endpoint shows it.
    async fn machine(&self, request_id: &str) -> Option<Value> {
        let snapshot: Value = http()
            .get(format!("http://{}/machines?kind=function", self.admin_addr))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        snapshot["machines"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == request_id)
            .cloned()
    }

    /// (delivered but un-acked, waiting) on this cluster's consumer of `stream`.
    async fn backlog(&self, stream: QueueStream) -> Option<(usize, u64)> {
        let client = async_nats::connect(&self.nats_url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream(stream.name())
            .await
            .ok()?
            .get_consumer(&stream.durable(&self.id))
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        Some((info.num_ack_pending, info.num_pending))
    }

    async fn remove_consumers(&self) {
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let js = async_nats::jetstream::new(client);
            for stream in QueueStream::ALL {
                if let Ok(s) = js.get_stream(stream.name()).await {
                    let _ = s.delete_consumer(&stream.durable(&self.id)).await;
                }
            }
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// One case: crash at `case.point` in its phase, restart without it, check everything.
async fn run_case(harness: &Harness, case: &Case) -> Result<(), String> {
    let cluster = harness.cluster(&case.name()).await?;
    let outcome = crash_and_resume(harness, &cluster, case).await;
    cluster.remove_consumers().await;
    let log_path = cluster.log();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    cluster.ns.delete().await;
    outcome.map_err(|error| {
        format!(
            "{error}\nagent log ({}):\n{}",
            log_path.display(),
            tail(&log)
        )
    })
}

async fn crash_and_resume(harness: &Harness, cluster: &Cluster, case: &Case) -> Result<(), String> {
    let point = case.point.as_str();
    let (deployment, request_id, mut agent) = match case.phase {
        Phase::Deploy => {
            let mut agent = cluster.start_agent(Some(point)).await?;
            let (deployment, request_id) = harness.deploy(cluster).await?;
            cluster.killed(&mut agent, point).await?;
            let agent = cluster.start_agent(None).await?;
            harness.running(cluster, &request_id).await?;
            (deployment, request_id, agent)
        }
        Phase::Terminate => {
            let mut agent = cluster.start_agent(None).await?;
            let (deployment, request_id) = harness.deploy(cluster).await?;
            harness.running(cluster, &request_id).await?;
            cluster.stop(&mut agent).await?;
            let mut agent = cluster.start_agent(Some(point)).await?;
            harness
                .admin
                .undeploy(&deployment)
                .await
                .map_err(|error| format!("sis-sim cannot undeploy: {error}"))?;
            cluster.killed(&mut agent, point).await?;
            (deployment, request_id, cluster.start_agent(None).await?)
        }
    };
    if case.phase == Phase::Deploy {
        harness
            .admin
            .undeploy(&deployment)
            .await
            .map_err(|error| format!("sis-sim cannot undeploy: {error}"))?;
    }
    harness.terminated(cluster, &request_id).await?;
    cluster.stop(&mut agent).await?;
    // A status update that ran before the kill ran again at the restart and was looked up
    // in SIS's list instead of being sent twice.
    let log = agent.log_text();
    check(
        !point.contains(":ReportInstance") || log.contains("status update not sent again"),
        || "the re-run status update was not looked up at SIS".to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_at_every_step_of_a_deployment_and_its_termination_converges() {
    let reachable: Vec<&str> = DEPLOY_STATES
        .iter()
        .chain(&TERMINATE_STATES)
        .chain(&NOT_IN_THIS_FLOW)
        .copied()
        .collect();
    for state in STATE_NAMES {
        assert!(
            reachable.contains(state),
            "state {state} of the function machine is neither crash-tested nor said to be out of this flow"
        );
    }
    let harness = Harness::start().await;
    let started = Instant::now();
    // NVCA_CRASH_CASES=<substring>[,…] runs only the matching cases (when debugging one).
    let only = std::env::var("NVCA_CRASH_CASES").unwrap_or_default();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|case| only.is_empty() || only.split(',').any(|part| case.point.contains(part)))
        .collect();
    let results: Vec<(String, Result<(), String>, Duration)> =
        futures_util::stream::iter(cases.iter())
            .map(|case| {
                let harness = &harness;
                async move {
                    let began = Instant::now();
                    let outcome = run_case(harness, case).await;
                    (case.name(), outcome, began.elapsed())
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
    let mut failed = Vec::new();
    for (name, outcome, took) in &results {
        match outcome {
            Ok(()) => println!("crash at {name} ... ok ({:.1}s)", took.as_secs_f64()),
            Err(error) => {
                println!("crash at {name} ... FAILED ({:.1}s)", took.as_secs_f64());
                failed.push(format!("{name}: {error}"));
            }
        }
    }
    println!(
        "{} cases, {} failed, in {:.0}s",
        results.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(sim) = harness.sim {
        sim.stop().await;
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
