//! `POST /v1/nvca/nats-authorize` (aliases `/v1/si/oidc/nats-authorize`,
//! `/v1/si/oidc/natsAuthorize`): what NATS's auth callout asks SIS when an agent connects
//! with its PSAT, as ICMS answers it (github.com/NVIDIA/nvcf,
//! `…/icms-core/…/inbound/rest/controllers/nvca/NvcaController.java` 314-376,
//! `service/byoc/nvca/NvcaNatsAuthorizationService.java`, `NvcaTokenVerificationService.java`;
//! the permissions of NVIDIA's self-managed profile, `application-ncp.yaml` 152-166).
//!
//! The agent sends NATS `base64url({"account":"APP","pluginName":"oidc","payload":<PSAT>})`
//! as its connect token; the callout passes the decoded object here. A verified token gets
//! a NATS user that may only create, pull from and ack its own cluster's two durable
//! consumers, and receive on `_INBOX.>`, for one hour. Public (no bearer token), as in ICMS.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::api::registered_psat;
use super::psat::PsatError;
use crate::sis::queue::QueueStream;

/// The NATS account agents are put in, and the plugin the callout names.
pub const ACCOUNT: &str = "APP";
pub const PLUGIN: &str = "oidc";
/// ICMS's limit on a token (`JwtSizeLimitFilter`, `NvcaTokenVerificationService`).
const MAX_TOKEN_BYTES: usize = 2048;
/// How long the NATS user lives: one hour, in nanoseconds.
const TTL_NANOS: u64 = 3_600_000_000_000;

/// What the agent put in its NATS connect token, and the callout passes on.
#[derive(Deserialize)]
pub struct AuthorizeRequest {
    #[serde(default)]
    pub account: String,
    #[serde(default, rename = "pluginName")]
    pub plugin_name: String,
    #[serde(default)]
    pub payload: String,
}

/// The NATS user a verified agent gets: its own cluster's durables only. Serialises as
/// ICMS's `NatsAuthorizeResponse`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatsGrant {
    pub user_id: String,
    pub account: &'static str,
    pub permissions: NatsPermissions,
    /// Nanoseconds.
    pub ttl: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NatsPermissions {
    pub publish: Allow,
    pub subscribe: Allow,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Allow {
    pub allow: Vec<String>,
}

impl NatsGrant {
    /// The grant of a cluster's agent.
    pub fn for_cluster(cluster_id: &str) -> NatsGrant {
        let publish = [QueueStream::Creation, QueueStream::Termination]
            .into_iter()
            .flat_map(|stream| {
                let (name, durable) = (stream.name(), stream.durable(cluster_id));
                [
                    format!("$JS.API.CONSUMER.CREATE.{name}.{durable}"),
                    format!("$JS.API.CONSUMER.MSG.NEXT.{name}.{durable}"),
                    format!("$JS.ACK.{name}.{durable}.>"),
                    format!("$JS.ACK.*.*.{name}.{durable}.>"),
                ]
            })
            .collect();
        NatsGrant {
            user_id: format!("cluster-{cluster_id}"),
            account: ACCOUNT,
            permissions: NatsPermissions {
                publish: Allow { allow: publish },
                subscribe: Allow {
                    allow: vec!["_INBOX.>".to_string()],
                },
            },
            ttl: TTL_NANOS,
        }
    }
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// ICMS's decision, with the status of each refusal (empty bodies in ICMS): 404 while
/// cluster identity is off, 403 for another account or plugin, 400 for a missing token or
/// one without a cluster audience, 431 for an oversized one, 401 for an unknown cluster or
/// a token that does not verify, 403 for a cluster id that is not a UUID.
pub fn decide(shared: &Shared, request: &AuthorizeRequest) -> Result<NatsGrant, StatusCode> {
    if !shared.oidc_identity {
        return Err(StatusCode::NOT_FOUND);
    }
    if request.account != ACCOUNT || request.plugin_name != PLUGIN {
        return Err(StatusCode::FORBIDDEN);
    }
    let token = request.payload.trim();
    if token.is_empty() {
        return Err(StatusCode::BAD_REQUEST);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(StatusCode::from_u16(431).expect("a status code"));
    }
    let cluster_id = match registered_psat(shared, token) {
        Ok(verified) => verified.cluster_id,
        Err(PsatError::NoClusterAudience) => return Err(StatusCode::BAD_REQUEST),
        Err(_) => return Err(StatusCode::UNAUTHORIZED),
    };
    if !is_uuid(&cluster_id) {
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(NatsGrant::for_cluster(&cluster_id))
}

/// The handler: [`decide`] over HTTP, as NVIDIA's callout's webhook plugin asks it.
pub async fn authorize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<AuthorizeRequest>(&body) else {
        let status = if shared.oidc_identity {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        };
        return status.into_response();
    };
    match decide(&shared, &request) {
        Ok(grant) => (StatusCode::OK, axum::Json(grant)).into_response(),
        Err(status) => status.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_agent_may_use_only_its_own_durables() {
        let id = "6f1c2d3e-0000-4000-8000-000000000001";
        let answer = serde_json::to_value(NatsGrant::for_cluster(id)).unwrap();
        assert_eq!(answer["userId"], format!("cluster-{id}"));
        assert_eq!(answer["ttl"], 3_600_000_000_000u64);
        let publish = answer["permissions"]["publish"]["allow"]
            .as_array()
            .unwrap();
        assert_eq!(publish.len(), 8);
        assert!(publish.contains(&json!(format!(
            "$JS.API.CONSUMER.MSG.NEXT.CreateNvcaFunctionTaskStream.CreateNvcaFunctionTaskStream-{id}"
        ))));
        assert!(publish.contains(&json!(format!(
            "$JS.ACK.*.*.TerminateNvcaStream.TerminateNvcaStream-{id}.>"
        ))));
        assert!(
            publish
                .iter()
                .all(|subject| subject.as_str().unwrap().contains(id))
        );
        assert_eq!(
            answer["permissions"]["subscribe"]["allow"],
            json!(["_INBOX.>"])
        );
    }

    #[test]
    fn cluster_ids_must_be_uuids() {
        assert!(is_uuid("6f1c2d3e-0000-4000-8000-000000000001"));
        assert!(!is_uuid("c-1"));
        assert!(!is_uuid("6f1c2d3e-0000-4000-8000-00000000000g"));
    }
}
