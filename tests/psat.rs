//! The agent's projected service-account token (PSAT) against sis-sim, with the local
//! control plane's API server as the real issuer (issue 17): sis-sim verifies tokens from
//! the TokenRequest API against the issuer and JWKS registered for the cluster, as ICMS
//! does, and refuses a wrong audience, a wrong subject, a JWKS that no longer matches and
//! an issuer that is not the registered one — each with SIS's answer.

mod support;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use nvca::sis::client::{SisClient, SisConfig};
use nvca::sis::token::{TokenSource, vault_secrets_json, write_token_file};
use nvca::sis::types::{ClusterCreationRequest, JwksUpdate, RegistrationRequest};
use serde_json::Value;
use support::testenv::testenv_with_namespace;

const NCA: &str = "nca-psat";

/// The API server's issuer and JWKS, as `nvcf-cli cluster register` reads them.
async fn issuer_and_jwks(client: &kube::Client) -> (String, String) {
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(Vec::new())
            .expect("a request")
    };
    let discovery: Value = serde_json::from_str(
        &client
            .request_text(get("/.well-known/openid-configuration"))
            .await
            .expect("the API server's OIDC discovery"),
    )
    .unwrap();
    let jwks = client
        .request_text(get("/openid/v1/jwks"))
        .await
        .expect("the API server's JWKS");
    (discovery["issuer"].as_str().unwrap().to_string(), jwks)
}

/// A token of ServiceAccount `account` for `audience`, from the TokenRequest API.
async fn token(accounts: &Api<ServiceAccount>, account: &str, audience: &str) -> String {
    support::service_account::token(accounts, account, audience, 600).await
}

fn creation(name: &str, issuer: &str, jwks: &str) -> ClusterCreationRequest {
    ClusterCreationRequest {
        jwks: Some(jwks.to_string()),
        oidc_issuer: Some(issuer.to_string()),
        ..support::cluster::on_prem_cluster(name, NCA, "us-west-1")
    }
}

/// A SIS client with an admin token of `sim` (cluster management), its token file in `dir`.
async fn admin_client(sim: &nvca::sim::SimHandle, dir: &std::path::Path) -> SisClient {
    let token = nvca::sim::admin::AdminClient::new(sim.base_url())
        .issue_token(None)
        .await
        .expect("an admin token");
    let file = dir.join("admin.json");
    write_token_file(&file, &vault_secrets_json(&token)).expect("the token file");
    SisClient::new(
        SisConfig::new(sim.base_url()),
        TokenSource::vault_secrets(&file),
    )
    .expect("a SIS client")
}

fn registration() -> RegistrationRequest {
    RegistrationRequest {
        allow_cluster_targeting: true,
        ..support::cluster::h100_registration()
    }
}

#[tokio::test]
async fn a_psat_from_the_api_server_is_verified_against_the_registered_issuer_and_jwks() {
    let (env, ns) = testenv_with_namespace("psat").await;
    let (issuer, jwks) = issuer_and_jwks(&env.client).await;
    let sim = nvca::sim::start(nvca::sim::SimConfig::default())
        .await
        .expect("sis-sim starts");
    let dir = tempfile::tempdir().unwrap();

    // The platform team registers the cluster with the issuer and JWKS, as an admin.
    let as_admin = admin_client(&sim, dir.path()).await;
    let ids = as_admin
        .create_cluster(NCA, &creation("psat-cluster", &issuer, &jwks))
        .await
        .unwrap();
    let elsewhere = as_admin
        .create_cluster(
            NCA,
            &creation("other-issuer", "https://issuer.example.test", &jwks),
        )
        .await
        .unwrap_err();
    assert!(
        elsewhere.to_string().contains("already registered"),
        "the same signing keys cannot serve two clusters: {elsewhere}"
    );

    // The agent's identity: ServiceAccount nvca, a token for nvcf-icms:<clusterId>.
    let accounts: Api<ServiceAccount> = ns.api();
    for name in ["nvca", "default-agent"] {
        support::service_account::create(&accounts, name).await;
    }
    let audience = format!("nvcf-icms:{}", ids.cluster_id);
    let psat_file = dir.path().join("token");
    let agent = |path: &std::path::Path| {
        let mut config = SisConfig::new(sim.base_url());
        config.cluster_id = Some(ids.cluster_id.clone());
        config.retry.max_attempts = 1;
        SisClient::new(config, TokenSource::projected(path)).unwrap()
    };
    std::fs::write(&psat_file, token(&accounts, "nvca", &audience).await).unwrap();
    let client = agent(&psat_file);
    client
        .register(&ids.cluster_id, &registration())
        .await
        .expect("the PSAT is taken: registered");

    let refused = |what: &'static str| {
        move |error: nvca::sis::SisError| {
            let text = error.to_string();
            (error.category().to_string(), format!("{what}: {text}"))
        }
    };
    // Another audience, another subject: 401 with SIS's reason.
    std::fs::write(
        &psat_file,
        token(
            &accounts,
            "nvca",
            "nvcf-icms:00000000-0000-4000-8000-000000000000",
        )
        .await,
    )
    .unwrap();
    let (category, text) = client
        .register(&ids.cluster_id, &registration())
        .await
        .map_err(refused("unknown cluster"))
        .unwrap_err();
    assert_eq!(category, "unauthorized", "{text}");
    assert!(text.contains("Invalid bearer token"), "{text}");
    std::fs::write(
        &psat_file,
        token(&accounts, "default-agent", &audience).await,
    )
    .unwrap();
    let (category, text) = client
        .register(&ids.cluster_id, &registration())
        .await
        .map_err(refused("subject"))
        .unwrap_err();
    assert_eq!(category, "unauthorized", "{text}");
    assert!(text.contains("Unauthorized subject"), "{text}");

    // A JWKS that no longer matches (the cluster's keys "rotated"): 401 until the new
    // JWKS is pushed, then the same token works again.
    std::fs::write(&psat_file, token(&accounts, "nvca", &audience).await).unwrap();
    let stale = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"gone","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    as_admin
        .push_jwks(
            &ids.cluster_id,
            &JwksUpdate {
                jwks: stale.to_string(),
                oidc_issuer: None,
            },
        )
        .await
        .unwrap();
    let (category, text) = client
        .register(&ids.cluster_id, &registration())
        .await
        .map_err(refused("stale JWKS"))
        .unwrap_err();
    assert_eq!(category, "unauthorized", "{text}");
    as_admin
        .push_jwks(
            &ids.cluster_id,
            &JwksUpdate {
                jwks: jwks.clone(),
                oidc_issuer: None,
            },
        )
        .await
        .unwrap();
    client
        .register(&ids.cluster_id, &registration())
        .await
        .expect("the current JWKS restores it");

    // NATS's auth callout asks SIS about the token the agent connects with: a NATS user
    // for this cluster's own durables; another plugin or a token of no cluster is refused.
    let http = reqwest::Client::new();
    let nats = |payload: String, plugin: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/nvca/nats-authorize", sim.base_url());
        async move {
            let answer = http
                .post(url)
                .json(&serde_json::json!({"account": "APP", "pluginName": plugin, "payload": payload}))
                .send()
                .await
                .expect("sis-sim answers");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let agent_token = token(&accounts, "nvca", &audience).await;
    let (status, user) = nats(agent_token.clone(), "oidc").await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["userId"], format!("cluster-{}", ids.cluster_id));
    assert_eq!(nats(agent_token, "nkey").await.0, 403);
    let foreign = token(
        &accounts,
        "nvca",
        "nvcf-icms:00000000-0000-4000-8000-000000000000",
    )
    .await;
    assert_eq!(nats(foreign, "oidc").await.0, 401);

    // An issuer that is not the registered one: 409 at the endpoints that bind it.
    as_admin
        .push_jwks(
            &ids.cluster_id,
            &JwksUpdate {
                jwks: jwks.clone(),
                oidc_issuer: Some("https://issuer.example.test".to_string()),
            },
        )
        .await
        .unwrap();
    let (category, text) = client
        .register(&ids.cluster_id, &registration())
        .await
        .map_err(refused("issuer"))
        .unwrap_err();
    assert_eq!(category, "conflict", "{text}");
    assert!(
        text.contains("not matching with OIDC workload token issuer"),
        "{text}"
    );
    drop(sim);
}

/// NATS as the control plane runs it for self-managed clusters: a real nats-server whose
/// auth callout (answered by sis-sim, as NVIDIA's callout service asks ICMS) lets an agent
/// in on its PSAT alone, as a user that may use only its own cluster's durables; a token
/// for another cluster gets an authorization violation naming SIS's refusal.
#[tokio::test]
async fn through_the_nats_auth_callout_a_psat_gets_its_clusters_queue_and_nothing_else() {
    use nvca::sim::admin::{AdminClient, DeploymentSpec, FunctionSpec};
    use nvca::sis::queue::{NatsAuth, QueueConfig, QueueConsumer};
    use std::sync::Arc;

    let (env, ns) = testenv_with_namespace("psat-nats").await;
    let (issuer, jwks) = issuer_and_jwks(&env.client).await;
    let (nats, secrets) = support::nats::PrivateNats::control_plane();
    let sim = nvca::sim::start(nvca::sim::SimConfig {
        nats: Some(nats.sim_nats(&secrets)),
        ..nvca::sim::SimConfig::default()
    })
    .await
    .expect("sis-sim publishes as SIS's user and answers the callout");
    let admin = AdminClient::new(sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let as_admin = admin_client(&sim, dir.path()).await;
    let ids = as_admin
        .create_cluster(NCA, &creation("psat-nats", &issuer, &jwks))
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = ns.api();
    support::service_account::create(&accounts, "nvca").await;
    let audience = format!("nvcf-icms:{}", ids.cluster_id);
    let psat_file = dir.path().join("token");
    std::fs::write(&psat_file, token(&accounts, "nvca", &audience).await).unwrap();
    let mut config = SisConfig::new(sim.base_url());
    config.cluster_id = Some(ids.cluster_id.clone());
    SisClient::new(config, TokenSource::projected(&psat_file))
        .unwrap()
        .register(&ids.cluster_id, &registration())
        .await
        .expect("registered with the PSAT");

    let queue = |cluster_id: &str, file: &std::path::Path| {
        let mut config = QueueConfig::new(&nats.url, cluster_id);
        config.auth = NatsAuth::Psat(Arc::new(TokenSource::projected(file)));
        config.request_timeout = std::time::Duration::from_secs(2);
        config
    };
    let consumer = QueueConsumer::connect(queue(&ids.cluster_id, &psat_file))
        .await
        .expect("the callout lets the PSAT in");
    let (function_id, _) = admin
        .create_function(&FunctionSpec {
            nca_id: NCA.into(),
            name: "callout-echo".into(),
            container_image: Some("nvcr.io/team/echo:1".into()),
            helm_chart: None,
            function_type: None,
        })
        .await
        .unwrap();
    admin
        .deploy(&DeploymentSpec {
            function_id,
            cluster_id: ids.cluster_id.clone(),
            gpu: "H100".into(),
            instance_type: "ON-PREM.GPU.H100".into(),
            instance_type_name: Some("ON-PREM.GPU.H100_1x".into()),
            instance_count: 1,
            gpu_count: Some(1),
            action: None,
        })
        .await
        .expect("SIS publishes through the same server");
    let fetched = consumer.fetch_creations().await.expect("a pull");
    assert_eq!(
        fetched.messages.len(),
        1,
        "violations: {:?}",
        consumer.permission_violations()
    );
    fetched.messages[0].acker.ack().await.unwrap();
    assert!(
        consumer
            .fetch_terminations()
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert!(
        consumer.permission_violations().is_empty(),
        "{:?}",
        consumer.permission_violations()
    );
    // The user the callout made has the grant's permissions, no more.
    support::nats::assert_confined_to_its_durables(
        &consumer,
        queue("00000000-0000-4000-8000-000000000000", &psat_file),
    )
    .await;

    // A token for another cluster: SIS refuses it (401), the callout says so, the
    // connection is an authorization violation.
    let foreign_file = dir.path().join("foreign-token");
    std::fs::write(
        &foreign_file,
        token(
            &accounts,
            "nvca",
            "nvcf-icms:00000000-0000-4000-8000-000000000000",
        )
        .await,
    )
    .unwrap();
    let refused = QueueConsumer::connect(queue(&ids.cluster_id, &foreign_file))
        .await
        .expect_err("no NATS user for a token SIS refuses");
    assert!(
        refused.to_string().to_lowercase().contains("authorization"),
        "{refused}"
    );
    let answers: Vec<u16> = sim
        .shared()
        .calls()
        .into_iter()
        .filter(|call| call.route == nvca::sim::auth_callout::SUBJECT)
        .map(|call| call.status)
        .collect();
    assert_eq!(answers, [200, 200, 401], "the callout's answers, in order");
    let log = nats.server_log();
    assert!(
        log.contains("Auth callout service returned an error: SIS refused the token (401"),
        "nats-server logs the refusal: {log}"
    );
    assert!(
        log.contains(&format!("APP/user:cluster-{}", ids.cluster_id)),
        "the callout's user lives in account APP under SIS's user id: {log}"
    );
    sim.stop().await;
}
