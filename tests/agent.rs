//! The agent (`nvca`, as NVIDIA's operator runs it: `nvca --config …`) as users run it: the real binary as a child process, on the local
//! control plane (kwok GPU fleet), against sis-sim and the testenv's NATS, with short
//! intervals. Each test has its own sis-sim, cluster, namespace (the agent's system and
//! requests namespace), token file and store. The agent reads every node and writes
//! instance-type labels, and some tests add or change nodes, so every test holds the
//! cluster-wide lock.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use nvca::sim::admin::{AdminClient, TokenRequest};
use nvca::sim::state::ClusterRecord;
use nvca::sim::{SimConfig, SimHandle, SimNats};
use nvca::sis::types::{ClusterCreationRequest, HeartbeatAction};
use nvca::sis::{SisClient, SisConfig, TokenSource};
use serde_json::{Value, json};
use support::child::Process;
use support::testenv::{TestEnv, TestNamespace, eventually, testenv_with_namespace};

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

/// One test's world: sis-sim with a registered cluster, a token for it, a namespace, and
/// the agent's config, store and ports.
struct World {
    /// First, so it is killed (and its log printed) before the directory goes.
    agent: Option<Process>,
    env: TestEnv,
    ns: TestNamespace,
    sim: Option<SimHandle>,
    sim_addr: SocketAddr,
    state_file: PathBuf,
    admin: AdminClient,
    cluster_id: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    token_file: PathBuf,
    health: String,
    admin_addr: String,
    /// How SIS reaches NATS: the test environment's open server, or on the PSAT path the
    /// control plane's server with its auth callout (`control_plane_nats`).
    sim_nats: SimNats,
    control_plane_nats: Option<support::nats::PrivateNats>,
    _lock: std::fs::File,
}

fn sim_config(addr: SocketAddr, state_file: &Path, nats: &SimNats) -> SimConfig {
    SimConfig {
        listen: addr,
        nats: Some(nats.clone()),
        state_file: Some(state_file.to_path_buf()),
        ..SimConfig::default()
    }
}

impl World {
    async fn start(prefix: &str, flags: &[&str]) -> World {
        World::start_with(prefix, flags, None).await
    }

    /// `manual`: the cluster is created without `DynamicGPUDiscovery`, with these GPUs,
    /// and the agent gets them as `agent.gpuManualInstanceConfigB64`.
    async fn start_with(prefix: &str, flags: &[&str], manual: Option<Value>) -> World {
        World::start_inner(prefix, flags, manual, false).await
    }

    /// NVIDIA's current self-managed path: the cluster registered by
    /// `nvca-self-managed register` with the API server's issuer and JWKS, and the agent's
    /// only credential a token of ServiceAccount `nvca` for `nvcf-icms:<clusterId>` from
    /// the TokenRequest API (what the kubelet projects into the agent's pod).
    async fn start_psat(prefix: &str, flags: &[&str]) -> World {
        World::start_inner(prefix, flags, None, true).await
    }

    async fn start_inner(prefix: &str, flags: &[&str], manual: Option<Value>, psat: bool) -> World {
        let lock = support::lock::cluster_wide_async().await;
        let (env, ns) = testenv_with_namespace(prefix).await;
        support::crds::from_operator(&env).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let state_file = dir.path().join("sis-state.json");
        // On the PSAT path the agent gets into NATS only through the auth callout.
        let (control_plane_nats, sim_nats) = if psat {
            let (server, secrets) = support::nats::PrivateNats::control_plane();
            let sim_nats = server.sim_nats(&secrets);
            (Some(server), sim_nats)
        } else {
            let sim_nats = SimNats {
                url: env.endpoints.nats_url.clone(),
                user: None,
                password: None,
                auth_callout: None,
            };
            (None, sim_nats)
        };
        let sim = nvca::sim::start(sim_config(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &state_file,
            &sim_nats,
        ))
        .await
        .expect("sis-sim starts");
        let sim_addr = sim.addr();
        let admin = AdminClient::new(sim.base_url());

        // The cluster, as the bootstrap registers it.
        let management = dir.path().join("management-token");
        let token = admin.issue_token(None).await.expect("a token");
        std::fs::write(&management, &token).expect("token file");
        let sis = SisClient::new(
            SisConfig::new(sim.base_url()),
            TokenSource::projected(&management),
        )
        .expect("SIS client");
        let name = format!("agent-{:08x}", rand::random::<u32>());
        let ids = if psat {
            register_with_trust_root(&env, &dir, &sim.base_url(), &management, &name)
        } else {
            sis.create_cluster(
                "nca-agent-test",
                &ClusterCreationRequest {
                    capabilities: if manual.is_some() {
                        Vec::new()
                    } else {
                        vec!["DynamicGPUDiscovery".into()]
                    },
                    gpus: manual
                        .as_ref()
                        .map(|gpus| serde_json::from_value(gpus.clone()).expect("GPUs"))
                        .unwrap_or_default(),
                    ..support::cluster::on_prem_cluster(&name, "nca-agent-test", "us-west-1")
                },
            )
            .await
            .expect("sis-sim creates the cluster")
        };

        // The agent's token: bound to its cluster, as SIS binds a cluster's credentials;
        // on the PSAT path the API server's token for the agent's ServiceAccount.
        let token_file = dir.path().join("token");
        let agent_token = if psat {
            projected_token(&ns, &format!("nvcf-icms:{}", ids.cluster_id)).await
        } else {
            admin
                .issue_token_with(TokenRequest {
                    authorities: None,
                    cluster_id: Some(ids.cluster_id.clone()),
                })
                .await
                .expect("an agent token")
        };
        std::fs::write(&token_file, &agent_token).expect("token file");

        let health = format!("127.0.0.1:{}", free_port());
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yaml");
        let text = support::agent_config::AgentConfig {
            cluster_id: &ids.cluster_id,
            group_id: &ids.cluster_group_id,
            name: &name,
            nca: "nca-agent-test",
            sis_url: &sim.base_url(),
            nats_url: &sim_nats.url,
            feature_flags: flags,
            token_file: &token_file,
            health: &health,
            admin_addr: &admin_addr,
            namespace: &ns.name,
        }
        .yaml();
        let text = match &manual {
            Some(gpus) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(gpus.to_string());
                format!("{text}  gpuManualInstanceConfigB64: {b64}\n")
            }
            None => text,
        };
        std::fs::write(&config, text).expect("config.yaml");
        let mut world = World {
            env,
            ns,
            sim: Some(sim),
            sim_addr,
            state_file,
            admin,
            cluster_id: ids.cluster_id,
            dir,
            config,
            token_file,
            health,
            admin_addr,
            agent: None,
            sim_nats,
            control_plane_nats,
            _lock: lock,
        };
        world.start_agent();
        world
    }

    fn start_agent(&mut self) {
        let store = self.dir.path().join("store");
        let log = self.dir.path().join("agent.log");
        let args = [
            "--config",
            &self.config.display().to_string(),
            "--store",
            &store.display().to_string(),
            "--kubeconfig",
            &self.env.endpoints.kubeconfig.display().to_string(),
            "--heartbeat-interval",
            "1s",
            "--cred-renew-interval",
            "3s",
            "--registration-diff-interval",
            "1s",
            "--inventory-quiet",
            "200ms",
            "--inventory-max-delay",
            "1s",
            "--jwks-interval",
            "2s",
            "--sis-backoff-initial",
            "200ms",
            "--sis-backoff-max",
            "1s",
            "--sis-timeout",
            "3s",
            "--config-poll",
            "300ms",
            "--nats-auth",
            if self.control_plane_nats.is_some() {
                "psat"
            } else {
                "none"
            },
        ]
        .map(String::from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.agent = Some(Process::start(
            env!("CARGO_BIN_EXE_nvca"),
            &args,
            &[("RUST_LOG", "info,nvca=debug")],
            &log,
        ));
    }

    /// SIGTERM, and the exit status.
    fn stop_agent(&mut self) -> std::process::ExitStatus {
        let mut agent = self.agent.take().expect("the agent runs");
        let pid = agent.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        for _ in 0..100 {
            if let Some(status) = agent.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the agent did not stop within 10 s of SIGTERM; log:\n{}",
            agent.log_tail()
        );
    }

    fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(Process::log_tail)
            .unwrap_or_default()
    }

    async fn cluster(&self) -> ClusterRecord {
        self.admin
            .cluster(&self.cluster_id)
            .await
            .expect("sis-sim knows the cluster")
    }

    async fn healthz(&self) -> Option<(u16, Value)> {
        let response = http()
            .get(format!("http://{}/healthz", self.health))
            .send()
            .await
            .ok()?;
        let code = response.status().as_u16();
        let body = response.text().await.ok()?;
        Some((code, serde_json::from_str(&body).ok()?))
    }

    /// Waits until `/livez` answers as `wanted` says.
    async fn until_alive(&self, what: &str, wanted: impl Fn((u16, String)) -> bool) {
        eventually(Duration::from_secs(60), what, || async {
            livez(self).await.filter(|answer| wanted(answer.clone()))
        })
        .await;
    }

    async fn metrics(&self) -> String {
        http()
            .get(format!("http://{}/metrics", self.health))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("a body")
    }

    /// The agent's session machine, from its admin endpoint (what `nvca-state dump`
    /// prints).
    async fn session(&self) -> Option<Value> {
        let snapshot: Value = http()
            .get(format!("http://{}/machines?kind=session", self.admin_addr))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        snapshot["machines"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == self.cluster_id.as_str())
            .cloned()
    }

    /// Waits for `what` of the cluster at sis-sim; prints the agent's log on failure.
    async fn until<T>(&self, what: &str, probe: impl Fn(&ClusterRecord) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(record) = self.admin.cluster(&self.cluster_id).await
                && let Some(value) = probe(&record)
            {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}; agent log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn client(&self) -> Client {
        self.env.client.clone()
    }
}

fn http() -> reqwest::Client {
    nvca::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

/// GPU name → (capacity, instance type names) of the last registration.
fn registered(record: &ClusterRecord) -> BTreeMap<String, (u32, Vec<String>)> {
    record
        .registration
        .as_ref()
        .map(|registration| {
            registration
                .gpus
                .iter()
                .map(|gpu| {
                    let mut names: Vec<String> =
                        gpu.instance_types.iter().map(|t| t.name.clone()).collect();
                    names.sort();
                    (gpu.name.clone(), (gpu.capacity, names))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn types(base: &str, sizes: &[u32]) -> Vec<String> {
    let mut names: Vec<String> = sizes.iter().map(|n| format!("{base}_{n}x")).collect();
    names.sort();
    names
}

/// The testenv's fixture fleet (`fixtures/testenv/nodes`), as `tests/gpu_fixtures.rs`
/// derives it.
fn fixture_fleet() -> BTreeMap<String, (u32, Vec<String>)> {
    [
        ("A100", 8, types("ON-PREM.GPU.A100", &[1, 2, 4, 8])),
        ("H100", 16, types("ON-PREM.GPU.H100", &[1, 2, 4, 8])),
        (
            "H100-MIG-1g-10gb",
            56,
            types("ON-PREM.GPU.H100-MIG-1g-10gb", &[1, 2, 4, 8, 16, 32, 56]),
        ),
        ("L40S", 4, types("ON-PREM.GPU.L40S", &[1, 2, 4])),
    ]
    .into_iter()
    .map(|(gpu, capacity, names)| (gpu.to_string(), (capacity, names)))
    .collect()
}

/// `/livez`: its status code and body.
/// `nvca-self-managed register` as a platform team runs it: the cluster's issuer and JWKS
/// from the API server, recorded with SIS; the IDs from the register-values file.
fn register_with_trust_root(
    env: &TestEnv,
    dir: &tempfile::TempDir,
    sis_url: &str,
    admin_token: &std::path::Path,
    name: &str,
) -> nvca::sis::types::ClusterIds {
    let values = dir.path().join("register-values.yaml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nvca-self-managed"))
        .args([
            "register",
            "--name",
            name,
            "--nca-id",
            "nca-agent-test",
            "--icms-url",
            sis_url,
        ])
        .arg("--token-file")
        .arg(admin_token)
        .arg("--output")
        .arg(&values)
        .arg("--store")
        .arg(dir.path().join("register-store"))
        .arg("--kubeconfig")
        .arg(&env.endpoints.kubeconfig)
        .output()
        .expect("nvca-self-managed runs");
    assert!(
        output.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&values).expect("the values file"))
            .expect("YAML");
    assert_eq!(values["selfManaged"]["identitySource"], "psat");
    nvca::sis::types::ClusterIds {
        cluster_id: values["clusterID"].as_str().expect("clusterID").to_string(),
        cluster_group_id: values["clusterGroupID"]
            .as_str()
            .expect("clusterGroupID")
            .to_string(),
    }
}

/// A token of ServiceAccount `nvca` (created here) for `audience`, one hour.
async fn projected_token(ns: &TestNamespace, audience: &str) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = ns.api();
    support::service_account::create(&accounts, "nvca").await;
    support::service_account::token(&accounts, "nvca", audience, 3600).await
}

async fn livez(world: &World) -> Option<(u16, String)> {
    let response = http()
        .get(format!("http://{}/livez", world.health))
        .send()
        .await
        .ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_fails_as_nvidias_while_the_work_queues_cannot_be_pulled() {
    let mut world = World::start("agent-livez", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    world
        .until_alive("alive with the work queues reachable", |answer| {
            answer == (200, "ok\n".to_string())
        })
        .await;
    world.stop_agent();
    // The same agent with its NATS gone (a port nothing listens on).
    let text = std::fs::read_to_string(&world.config).expect("config.yaml");
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let text = text.replace(&world.sim_nats.url, &dead);
    std::fs::write(&world.config, text).expect("config.yaml");
    world.start_agent();
    world
        .until_alive("not alive while no queue can be pulled", |answer| {
            answer == (503, "liveness probe check has failed\n".to_string())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_heartbeats_and_reports_the_fixture_fleet_exactly() {
    // MultiNodeWorkloads is on by NVIDIA's default; off, the fleet registers one node's sizes.
    let mut world = World::start(
        "agent-fleet",
        &["DynamicGPUDiscovery", "SelfHosted", "-MultiNodeWorkloads"],
    )
    .await;

    let fleet = world
        .until("a registration with the fixture fleet", |record| {
            let gpus = registered(record);
            (gpus == fixture_fleet()).then_some(gpus)
        })
        .await;
    assert_eq!(fleet.len(), 4);
    let record = world
        .until("two heartbeats", |record| {
            (record.heartbeats >= 2).then(|| record.clone())
        })
        .await;
    let registration = record.registration.as_ref().expect("registered");
    assert_eq!(registration.status.as_str(), "READY");
    assert!(
        registration.k8s_version.starts_with("v1."),
        "{registration:?}"
    );
    assert!(registration.allow_task_cluster_creation_queues);
    // Feature flag ClusterTargeting, on by NVIDIA's default, as NVIDIA's agent registers.
    assert!(registration.allow_cluster_targeting);
    let heartbeat = record.last_heartbeat.expect("a heartbeat");
    assert_eq!(heartbeat["status"], "healthy");
    assert_eq!(heartbeat["maintenanceMode"], "None");
    assert_eq!(heartbeat["clusterOwnerNcaID"], "nca-agent-test");
    for (gpu, (capacity, _)) in fixture_fleet() {
        assert_eq!(
            heartbeat["gpuUsage"][&gpu]["capacity"], capacity,
            "{gpu}: {heartbeat}"
        );
    }

    // Health as NVIDIA's agent writes it.
    let (code, health) = world.healthz().await.expect("/healthz answers JSON");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["Status"], "healthy");
    assert!(
        health["K8sVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v1.")
    );
    assert_eq!(health["GPUUsage"]["H100"]["capacity"], 16);
    assert_eq!(health["Components"]["gpu"]["Status"], "healthy");
    assert_eq!(health["Components"]["sis"]["Status"], "healthy");
    let livez = http()
        .get(format!("http://{}/livez", world.health))
        .send()
        .await
        .expect("/livez");
    assert_eq!(livez.status().as_u16(), 200);

    // Function deployments start once they reach NATS; give them a moment.
    let _ = tokio::time::timeout(WAIT, async {
        while !world.metrics().await.contains("nvca_workload_result_total") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let metrics = world.metrics().await;
    for line in [
        "nvca_instance_type_capacity{nvca_nca_id=\"nca-agent-test\"",
        "instance_type=\"ON-PREM.GPU.H100_1x\"} 16",
        "instance_type=\"ON-PREM.GPU.H100-MIG-1g-10gb_56x\"} 1",
        "nvca_gpu_node_total_count{",
        "nvca_maintenance_mode_state{",
        "mode=\"None\"} 1",
        "operation=\"register\",status=\"success\",http_status=\"200\"}",
        // Function deployments run beside the session and add their series.
        "# TYPE nvca_workload_result_total counter",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    // The agent labelled every ready GPU node of the fleet.
    let nodes: Api<Node> = Api::all(world.client());
    let h100 = nodes.get("gpu-h100-0").await.expect("gpu-h100-0");
    assert_eq!(
        h100.metadata.labels.unwrap_or_default()["nvca.nvcf.nvidia.io/instance-type"],
        "ON-PREM.GPU.H100"
    );

    // nvca-state dump sees the session, registered, with nothing failing: through the
    // admin endpoint the running agent wrote into its store directory.
    let session = world.session().await.expect("the session machine");
    assert_eq!(session["state"], "registered", "{session}");
    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["dump", "--kind", "session", "-o", "json", "--store"])
        .arg(world.dir.path().join("store"))
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("nvca-state runs");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        text.contains(&world.cluster_id) && text.contains("registered"),
        "{text}"
    );

    // Credentials were renewed, at once and on the interval.
    let calls = world.admin.calls().await.expect("calls");
    let credentials = calls
        .iter()
        .filter(|c| c.route.contains("/credentials"))
        .count();
    assert!(credentials >= 1, "no credentials call");

    let status = world.stop_agent();
    assert!(status.success(), "SIGTERM ends the agent cleanly: {status}");
}

fn gpu_node(name: &str, product: &str, count: u32) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.family": "blackwell",
                "nvidia.com/gpu.machine": "DGX-B200",
                "nvidia.com/gpu.memory": "183359",
                "nvidia.com/gpu.count": count.to_string(),
            }
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": "224", "memory": "2063425Mi", "ephemeral-storage": "3840Gi", "pods": "110", "nvidia.com/gpu": count.to_string()},
            "allocatable": {"cpu": "224", "memory": "2063425Mi", "ephemeral-storage": "3840Gi", "pods": "110", "nvidia.com/gpu": count.to_string()}
        }
    }))
    .expect("a node")
}

/// Deletes the test's node on drop, whatever happens.
struct NodeGuard {
    name: String,
    client: Client,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        let config = self.client.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let nodes: Api<Node> = Api::all(config);
                let _ = nodes.delete(&name, &DeleteParams::default()).await;
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_relabelled_and_deleted_node_reaches_sis() {
    let world = World::start(
        "agent-nodes",
        &["DynamicGPUDiscovery", "SelfHosted", "-MultiNodeWorkloads"],
    )
    .await;
    world
        .until("the fixture fleet registered", |record| {
            (registered(record) == fixture_fleet()).then_some(())
        })
        .await;

    let name = format!("agent-b200-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let nodes: Api<Node> = Api::all(world.client());
    let mut node = gpu_node(&name, "NVIDIA-B200", 8);
    node.metadata.name = Some(name.clone());
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create a kwok B200 node");
    let _guard = NodeGuard {
        name: name.clone(),
        client: world.client(),
    };

    let added = tokio::time::Instant::now();
    world
        .until("B200 registered", |record| {
            let gpus = registered(record);
            (gpus.get("B200") == Some(&(8, types("ON-PREM.GPU.B200", &[1, 2, 4, 8])))).then_some(())
        })
        .await;
    eprintln!("added node reached SIS after {:?}", added.elapsed());
    let labelled = eventually(WAIT, "the B200 node labelled", || {
        let nodes = nodes.clone();
        let name = name.clone();
        async move {
            let node = nodes.get(&name).await.ok()?;
            node.metadata
                .labels?
                .get("nvca.nvcf.nvidia.io/instance-type")
                .cloned()
        }
    })
    .await;
    assert_eq!(labelled, "ON-PREM.GPU.B200");

    // Relabelled as an L40S: B200 goes, L40S grows by 8.
    let relabel = json!({"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-L40S"}}});
    nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel");
    let relabelled = tokio::time::Instant::now();
    world
        .until("B200 gone and 12 L40S", |record| {
            let gpus = registered(record);
            (!gpus.contains_key("B200") && gpus.get("L40S").map(|g| g.0) == Some(12)).then_some(())
        })
        .await;
    eprintln!(
        "relabelled node reached SIS after {:?}",
        relabelled.elapsed()
    );

    nodes
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the node");
    let deleted = tokio::time::Instant::now();
    world
        .until("the fixture fleet again", |record| {
            (registered(record) == fixture_fleet()).then_some(())
        })
        .await;
    let elapsed = deleted.elapsed();
    assert!(
        elapsed < Duration::from_secs(15),
        "a deleted node reached SIS after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sis_is_retried_shown_and_recovered() {
    let mut world = World::start("agent-sis-down", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    world
        .until("two heartbeats", |record| {
            (record.heartbeats >= 2).then_some(())
        })
        .await;

    // SIS goes away: the port refuses connections.
    let before = world.cluster().await.heartbeats;
    world.sim.take().expect("sis-sim runs").stop().await;
    let shown = eventually(WAIT, "/healthz shows SIS lost", || {
        let world = &world;
        async move {
            let (code, health) = world.healthz().await?;
            (health["Components"]["sis"]["Status"] == "unhealthy").then_some((code, health))
        }
    })
    .await;
    assert_eq!(
        shown.0, 200,
        "a lost SIS is a warning, not unreadiness: {}",
        shown.1
    );
    let error = shown.1["Components"]["sis"]["Errors"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("retrying"), "{error}");
    let session = eventually(WAIT, "the dump shows the retries", || {
        let world = &world;
        async move {
            let session = world.session().await?;
            let attempts = session["pending"][0]["attempts"].as_u64()?;
            (attempts >= 2).then_some(session)
        }
    })
    .await;
    assert!(
        session["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("connection"),
        "{session}"
    );

    // SIS comes back on the same address with its state.
    let sim = nvca::sim::start(sim_config(
        world.sim_addr,
        &world.state_file,
        &world.sim_nats,
    ))
    .await
    .expect("sis-sim starts again");
    world.sim = Some(sim);
    world
        .until("heartbeats again", |record| {
            (record.heartbeats > before + 1).then_some(())
        })
        .await;
    eventually(WAIT, "/healthz shows SIS back", || {
        let world = &world;
        async move {
            let (_, health) = world.healthz().await?;
            (health["Components"]["sis"]["Status"] == "healthy").then_some(())
        }
    })
    .await;
    assert!(world.stop_agent().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_is_read_again() {
    let world = World::start("agent-token", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    world
        .until("two heartbeats", |record| {
            (record.heartbeats >= 2).then_some(())
        })
        .await;
    let old = std::fs::read_to_string(&world.token_file).expect("token");
    let new = world
        .admin
        .issue_token_with(TokenRequest {
            authorities: None,
            cluster_id: Some(world.cluster_id.clone()),
        })
        .await
        .expect("a new token");
    // The kubelet replaces the projected token; the old one expires.
    let staged = world.dir.path().join("token.new");
    std::fs::write(&staged, &new).expect("new token");
    std::fs::rename(&staged, &world.token_file).expect("rotate");
    world.admin.revoke_token(&old).await.expect("revoke");
    world.admin.clear_calls().await.expect("clear calls");
    let heartbeats = world.cluster().await.heartbeats;
    world
        .until("heartbeats with the new token", |record| {
            (record.heartbeats >= heartbeats + 2).then_some(())
        })
        .await;
    let session = world.session().await.expect("session");
    assert_eq!(session["state"], "registered", "{session}");
    // The new file was read before the next call: SIS never saw the revoked token.
    let calls = world.admin.calls().await.expect("calls");
    let heartbeats: Vec<u16> = calls
        .iter()
        .filter(|c| c.route.ends_with("/heartbeat"))
        .map(|c| c.status)
        .collect();
    assert!(
        !heartbeats.is_empty() && heartbeats.iter().all(|status| *status == 200),
        "{heartbeats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_destruct_evicts_workloads_and_silences_the_cluster() {
    let mut world = World::start("agent-destruct", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    world
        .until("a heartbeat", |record| {
            (record.heartbeats >= 1).then_some(())
        })
        .await;
    // A workload pod, as function deployments label them.
    let pods: Api<Pod> = world.ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "0-sr-destruct", "labels": {"icms-request-id": "destruct"}},
        "spec": {"nodeName": "cpu-0", "containers": [{"name": "inference", "image": "busybox"}]}
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the workload pod");

    world
        .admin
        .set_heartbeat_answer(&world.cluster_id, HeartbeatAction::SelfDestruct)
        .await
        .expect("set the answer");
    let session = eventually(WAIT, "the session self-destructed", || {
        let world = &world;
        async move {
            let session = world.session().await?;
            (session["state"] == "self_destructed").then_some(session)
        }
    })
    .await;
    assert_eq!(session["state"], "self_destructed");
    eventually(WAIT, "the workload pod evicted", || {
        let pods = pods.clone();
        async move {
            match pods.get_opt("0-sr-destruct").await {
                Ok(None) => Some(()),
                Ok(Some(pod)) if pod.metadata.deletion_timestamp.is_some() => Some(()),
                _ => None,
            }
        }
    })
    .await;

    // Silence: no call reaches SIS any more, across a restart too.
    world.admin.clear_calls().await.expect("clear calls");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(world.stop_agent().success());
    world.start_agent();
    eventually(WAIT, "the restarted agent answers /healthz", || {
        let world = &world;
        async move { world.healthz().await.map(|_| ()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = world.admin.calls().await.expect("calls");
    // Not one SIS call (admin calls are not recorded): no register, heartbeat,
    // credentials, JWKS, nor the function deployments' instance list.
    let to_cluster: Vec<_> = calls.iter().collect();
    assert!(
        to_cluster.is_empty(),
        "calls after SELF_DESTRUCT: {to_cluster:?}"
    );
    let (_, health) = world.healthz().await.expect("health");
    assert!(
        health["Components"]["sis"]["Errors"][0]
            .as_str()
            .unwrap_or_default()
            .contains("SELF_DESTRUCT"),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_patch_to_config_yaml_reaches_sis_without_a_restart() {
    let world = World::start("agent-drain", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    world
        .until("registered READY", |record| {
            record
                .registration
                .as_ref()
                .filter(|r| r.status.as_str() == "READY")
                .map(|_| ())
        })
        .await;
    // What the operator does on uninstall: the flag, and the mode.
    let text = std::fs::read_to_string(&world.config).expect("config");
    let mut file = nvca::kube::agent_config::AgentConfigFile::parse(&text).expect("config");
    file.set_maintenance("CordonAndDrainMaintenance");
    std::fs::write(&world.config, file.to_yaml().expect("yaml")).expect("write config");
    world
        .until("registered CORDON_AND_DRAIN", |record| {
            record
                .registration
                .as_ref()
                .filter(|r| r.status.as_str() == "CORDON_AND_DRAIN")
                .map(|_| ())
        })
        .await;
    world
        .until("a heartbeat in CordonAndDrain", |record| {
            record
                .last_heartbeat
                .as_ref()
                .filter(|h| h["maintenanceMode"] == "CordonAndDrain")
                .map(|_| ())
        })
        .await;
    let metrics = world.metrics().await;
    assert!(metrics.contains("mode=\"CordonAndDrain\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kai_scheduler_flag_without_kai_is_unhealthy_with_nvidias_message() {
    let world = World::start(
        "agent-kai",
        &["DynamicGPUDiscovery", "SelfHosted", "KAIScheduler"],
    )
    .await;
    let (code, health) = eventually(WAIT, "/healthz with the KAI component", || {
        let world = &world;
        async move {
            let (code, health) = world.healthz().await?;
            health["Components"]
                .get("kai-scheduler-queues")
                .is_some()
                .then_some((code, health))
        }
    })
    .await;
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["Status"], "unhealthy");
    let component = &health["Components"]["kai-scheduler-queues"];
    assert_eq!(component["Status"], "unhealthy");
    assert!(
        component["Errors"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "KAI Scheduler is not installed but the KAIScheduler feature flag is enabled"
            ),
        "{component}"
    );
    // SIS hears it in the heartbeat.
    world
        .until("an unhealthy heartbeat", |record| {
            record
                .last_heartbeat
                .as_ref()
                .filter(|h| h["status"] == "unhealthy")
                .map(|_| ())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dynamic_discovery_the_manual_configuration_is_registered() {
    let instance_type = |name: &str, count: u32| {
        json!({
            "name": name, "value": "ON-PREM.GPU.H100", "description": "H100 by hand",
            "default": count == 1, "cpuCores": 8 * count, "systemMemory": format!("{}G", 128 * count),
            "gpuMemory": "80G", "gpuCount": count, "os": "linux", "driverVersion": "570",
            "cpuArch": "amd64", "storage": "1Ti"
        })
    };
    let gpus = json!([{
        "name": "H100",
        "capacity": 16,
        "instanceTypes": [instance_type("ON-PREM.GPU.H100_1x", 1), instance_type("ON-PREM.GPU.H100_8x", 8)]
    }]);
    // Manual mode counts nodes by their instance-type label, which an admin sets.
    let env = support::testenv::testenv().await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let label =
        json!({"metadata": {"labels": {"nvca.nvcf.nvidia.io/instance-type": "ON-PREM.GPU.H100"}}});
    let _lock = support::lock::cluster_wide_async().await;
    for name in ["gpu-h100-0", "gpu-h100-1"] {
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("label an H100 node");
    }
    drop(_lock);
    let world = World::start_with(
        "agent-manual",
        &["SelfHosted", "-MultiNodeWorkloads"],
        Some(gpus),
    )
    .await;
    let record = world
        .until("the manual registration with node counts", |record| {
            let gpu = record.registration.as_ref()?.gpus.first()?.clone();
            (gpu.instance_types.first()?.max_instances == Some(16)).then(|| record.clone())
        })
        .await;
    let registration = record.registration.expect("registered");
    assert_eq!(registration.gpus.len(), 1);
    let h100 = &registration.gpus[0];
    assert_eq!((h100.name.as_str(), h100.capacity), ("H100", 16));
    let sizes: Vec<(String, Option<u32>, Option<String>)> = h100
        .instance_types
        .iter()
        .map(|t| (t.name.clone(), t.max_instances, t.system_memory.clone()))
        .collect();
    assert_eq!(
        sizes,
        vec![
            (
                "ON-PREM.GPU.H100_1x".to_string(),
                Some(16),
                Some("128G".to_string())
            ),
            (
                "ON-PREM.GPU.H100_8x".to_string(),
                Some(2),
                Some("1024G".to_string())
            ),
        ]
    );
    let heartbeat = world
        .until("a heartbeat", |record| record.last_heartbeat.clone())
        .await;
    assert_eq!(heartbeat["gpuUsage"]["H100"]["capacity"], 16, "{heartbeat}");
}

/// NVIDIA's current self-managed path end to end, without the chart (issue 17): the
/// cluster registered by `nvca-self-managed register` with the API server's issuer and
/// JWKS; the agent's only credential the API server's token for its ServiceAccount, which
/// sis-sim verifies against them, for SIS and for NATS (the control plane's server, whose
/// auth callout sis-sim answers). The agent registers, pushes its JWKS (bound to the
/// registered issuer), and runs a function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_its_psat_the_agent_registers_pushes_its_jwks_and_runs_a_function() {
    let world = World::start_psat("agent-psat", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    let token = std::fs::read_to_string(&world.token_file).expect("the token file");
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT from the TokenRequest API"
    );
    world
        .until("registered and heartbeating with the PSAT", |record| {
            (record.heartbeats >= 1).then_some(())
        })
        .await;
    let pushed = eventually(WAIT, "the agent's JWKS push taken", || async {
        let calls = world.admin.calls().await.ok()?;
        calls
            .into_iter()
            .find(|call| call.route.ends_with("/jwks") && call.status == 200)
    })
    .await;
    assert_eq!(pushed.method, "PUT");

    let (function, _) = world
        .admin
        .create_function(&nvca::sim::admin::FunctionSpec {
            nca_id: "nca-agent-test".into(),
            name: "psat-echo".into(),
            container_image: Some("nvcr.io/team/echo:1".into()),
            helm_chart: None,
            function_type: None,
        })
        .await
        .expect("a function");
    let (_, published) = world
        .admin
        .deploy(&nvca::sim::admin::DeploymentSpec {
            function_id: function,
            cluster_id: world.cluster_id.clone(),
            gpu: "H100".into(),
            instance_type: "ON-PREM.GPU.H100".into(),
            instance_type_name: Some("ON-PREM.GPU.H100_1x".into()),
            instance_count: 1,
            gpu_count: Some(1),
            action: None,
        })
        .await
        .expect("a deployment");
    let request_id = published[0].request_id.clone();
    eventually(WAIT, "SIS hears the instance running", || async {
        let state = world.admin.state().await.ok()?;
        let request = state.requests.get(&request_id)?;
        request
            .instances
            .values()
            .any(|instance| {
                instance
                    .history
                    .contains(&nvca::sis::types::InstanceState::Running)
            })
            .then_some(())
    })
    .await;
    let calls = world.admin.calls().await.expect("calls");
    assert!(
        calls.iter().all(|call| call.status != 401),
        "no call was refused: {:?}",
        calls.iter().filter(|c| c.status == 401).collect::<Vec<_>>()
    );
    // Its queue connection came in through NATS's auth callout, on the same PSAT.
    assert!(
        calls
            .iter()
            .any(|call| call.route == nvca::sim::auth_callout::SUBJECT && call.status == 200),
        "the auth callout let the agent in: {calls:?}"
    );
}

/// The API server's signing key changes (`scripts/testenv rotate-sa-key`: a new key signs,
/// the old one is still trusted) — issue 17:
/// - while the agent runs, its own JWKS push (with its still-valid token) records the new
///   key set, so its next token keeps working, as NVIDIA's `jwks_updater.go` intends;
/// - when it could not push (here: stopped across the rotation), its fresh token, signed
///   by the new key, is refused by SIS until `nvca-self-managed rotate` records the new
///   JWKS; then its next call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_api_servers_key_rotates_the_agent_or_rotate_restores_its_calls() {
    let mut world = World::start_psat("agent-rotate", &["DynamicGPUDiscovery", "SelfHosted"]).await;
    world
        .until("heartbeats with the first key", |record| {
            (record.heartbeats >= 1).then_some(())
        })
        .await;
    let audience = format!("nvcf-icms:{}", world.cluster_id);
    let rotate_key = || {
        let testenv = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testenv");
        let rotated = std::process::Command::new(testenv)
            .arg("rotate-sa-key")
            .output()
            .expect("scripts/testenv runs");
        assert!(
            rotated.status.success(),
            "{}",
            String::from_utf8_lossy(&rotated.stderr)
        );
    };
    let key_count = |jwks: Option<String>| {
        jwks.and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|set| set["keys"].as_array().map(Vec::len))
            .unwrap_or(0)
    };

    // Running: the agent pushes the new key set itself, then its new token is taken.
    let keys_before = key_count(world.cluster().await.jwks);
    rotate_key();
    world
        .until("the agent's push of the rotated key set", |record| {
            (key_count(record.jwks.clone()) > keys_before).then_some(())
        })
        .await;
    std::fs::write(
        &world.token_file,
        projected_token(&world.ns, &audience).await,
    )
    .expect("token file");
    let before = world.cluster().await.heartbeats;
    world
        .until("a heartbeat with the token of the new key", |record| {
            (record.heartbeats > before).then_some(())
        })
        .await;

    // Stopped across a rotation: refused until `rotate`.
    assert!(world.stop_agent().success());
    rotate_key();
    std::fs::write(
        &world.token_file,
        projected_token(&world.ns, &audience).await,
    )
    .expect("token file");
    world.admin.clear_calls().await.expect("clear calls");
    world.start_agent();
    eventually(
        WAIT,
        "SIS refusing the token signed by the newest key",
        || async {
            let calls = world.admin.calls().await.ok()?;
            calls.iter().any(|call| call.status == 401).then_some(())
        },
    )
    .await;
    let sis_url = format!("http://{}", world.sim_addr);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nvca-self-managed"))
        .args([
            "rotate",
            "--cluster-id",
            &world.cluster_id,
            "--icms-url",
            &sis_url,
        ])
        .arg("--token-file")
        .arg(world.dir.path().join("management-token"))
        .arg("--kubeconfig")
        .arg(&world.env.endpoints.kubeconfig)
        .output()
        .expect("nvca-self-managed runs");
    assert!(
        output.status.success(),
        "rotate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let before = world.cluster().await.heartbeats;
    world
        .until("a heartbeat taken after rotate", |record| {
            (record.heartbeats > before).then_some(())
        })
        .await;

    // The API server restarted twice: before the next test takes the cluster, its
    // scheduler and kwok must serve again (their watches reconnect with backoff).
    let pods: Api<Pod> = world.ns.api();
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": "after-rotation"},
        "spec": {
            "containers": [{"name": "probe", "image": "busybox"}],
            "tolerations": [{"operator": "Exists"}],
        }
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &probe)
        .await
        .expect("create the probe pod");
    eventually(
        WAIT,
        "a pod scheduled and running after the rotations",
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get_opt("after-rotation").await.ok()??;
                support::pods::ready(&pod).then_some(())
            }
        },
    )
    .await;
}
