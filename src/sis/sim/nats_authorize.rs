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
use serde::Deserialize;
use serde_json::{Value, json};

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

#[derive(Deserialize)]
struct AuthorizeRequest {
    #[serde(default)]
    account: String,
    #[serde(default, rename = "pluginName")]
    plugin_name: String,
    #[serde(default)]
    payload: String,
}

/// The NATS permissions of a cluster's agent: its own durables only.
pub fn permissions(cluster_id: &str) -> Value {
    let publish: Vec<String> = [QueueStream::Creation, QueueStream::Termination]
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
    json!({
        "userId": format!("cluster-{cluster_id}"),
        "account": ACCOUNT,
        "permissions": {
            "publish": {"allow": publish},
            "subscribe": {"allow": ["_INBOX.>"]},
        },
        "ttl": TTL_NANOS,
    })
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The handler. ICMS answers refusals with empty bodies: 404 while cluster identity is
/// off, 403 for another account or plugin, 400 for a missing token or one without a
/// cluster audience, 431 for an oversized one, 401 for an unknown cluster or a token that
/// does not verify, 403 for a cluster id that is not a UUID.
pub async fn authorize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if !shared.oidc_identity {
        return status(StatusCode::NOT_FOUND);
    }
    let Ok(request) = serde_json::from_slice::<AuthorizeRequest>(&body) else {
        return status(StatusCode::BAD_REQUEST);
    };
    if request.account != ACCOUNT || request.plugin_name != PLUGIN {
        return status(StatusCode::FORBIDDEN);
    }
    let token = request.payload.trim();
    if token.is_empty() {
        return status(StatusCode::BAD_REQUEST);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return status(StatusCode::from_u16(431).expect("a status code"));
    }
    let cluster_id = match registered_psat(&shared, token) {
        Ok(verified) => verified.cluster_id,
        Err(PsatError::NoClusterAudience) => return status(StatusCode::BAD_REQUEST),
        Err(_) => return status(StatusCode::UNAUTHORIZED),
    };
    if !is_uuid(&cluster_id) {
        return status(StatusCode::FORBIDDEN);
    }
    (StatusCode::OK, axum::Json(permissions(&cluster_id))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_may_use_only_its_own_durables() {
        let id = "6f1c2d3e-0000-4000-8000-000000000001";
        let answer = permissions(id);
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
