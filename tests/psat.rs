//! The agent's projected service-account token (PSAT) against sis-sim, with the local
//! control plane's API server as the real issuer (issue 17): sis-sim verifies tokens from
//! the TokenRequest API against the issuer and JWKS registered for the cluster, as ICMS
//! does, and refuses a wrong audience, a wrong subject, a JWKS that no longer matches and
//! an issuer that is not the registered one — each with SIS's answer.

mod support;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
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
    let sim = nvca::sis::sim::start(nvca::sis::sim::SimConfig::default())
        .await
        .expect("sis-sim starts");
    let admin = nvca::sis::sim::admin::AdminClient::new(sim.base_url());
    let dir = tempfile::tempdir().unwrap();

    // The platform team registers the cluster with the issuer and JWKS, as an admin.
    let admin_file = dir.path().join("admin.json");
    let admin_token = admin.issue_token(None).await.unwrap();
    write_token_file(&admin_file, &vault_secrets_json(&admin_token)).unwrap();
    let as_admin = SisClient::new(
        SisConfig::new(sim.base_url()),
        TokenSource::vault_secrets(&admin_file),
    )
    .unwrap();
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
        let account: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .expect("a ServiceAccount");
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
