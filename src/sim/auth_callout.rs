//! NATS's auth callout for agents that connect with their PSAT, doing what NVIDIA's
//! `nvcf-nats-auth-callout-service` does with the `oidc` plugin of account `APP`
//! (github.com/NVIDIA/nvcf `src/control-plane-services/nats-auth-callout/internal/service/auth.go`):
//! nats-server sends every connection that is not one of its `auth_users` here as a signed
//! authorization request on `$SYS.REQ.USER.AUTH`; the connect token is
//! `base64url({"account","pluginName","payload"})`; SIS decides ([`nats_authorize::decide`],
//! asked in-process where NVIDIA's callout asks ICMS's `/v1/nvca/nats-authorize` over HTTP);
//! the answer is a user JWT for the requested user nkey in account `APP` with the grant's
//! permissions, unlimited subscriptions, data and payload, expiring with the grant, wrapped
//! in an authorization response for the asking server. Refusals carry the reason, which
//! nats-server logs and the client sees as an authorization violation.
//!
//! Each answer is recorded as a call `NATS $SYS.REQ.USER.AUTH <status>`.

use std::sync::Arc;

use base64::Engine;
use futures_util::StreamExt;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

use super::nats_authorize::{self, AuthorizeRequest, NatsGrant};
use super::nats_jwt::{self, Claims};
use super::{CallRecord, Shared, SimError};

/// Where nats-server asks.
pub const SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The callout's two keys: the user it connects as (listed in `auth_users`), and the
/// account key it signs with (the server's `auth_callout.issuer`).
#[derive(Clone)]
pub struct CalloutKeys {
    pub user_seed: String,
    pub issuer_seed: String,
}

impl std::fmt::Debug for CalloutKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CalloutKeys(..)")
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct AuthorizationRequest {
    server_id: ServerId,
    user_nkey: String,
    connect_opts: ConnectOptions,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ServerId {
    id: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ConnectOptions {
    auth_token: String,
}

#[derive(Serialize)]
struct AuthorizationResponse {
    #[serde(skip_serializing_if = "String::is_empty")]
    jwt: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    r#type: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct Permission {
    allow: Vec<String>,
}

#[derive(Serialize)]
struct User {
    #[serde(rename = "pub")]
    publish: Permission,
    #[serde(rename = "sub")]
    subscribe: Permission,
    subs: i64,
    data: i64,
    payload: i64,
    r#type: &'static str,
    version: u8,
}

/// Connects as the callout user and answers until the returned task is aborted.
pub async fn start(
    url: &str,
    keys: &CalloutKeys,
    shared: Arc<Shared>,
) -> Result<tokio::task::JoinHandle<()>, SimError> {
    let nats = |reason: String| SimError::Nats {
        url: url.to_string(),
        reason,
    };
    let issuer = KeyPair::from_seed(keys.issuer_seed.trim())
        .map_err(|e| nats(format!("the auth callout's issuer seed: {e}")))?;
    let client = async_nats::ConnectOptions::with_nkey(keys.user_seed.trim().to_string())
        .name("sis-sim auth callout")
        .connect(url)
        .await
        .map_err(|e| nats(format!("connecting as the auth callout user: {e}")))?;
    let mut requests = client
        .subscribe(SUBJECT)
        .await
        .map_err(|e| nats(format!("subscribing to {SUBJECT}: {e}")))?;
    // The subscription is live before anyone may connect through it.
    client
        .flush()
        .await
        .map_err(|e| nats(format!("subscribing to {SUBJECT}: {e}")))?;
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply else { continue };
            let Some(answer) = answer(&shared, &issuer, &message.payload) else {
                continue;
            };
            if let Err(error) = client.publish(reply, answer.into()).await {
                tracing::warn!(%error, "cannot answer an auth callout request");
            }
        }
    }))
}

/// The signed answer to one request, or `None` when the request itself is not a NATS
/// authorization request (nothing to address an answer to; nats-server times out).
fn answer(shared: &Shared, issuer: &KeyPair, request: &[u8]) -> Option<String> {
    let request = match std::str::from_utf8(request)
        .map_err(|e| e.to_string())
        .and_then(|token| {
            nats_jwt::decode::<AuthorizationRequest>(token).map_err(|e| e.to_string())
        }) {
        Ok(claims) => claims.nats,
        Err(error) => {
            tracing::warn!(%error, "an auth callout request that is not a signed NATS authorization request");
            return None;
        }
    };
    let (status, result) = match decide(shared, &request.connect_opts.auth_token) {
        Ok(grant) => (200, user_jwt(issuer, &request.user_nkey, &grant)),
        Err((status, reason)) => (status, Err(reason)),
    };
    shared.record(CallRecord {
        method: "NATS".into(),
        route: SUBJECT.into(),
        path: SUBJECT.into(),
        status,
        fault: None,
    });
    let (jwt, error) = match result {
        Ok(jwt) => (jwt, String::new()),
        Err(reason) => {
            tracing::info!(status, %reason, "auth callout refused a connection");
            (String::new(), reason)
        }
    };
    let response = Claims::new(
        request.user_nkey,
        request.server_id.id,
        AuthorizationResponse {
            jwt,
            error,
            r#type: "authorization_response",
            version: 2,
        },
    );
    nats_jwt::encode(response, issuer)
        .inspect_err(|error| tracing::error!(%error, "cannot sign an auth callout response"))
        .ok()
}

/// SIS's decision on a connect token, with the status ICMS would answer and the reason the
/// callout gives nats-server.
fn decide(shared: &Shared, token: &str) -> Result<NatsGrant, (u16, String)> {
    if token.is_empty() {
        return Err((400, "missing token in auth request".into()));
    }
    // NVIDIA's callout takes padded and unpadded base64url.
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| (400, format!("failed to decode auth request: {e}")))?;
    let request: AuthorizeRequest = serde_json::from_slice(&decoded)
        .map_err(|e| (400, format!("failed to unmarshal auth request: {e}")))?;
    nats_authorize::decide(shared, &request).map_err(|status| {
        let code = status.as_u16();
        (
            code,
            format!(
                "SIS refused the token ({code} {}): the cluster's projected service-account token must verify against the issuer and JWKS registered for it (nvca-self-managed rotate after a key rotation)",
                status.canonical_reason().unwrap_or("")
            ),
        )
    })
}

fn user_jwt(issuer: &KeyPair, user_nkey: &str, grant: &NatsGrant) -> Result<String, String> {
    let now = nats_jwt::now();
    let mut claims = Claims::new(
        user_nkey,
        grant.account,
        User {
            publish: Permission {
                allow: grant.permissions.publish.allow.clone(),
            },
            subscribe: Permission {
                allow: grant.permissions.subscribe.allow.clone(),
            },
            subs: -1,
            data: -1,
            payload: -1,
            r#type: "user",
            version: 2,
        },
    );
    claims.name = grant.user_id.clone();
    claims.nbf = Some(now);
    claims.exp = Some(now + (grant.ttl / 1_000_000_000) as i64);
    nats_jwt::encode(claims, issuer).map_err(|e| e.to_string())
}
