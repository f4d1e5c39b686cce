//! `nvca-self-managed register` and `rotate`, NVIDIA's `nvcf-cli cluster register` and
//! `cluster rotate`: the real binary as a child process, against `sis-sim` over loopback
//! HTTP with an admin token (authority `cluster-management` only), discovering the issuer
//! and JWKS of the local control plane (`scripts/testenv up`). Without the control plane
//! every test here fails, saying how to start it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nvca::machines::cluster::ClusterSpec;
use nvca::sim::admin::{AdminClient, TokenRequest};
use nvca::sim::state::ClusterRecord;
use nvca::sim::{SimConfig, SimHandle};
use nvca::sis::types::{CloudProvider, ClusterCreationRequest, JwksUpdate};
use nvca::sis::{SisClient, SisConfig, TokenSource};
use support::testenv::{TestEnv, testenv};
use tokio::process::Command;

const NCA: &str = "nca-register-test";
const CLUSTER: &str = "gpu-west";
const CREATE_ROUTE: &str = "/v1/accounts/{ncaId}/clusters";
const JWKS_ROUTE: &str = "/v1/nvca/clusters/{clusterId}/jwks";
const SELF_MANAGED: &str = env!("CARGO_BIN_EXE_nvca-self-managed");
/// A key set that is not the API server's, standing for a stale trust root.
const STALE_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"stale","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
const STALE_ISSUER: &str = "https://stale.example";

/// One test's world: the control plane, a fresh sis-sim, an admin token file, a directory.
struct World {
    env: TestEnv,
    sim: SimHandle,
    admin: AdminClient,
    dir: tempfile::TempDir,
    token_file: PathBuf,
    token: String,
}

/// A finished run of the binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// The last line of stderr: the error the user sees.
    fn last_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }
}

impl World {
    async fn start() -> World {
        let env = testenv().await;
        let sim = nvca::sim::start(SimConfig::default())
            .await
            .expect("sis-sim starts on a free loopback port");
        let admin = AdminClient::new(sim.base_url());
        let dir = tempfile::tempdir().expect("temporary directory");
        let token = admin
            .issue_token_with(TokenRequest {
                authorities: Some(vec!["cluster-management".into()]),
                cluster_id: None,
            })
            .await
            .expect("sis-sim issues an admin token");
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token file");
        World {
            env,
            sim,
            admin,
            dir,
            token_file,
            token,
        }
    }

    fn output(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("registration/{CLUSTER}-register-values.yaml"))
    }

    /// The children's temporary directory, where a spooled NVCF_TOKEN would be.
    fn tmp(&self) -> PathBuf {
        let tmp = self.dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("temporary directory");
        tmp
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn kubeconfig(&self) -> &Path {
        &self.env.endpoints.kubeconfig
    }

    /// The binary with a clean environment: no KUBECONFIG, no NVCF_* variables.
    async fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut command = Command::new(SELF_MANAGED);
        command
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("NVCF_TOKEN")
            .env_remove("NVCF_ICMS_URL")
            .env_remove("NVCF_NATS_URL")
            .env_remove("NVCA_REGISTER_STORE")
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("TMPDIR", self.tmp())
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("the command finishes within 2 minutes")
            .expect("run nvca-self-managed");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn run_strings(&self, args: &[String]) -> Run {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args, &[]).await
    }

    /// `register` as the guide would run it, plus `extra`.
    async fn register_with(&self, store: &Path, extra: &[&str]) -> Run {
        let sim_url = self.sim.base_url();
        let token_file = self.token_file.display().to_string();
        let output = self.output().display().to_string();
        let store = store.display().to_string();
        let kubeconfig = self.kubeconfig().display().to_string();
        let mut args = vec![
            "register",
            "--name",
            CLUSTER,
            "--nca-id",
            NCA,
            "--icms-url",
            &sim_url,
            "--token-file",
            &token_file,
            "--output",
            &output,
            "--store",
            &store,
            "--kubeconfig",
            &kubeconfig,
        ];
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout", "30s"]);
        }
        args.extend_from_slice(extra);
        self.run(&args, &[]).await
    }

    async fn register(&self) -> Run {
        self.register_with(&self.store(), &[]).await
    }

    /// The API server's issuer and JWKS, read as NVIDIA's CLI reads them
    /// (`kubectl get --raw`).
    async fn api_server_identity(&self) -> (String, String) {
        let get = |path: &'static str| {
            let client = self.env.client.clone();
            async move {
                let request = axum::http::Request::get(path).body(Vec::new()).unwrap();
                client.request_text(request).await.expect(path)
            }
        };
        let discovery: serde_json::Value =
            serde_json::from_str(&get("/.well-known/openid-configuration").await).unwrap();
        let issuer = discovery["issuer"].as_str().expect("issuer").to_string();
        (issuer, get("/openid/v1/jwks").await.trim().to_string())
    }

    /// The account's clusters at sis-sim.
    fn clusters(&self) -> Vec<ClusterRecord> {
        self.sim.shared().read(|state| {
            state
                .clusters
                .values()
                .filter(|c| c.nca_id == NCA)
                .cloned()
                .collect()
        })
    }

    fn only_cluster(&self) -> ClusterRecord {
        let clusters = self.clusters();
        assert_eq!(
            clusters.len(),
            1,
            "exactly one cluster at SIS: {:?}",
            clusters.iter().map(|c| &c.cluster_id).collect::<Vec<_>>()
        );
        clusters.into_iter().next().unwrap()
    }

    /// Statuses of SIS's answers to `method route`, in order.
    fn answers(&self, method: &str, route: &str) -> Vec<u16> {
        self.sim
            .shared()
            .calls()
            .into_iter()
            .filter(|c| c.method == method && c.route == route)
            .map(|c| c.status)
            .collect()
    }

    fn sis(&self) -> SisClient {
        SisClient::new(
            SisConfig::new(self.sim.base_url()),
            TokenSource::projected(&self.token_file),
        )
        .expect("SIS client")
    }

    /// Replace the cluster's trust root at SIS with a stale one, as an admin could.
    async fn make_trust_root_stale(&self, cluster_id: &str) {
        self.sis()
            .push_jwks(
                cluster_id,
                &JwksUpdate {
                    jwks: STALE_JWKS.into(),
                    oidc_issuer: Some(STALE_ISSUER.into()),
                },
            )
            .await
            .expect("an admin token may replace any cluster's JWKS");
        let record = self.only_cluster();
        assert_eq!(record.jwks.as_deref(), Some(STALE_JWKS));
        assert_eq!(record.oidc_issuer.as_deref(), Some(STALE_ISSUER));
    }

    /// The values file, parsed, and its top-level and `selfManaged` keys in file order.
    fn values(&self) -> (serde_yaml::Value, Vec<String>, Vec<String>) {
        let text = std::fs::read_to_string(self.output()).expect("the values file exists");
        let value: serde_yaml::Value = serde_yaml::from_str(&text).expect("the file is YAML");
        let keys = |map: &serde_yaml::Value| -> Vec<String> {
            map.as_mapping()
                .expect("a mapping")
                .keys()
                .map(|k| k.as_str().unwrap().to_string())
                .collect()
        };
        let top = keys(&value);
        let self_managed = keys(&value["selfManaged"]);
        (value, top, self_managed)
    }

    #[track_caller]
    fn assert_trust_root_is_the_api_servers(
        &self,
        record: &ClusterRecord,
        issuer: &str,
        jwks: &str,
    ) {
        assert_eq!(record.oidc_issuer.as_deref(), Some(issuer), "issuer at SIS");
        assert_eq!(
            record.jwks.as_deref().map(str::trim),
            Some(jwks),
            "SIS holds the API server's JWKS"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_records_the_api_servers_issuer_and_jwks_and_writes_nvidias_values_file() {
    let world = World::start().await;
    let run = world.register().await;
    run.assert_code(0);

    // SIS: one cluster, created as NVIDIA's CLI creates it, with the trust root.
    let record = world.only_cluster();
    let (issuer, jwks) = world.api_server_identity().await;
    world.assert_trust_root_is_the_api_servers(&record, &issuer, &jwks);
    let creation = &record.creation;
    assert_eq!(creation.cluster_name, CLUSTER);
    assert_eq!(creation.cluster_group_name, CLUSTER);
    assert_eq!(creation.cloud_provider, Some(CloudProvider::OnPrem));
    assert_eq!(creation.region, "us-west-1");
    assert_eq!(creation.nvca_version, "0.0.0");
    assert_eq!(
        creation.capabilities,
        vec!["DynamicGPUDiscovery".to_string()]
    );
    assert_eq!(world.answers("POST", CREATE_ROUTE), vec![200]);

    // The file: NVIDIA's keys in NVIDIA's order, sis-sim's IDs.
    let (values, top, self_managed) = world.values();
    assert_eq!(
        top,
        [
            "clusterID",
            "clusterGroupID",
            "ncaID",
            "region",
            "selfManaged"
        ]
    );
    assert_eq!(
        self_managed,
        [
            "identitySource",
            "icmsServiceURL",
            "revalServiceURL",
            "natsURL"
        ]
    );
    assert_eq!(
        values["clusterID"].as_str(),
        Some(record.cluster_id.as_str())
    );
    assert_eq!(
        values["clusterGroupID"].as_str(),
        Some(record.cluster_group_id.as_str())
    );
    assert_eq!(values["ncaID"].as_str(), Some(NCA));
    assert_eq!(values["region"].as_str(), Some("us-west-1"));
    let sim_url = world.sim.base_url();
    let managed = &values["selfManaged"];
    assert_eq!(managed["identitySource"].as_str(), Some("psat"));
    assert_eq!(managed["icmsServiceURL"].as_str(), Some(sim_url.as_str()));
    // 127.0.0.1 has no api.|sis.|reval.|nats. prefix: NVIDIA keeps the host.
    assert_eq!(managed["revalServiceURL"].as_str(), Some(sim_url.as_str()));
    assert_eq!(managed["natsURL"].as_str(), Some("nats://127.0.0.1:4222"));

    // Stdout: NVIDIA's lines, then exactly the file from `clusterID:` on (what NVIDIA's
    // Makefile keeps).
    for line in [
        format!("Cluster Group ID: {}", record.cluster_group_id),
        format!("Cluster Group Name: {CLUSTER}"),
        format!("Cluster ID: {}", record.cluster_id),
        format!("OIDC Issuer: {issuer}"),
        "Region: us-west-1".to_string(),
        "--- Helm values for nvca-operator ---".to_string(),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "{line:?} missing from stdout:\n{}",
            run.stdout
        );
    }
    let kept = &run.stdout[run.stdout.find("\nclusterID:").expect("clusterID line") + 1..];
    assert_eq!(
        kept,
        std::fs::read_to_string(world.output()).unwrap(),
        "stdout from clusterID: on is the file"
    );
    if issuer == "https://kubernetes.default.svc.cluster.local" {
        assert!(
            run.stderr
                .contains("shared by all vanilla Kubernetes clusters"),
            "NVIDIA's warning about the default issuer:\n{}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registering_again_keeps_the_ids_and_puts_the_trust_root_back() {
    let world = World::start().await;
    world.register().await.assert_code(0);
    let first = world.only_cluster();
    let (issuer, jwks) = world.api_server_identity().await;
    let file = std::fs::read_to_string(world.output()).unwrap();

    // Someone replaced the trust root; the same command again restores it, and changes
    // nothing else.
    world.make_trust_root_stale(&first.cluster_id).await;
    let again = world
        .register_with(&world.store(), &["--ignore-existing"])
        .await;
    again.assert_code(0);
    let second = world.only_cluster();
    assert_eq!(
        (&second.cluster_id, &second.cluster_group_id),
        (&first.cluster_id, &first.cluster_group_id)
    );
    world.assert_trust_root_is_the_api_servers(&second, &issuer, &jwks);
    assert_eq!(std::fs::read_to_string(world.output()).unwrap(), file);

    // The store lost: SIS is asked by name, so still one cluster and no second create.
    world.make_trust_root_stale(&first.cluster_id).await;
    let fresh_store = world.dir.path().join("another-store");
    world.register_with(&fresh_store, &[]).await.assert_code(0);
    let third = world.only_cluster();
    assert_eq!(third.cluster_id, first.cluster_id);
    world.assert_trust_root_is_the_api_servers(&third, &issuer, &jwks);
    assert_eq!(world.answers("POST", CREATE_ROUTE), vec![200], "one create");
    // Two refreshes by the command (the stale pushes are the test's).
    assert_eq!(world.answers("PUT", JWKS_ROUTE), vec![200; 4]);
    assert_eq!(std::fs::read_to_string(world.output()).unwrap(), file);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_created_without_a_trust_root_is_found_and_given_the_clusters() {
    let world = World::start().await;
    let spec = ClusterSpec {
        cluster_name: CLUSTER.into(),
        nca_id: NCA.into(),
        group_name: CLUSTER.into(),
        region: "us-west-1".into(),
        cloud_provider: "ON-PREM".into(),
        nvca_version: "0.0.0".into(),
        capabilities: vec!["DynamicGPUDiscovery".into()],
    };
    let ids = world
        .sis()
        .create_cluster(
            NCA,
            &ClusterCreationRequest {
                cluster_name: spec.cluster_name.clone(),
                cluster_group_name: spec.group_name.clone(),
                nca_id: NCA.into(),
                cloud_provider: Some(CloudProvider::OnPrem),
                region: spec.region.clone(),
                nvca_version: spec.nvca_version.clone(),
                capabilities: spec.capabilities.clone(),
                ..ClusterCreationRequest::default()
            },
        )
        .await
        .expect("created without a JWKS");
    assert_eq!(world.only_cluster().jwks, None);

    world.register().await.assert_code(0);
    let record = world.only_cluster();
    assert_eq!(record.cluster_id, ids.cluster_id);
    let (issuer, jwks) = world.api_server_identity().await;
    world.assert_trust_root_is_the_api_servers(&record, &issuer, &jwks);
    let (values, _, _) = world.values();
    assert_eq!(values["clusterID"].as_str(), Some(ids.cluster_id.as_str()));
    assert_eq!(
        world.answers("POST", CREATE_ROUTE),
        vec![200],
        "no second create"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_puts_the_api_servers_jwks_back() {
    let world = World::start().await;
    world.register().await.assert_code(0);
    let cluster = world.only_cluster();
    world.make_trust_root_stale(&cluster.cluster_id).await;

    // The admin token from NVCF_TOKEN, as NVIDIA's CLI takes it; --force as NVIDIA's
    // scripts pass it.
    let kubeconfig = world.kubeconfig().display().to_string();
    let sim_url = world.sim.base_url();
    let run = world
        .run(
            &[
                "rotate",
                "--cluster-id",
                &cluster.cluster_id,
                "--kubeconfig",
                &kubeconfig,
                "--force",
            ],
            &[("NVCF_TOKEN", &world.token), ("NVCF_ICMS_URL", &sim_url)],
        )
        .await;
    run.assert_code(0);
    let (issuer, jwks) = world.api_server_identity().await;
    assert!(
        run.stdout.contains(&format!(
            "JWKS rotated successfully for cluster '{}'",
            cluster.cluster_id
        )) && run.stdout.contains(&format!("OIDC Issuer: {issuer}")),
        "{}",
        run.stdout
    );
    world.assert_trust_root_is_the_api_servers(&world.only_cluster(), &issuer, &jwks);
    let leftovers: Vec<_> = std::fs::read_dir(world.tmp())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the spooled NVCF_TOKEN is removed: {leftovers:?}"
    );
}

/// A stand-in OIDC issuer on loopback: its discovery document names itself and a
/// relative `jwks_uri`.
async fn serve_issuer(
    document: Option<serde_json::Value>,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let document = document.unwrap_or_else(|| {
        serde_json::json!({ "issuer": base, "jwks_uri": "/keys", "response_types_supported": ["id_token"] })
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .route("/keys", get(|| async { STALE_JWKS }));
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_issuer_url_registers_that_issuer_and_its_keys() {
    let world = World::start().await;
    let (issuer, server) = serve_issuer(None).await;
    let run = world
        .register_with(&world.store(), &["--oidc-issuer-url", &issuer])
        .await;
    run.assert_code(0);
    let record = world.only_cluster();
    assert_eq!(record.oidc_issuer.as_deref(), Some(issuer.as_str()));
    assert_eq!(record.jwks.as_deref(), Some(STALE_JWKS));
    let (values, _, _) = world.values();
    assert_eq!(
        values["selfManaged"]["identitySource"].as_str(),
        Some("psat"),
        "the only identity nvca's chart and agent take (NVIDIA's CLI writes custom here)"
    );
    assert!(run.stdout.contains(&format!("OIDC Issuer: {issuer}")));
    server.abort();

    // A discovery document without an issuer: refused before SIS is asked.
    let (broken, server) = serve_issuer(Some(serde_json::json!({ "jwks_uri": "/keys" }))).await;
    let calls = world.sim.shared().calls().len();
    let run = world
        .register_with(&world.store(), &["--oidc-issuer-url", &broken])
        .await;
    run.assert_code(3);
    assert!(
        run.last_line().contains("has no issuer") && run.last_line().contains("--oidc-issuer-url"),
        "{}",
        run.last_line()
    );
    assert_eq!(
        world.sim.shared().calls().len(),
        calls,
        "nothing sent to SIS"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_names_the_thing_and_the_fix() {
    let world = World::start().await;
    let sim_url = world.sim.base_url();
    let kubeconfig = world.kubeconfig().display().to_string();

    // No token at all, and a token file that is not there: bad input, nothing sent.
    let base = |token: Option<&str>| {
        let mut args = vec![
            "register".to_string(),
            "--name".into(),
            CLUSTER.into(),
            "--nca-id".into(),
            NCA.into(),
            "--icms-url".into(),
            sim_url.clone(),
            "--kubeconfig".into(),
            kubeconfig.clone(),
            "--timeout".into(),
            "20s".into(),
        ];
        if let Some(token) = token {
            args.extend(["--token-file".to_string(), token.to_string()]);
        }
        args
    };
    let run = world.run_strings(&base(None)).await;
    run.assert_code(3);
    assert!(
        run.last_line().contains("--token-file") && run.last_line().contains("NVCF_TOKEN"),
        "{}",
        run.last_line()
    );
    let missing = world.dir.path().join("no-such-token");
    let run = world
        .run_strings(&base(Some(&missing.display().to_string())))
        .await;
    run.assert_code(3);
    assert!(
        run.last_line().contains("no-such-token") && run.last_line().contains("does not exist"),
        "{}",
        run.last_line()
    );

    // An API server that does not answer: bad input, named with the fix.
    let dead = world.dir.path().join("dead-kubeconfig");
    let text = std::fs::read_to_string(world.kubeconfig()).unwrap();
    let server_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .expect("the kubeconfig names a server");
    std::fs::write(
        &dead,
        text.replace(server_line, "    server: https://127.0.0.1:1"),
    )
    .unwrap();
    let mut args = base(Some(&world.token_file.display().to_string()));
    let at = args.iter().position(|a| a == "--kubeconfig").unwrap();
    args[at + 1] = dead.display().to_string();
    let run = world.run_strings(&args).await;
    run.assert_code(3);
    assert!(
        run.last_line()
            .contains("cannot reach the Kubernetes API server")
            && run.last_line().contains("KUBECONFIG"),
        "{}",
        run.last_line()
    );
    assert!(world.clusters().is_empty(), "nothing registered");

    // SIS refusing: a token without cluster-management (403), a region SIS does not know
    // (400). Not completed, with SIS's status and message and the flag to fix.
    let weak = world
        .admin
        .issue_token_with(TokenRequest {
            authorities: Some(vec!["nvca-cluster".into()]),
            cluster_id: None,
        })
        .await
        .unwrap();
    let weak_file = world.dir.path().join("weak-token");
    std::fs::write(&weak_file, &weak).unwrap();
    let mut args = base(Some(&weak_file.display().to_string()));
    args.extend([
        "--store".to_string(),
        world.dir.path().join("s1").display().to_string(),
    ]);
    let run = world.run_strings(&args).await;
    run.assert_code(1);
    assert!(
        run.last_line().contains("403") && run.last_line().contains("cluster-management"),
        "{}",
        run.last_line()
    );

    let mut args = base(Some(&world.token_file.display().to_string()));
    args.extend([
        "--region".to_string(),
        "mars-central-1".into(),
        "--store".into(),
        world.dir.path().join("s2").display().to_string(),
    ]);
    let run = world.run_strings(&args).await;
    run.assert_code(1);
    assert!(
        run.last_line().contains("mars-central-1") && run.last_line().contains("--region"),
        "{}",
        run.last_line()
    );
    assert!(world.clusters().is_empty(), "nothing registered");
    assert!(!world.output().exists(), "no values file");

    // rotate of a cluster SIS does not know.
    let run = world
        .run(
            &[
                "rotate",
                "--cluster-id",
                "00000000-0000-0000-0000-000000000000",
                "--icms-url",
                &sim_url,
                "--kubeconfig",
                &kubeconfig,
            ],
            &[("NVCF_TOKEN", &world.token)],
        )
        .await;
    run.assert_code(1);
    assert!(
        run.last_line().contains("404") && run.last_line().contains("--cluster-id"),
        "{}",
        run.last_line()
    );

    // A second cluster from the same GPU cluster: SIS keeps one JWKS per cluster (409).
    world.register().await.assert_code(0);
    let mut args = base(Some(&world.token_file.display().to_string()));
    let at = args.iter().position(|a| a == CLUSTER).unwrap();
    args[at] = "gpu-twin".into();
    args.extend([
        "--output".to_string(),
        world.dir.path().join("twin.yaml").display().to_string(),
        "--store".into(),
        world.dir.path().join("s3").display().to_string(),
    ]);
    let run = world.run_strings(&args).await;
    run.assert_code(1);
    assert!(
        run.last_line().contains("409")
            && run
                .last_line()
                .contains("its own service-account signing keys"),
        "{}",
        run.last_line()
    );

    // A bad command line is clap's exit code 2.
    let run = world.run(&["register", "--name", CLUSTER], &[]).await;
    run.assert_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_runs_out_of_time_is_resumed_by_the_next() {
    let world = World::start().await;
    world
        .admin
        .set_faults(serde_json::json!({ "errorRate": 1.0 }))
        .await
        .unwrap();
    let run = world
        .register_with(&world.store(), &["--timeout", "4s"])
        .await;
    run.assert_code(1);
    assert!(
        run.last_line().contains("unreachable after 4s")
            && run.last_line().contains("run register again"),
        "{}",
        run.last_line()
    );
    assert!(!world.output().exists(), "no values file yet");

    world
        .admin
        .set_faults(serde_json::json!({ "errorRate": 0.0 }))
        .await
        .unwrap();
    world.register().await.assert_code(0);
    let record = world.only_cluster();
    let (values, _, _) = world.values();
    assert_eq!(
        values["clusterID"].as_str(),
        Some(record.cluster_id.as_str())
    );
    let (issuer, jwks) = world.api_server_identity().await;
    world.assert_trust_root_is_the_api_servers(&record, &issuer, &jwks);
}
