//! Issue 7's benchmark: N single-instance, single-GPU function deployments on the local
//! control plane, side by side with a plain client doing the same Kubernetes and SIS work.
//!
//! - **nvca**: the real `nvca` (agent) binary as a child process, against sis-sim (in
//!   this process) and the testenv's NATS. N deployments go through sis-sim's admin API,
//!   which publishes the creation messages as NVCF does; the time runs from the first
//!   deploy until sis-sim has heard `running` for all N instances. The agent's peak RSS
//!   (`VmHWM`) and its RSS at the end come from `/proc/<pid>/status`. Then everything is
//!   undeployed and must reach `terminated` at sis-sim (timed separately).
//! - **plain client**: the pods nvca made, stripped to what a client sends (new names, a
//!   namespace of their own), created by kube-rs from this process, with the same SIS
//!   calls per instance (acknowledgement, `starting`, then `running` once its pod is
//!   Ready) on requests of a second sis-sim cluster. Timed from the first create until
//!   sis-sim has heard `running` for all N. No queue, no store, no ICMSRequest,
//!   Secret or status writes: no agent logic.
//!
//! Both runs also print what they asked of the API server (`api_load.rs`), in writes
//! per deployment by kind, and where their CPU went (`cpu.rs`): the API server is what
//! both runs wait on.
//!
//! `cargo bench --bench deployments [-- --deployments N]` (default 1,000): when the H100s
//! free are fewer than N, it grows the kwok scale fleet with
//! `scripts/testenv up --gpu-nodes K` and puts it back afterwards. Under
//! `cargo test --all-targets` (no `--bench`) it runs 12 deployments on the fixture fleet
//! and checks its counts, so it cannot rot. It holds the cluster-wide test lock
//! throughout: the agent labels nodes and the scale fleet changes the GPU count other
//! tests check. Results go to BENCHMARKS.md by hand.

// The shared test helpers this needs (not all of tests/support: its proxy is for tests).
#[path = "../../tests/support/agent_config.rs"]
mod agent_config;
#[path = "../../tests/support/child.rs"]
#[allow(dead_code)]
mod child;
#[path = "../../tests/support/cluster.rs"]
mod cluster;
#[path = "../../tests/support/crds.rs"]
mod crds;
#[path = "../../tests/support/helm.rs"]
#[allow(dead_code)]
mod helm;
#[path = "../../tests/support/lock.rs"]
#[allow(dead_code)]
mod lock;
#[path = "../../tests/support/pods.rs"]
mod pods;
#[path = "../../tests/support/sim.rs"]
mod sim;
#[path = "../../tests/support/testenv.rs"]
#[allow(dead_code)]
mod testenv;

mod api_load;
mod cpu;
mod tally;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use child::Process;
use futures_util::StreamExt;
use futures_util::stream;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use nvca::kube::crd::ICMSRequest;
use nvca::sim::SimHandle;
use nvca::sim::admin::{AdminClient, DeploymentSpec, FunctionSpec, TokenRequest};
use nvca::sim::state::SimState;
use nvca::sis::queue::QueueStream;
use nvca::sis::types::{
    AckRequest, HealthInfo, InstanceState, InstanceStatus, InstanceStatusUpdate, RequestAction,
    RequestState, RequestStatusCode,
};
use nvca::sis::{RetryPolicy, SisClient, SisConfig, TokenSource};
use pods::ready;
use tally::Tally;
use testenv::{TestEnv, eventually, testenv};

const NCA: &str = "nca-bench";
const GPU: &str = "H100";
const PRODUCT: &str = "NVIDIA-H100-80GB-HBM3";
const INSTANCE_TYPE: &str = "ON-PREM.GPU.H100";
const GPUS_PER_SCALE_NODE: usize = 8;
/// Deployments under `cargo test`: the fixture fleet has 16 H100s.
const SMALL: usize = 12;
/// Admin calls (deploys, undeploys) in flight at once, as many NVCF users would.
const DEPLOY_CONCURRENCY: usize = 16;
/// The plain client's creates in flight at once.
const CLIENT_CONCURRENCY: usize = 32;

fn argument(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".to_string())
}

/// `VmHWM` and `VmRSS` of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

/// Instances of `cluster_id`'s requests that SIS heard in `state` (at any time).
fn heard(state: &SimState, cluster_id: &str, wanted: InstanceState) -> usize {
    state
        .requests
        .values()
        .filter(|request| request.cluster_id == cluster_id)
        .flat_map(|request| request.instances.values())
        .filter(|instance| instance.history.contains(&wanted))
        .count()
}

/// Instances of `cluster_id` whose last report is `terminated`.
fn terminated(state: &SimState, cluster_id: &str) -> usize {
    state
        .requests
        .values()
        .filter(|request| request.cluster_id == cluster_id)
        .flat_map(|request| request.instances.values())
        .filter(|instance| instance.instance_state == InstanceState::Terminated)
        .count()
}

/// Waits until `count()` reaches `n`; panics with `what`, the count and `log` after
/// `limit`.
async fn until_count(
    what: &str,
    n: usize,
    limit: Duration,
    count: impl Fn() -> usize,
    log: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = count();
        if now >= n {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            panic!(
                "{what}: {now} of {n} after {limit:?}; agent log tail:\n{}",
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// H100s on the nodes, and those not requested by a pod that is still there.
async fn free_h100s(client: &Client) -> (usize, usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes
        .list(&ListParams::default().labels(&format!("nvidia.com/gpu.product={PRODUCT}")))
        .await
        .expect("list nodes");
    let names: HashSet<String> = nodes
        .items
        .iter()
        .filter_map(|node| node.metadata.name.clone())
        .collect();
    let total: usize = nodes
        .items
        .iter()
        .filter_map(|node| {
            node.status
                .as_ref()?
                .allocatable
                .as_ref()?
                .get("nvidia.com/gpu")
        })
        .filter_map(|quantity| quantity.0.parse::<usize>().ok())
        .sum();
    let pods: Api<Pod> = Api::all(client.clone());
    let used: usize = pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|pod| {
            pod.spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_ref())
                .is_some_and(|node| names.contains(node))
        })
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_none_or(|phase| phase != "Succeeded" && phase != "Failed")
        })
        .flat_map(|pod| pod.spec.iter().flat_map(|spec| spec.containers.iter()))
        .filter_map(|container| {
            container
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("nvidia.com/gpu")
        })
        .filter_map(|quantity| quantity.0.parse::<usize>().ok())
        .sum();
    (total, total.saturating_sub(used))
}

async fn scale_nodes(client: &Client) -> usize {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default().labels("nvca.nvidia.com/testenv-scale=true"))
        .await
        .expect("list scale nodes")
        .items
        .len()
}

fn testenv_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testenv")
}

/// `scripts/testenv up --gpu-nodes count`.
fn set_scale_fleet(count: usize) {
    let status = std::process::Command::new(testenv_script())
        .args(["up", "--gpu-nodes", &count.to_string()])
        .status()
        .expect("run scripts/testenv");
    assert!(
        status.success(),
        "`scripts/testenv up --gpu-nodes {count}` failed ({status})"
    );
}

/// Puts the scale fleet back to what it was when dropped, whatever happened.
struct ScaleFleet {
    restore: usize,
}

impl Drop for ScaleFleet {
    fn drop(&mut self) {
        eprintln!("putting the scale fleet back to {} nodes", self.restore);
        let status = std::process::Command::new(testenv_script())
            .args(["up", "--gpu-nodes", &self.restore.to_string()])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "WARNING: could not put the scale fleet back ({status:?}): run `scripts/testenv up --gpu-nodes {}`",
                self.restore
            );
        }
    }
}

/// Makes sure `n` H100s are free: grows the scale fleet when measuring, else says how.
async fn capacity(client: &Client, n: usize, measuring: bool) -> Option<ScaleFleet> {
    let (total, free) = free_h100s(client).await;
    if free >= n {
        println!("capacity: {free} of {total} H100s free");
        return None;
    }
    let had = scale_nodes(client).await;
    let want = had + (n - free).div_ceil(GPUS_PER_SCALE_NODE);
    if !measuring {
        panic!(
            "{n} deployments need {n} free H100s; {free} of {total} are free: run \
             `scripts/testenv up --gpu-nodes {want}` (or stop what holds them)"
        );
    }
    println!("capacity: {free} of {total} H100s free; growing the scale fleet to {want} nodes");
    let guard = ScaleFleet { restore: had };
    let started = Instant::now();
    tokio::task::spawn_blocking(move || set_scale_fleet(want))
        .await
        .expect("the scale fleet task");
    let (total, free) = free_h100s(client).await;
    println!(
        "capacity: {free} of {total} H100s free after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        free >= n,
        "{n} deployments need {n} free H100s; only {free} after `scripts/testenv up --gpu-nodes {want}`"
    );
    Some(guard)
}

/// A SIS client with one cluster's token, as a cluster's agent holds it.
async fn cluster_client(
    admin: &AdminClient,
    sim: &SimHandle,
    dir: &Path,
    cluster_id: &str,
) -> (SisClient, PathBuf) {
    let path = dir.join(format!("token-{cluster_id}"));
    let token = admin
        .issue_token_with(TokenRequest {
            authorities: None,
            cluster_id: Some(cluster_id.to_string()),
        })
        .await
        .expect("a cluster token");
    std::fs::write(&path, token).expect("token file");
    let client = SisClient::new(
        SisConfig {
            cluster_id: Some(cluster_id.to_string()),
            retry: RetryPolicy {
                max_attempts: 3,
                min_wait: Duration::from_millis(100),
                max_wait: Duration::from_secs(1),
            },
            ..SisConfig::new(sim.base_url())
        },
        TokenSource::projected(&path),
    )
    .expect("SIS client");
    (client, path)
}

/// A container function of the bench's account at sis-sim; its id.
async fn create_function(admin: &AdminClient, name: &str) -> String {
    admin
        .create_function(&FunctionSpec {
            nca_id: NCA.into(),
            name: name.into(),
            container_image: Some("nvcr.io/bench/echo:1".into()),
            helm_chart: None,
            function_type: None,
        })
        .await
        .expect("a function")
        .0
}

async fn create_cluster(sis: &SisClient, name: &str) -> (String, String) {
    let ids = sis
        .create_cluster(NCA, &cluster::on_prem_cluster(name, NCA, "us-west-1"))
        .await
        .expect("sis-sim creates the cluster");
    (ids.cluster_id, ids.cluster_group_id)
}

/// Deploys `n` single-instance, single-GPU deployments of `function_id` on `cluster_id`;
/// returns (deployment id, request id, message batch id) of each.
async fn deploy_all(
    admin: &AdminClient,
    function_id: &str,
    cluster_id: &str,
    n: usize,
) -> Vec<(String, String, String)> {
    stream::iter(0..n)
        .map(|_| async {
            let (deployment, published) = admin
                .deploy(&DeploymentSpec {
                    function_id: function_id.to_string(),
                    cluster_id: cluster_id.to_string(),
                    gpu: GPU.into(),
                    instance_type: INSTANCE_TYPE.into(),
                    instance_type_name: Some(format!("{INSTANCE_TYPE}_1x")),
                    instance_count: 1,
                    gpu_count: Some(1),
                    action: None,
                })
                .await
                .expect("sis-sim deploys");
            let published = published.into_iter().next().expect("one request");
            (
                deployment,
                published.request_id,
                published.message_batch_id.unwrap_or_default(),
            )
        })
        .buffer_unordered(DEPLOY_CONCURRENCY)
        .collect()
        .await
}

struct NvcaRun {
    deploy: Duration,
    running: Duration,
    undeploy: Duration,
    peak_kib: u64,
    end_kib: u64,
    pods: Vec<Pod>,
    load: String,
    api: Tally,
    cpu: Tally,
}

/// The agent as a child process, with its own cluster at sis-sim.
async fn run_nvca(
    env: &TestEnv,
    sim: &SimHandle,
    admin: &AdminClient,
    dir: &Path,
    n: usize,
    limit: Duration,
) -> NvcaRun {
    let ns = env.namespace("bench-nvca").await;
    let management = dir.join("management-token");
    std::fs::write(&management, admin.issue_token(None).await.expect("token")).expect("token");
    let sis = SisClient::new(
        SisConfig::new(sim.base_url()),
        TokenSource::projected(&management),
    )
    .expect("SIS client");
    let name = format!("bench-nvca-{:08x}", rand::random::<u32>());
    let (cluster_id, group_id) = create_cluster(&sis, &name).await;
    let (_, token_file) = cluster_client(admin, sim, dir, &cluster_id).await;

    let health = format!("127.0.0.1:{}", free_port());
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let config = dir.join("config.yaml");
    let text = agent_config::AgentConfig {
        cluster_id: &cluster_id,
        group_id: &group_id,
        name: &name,
        nca: NCA,
        sis_url: &sim.base_url(),
        nats_url: &env.endpoints.nats_url,
        feature_flags: &["DynamicGPUDiscovery", "SelfHosted"],
        token_file: &token_file,
        health: &health,
        admin_addr: &admin_addr,
        namespace: &ns.name,
    }
    .yaml();
    std::fs::write(&config, text).expect("config.yaml");
    // Kept after the run, for reading.
    let log = std::env::temp_dir().join("nvca-bench-deployments-agent.log");
    let _ = std::fs::remove_file(&log);
    let store = dir.join("store");
    let args = [
        "--config",
        &config.display().to_string(),
        "--store",
        &store.display().to_string(),
        "--kubeconfig",
        &env.endpoints.kubeconfig.display().to_string(),
        "--nats-auth",
        "none",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let agent = Process::start(
        env!("CARGO_BIN_EXE_nvca"),
        &args,
        &[("RUST_LOG", &rust_log)],
        &log,
    );
    let pid = agent.child.id();
    println!("agent pid {pid}, log {}", log.display());

    // Ready for work: registered with the fleet's H100s, function deployments running.
    let http = nvca::tls::http_client();
    let started = Instant::now();
    eventually(
        Duration::from_secs(120),
        "the agent registered its H100s",
        || {
            let admin = admin.clone();
            let cluster_id = cluster_id.clone();
            async move {
                let record = admin.cluster(&cluster_id).await.ok()?;
                let gpus = record.registration?.gpus;
                gpus.iter()
                    .any(|gpu| gpu.name == GPU && gpu.capacity as usize >= n)
                    .then_some(())
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(120),
        "function deployments running",
        || {
            let http = http.clone();
            let url = format!("http://{health}/metrics");
            async move {
                let text = http.get(url).send().await.ok()?.text().await.ok()?;
                text.contains("nvca_workload_result_total").then_some(())
            }
        },
    )
    .await;
    println!(
        "agent ready after {:.1} s; RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(memory_kib(pid).1)
    );

    let function_id = create_function(admin, "bench").await;
    let load_before = load_average();
    let api_before = api_load::read(&env.client).await;
    let processes = [("agent", pid), ("bench", std::process::id())];
    let cpu_before = cpu::read(testenv_run().as_deref(), &processes);
    let started = Instant::now();
    let deployed = deploy_all(admin, &function_id, &cluster_id, n).await;
    let deploy = started.elapsed();
    let shared = sim.shared().clone();
    let agent_log = || agent.log_tail();
    until_count(
        "SIS heard running",
        n,
        limit,
        || shared.read(|s| heard(s, &cluster_id, InstanceState::Running)),
        agent_log,
    )
    .await;
    let running = started.elapsed();
    let load = format!("{load_before} → {}", load_average());
    let api = api_load::read(&env.client).await.since(&api_before);
    let cpu = cpu::read(testenv_run().as_deref(), &processes).since(&cpu_before);
    let starting = shared.read(|s| heard(s, &cluster_id, InstanceState::Starting));
    assert_eq!(starting, n, "every instance reported starting first");
    let (peak_running, _) = memory_kib(pid);
    println!(
        "nvca: {n} running at SIS after {:.1} s (deploys published in {:.1} s); agent peak RSS so far {:.1} MiB",
        running.as_secs_f64(),
        deploy.as_secs_f64(),
        mib(peak_running)
    );

    let pods: Api<Pod> = ns.api();
    let made = pods
        .list(&ListParams::default().labels("icms-request-id"))
        .await
        .expect("list the agent's pods")
        .items;
    assert_eq!(made.len(), n, "one pod per deployment");
    assert!(made.iter().all(ready), "every pod Ready");

    let started = Instant::now();
    let undeployed: Vec<()> = stream::iter(&deployed)
        .map(|(deployment, _, _)| async move {
            admin.undeploy(deployment).await.expect("sis-sim undeploys");
        })
        .buffer_unordered(DEPLOY_CONCURRENCY)
        .collect()
        .await;
    assert_eq!(undeployed.len(), n);
    until_count(
        "SIS heard terminated",
        n,
        limit,
        || shared.read(|s| terminated(s, &cluster_id)),
        || agent.log_tail(),
    )
    .await;
    let undeploy = started.elapsed();
    until_none_left(&pods, limit, "the agent's pods gone").await;
    // The agent ends each request by removing its ICMSRequest: not stopped before that.
    let requests: Api<ICMSRequest> = Api::namespaced(env.client.clone(), &ns.name);
    until_none_left(&requests, limit, "the agent's ICMSRequests removed").await;
    println!(
        "nvca: {n} terminated at SIS {:.1} s after the first undeploy",
        undeploy.as_secs_f64()
    );
    let (peak_kib, end_kib) = memory_kib(pid);
    drop(agent);
    delete_consumers(&env.endpoints.nats_url, &cluster_id).await;
    // Gone before the plain client starts: its deletion must not weigh on that run.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let name = ns.name.clone();
    ns.delete().await;
    eventually(limit, "the agent's namespace deleted", || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move {
            namespaces
                .get_opt(&name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    NvcaRun {
        deploy,
        running,
        undeploy,
        peak_kib,
        end_kib,
        pods: made,
        load,
        api,
        cpu,
    }
}

async fn delete_consumers(nats_url: &str, cluster_id: &str) {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for stream in QueueStream::ALL {
        if let Ok(s) = js.get_stream(stream.name()).await {
            let _ = s.delete_consumer(&stream.durable(cluster_id)).await;
            let _ = s.purge().filter(stream.filter_subject(cluster_id)).await;
        }
    }
}

/// What a plain client sends for one of nvca's pods: spec and labels, under the new
/// request id (names, label and references follow it), nothing the cluster filled in.
fn plain_pod(made: &Pod, old_request: &str, new_request: &str) -> Pod {
    let meta = &made.metadata;
    let mut spec = made.spec.clone().expect("a pod spec");
    spec.node_name = None;
    let pod = Pod {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    };
    let text = serde_json::to_string(&pod)
        .expect("a pod serialises")
        .replace(old_request, new_request);
    serde_json::from_str(&text).expect("a pod parses")
}

fn fulfilled(state: InstanceState) -> InstanceStatusUpdate {
    InstanceStatusUpdate {
        status: InstanceStatus::Fulfilled,
        instance_state: state,
        request_state: RequestState::Active,
        action: Some(RequestAction::RequestSpotInstances),
        termination_cause: None,
        health_info: HealthInfo::default(),
        system_failure: None,
        message_batch_id: None,
        instance_ips: Vec::new(),
    }
}

struct PlainRun {
    ready: Duration,
    running: Duration,
    load: String,
    api: Tally,
    cpu: Tally,
}

/// The plain client: the same pods and SIS calls, on a cluster of its own at sis-sim.
async fn run_plain(
    env: &TestEnv,
    sim: &SimHandle,
    admin: &AdminClient,
    dir: &Path,
    made: &[Pod],
    limit: Duration,
) -> PlainRun {
    let n = made.len();
    let ns = env.namespace("bench-plain").await;
    let management = dir.join("management-token");
    let sis = SisClient::new(
        SisConfig::new(sim.base_url()),
        TokenSource::projected(&management),
    )
    .expect("SIS client");
    let name = format!("bench-plain-{:08x}", rand::random::<u32>());
    let (cluster_id, _) = create_cluster(&sis, &name).await;
    let (sis, _) = cluster_client(admin, sim, dir, &cluster_id).await;
    let function_id = create_function(admin, "bench-plain").await;
    // SIS's side of the requests; nobody pulls their messages (purged at the end).
    let requests = deploy_all(admin, &function_id, &cluster_id, n).await;
    // Each of nvca's pods under one of these requests.
    let work: Vec<(Pod, String, String)> = made
        .iter()
        .zip(&requests)
        .map(|(pod, (_, request, batch))| {
            let old = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get("icms-request-id"))
                .expect("the request label");
            (plain_pod(pod, old, request), request.clone(), batch.clone())
        })
        .collect();
    // Instance (pod name) → (request, told starting).
    let started_of: HashMap<String, (String, tokio::sync::watch::Sender<bool>)> = work
        .iter()
        .map(|(pod, request, _)| {
            let name = pod.metadata.name.clone().expect("a name");
            (
                name,
                (request.clone(), tokio::sync::watch::channel(false).0),
            )
        })
        .collect();
    let started_of = Arc::new(started_of);
    let sis = Arc::new(sis);
    let pods: Api<Pod> = ns.api();

    // Ready pods are reported running, once their `starting` went out.
    let ready_at: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watch = {
        let pods = pods.clone();
        let sis = sis.clone();
        let started_of = started_of.clone();
        let ready_at = ready_at.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
                    continue;
                };
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                if !ready(&pod) {
                    continue;
                }
                let mut seen = ready_at.lock().expect("ready map");
                if seen.contains_key(&name) {
                    continue;
                }
                seen.insert(name.clone(), Instant::now());
                drop(seen);
                let Some((request, told)) = started_of.get(&name) else {
                    continue;
                };
                let mut told = told.subscribe();
                let (sis, request) = (sis.clone(), request.clone());
                tokio::spawn(async move {
                    let _ = told.wait_for(|told| *told).await;
                    sis.report_instance(&request, &name, &fulfilled(InstanceState::Running))
                        .await
                        .expect("SIS takes running");
                });
            }
        })
    };

    let load_before = load_average();
    let api_before = api_load::read(&env.client).await;
    let processes = [("bench", std::process::id())];
    let cpu_before = cpu::read(testenv_run().as_deref(), &processes);
    let started = Instant::now();
    let created: Vec<()> = stream::iter(&work)
        .map(|(pod, request, batch)| {
            let (pods, sis, started_of) = (pods.clone(), sis.clone(), started_of.clone());
            async move {
                sis.acknowledge(
                    request,
                    &AckRequest {
                        status: RequestStatusCode::PendingFulfillment,
                        message_batch_id: Some(batch.clone()),
                        instance_count: Some(1),
                        reservation_id: None,
                        capacity_type: None,
                    },
                )
                .await
                .expect("SIS takes the acknowledgement");
                pods.create(&PostParams::default(), pod)
                    .await
                    .expect("the plain client creates a pod");
                let name = pod.metadata.name.clone().expect("a name");
                sis.report_instance(request, &name, &fulfilled(InstanceState::Starting))
                    .await
                    .expect("SIS takes starting");
                started_of[&name].1.send_replace(true);
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .collect()
        .await;
    assert_eq!(created.len(), n);
    let created = started.elapsed();
    let shared = sim.shared().clone();
    until_count(
        "SIS heard running from the plain client",
        n,
        limit,
        || shared.read(|s| heard(s, &cluster_id, InstanceState::Running)),
        String::new,
    )
    .await;
    let running = started.elapsed();
    let load = format!("{load_before} → {}", load_average());
    let api = api_load::read(&env.client).await.since(&api_before);
    let cpu = cpu::read(testenv_run().as_deref(), &processes).since(&cpu_before);
    watch.abort();
    let ready = ready_at
        .lock()
        .expect("ready map")
        .values()
        .max()
        .map(|last| last.duration_since(started))
        .unwrap_or_default();
    assert_eq!(
        ready_at.lock().expect("ready map").len(),
        n,
        "all pods Ready"
    );
    println!(
        "plain client: {n} pods created after {:.1} s, Ready after {:.1} s, running at SIS after {:.1} s",
        created.as_secs_f64(),
        ready.as_secs_f64(),
        running.as_secs_f64()
    );

    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the plain client's pods");
    until_none_left(&pods, limit, "the plain client's pods gone").await;
    delete_consumers(&env.endpoints.nats_url, &cluster_id).await;
    ns.delete().await;
    PlainRun {
        ready,
        running,
        load,
        api,
        cpu,
    }
}

/// The testenv's run directory (pid files), where `scripts/testenv up` wrote its env.
fn testenv_run() -> Option<PathBuf> {
    testenv::default_env_file().parent().map(Path::to_path_buf)
}

#[tokio::main]
async fn main() {
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let n = argument("--deployments").unwrap_or(if measuring { 1_000 } else { SMALL });
    // Generous: the aim is seconds per hundred, a stall shows as a failure with the log.
    let limit = Duration::from_secs(120 + 2 * n as u64);

    let _lock = lock::cluster_wide_async().await;
    let env = testenv().await;
    crds::from_operator(&env).await;
    let _fleet = capacity(&env.client, n, measuring).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let (sim, admin) = sim::start_on_nats(&env.endpoints.nats_url).await;

    println!(
        "deployments: {n} single-GPU ({INSTANCE_TYPE}), load {}",
        load_average()
    );
    let nvca = run_nvca(&env, &sim, &admin, dir.path(), n, limit).await;
    let plain = run_plain(&env, &sim, &admin, dir.path(), &nvca.pods, limit).await;
    sim.stop().await;

    let ratio = nvca.running.as_secs_f64() / plain.running.as_secs_f64();
    println!();
    println!("deployments                 {n}");
    println!(
        "nvca: first deploy → all running at SIS   {:.1} s ({:.1} pods/s; deploys published in {:.1} s; load {})",
        nvca.running.as_secs_f64(),
        n as f64 / nvca.running.as_secs_f64(),
        nvca.deploy.as_secs_f64(),
        nvca.load
    );
    println!(
        "plain client: first create → all running  {:.1} s ({:.1} pods/s; all Ready after {:.1} s; load {})",
        plain.running.as_secs_f64(),
        n as f64 / plain.running.as_secs_f64(),
        plain.ready.as_secs_f64(),
        plain.load
    );
    println!("ratio nvca / plain          {ratio:.2} (aim ≤ 1.3)");
    for (run, api) in [("nvca run: ", &nvca.api), ("plain run:", &plain.api)] {
        println!(
            "API server, {run}      {}",
            api_load::writes_per_deployment(api, n)
        );
        println!(
            "API server, {run}      {}",
            api_load::reads_per_deployment(api, n)
        );
    }
    println!("CPU, nvca run:              {}", cpu::summary(&nvca.cpu));
    println!("CPU, plain run:             {}", cpu::summary(&plain.cpu));
    // The tally is read right: every pod of each run was created once.
    for (run, api) in [("nvca", &nvca.api), ("plain", &plain.api)] {
        assert!(
            api.get("POST pods") >= n as f64,
            "{run}: the API server counted {} pod creates for {n} pods",
            api.get("POST pods")
        );
    }
    for (run, used) in [("nvca", &nvca.cpu), ("plain", &plain.cpu)] {
        assert!(
            used.total(|_| true) > 0.0,
            "{run}: no CPU time read: {}",
            cpu::summary(used)
        );
    }
    println!(
        "agent peak RSS (VmHWM)      {:.1} MiB (aim < 100); at the end {:.1} MiB",
        mib(nvca.peak_kib),
        mib(nvca.end_kib)
    );
    println!(
        "nvca: undeploy → all terminated at SIS   {:.1} s",
        nvca.undeploy.as_secs_f64()
    );
    println!(
        "| {} | {} | {n} | {:.1} s | {:.1} s | {ratio:.2} | {:.1} MiB |",
        time_of_day(),
        nvca.load,
        nvca.running.as_secs_f64(),
        plain.running.as_secs_f64(),
        mib(nvca.peak_kib)
    );
}

/// `HH:MM` UTC, for the table row.
fn time_of_day() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02} UTC", seconds / 3600 % 24, seconds / 60 % 60)
}

/// Waits until `api` lists nothing, or panics after `limit` naming `what`.
async fn until_none_left<K>(api: &Api<K>, limit: Duration, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    eventually(limit, what, || async {
        let left = api.list(&ListParams::default()).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
}
