//! The chart installed and run. `helm install` into the local control plane with the
//! install guide's values, then the pod's own commands as processes on this host (kwok
//! runs no containers), with the arguments and environment the installed Deployment
//! gives them, plus only what the cluster would otherwise provide: a kubeconfig, the SIS
//! token file, a store directory and loopback ports. The init container's bootstrap
//! registers with sis-sim, the operator provisions the agent, the agent (from the
//! ConfigMap `agent-config` the operator rendered) serves `/healthz`, and the
//! NVCFBackend's `agentStatus` turns `healthy`. A `helm upgrade` that changes
//! `selfManaged.featureGateValues` then reaches the NVCFBackend and the agent's
//! configuration while the same operator process keeps running.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container};
use kube::Api;
use kube::api::DeleteParams;
use nvca::kube::crd::NVCFBackend;
use nvca::sim::SimConfig;
use nvca::sim::admin::AdminClient;
use nvca::sis::token::{vault_secrets_json, write_token_file};
use support::helm::{Helm, arg, chart_dir};
use support::testenv::{eventually, testenv_with_namespace};

/// A process of the pod, run here; SIGKILLed when dropped, its log shown on failure.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &str, mut command: Command, dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = command
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running (never exited since it was started).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log:\n{}", self.name, self.log());
        }
    }
}

/// The binary of this crate a container's `/usr/bin/<name>` command names.
fn binary(command: &str) -> &'static str {
    match command {
        "/usr/bin/nvca-self-managed" => env!("CARGO_BIN_EXE_nvca-self-managed"),
        "/usr/bin/nvca-operator" => env!("CARGO_BIN_EXE_nvca-operator"),
        "/usr/bin/nvca" => env!("CARGO_BIN_EXE_nvca"),
        "/usr/bin/webhook-server" => env!("CARGO_BIN_EXE_webhook-server"),
        "/usr/bin/nvca-mirror" => env!("CARGO_BIN_EXE_nvca-mirror"),
        "/usr/bin/nvca-operator-cleanup" => env!("CARGO_BIN_EXE_nvca-operator-cleanup"),
        other => panic!("the chart runs {other}, which this crate does not build"),
    }
}

/// A container as a command line: its binary (the `command`, or as in the chart with
/// no `command`, `args[0]`), its arguments with `replace`d flag values, its environment
/// (field references resolved as the kubelet would for this pod).
fn pod_command(container: &Container, namespace: &str, replace: &[(&str, &str)]) -> Command {
    let mut args = container.args.clone().unwrap_or_default();
    let first = match container.command.as_ref().and_then(|c| c.first()) {
        Some(first) => first.clone(),
        None if !args.is_empty() => args.remove(0),
        None => panic!("container {} has neither command nor args", container.name),
    };
    let mut command = Command::new(binary(&first));
    for (flag, value) in replace {
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }
    command.args(&args).env_clear();
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.name") => "nvca-operator-test-pod".to_string(),
                other => panic!(
                    "env {} comes from {other:?}, unknown to this test",
                    var.name
                ),
            },
            (None, None) => String::new(),
        };
        command.env(&var.name, value);
    }
    command.env("RUST_LOG", "info");
    command
}

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn feature_gates(backend: &NVCFBackend) -> Vec<String> {
    let spec = serde_json::to_value(&backend.spec).expect("spec as JSON");
    spec["featureGate"]["values"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The config digest on Deployment `nvca`'s pod template ("" before it exists).
async fn config_digest(deployments: &Api<Deployment>) -> String {
    deployments
        .get_opt("nvca")
        .await
        .ok()
        .flatten()
        .and_then(|d| d.spec.template.metadata?.annotations)
        .and_then(|mut a| a.remove(nvca::kube::resources::deployment::CONFIG_DIGEST_ANNOTATION))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_bootstraps_provisions_a_healthy_agent_and_upgrades_without_a_restart() {
    let _lock = support::lock::cluster_wide_async().await;
    let (env, ns) = testenv_with_namespace("chart-e2e").await;
    // Whatever an earlier, failed run left: cleared with nvca's own last resort.
    let cleared = Command::new(env!("CARGO_BIN_EXE_nvca-state"))
        .args(["force-cleanup", "--yes", "--wait", "10s", "--kubeconfig"])
        .arg(&env.endpoints.kubeconfig)
        .output()
        .expect("run nvca-state force-cleanup");
    assert!(
        cleared.status.success(),
        "nvca-state force-cleanup failed: {}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    let kubeconfig = env.endpoints.kubeconfig.to_string_lossy().to_string();
    let dir = tempfile::tempdir().expect("temporary directory");
    let sim = nvca::sim::start(SimConfig::default())
        .await
        .expect("sis-sim starts");
    let admin = AdminClient::new(sim.base_url());
    let token = admin.issue_token(None).await.expect("a SIS token");
    let token_file = dir.path().join("secrets.json");
    write_token_file(&token_file, &vault_secrets_json(&token)).expect("token file");
    let token_file = token_file.to_string_lossy().to_string();

    // The guide's first step: the pull secret its values name.
    ns.create_pull_secret("nvcr-pull-secret").await;

    // Install with the guide's values; only the control plane's URLs are this test's.
    let fullname = format!("nvca-operator-{}", &ns.name[ns.name.len() - 8..]);
    let helm = Helm::for_testenv(&env.endpoints);
    let chart = chart_dir();
    let sis_url = sim.base_url().to_string();
    let nats_url = env.endpoints.nats_url.clone();
    let release_sets = [
        format!("fullnameOverride={fullname}"),
        format!("serviceAccount.name={fullname}"),
        format!("selfManaged.icmsServiceURL={sis_url}"),
        "selfManaged.revalServiceURL=http://127.0.0.1:9".to_string(),
        format!("selfManaged.natsURL={nats_url}"),
    ];
    let mut install = vec![
        "install".to_string(),
        "nvca-operator".into(),
        arg(&chart).to_string(),
        "-n".into(),
        ns.name.clone(),
        "-f".into(),
        "fixtures/chart/guide-values.yaml".into(),
    ];
    for set in &release_sets {
        install.extend(["--set".to_string(), set.clone()]);
    }
    helm.run(&install).expect_success();

    let deployments: Api<Deployment> = ns.api();
    let pod = deployments
        .get(&fullname)
        .await
        .expect("the chart's Deployment")
        .spec
        .template
        .spec
        .expect("pod spec");

    // The init container: registration with SIS.
    let init = container(
        pod.init_containers.as_deref().unwrap_or_default(),
        "nvca-self-managed-bootstrap",
    );
    let bootstrap_store = dir.path().join("bootstrap-store");
    let mut bootstrap = pod_command(
        init,
        &ns.name,
        &[
            ("--kubeconfig", &kubeconfig),
            ("--token-file", &token_file),
            ("--store", &bootstrap_store.to_string_lossy()),
            ("--timeout", "60s"),
        ],
    );
    let status = bootstrap.status().expect("run the bootstrap");
    assert!(
        status.success(),
        "the init container's bootstrap failed: {status}"
    );
    let configmaps: Api<ConfigMap> = ns.api();
    let registration = configmaps
        .get("nvca-cluster-registration")
        .await
        .expect("registration ConfigMap")
        .data
        .unwrap_or_default();
    let cluster_id = registration
        .get("clusterId")
        .filter(|id| !id.is_empty())
        .expect("the bootstrap wrote clusterId")
        .clone();

    // The operator, as the chart runs it.
    let agent_port = free_port();
    let operator_store = dir.path().join("operator-store");
    let mut operator = Process::start(
        "nvca-operator",
        pod_command(
            container(&pod.containers, &fullname),
            &ns.name,
            &[
                ("--kubeconfig", &kubeconfig),
                ("--store", &operator_store.to_string_lossy()),
                ("--listen", "127.0.0.1:0"),
                ("--listen-admin", "127.0.0.1:0"),
                (
                    "--agent-health-url",
                    &format!("http://127.0.0.1:{agent_port}/healthz"),
                ),
                ("--agent-health-interval", "1s"),
            ],
        ),
        dir.path(),
    );

    // The agent, from the configuration the operator rendered for Deployment nvca.
    let system: Api<ConfigMap> = Api::namespaced(env.client.clone(), "nvca-system");
    let config = eventually(Duration::from_secs(90), "ConfigMap agent-config", || {
        let system = system.clone();
        async move {
            let map = system.get_opt("agent-config").await.ok()??;
            map.data?.get("config.yaml").cloned()
        }
    })
    .await;
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, &config).expect("write config.yaml");
    let agent_store = dir.path().join("agent-store");
    let agent_command = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nvca"));
        command
            .arg("--config")
            .arg(&config_file)
            .args(["--kubeconfig", &kubeconfig])
            .args(["--vault-secrets-file", &token_file])
            .arg("--store")
            .arg(&agent_store)
            .args(["--listen", &format!("127.0.0.1:{agent_port}")])
            .args(["--listen-admin", "127.0.0.1:0"])
            .env("RUST_LOG", "info");
        command
    };
    let agent = Process::start("nvca-agent", agent_command(), dir.path());
    let agent_deployments: Api<Deployment> = Api::namespaced(env.client.clone(), "nvca-system");
    let digest_before = config_digest(&agent_deployments).await;

    // The guide's values turn on KAIScheduler, and this control plane has no KAI
    // Scheduler: the agent says so in /healthz, and the NVCFBackend shows it.
    let backends: Api<NVCFBackend> = ns.api();
    let unhealthy = eventually(
        Duration::from_secs(120),
        "NVCFBackend agentStatus unhealthy (KAI Scheduler missing)",
        || {
            let backends = backends.clone();
            async move {
                let list = backends.list(&Default::default()).await.ok()?;
                list.items.into_iter().find(|b| {
                    b.status
                        .as_ref()
                        .is_some_and(|s| s.agent_status == "unhealthy")
                })
            }
        },
    )
    .await;
    let backend_name = unhealthy.metadata.name.clone().expect("backend name");
    assert_eq!(
        serde_json::to_value(&unhealthy.spec).expect("spec")["clusterConfig"]["clusterID"],
        cluster_id.as_str(),
        "the NVCFBackend does not carry the registered cluster ID"
    );
    assert!(
        feature_gates(&unhealthy)
            .iter()
            .any(|g| g == "KAIScheduler")
    );
    let health: serde_json::Value = nvca::tls::http_client()
        .get(format!("http://127.0.0.1:{agent_port}/healthz"))
        .send()
        .await
        .expect("GET /healthz")
        .json()
        .await
        .expect("/healthz JSON");
    assert_eq!(
        health["Components"]["kai-scheduler-queues"]["Status"], "unhealthy",
        "{health}"
    );
    let at_sis = admin
        .cluster(&cluster_id)
        .await
        .expect("the cluster at SIS");
    assert!(
        at_sis.registrations >= 1 && at_sis.heartbeats >= 1,
        "the agent did not register and heartbeat: {} registrations, {} heartbeats",
        at_sis.registrations,
        at_sis.heartbeats
    );

    // helm upgrade without KAIScheduler: the change reaches the NVCFBackend, the agent's
    // config.yaml and Deployment `nvca`, whose pod template changes (the kubelet would
    // start a new agent pod: here the agent process is restarted on the new file), and
    // the backend turns healthy, all with the same operator process.
    let mut upgrade = vec![
        "upgrade".to_string(),
        "nvca-operator".into(),
        arg(&chart).to_string(),
        "-n".into(),
        ns.name.clone(),
        "--reuse-values".into(),
        "--set".into(),
        "selfManaged.featureGateValues={DynamicGPUDiscovery,SelfHosted}".into(),
    ];
    upgrade.extend(["--set".to_string(), release_sets[0].clone()]);
    helm.run(&upgrade).expect_success();
    let name = backend_name.clone();
    eventually(
        Duration::from_secs(60),
        "KAIScheduler gone from the NVCFBackend",
        || {
            let backends = backends.clone();
            let name = name.clone();
            async move {
                let backend = backends.get(&name).await.ok()?;
                (!feature_gates(&backend).iter().any(|g| g == "KAIScheduler")).then_some(())
            }
        },
    )
    .await;
    let config = eventually(
        Duration::from_secs(60),
        "KAIScheduler gone from agent-config",
        || {
            let system = system.clone();
            async move {
                let text = system
                    .get("agent-config")
                    .await
                    .ok()?
                    .data?
                    .remove("config.yaml")?;
                let file = nvca::kube::agent_config::AgentConfigFile::parse(&text).ok()?;
                (!file.agent.feature_flags.iter().any(|f| f == "KAIScheduler")).then_some(text)
            }
        },
    )
    .await;
    let digest_after = eventually(Duration::from_secs(60), "Deployment nvca rolled", || {
        let deployments = agent_deployments.clone();
        let before = digest_before.clone();
        async move {
            let now = config_digest(&deployments).await;
            (now != before).then_some(now)
        }
    })
    .await;
    assert!(!digest_after.is_empty());
    drop(agent);
    std::fs::write(&config_file, &config).expect("write config.yaml");
    let _agent = Process::start("nvca-agent-restarted", agent_command(), dir.path());
    eventually(
        Duration::from_secs(90),
        "NVCFBackend agentStatus healthy",
        || {
            let backends = backends.clone();
            let name = name.clone();
            async move {
                let backend = backends.get(&name).await.ok()?;
                backend
                    .status
                    .is_some_and(|s| s.agent_status == "healthy")
                    .then_some(())
            }
        },
    )
    .await;
    assert!(
        operator.running(),
        "the operator stopped during the upgrade"
    );

    // Uninstall as the guide says: the NVCFBackend first (the operator cleans up), then
    // the release.
    backends
        .delete(&backend_name, &DeleteParams::default())
        .await
        .expect("delete the NVCFBackend");
    eventually(Duration::from_secs(120), "NVCFBackend gone", || {
        let backends = backends.clone();
        let name = backend_name.clone();
        async move { backends.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    helm.run(["uninstall", "nvca-operator", "-n", &ns.name, "--wait"])
        .expect_success();
    let _ = configmaps
        .delete("nvca-cluster-registration", &DeleteParams::default())
        .await;
    drop(operator);
    ns.delete().await;
}
