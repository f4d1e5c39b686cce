//! `nvca-operator bootstrap` as the init container and the guide's manual re-registration
//! run it: the real binary as a child process, against `sis-sim` over loopback HTTP and the
//! local control plane (`scripts/testenv up`), the test's namespace standing in for
//! `nvca-operator`. Without the control plane every test here fails, saying how to start it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use nvca::driver::admin::Snapshot;
use nvca::driver::{EffectError, Executor};
use nvca::machines::cluster::{ClusterMachine, Effect, Event};
use nvca::operator::cluster_dto::ClusterDto;
use nvca::operator::cluster_executor::{ClusterExecutor, CreationExtras};
use nvca::sim::admin::AdminClient;
use nvca::sim::{Faults, SimConfig, SimHandle};
use nvca::sis::token::{vault_secrets_json, write_token_file};
use nvca::sis::{SisClient, SisConfig, TokenSource};
use support::kubeproxy::{PausableProxy, apiserver_addr};
use support::testenv::{TestEnv, TestNamespace, eventually, testenv_with_namespace};
use tokio::process::{Child, Command};

const NCA: &str = "nca-bootstrap-test";
const CLUSTER: &str = "gpu-east";
const CREATE_ROUTE: &str = "/v1/accounts/{ncaId}/clusters";

/// `cluster-dto.yaml` in the shape NVIDIA's chart renders it
/// (`self-managed-nvcfbackend-cm.yaml`), pointing at `sis_url`.
fn rendered_dto(sis_url: &str, region: &str) -> String {
    format!(
        r#"clusterId: ""
clusterGroupId: ""
clusterName: "{CLUSTER}"
clusterDescription: "{CLUSTER}"
clusterGroupName: "nvcf-default"
ncaID: "{NCA}"
nvcaVersion: "2.52.1"
oAuthClientId: ""
cloudProvider: "NCP"
region: "{region}"
attributes: []
capabilities: ["DynamicGPUDiscovery","SelfHosted","KAIScheduler"]
gpusB64: ""
icmsConfig:
  publicKeysetEndpoint: ""
  tokenURL: ""
  icmsServiceURL: "{sis_url}"
miniService:
  helmReValServiceURL: "http://127.0.0.1:9"
agent:
  natsURL: "nats://127.0.0.1:4222"
"#
    )
}

/// One test's world: a fresh namespace, a fresh sis-sim, a token file, a store directory.
struct World {
    env: TestEnv,
    ns: TestNamespace,
    sim: SimHandle,
    admin: AdminClient,
    dir: tempfile::TempDir,
    token_file: PathBuf,
    token: String,
}

impl World {
    async fn start(prefix: &str) -> World {
        let (env, ns) = testenv_with_namespace(prefix).await;
        let sim = nvca::sim::start(SimConfig::default())
            .await
            .expect("sis-sim starts on a free loopback port");
        let admin = AdminClient::new(sim.base_url());
        let dir = tempfile::tempdir().expect("temporary directory");
        let token_file = dir.path().join("secrets.json");
        let token = admin
            .issue_token(None)
            .await
            .expect("sis-sim issues a token");
        write_token_file(&token_file, &vault_secrets_json(&token)).expect("token file");
        World {
            env,
            ns,
            sim,
            admin,
            dir,
            token_file,
            token,
        }
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        self.ns.api()
    }

    /// ConfigMap `nvcfbackend-self-managed` with `data`.
    async fn put_dto_configmap(&self, data: Option<BTreeMap<String, String>>) {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some("nvcfbackend-self-managed".into()),
                ..Default::default()
            },
            data,
            ..Default::default()
        };
        self.configmaps()
            .create(&PostParams::default(), &map)
            .await
            .expect("create nvcfbackend-self-managed");
    }

    async fn put_dto(&self, region: &str) {
        let dto = rendered_dto(&self.sim.base_url(), region);
        self.put_dto_configmap(Some(BTreeMap::from([("cluster-dto.yaml".into(), dto)])))
            .await;
    }

    /// `nvca-cluster-registration` as the chart makes it: empty IDs, kept by Helm.
    async fn put_chart_registration(&self) {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some("nvca-cluster-registration".into()),
                annotations: Some(BTreeMap::from([(
                    "helm.sh/resource-policy".into(),
                    "keep".into(),
                )])),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "Helm".into(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("clusterId".into(), String::new()),
                ("clusterGroupId".into(), String::new()),
            ])),
            ..Default::default()
        };
        let params = PostParams {
            field_manager: Some("helm".into()),
            ..Default::default()
        };
        self.configmaps()
            .create(&params, &map)
            .await
            .expect("create nvca-cluster-registration");
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn command(&self, binary: &str, timeout: &str, kubeconfig: &Path, store: &Path) -> Command {
        self.command_with_token(binary, timeout, kubeconfig, store, &self.token_file)
    }

    fn command_with_token(
        &self,
        binary: &str,
        timeout: &str,
        kubeconfig: &Path,
        store: &Path,
        token_file: &Path,
    ) -> Command {
        let mut command = Command::new(binary);
        command
            .args(["bootstrap", "--system-namespace", &self.ns.name])
            .arg("--token-file")
            .arg(token_file)
            .arg("--store")
            .arg(store)
            .args(["--timeout", timeout])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Run `nvca-operator bootstrap` to its end.
    async fn bootstrap(&self, timeout: &str) -> Run {
        self.bootstrap_with(OPERATOR, timeout, &self.store()).await
    }

    async fn bootstrap_with(&self, binary: &str, timeout: &str, store: &Path) -> Run {
        let child = self
            .command(binary, timeout, &self.env.endpoints.kubeconfig, store)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        finish(child).await
    }

    async fn registration(&self) -> ConfigMap {
        self.configmaps()
            .get("nvca-cluster-registration")
            .await
            .expect("nvca-cluster-registration exists")
    }

    async fn registered_ids(&self) -> Option<(String, String)> {
        let map = self
            .configmaps()
            .get_opt("nvca-cluster-registration")
            .await
            .ok()??;
        let data = map.data.unwrap_or_default();
        let id = data.get("clusterId").filter(|v| !v.is_empty())?.clone();
        let group = data
            .get("clusterGroupId")
            .filter(|v| !v.is_empty())?
            .clone();
        Some((id, group))
    }

    /// The clusters sis-sim holds for the account: (name, id, group id).
    fn sis_clusters(&self) -> Vec<(String, String, String)> {
        self.sim.shared().read(|state| {
            state
                .clusters
                .values()
                .filter(|c| c.nca_id == NCA)
                .map(|c| {
                    (
                        c.creation.cluster_name.clone(),
                        c.cluster_id.clone(),
                        c.cluster_group_id.clone(),
                    )
                })
                .collect()
        })
    }

    /// Statuses of SIS's answers to cluster creations, in order.
    fn creates(&self) -> Vec<u16> {
        self.sim
            .shared()
            .calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.route == CREATE_ROUTE)
            .map(|c| c.status)
            .collect()
    }

    fn sis_calls(&self) -> usize {
        self.sim.shared().calls().len()
    }

    /// One cluster at SIS, named as the DTO says, and its IDs in the ConfigMap.
    async fn assert_one_registration_written(&self) -> (String, String) {
        let clusters = self.sis_clusters();
        assert_eq!(
            clusters.len(),
            1,
            "exactly one cluster at SIS: {clusters:?}"
        );
        let (name, id, group) = clusters[0].clone();
        assert_eq!(name, CLUSTER);
        assert_eq!(
            self.registered_ids().await,
            Some((id.clone(), group.clone())),
            "nvca-cluster-registration holds SIS's IDs"
        );
        (id, group)
    }
}

const OPERATOR: &str = env!("CARGO_BIN_EXE_nvca-operator");
const SELF_MANAGED: &str = env!("CARGO_BIN_EXE_nvca-self-managed");

/// What a finished run left behind.
struct Run {
    status: ExitStatus,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    #[track_caller]
    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            Some(code),
            "exit code; stderr:\n{}",
            self.stderr
        );
    }

    /// The last line: the error the user sees.
    fn last_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }
}

async fn finish(child: Child) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the bootstrap finishes within 2 minutes")
        .expect("collect the bootstrap's output");
    Run {
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The machines a running bootstrap serves on its admin endpoint (address in the store).
async fn live_snapshot(store: &Path) -> Option<Snapshot> {
    let address = std::fs::read_to_string(store.join("admin.addr")).ok()?;
    let response = nvca::tls::http_client()
        .get(format!("http://{}/machines", address.trim()))
        .send()
        .await
        .ok()?;
    response.json::<Snapshot>().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_registration_creates_the_cluster_and_fills_the_charts_config_map() {
    let world = World::start("bootstrap-first").await;
    world.put_dto("us-west-1").await;
    world.put_chart_registration().await;

    let run = world.bootstrap("60s").await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("Bootstrap completed successfully"),
        "the log line NVIDIA's docs tell users to look for:\n{}",
        run.stderr
    );
    let (id, group) = world.assert_one_registration_written().await;
    assert!(run.stderr.contains(&id) && run.stderr.contains(&group));
    assert_eq!(world.creates(), vec![200]);

    let creation = world.sim.shared().read(|state| {
        state
            .clusters
            .values()
            .next()
            .map(|c| c.creation.clone())
            .expect("a cluster")
    });
    assert_eq!(creation.cluster_group_name, "nvcf-default");
    assert_eq!(creation.region, "us-west-1");
    assert_eq!(
        creation.capabilities,
        ["DynamicGPUDiscovery", "SelfHosted", "KAIScheduler"]
    );

    let map = world.registration().await;
    let annotations = map.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep"),
        "the chart's annotation survives the write"
    );
    let labels = map.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm")
    );
    let ours = map
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|entry| entry.manager.as_deref() == Some("nvca-operator"))
        .expect("an nvca-operator field manager entry");
    let owned = serde_json::to_string(&ours.fields_v1).expect("fieldsV1 as JSON");
    assert!(
        owned.contains("f:clusterId") && owned.contains("f:clusterGroupId"),
        "{owned}"
    );
    assert!(
        !owned.contains("f:annotations") && !owned.contains("f:labels"),
        "nvca-operator owns only the IDs: {owned}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn later_runs_find_the_same_ids_under_either_binary_name_and_without_a_store() {
    let world = World::start("bootstrap-again").await;
    world.put_dto("us-west-1").await;

    // No nvca-cluster-registration yet: the bootstrap creates it.
    world.bootstrap("60s").await.assert_code(0);
    let first = world.assert_one_registration_written().await;

    // The guide's manual re-registration, by the name NVIDIA's image uses.
    let again = world
        .bootstrap_with(SELF_MANAGED, "60s", &world.store())
        .await;
    again.assert_code(0);
    assert_eq!(world.assert_one_registration_written().await, first);

    // The store lost (a new emptyDir): SIS is asked by name and answers the same IDs.
    let fresh = world.dir.path().join("fresh-store");
    world
        .bootstrap_with(OPERATOR, "60s", &fresh)
        .await
        .assert_code(0);
    assert_eq!(world.assert_one_registration_written().await, first);
    assert_eq!(world.creates(), vec![200], "one create in three runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_between_sis_answer_and_config_map_write_still_leaves_one_registration() {
    let world = World::start("bootstrap-kill").await;
    world.put_dto("us-west-1").await;
    world.put_chart_registration().await;

    // Kubernetes through a forwarder the test can hold; SIS slow enough to act between
    // the look-up and the create.
    let upstream = apiserver_addr(&world.env.endpoints.kubeconfig);
    let proxy = PausableProxy::start(upstream).await;
    let proxied = world.dir.path().join("proxied-kubeconfig");
    proxy.write_kubeconfig(&world.env.endpoints.kubeconfig, &proxied);
    world.sim.shared().set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });

    let store = world.store();
    let mut child = world
        .command(OPERATOR, "60s", &proxied, &store)
        .spawn()
        .expect("start nvca-operator bootstrap");

    // The inputs are read before any SIS call; hold Kubernetes once SIS is being asked.
    eventually(Duration::from_secs(30), "the first SIS call", || async {
        (world.sis_calls() > 0).then_some(())
    })
    .await;
    proxy.pause();
    eventually(
        Duration::from_secs(30),
        "SIS's answer to the create",
        || async { (world.creates() == vec![200]).then_some(()) },
    )
    .await;
    // The machine has recorded SIS's answer and its write is waiting at the forwarder.
    eventually(
        Duration::from_secs(30),
        "machine registered with the ConfigMap write pending",
        || async {
            let snapshot = live_snapshot(&store).await?;
            let machine = snapshot.machines.into_iter().find(|m| m.name == CLUSTER)?;
            (machine.state == "registered"
                && machine
                    .pending
                    .first()
                    .is_some_and(|p| p.description.starts_with("write clusterId")))
            .then_some(())
        },
    )
    .await;
    child.start_kill().expect("SIGKILL the bootstrap");
    let killed = child.wait().await.expect("reap the killed bootstrap");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed),
        Some(9)
    );
    // The write the killed process had sent stays undelivered.
    proxy.sever();
    assert_eq!(
        world.registered_ids().await,
        None,
        "killed before the ConfigMap write"
    );
    assert_eq!(world.sis_clusters().len(), 1, "SIS created the cluster");

    world.sim.shared().set_faults(Faults::default());
    let run = world.bootstrap_with(OPERATOR, "60s", &store).await;
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("resuming the effects an earlier run left pending"),
        "{}",
        run.stderr
    );
    world.assert_one_registration_written().await;
    assert_eq!(world.creates(), vec![200], "never a second create");
}

#[tokio::test(flavor = "multi_thread")]
async fn kills_at_random_instants_then_a_full_run_leave_one_registration() {
    let world = World::start("bootstrap-random-kill").await;
    world.put_dto("us-west-1").await;
    world.sim.shared().set_faults(Faults {
        latency_ms: 120,
        ..Faults::default()
    });
    let store = world.store();
    let kubeconfig = world.env.endpoints.kubeconfig.clone();
    let mut delays = Vec::new();
    for _ in 0..6 {
        let delay = Duration::from_millis(rand::random_range(50..900));
        delays.push(delay);
        let mut child = world
            .command(OPERATOR, "60s", &kubeconfig, &store)
            .spawn()
            .expect("start nvca-operator bootstrap");
        tokio::time::sleep(delay).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    world.sim.shared().set_faults(Faults::default());
    world.bootstrap("60s").await.assert_code(0);
    world.assert_one_registration_written().await;
    let created = world.creates().iter().filter(|s| **s == 200).count();
    assert_eq!(created, 1, "kills after {delays:?}: {:?}", world.creates());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_rotated_mid_run_is_picked_up() {
    let world = World::start("bootstrap-rotate").await;
    world.put_dto("us-west-1").await;
    world.sim.shared().set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    let child = world
        .command(
            OPERATOR,
            "60s",
            &world.env.endpoints.kubeconfig,
            &world.store(),
        )
        .spawn()
        .expect("start nvca-operator bootstrap");
    eventually(Duration::from_secs(30), "the look-up at SIS", || async {
        (world.sis_calls() > 0).then_some(())
    })
    .await;
    // The vault agent renders a new token and the old one is revoked, mid-run.
    let calls_before = world.sis_calls();
    let fresh = world.admin.issue_token(None).await.expect("new token");
    write_token_file(&world.token_file, &vault_secrets_json(&fresh)).expect("rotate");
    world
        .admin
        .revoke_token(&world.token)
        .await
        .expect("revoke the old token");

    let run = finish(child).await;
    run.assert_code(0);
    world.assert_one_registration_written().await;
    let later: Vec<u16> = world.sim.shared().calls()[calls_before..]
        .iter()
        .filter(|c| c.route == CREATE_ROUTE && c.method == "POST")
        .map(|c| c.status)
        .collect();
    // The create may have left with the old token just before the revocation: then SIS
    // answers 401, the client reads the new file and tries again.
    assert_eq!(
        later.last(),
        Some(&200),
        "the create after the rotation succeeded: {later:?}"
    );
    assert!(
        later[..later.len() - 1].iter().all(|status| *status == 401) && later.len() <= 2,
        "{later:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_sis_refuses_fails_at_once_naming_the_token_file() {
    let world = World::start("bootstrap-refused").await;
    world.put_dto("us-west-1").await;
    world
        .admin
        .revoke_token(&world.token)
        .await
        .expect("revoke");
    let started = std::time::Instant::now();
    let run = world.bootstrap("5m").await;
    run.assert_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a refused token does not wait out the budget"
    );
    let line = run.last_line();
    assert!(
        line.contains("SIS refused to register cluster gpu-east"),
        "{line}"
    );
    assert!(line.contains("401"), "{line}");
    assert!(
        line.contains(&world.token_file.display().to_string()),
        "{line}"
    );
    assert!(line.contains("vault agent"), "names the fix: {line}");
    assert!(!line.contains(&world.token), "never the token: {line}");
    assert!(world.sis_clusters().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_empty_token_file_fails_before_any_sis_call() {
    let world = World::start("bootstrap-no-token").await;
    world.put_dto("us-west-1").await;

    std::fs::remove_file(&world.token_file).expect("remove the token file");
    let run = world.bootstrap("60s").await;
    run.assert_code(3);
    let line = run.last_line();
    assert!(
        line.contains(&world.token_file.display().to_string()) && line.contains("does not exist"),
        "{line}"
    );
    assert!(line.contains("vault agent"), "{line}");

    std::fs::write(&world.token_file, "").expect("empty token file");
    let run = world.bootstrap("60s").await;
    run.assert_code(3);
    let line = run.last_line();
    assert!(
        line.contains(&world.token_file.display().to_string()) && line.contains("is empty"),
        "{line}"
    );

    std::fs::write(&world.token_file, r#"{"kv":{"tokens":{"reval":"x"}}}"#).expect("keyless");
    let run = world.bootstrap("60s").await;
    run.assert_code(3);
    assert!(
        run.last_line().contains("kv.tokens.icms"),
        "{}",
        run.last_line()
    );

    assert_eq!(world.sis_calls(), 0, "nothing sent to SIS without a token");
    assert_eq!(world.registered_ids().await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_projected_token_file_works_too() {
    let world = World::start("bootstrap-projected").await;
    world.put_dto("us-west-1").await;
    let projected = world.dir.path().join("token");
    write_token_file(&projected, &format!("{}\n", world.token)).expect("projected token");
    let child = world
        .command_with_token(
            OPERATOR,
            "60s",
            &world.env.endpoints.kubeconfig,
            &world.store(),
            &projected,
        )
        .spawn()
        .expect("start nvca-operator bootstrap");
    finish(child).await.assert_code(0);
    world.assert_one_registration_written().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_malformed_config_map_is_named_with_the_fix() {
    let world = World::start("bootstrap-bad-dto").await;
    let ns = world.ns.name.clone();

    let run = world.bootstrap("60s").await;
    run.assert_code(3);
    let line = run.last_line();
    assert!(
        line.contains(&format!(
            "ConfigMap {ns}/nvcfbackend-self-managed not found"
        )) && line.contains("ngcConfig.clusterSource=self-managed"),
        "{line}"
    );

    // What the chart renders for another cluster source: `data: {}`.
    world.put_dto_configmap(None).await;
    let run = world.bootstrap("60s").await;
    run.assert_code(3);
    let line = run.last_line();
    assert!(
        line.contains("has no key cluster-dto.yaml")
            && line.contains("ngcConfig.clusterSource=self-managed"),
        "{line}"
    );

    let cases = [
        ("clusterName: [unclosed\n", "is not YAML"),
        (
            &rendered_dto(&world.sim.base_url(), "us-west-1")
                .replace("  icmsServiceURL:", "  otherURL:"),
            "selfManaged.icmsServiceURL",
        ),
        (
            &rendered_dto(&world.sim.base_url(), "us-west-1").replace("ncaID:", "account:"),
            "has no ncaID",
        ),
    ];
    for (dto, expected) in cases {
        let mut map = world
            .configmaps()
            .get("nvcfbackend-self-managed")
            .await
            .expect("read back");
        map.data = Some(BTreeMap::from([(
            "cluster-dto.yaml".into(),
            dto.to_string(),
        )]));
        map.metadata.managed_fields = None;
        world
            .configmaps()
            .replace("nvcfbackend-self-managed", &PostParams::default(), &map)
            .await
            .expect("replace cluster-dto.yaml");
        let run = world.bootstrap("60s").await;
        run.assert_code(3);
        let line = run.last_line();
        assert!(
            line.contains("key cluster-dto.yaml") && line.contains(expected),
            "{expected}: {line}"
        );
    }
    assert_eq!(world.sis_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sis_unreachable_fails_after_the_budget_naming_the_url() {
    let world = World::start("bootstrap-unreachable").await;
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let url = format!("http://{closed}");
    let dto = rendered_dto(&url, "us-west-1");
    world
        .put_dto_configmap(Some(BTreeMap::from([("cluster-dto.yaml".into(), dto)])))
        .await;
    let started = std::time::Instant::now();
    let run = world.bootstrap("4s").await;
    run.assert_code(1);
    assert!(started.elapsed() < Duration::from_secs(40));
    let line = run.last_line();
    assert!(
        line.contains(&format!("SIS at {url} unreachable after 4s")),
        "{line}"
    );
    assert!(line.contains("look up cluster gpu-east"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_sis_rejects_fails_with_its_reason_and_the_fix() {
    let world = World::start("bootstrap-rejected").await;
    world.put_dto("mars-central-1").await;
    let run = world.bootstrap("60s").await;
    run.assert_code(1);
    let line = run.last_line();
    assert!(
        line.contains("SIS refused to register cluster gpu-east")
            && line.contains("mars-central-1")
            && line.contains("selfManaged.region"),
        "{line}"
    );
    assert_eq!(world.creates(), vec![400]);
    assert_eq!(world.registered_ids().await, None);
}

/// The executor alone, over real HTTP: SIS's "already exists" is an event, not a failure.
#[tokio::test(flavor = "multi_thread")]
async fn the_executor_turns_already_exists_into_the_event() {
    let world = World::start("bootstrap-executor").await;
    let dto = ClusterDto::parse(&rendered_dto(&world.sim.base_url(), "us-west-1"))
        .expect("the rendered DTO parses");
    let sis = SisClient::new(
        SisConfig::new(world.sim.base_url()),
        TokenSource::vault_secrets(&world.token_file),
    )
    .expect("SIS client");
    let executor = ClusterExecutor::new(
        sis,
        world.env.client.clone(),
        &world.ns.name,
        CreationExtras::default(),
    );
    let register = Effect::RegisterCluster { spec: dto.spec() };
    let first = Executor::<ClusterMachine>::execute(&executor, CLUSTER, "e#1.0", &register)
        .await
        .expect("first create");
    assert!(matches!(first, Event::Registered { .. }), "{first:?}");
    let second = Executor::<ClusterMachine>::execute(&executor, CLUSTER, "e#2.0", &register)
        .await
        .expect("second create answers an event");
    assert_eq!(
        second,
        Event::AlreadyExists {
            key: dto.spec().key()
        }
    );

    // A namespace that does not exist: permanent, and the message says what to do.
    let elsewhere = ClusterExecutor::new(
        SisClient::new(
            SisConfig::new(world.sim.base_url()),
            TokenSource::vault_secrets(&world.token_file),
        )
        .expect("SIS client"),
        world.env.client.clone(),
        "nvca-t-no-such-namespace",
        CreationExtras::default(),
    );
    let write = Effect::WriteRegistration {
        ids: nvca::machines::cluster::ClusterIds {
            cluster_id: "c".into(),
            cluster_group_id: "g".into(),
        },
    };
    match Executor::<ClusterMachine>::execute(&elsewhere, CLUSTER, "e#3.0", &write).await {
        Err(EffectError::Permanent(message)) => {
            assert!(message.contains("--system-namespace"), "{message}")
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}
