//! The SIS endpoints nvca calls, with the server's validation and answers.
//!
//! Order of checks per call, as in ICMS: bearer token (401), authority (403), body parse
//! and enum values (400 "JSON parse error: …"), bean validation of required fields (400
//! with the field's message), the path's cluster against the token's (409), then the
//! service's rules. Errors are `{"error": "<message>"}` (`CustomErrorResponse`); success is
//! 200, with an empty body where the Java method returns `void`.

// Handlers answer errors as ready `Response`s (axum's way); their size does not matter here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::Value;

use super::Shared;
use super::state::*;
use super::{nats_authorize, psat};
use crate::sis::types::*;

// First: its macro serves the files below.
#[macro_use]
mod body;
mod agent;
mod auth;
mod clusters;
mod requests;

use agent::*;
pub use auth::DEFAULT_AUTHORITIES;
pub(super) use auth::registered_psat;
use auth::*;
use body::*;
pub use clusters::REGIONS;
use clusters::*;
use requests::*;

type Answer = Result<Response, Response>;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v1/accounts/{ncaId}/clusters",
            post(create_cluster).get(list_clusters),
        )
        .route(
            "/v1/si/accounts/{ncaId}/clusters",
            post(create_cluster).get(list_clusters),
        )
        .route(
            "/v1/accounts/{ncaId}/clusters/{clusterId}",
            delete(delete_cluster).get(get_cluster),
        )
        .route("/v1/nvca/clusters/{clusterId}/register", put(register))
        .route(
            "/v1/nvca/clusters/{clusterId}/credentials",
            get(credentials),
        )
        .route("/v1/nvca/clusters/{clusterId}/heartbeat", post(heartbeat))
        .route("/v1/nvca/clusters/{clusterId}/jwks", put(jwks))
        .route("/v1/sirs/{requestId}", put(acknowledge))
        .route("/v1/sirs/{requestId}/{instanceId}", post(instance_status))
        .route("/v1/si/clusters/{clusterId}/instances", get(instances))
        .route("/v1/nvca/nats-authorize", post(nats_authorize::authorize))
        .route(
            "/v1/si/oidc/nats-authorize",
            post(nats_authorize::authorize),
        )
        .route("/v1/si/oidc/natsAuthorize", post(nats_authorize::authorize))
}

/// SIS's error answer.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn ok_json(value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::OK, axum::Json(value)).into_response())
}

fn ok_empty() -> Answer {
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_sis_rule_including_its_dot_quirk() {
        assert!(valid_cluster_name("gpu-cluster-1"));
        assert!(!valid_cluster_name("GPU"));
        assert!(!valid_cluster_name("-a"));
        assert!(!valid_cluster_name("a.b"));
        assert!(!valid_cluster_name(""));
    }
}
