//! Tokens of a ServiceAccount from the TokenRequest API: what the kubelet projects into
//! a pod (the agent's PSAT is one, audience `nvcf-icms:<clusterId>`).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

/// A token of ServiceAccount `account` for `audience`, valid `seconds` (at least 600).
pub async fn token(
    accounts: &Api<ServiceAccount>,
    account: &str,
    audience: &str,
    seconds: i64,
) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .and_then(|status| status.token)
        .expect("the token")
}

/// Creates ServiceAccount `name` (one that exists already is fine).
pub async fn create(accounts: &Api<ServiceAccount>, name: &str) {
    let account: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("a ServiceAccount");
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("cannot create ServiceAccount {name}: {error}"),
    }
}
