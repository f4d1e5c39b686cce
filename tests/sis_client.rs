//! The SIS client against `sis-sim` over real HTTP on loopback: every call, SIS's
//! validation answers, token rotation and 401s, and each HTTP fault switch.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nvca::sim::admin::AdminClient;
use nvca::sim::{SimConfig, SimHandle};
use nvca::sis::client::{Deleted, RetryPolicy, SisClient, SisConfig};
use nvca::sis::token::{TokenSource, vault_secrets_json, write_token_file};
use nvca::sis::types::*;
use serde_json::json;

const NCA: &str = "nca-test-account";

struct Fixture {
    sim: SimHandle,
    admin: AdminClient,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Fixture {
    async fn start() -> Fixture {
        let sim = nvca::sim::start(SimConfig::default())
            .await
            .expect("sis-sim starts");
        let admin = AdminClient::new(sim.base_url());
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("secrets.json");
        let token = admin.issue_token(None).await.unwrap();
        write_token_file(&token_file, &vault_secrets_json(&token)).unwrap();
        Fixture {
            sim,
            admin,
            dir,
            token_file,
        }
    }

    fn client_with(&self, retry: RetryPolicy, timeout: Duration) -> SisClient {
        let mut config = SisConfig::new(self.sim.base_url());
        config.retry = retry;
        config.timeout = timeout;
        SisClient::new(config, TokenSource::vault_secrets(&self.token_file)).unwrap()
    }

    fn client(&self) -> SisClient {
        self.client_with(fast_retry(4), Duration::from_secs(5))
    }

    async fn write_new_token(&self) -> String {
        let token = self.admin.issue_token(None).await.unwrap();
        write_token_file(&self.token_file, &vault_secrets_json(&token)).unwrap();
        token
    }

    async fn statuses(&self, route: &str) -> Vec<u16> {
        self.admin
            .calls()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.route == route)
            .map(|c| c.status)
            .collect()
    }
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        min_wait: Duration::from_millis(20),
        max_wait: Duration::from_millis(100),
    }
}

fn creation(name: &str) -> ClusterCreationRequest {
    cluster::on_prem_cluster(name, NCA, "us-west-2")
}

fn registration() -> RegistrationRequest {
    cluster::h100_registration()
}

fn heartbeat() -> HeartbeatRequest {
    HeartbeatRequest {
        status: HealthStatus::Healthy,
        upgrade_status: String::new(),
        gpu_usage: BTreeMap::from([(
            "H100".to_string(),
            GpuUsage {
                available: 6,
                capacity: 8,
                allocated: 2,
            },
        )]),
        cluster_owner_nca_id: NCA.into(),
        nvca_agent_version: "0.1.0".into(),
        nvca_operator_version: "0.1.0".into(),
        cluster_name: "c".into(),
        maintenance_mode: "None".into(),
    }
}

#[tokio::test]
async fn every_bootstrap_and_agent_call_round_trips_through_sis_sim() {
    let f = Fixture::start().await;
    let client = f.client();

    let ids = client
        .create_cluster(NCA, &creation("gpu-one"))
        .await
        .unwrap();
    let found = client
        .find_cluster_by_name(NCA, "gpu-one")
        .await
        .unwrap()
        .expect("the new cluster is listed");
    assert_eq!(found.cluster_id, ids.cluster_id);
    assert_eq!(
        found.cluster_group_id.as_deref(),
        Some(&*ids.cluster_group_id)
    );
    assert!(
        client
            .find_cluster_by_name(NCA, "absent")
            .await
            .unwrap()
            .is_none()
    );

    let again = client
        .create_cluster(NCA, &creation("gpu-one"))
        .await
        .unwrap_err();
    assert_eq!(again.category(), "already_exists");
    assert!(again.to_string().contains("gpu-one"), "{again}");
    assert_eq!(
        client.list_clusters(NCA).await.unwrap().len(),
        1,
        "no second cluster"
    );

    let registered = client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap();
    assert_eq!(registered.cluster_id.as_deref(), Some(&*ids.cluster_id));
    assert_eq!(
        registered.cluster_group_id.as_deref(),
        Some(&*ids.cluster_group_id)
    );
    assert!(
        registered.credentials.unwrap().is_empty(),
        "self-managed: empty credentials"
    );
    assert!(
        client
            .credentials(&ids.cluster_id)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        client
            .heartbeat(&ids.cluster_id, &heartbeat())
            .await
            .unwrap(),
        HeartbeatAction::Accepted
    );
    f.admin
        .set_heartbeat_answer(&ids.cluster_id, HeartbeatAction::SelfDestruct)
        .await
        .unwrap();
    assert_eq!(
        client
            .heartbeat(&ids.cluster_id, &heartbeat())
            .await
            .unwrap(),
        HeartbeatAction::SelfDestruct
    );

    client
        .push_jwks(
            &ids.cluster_id,
            &JwksUpdate {
                jwks: r#"{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}"#.into(),
                oidc_issuer: Some("https://issuer.test".into()),
            },
        )
        .await
        .unwrap();
    let bad_jwks = client
        .push_jwks(
            &ids.cluster_id,
            &JwksUpdate {
                jwks: "not a key set".into(),
                oidc_issuer: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad_jwks.status(), Some(400));
    assert!(
        bad_jwks.to_string().contains("Invalid JWKS format"),
        "{bad_jwks}"
    );

    assert!(
        client
            .list_instances(&ids.cluster_id)
            .await
            .unwrap()
            .is_empty()
    );

    let seen = f.admin.cluster(&ids.cluster_id).await.unwrap();
    assert_eq!(seen.registrations, 1);
    assert_eq!(seen.heartbeats, 2);
    assert_eq!(seen.registration.unwrap().gpus[0].name, "H100");
    assert_eq!(
        seen.last_heartbeat.unwrap()["gpuUsage"]["H100"],
        json!({"available": 6, "capacity": 8, "allocated": 2})
    );
    assert_eq!(seen.oidc_issuer.as_deref(), Some("https://issuer.test"));

    assert_eq!(
        client.delete_cluster(NCA, &ids.cluster_id).await.unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        client.delete_cluster(NCA, &ids.cluster_id).await.unwrap(),
        Deleted::AlreadyGone
    );
    let gone = client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap_err();
    assert_eq!(gone.category(), "not_found");
    assert!(gone.to_string().contains("doesn't exists"), "{gone}");
}

#[tokio::test]
async fn sis_validation_answers_carry_its_status_codes_and_messages() {
    let f = Fixture::start().await;
    let client = f.client();
    let ids = client
        .create_cluster(NCA, &creation("valid"))
        .await
        .unwrap();

    // Required field of the registration DTO.
    let mut blank = registration();
    blank.k8s_version = " ".into();
    let error = client.register(&ids.cluster_id, &blank).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    let text = error.to_string();
    assert!(
        text.contains("PUT /v1/nvca/clusters/{clusterId}/register"),
        "{text}"
    );
    assert!(text.contains("k8sVersion must be provided"), "{text}");

    // A dynamic-GPU cluster must report GPUs; instance types are required.
    let mut no_gpus = registration();
    no_gpus.gpus.clear();
    let error = client
        .register(&ids.cluster_id, &no_gpus)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("GPUs are not provided in the request"),
        "{error}"
    );
    let mut no_types = registration();
    no_types.gpus[0].instance_types.clear();
    let error = client
        .register(&ids.cluster_id, &no_types)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("must not be empty"), "{error}");

    // Cluster creation rules, in SIS's order and with its status codes.
    let cases: Vec<(ClusterCreationRequest, u16, &str)> = vec![
        (
            ClusterCreationRequest {
                cluster_name: "Upper".into(),
                ..creation("x")
            },
            400,
            "RFC1123",
        ),
        (
            ClusterCreationRequest {
                region: "mars-1".into(),
                ..creation("mars")
            },
            400,
            "not one of the supported regions",
        ),
        (
            ClusterCreationRequest {
                nca_id: "other".into(),
                ..creation("other")
            },
            400,
            "does not match",
        ),
        (
            creation(&"a".repeat(33)),
            412,
            "exceeds the limit of 32 chars",
        ),
        (
            ClusterCreationRequest {
                capabilities: vec![],
                ..creation("static")
            },
            412,
            "gpus must be provided",
        ),
        (
            ClusterCreationRequest {
                nvca_version: String::new(),
                ..creation("nover")
            },
            400,
            "nvcaVersion must be provided",
        ),
    ];
    for (request, status, message) in cases {
        let error = client.create_cluster(NCA, &request).await.unwrap_err();
        assert_eq!(error.status(), Some(status), "{error}");
        assert!(error.to_string().contains(message), "{message}: {error}");
    }

    // Raw bodies the typed client cannot send: enums, nulls and broken JSON.
    let http = nvca::tls::http_client();
    let token = f.admin.issue_token(None).await.unwrap();
    let url = format!(
        "{}/v1/nvca/clusters/{}/register",
        f.sim.base_url(),
        ids.cluster_id
    );
    let send = |body: &'static str| {
        http.put(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = send(r#"{"status":"ready","k8sVersion":"v1"}"#)
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("ClusterStatusEnum") && message.contains("CORDON_AND_DRAIN"),
        "{message}"
    );
    let answer = send(r#"{"k8sVersion":"v1"}"#).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "status must not be null"})
    );
    let answer = send("{not json").await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("JSON parse error"));

    // Unknown requests and the instance update's required fields.
    let error = client
        .acknowledge(
            "no-such-request",
            &AckRequest {
                status: RequestStatusCode::PendingFulfillment,
                message_batch_id: None,
                instance_count: Some(1),
                reservation_id: None,
                capacity_type: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.category(), "not_found");
    assert!(
        error
            .to_string()
            .contains("Cannot find request with id no-such-request")
    );
    let answer = http
        .post(format!("{}/v1/sirs/r/0-sr-r", f.sim.base_url()))
        .bearer_auth(&token)
        .json(&json!({"status": "fulfilled", "requestState": "active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "instanceState must not be null"})
    );
    let answer = http
        .post(format!("{}/v1/sirs/r/0-sr-r", f.sim.base_url()))
        .bearer_auth(&token)
        .json(&json!({"status": "fulfilled", "requestState": "active", "instanceState": "image-pull-issues"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        400,
        "only four instance states are accepted"
    );
}

#[tokio::test]
async fn authority_and_cluster_binding_of_tokens_are_enforced() {
    let f = Fixture::start().await;
    let ids = f
        .client()
        .create_cluster(NCA, &creation("bound"))
        .await
        .unwrap();
    let other = f
        .client()
        .create_cluster(NCA, &creation("other"))
        .await
        .unwrap();

    let bound = f.admin.issue_token(Some(&ids.cluster_id)).await.unwrap();
    write_token_file(&f.token_file, &vault_secrets_json(&bound)).unwrap();
    let client = f.client();
    client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap();
    let error = client
        .register(&other.cluster_id, &registration())
        .await
        .unwrap_err();
    assert_eq!(error.category(), "conflict");
    assert!(error.to_string().contains("is not matching"), "{error}");

    let agent_only = f
        .admin
        .issue_token_with(nvca::sim::admin::TokenRequest {
            authorities: Some(vec!["nvca-cluster".into()]),
            cluster_id: None,
        })
        .await
        .unwrap();
    write_token_file(&f.token_file, &vault_secrets_json(&agent_only)).unwrap();
    let error = client.list_clusters(NCA).await.unwrap_err();
    assert_eq!(error.category(), "forbidden");
    assert!(error.to_string().contains("cluster-management"), "{error}");
}

#[tokio::test]
async fn a_token_rotated_by_rename_is_used_without_a_401() {
    let f = Fixture::start().await;
    let client = f.client();
    let ids = client
        .create_cluster(NCA, &creation("rotate"))
        .await
        .unwrap();
    let old = f.write_new_token().await;
    client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap();
    // The vault agent renders a new token and the old one is revoked at once.
    f.write_new_token().await;
    f.admin.revoke_token(&old).await.unwrap();
    client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap();
    let route = "/v1/nvca/clusters/{clusterId}/register";
    assert_eq!(f.statuses(route).await, vec![200, 200], "no 401 on the way");
}

#[tokio::test]
async fn a_401_makes_the_client_read_the_token_file_again_and_retry() {
    let f = Fixture::start().await;
    let client = f.client();
    let ids = client
        .create_cluster(NCA, &creation("reread"))
        .await
        .unwrap();
    assert_eq!(client.token_source().reads(), 1);

    // Replace the token in place with one of the same length and put the modification
    // time back: nothing in the file's metadata says it changed, so only a 401 can make
    // the client read it again.
    let modified = std::fs::metadata(&f.token_file)
        .unwrap()
        .modified()
        .unwrap();
    let old =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&f.token_file).unwrap())
            .unwrap()["kv"]["tokens"]["icms"]
            .as_str()
            .unwrap()
            .to_string();
    let new = f.admin.issue_token(None).await.unwrap();
    assert_eq!(old.len(), new.len());
    {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&f.token_file)
            .unwrap();
        use std::io::Write;
        (&file)
            .write_all(vault_secrets_json(&new).as_bytes())
            .unwrap();
        file.set_modified(modified).unwrap();
    }
    f.admin.revoke_token(&old).await.unwrap();

    client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap();
    assert_eq!(
        f.statuses("/v1/nvca/clusters/{clusterId}/register").await,
        vec![401, 200]
    );
    assert_eq!(
        client.token_source().reads(),
        2,
        "read again after the 401 only"
    );
}

#[tokio::test]
async fn the_unauthorized_fault_expires_the_token_until_a_new_one_is_rendered() {
    let f = Fixture::start().await;
    let client = f.client();
    let ids = client
        .create_cluster(NCA, &creation("expire"))
        .await
        .unwrap();
    f.admin
        .set_faults(json!({"unauthorizedAfter": 2}))
        .await
        .unwrap();
    client.credentials(&ids.cluster_id).await.unwrap();
    client.credentials(&ids.cluster_id).await.unwrap();
    let error = client.credentials(&ids.cluster_id).await.unwrap_err();
    assert_eq!(error.category(), "unauthorized");
    let text = error.to_string();
    assert!(
        text.contains(&f.token_file.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("kv.tokens.icms"), "{text}");
    assert_eq!(
        f.statuses("/v1/nvca/clusters/{clusterId}/credentials")
            .await,
        vec![200, 200, 401, 401],
        "one re-read and retry, then the error"
    );
    f.write_new_token().await;
    client.credentials(&ids.cluster_id).await.unwrap();
}

#[tokio::test]
async fn a_missing_or_empty_token_file_fails_before_any_call() {
    let f = Fixture::start().await;
    let missing = f.dir.path().join("not-rendered-yet.json");
    let client = SisClient::new(
        SisConfig::new(f.sim.base_url()),
        TokenSource::vault_secrets(&missing),
    )
    .unwrap();
    let error = client.list_clusters(NCA).await.unwrap_err();
    assert_eq!(error.category(), "token_missing");
    assert!(
        error.is_transient(),
        "the vault agent may not have rendered it yet"
    );
    assert!(
        error.to_string().contains("not-rendered-yet.json"),
        "{error}"
    );

    let empty = f.dir.path().join("token");
    std::fs::write(&empty, "").unwrap();
    let client = SisClient::new(
        SisConfig::new(f.sim.base_url()),
        TokenSource::projected(&empty),
    )
    .unwrap();
    let error = client.list_clusters(NCA).await.unwrap_err();
    assert_eq!(error.category(), "token_empty");
    assert!(
        f.admin.calls().await.unwrap().is_empty(),
        "SIS was never called"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() {
    let f = Fixture::start().await;
    let client = f.client();
    f.admin.set_faults(json!({"errorNext": 2})).await.unwrap();
    client.list_clusters(NCA).await.unwrap();
    assert_eq!(
        f.statuses("/v1/accounts/{ncaId}/clusters").await,
        vec![500, 500, 200]
    );

    f.admin.clear_calls().await.unwrap();
    f.admin.set_faults(json!({"errorRate": 1.0})).await.unwrap();
    let error = client.list_clusters(NCA).await.unwrap_err();
    assert_eq!(error.category(), "server_error");
    assert!(error.to_string().contains("4 time(s)"), "{error}");
    assert!(
        error.to_string().contains("Internal Server Error"),
        "{error}"
    );
    assert_eq!(f.statuses("/v1/accounts/{ncaId}/clusters").await.len(), 4);
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_retried_then_a_timeout_error() {
    let f = Fixture::start().await;
    let client = f.client_with(fast_retry(2), Duration::from_millis(300));
    f.admin.set_faults(json!({"latencyMs": 100})).await.unwrap();
    client.list_clusters(NCA).await.unwrap();
    f.admin
        .set_faults(json!({"latencyMs": 1000}))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let error = client.list_clusters(NCA).await.unwrap_err();
    assert_eq!(error.category(), "timeout");
    assert!(error.to_string().contains("2 time(s)"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "each try is cut at the timeout"
    );
}

#[tokio::test]
async fn a_malformed_body_is_reported_with_an_excerpt_and_a_heartbeat_stays_accepted() {
    let f = Fixture::start().await;
    let client = f.client();
    let ids = client
        .create_cluster(NCA, &creation("garbled"))
        .await
        .unwrap();
    f.admin
        .set_faults(json!({"malformedNext": 1}))
        .await
        .unwrap();
    let error = client
        .register(&ids.cluster_id, &registration())
        .await
        .unwrap_err();
    assert_eq!(error.category(), "decode");
    let text = error.to_string();
    assert!(text.contains("body starts: \"{\\\"cluster"), "{text}");

    f.admin
        .set_faults(json!({"malformedNext": 1}))
        .await
        .unwrap();
    f.admin
        .set_heartbeat_answer(&ids.cluster_id, HeartbeatAction::SelfDestruct)
        .await
        .unwrap();
    assert_eq!(
        client
            .heartbeat(&ids.cluster_id, &heartbeat())
            .await
            .unwrap(),
        HeartbeatAction::Accepted,
        "an unreadable heartbeat answer never means SELF_DESTRUCT"
    );
}

#[tokio::test]
async fn dropped_connections_are_retried_then_reported() {
    let f = Fixture::start().await;
    let client = f.client();
    f.admin.set_faults(json!({"dropNext": 1})).await.unwrap();
    client.list_clusters(NCA).await.unwrap();
    let calls = f.admin.calls().await.unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].fault.as_deref(), Some("drop"));
    assert_eq!(calls[1].status, 200);

    f.admin.set_faults(json!({"dropRate": 1.0})).await.unwrap();
    let error = client.list_clusters(NCA).await.unwrap_err();
    assert_eq!(error.category(), "connect");
    assert!(error.to_string().contains(&f.sim.base_url()), "{error}");
}

#[tokio::test]
async fn the_sis_sim_binary_serves_and_writes_a_vault_token_file() {
    use std::io::BufRead;
    let binary = env!("CARGO_BIN_EXE_sis-sim");
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--latency-ms", "1"])
        .arg("--state-file")
        .arg(&state_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _child = Kill(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("sis-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    let token_file = dir.path().join("vault").join("secrets.json");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    let status = std::process::Command::new(binary)
        .args(["token", "--url", &url, "--out"])
        .arg(&token_file)
        .status()
        .unwrap();
    assert!(status.success());
    let rendered: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&token_file).unwrap()).unwrap();
    assert!(
        rendered["kv"]["tokens"]["icms"]
            .as_str()
            .unwrap()
            .starts_with("sim.")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let client = SisClient::new(
        SisConfig::new(&url),
        TokenSource::vault_secrets(&token_file),
    )
    .unwrap();
    let ids = client
        .create_cluster(NCA, &creation("from-binary"))
        .await
        .unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(
        saved["clusters"][&ids.cluster_id]["creation"]["clusterName"], "from-binary",
        "the state file holds the cluster"
    );

    let refused = std::process::Command::new(binary)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));
}
