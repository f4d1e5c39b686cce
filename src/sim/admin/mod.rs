//! The simulator's admin API (`/admin/...`, no auth, loopback only): what the NVCF API or
//! CLI would do — create, deploy, scale and undeploy a function, launch a task — plus the
//! simulator's own controls: tokens, faults, the heartbeat answer, and reading back what
//! clusters reported. The controls are here, the workloads in [`workloads`];
//! [`AdminClient`] ([`client`]) calls it.

// Handlers answer errors as ready `Response`s (axum's way); their size does not matter here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{DEFAULT_AUTHORITIES, error};
pub use super::launch::FunctionOptions;
use super::launch::{self, FunctionKind};
use super::state::*;
use super::{CallRecord, Faults, Shared};
use crate::sis::queue::QueueStream;
use crate::sis::types::*;

mod client;
mod workloads;

pub use client::{AdminClient, AdminError};
use workloads::*;
pub use workloads::{DeploymentSpec, FunctionSpec, Published, TaskSpec};

type Answer = Result<Response, Response>;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/admin/tokens", post(issue_token))
        .route("/admin/tokens/revoke", post(revoke_token))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/state", get(get_state))
        .route("/admin/calls", get(get_calls).delete(clear_calls))
        .route("/admin/clusters/{clusterId}", get(get_cluster))
        .route(
            "/admin/clusters/{clusterId}/heartbeat-answer",
            put(set_heartbeat_answer),
        )
        .route("/admin/functions", post(create_function))
        .route("/admin/deployments", post(deploy))
        .route("/admin/deployments/{deploymentId}/scale", post(scale))
        .route("/admin/deployments/{deploymentId}/undeploy", post(undeploy))
        .route("/admin/tasks", post(launch_task))
        .route("/admin/queue/raw", post(publish_raw))
}

fn ok(value: impl Serialize) -> Answer {
    Ok((StatusCode::OK, axum::Json(value)).into_response())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("admin body: {e}")))
}

// --- tokens, faults, reading back ---------------------------------------------------

/// `POST /admin/tokens`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenRequest {
    /// Defaults to every authority nvca needs.
    pub authorities: Option<Vec<String>>,
    /// Bind the token to one cluster, as SIS binds a cluster's credentials.
    pub cluster_id: Option<String>,
}

/// A fresh token: `sim.` and 43 base64url characters (always 47 characters).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "sim.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

async fn issue_token(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Answer {
    let request: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        parse(&body)?
    };
    let token = new_token();
    let record = TokenRecord {
        authorities: request
            .authorities
            .unwrap_or_else(|| DEFAULT_AUTHORITIES.iter().map(|a| a.to_string()).collect()),
        cluster_id: request.cluster_id,
        revoked: false,
        ..TokenRecord::default()
    };
    shared.update(|s| s.tokens.insert(token.clone(), record));
    ok(json!({ "token": token }))
}

async fn revoke_token(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Answer {
    #[derive(Deserialize)]
    struct Revoke {
        token: String,
    }
    let request: Revoke = parse(&body)?;
    let found = shared.update(|s| match s.tokens.get_mut(&request.token) {
        Some(record) => {
            record.revoked = true;
            true
        }
        None => false,
    });
    if !found {
        return Err(error(StatusCode::NOT_FOUND, "no such token"));
    }
    ok(json!({ "revoked": true }))
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Answer {
    ok(shared.faults())
}

/// Merges the given keys into the current faults.
async fn put_faults(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Answer {
    let patch: Value = parse(&body)?;
    let Value::Object(patch) = patch else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "admin body: expected an object",
        ));
    };
    let mut current = serde_json::to_value(shared.faults()).expect("faults serialise");
    for (key, value) in patch {
        current[key] = value;
    }
    let faults: Faults = serde_json::from_value(current)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("faults: {e}")))?;
    for rate in [faults.error_rate, faults.malformed_rate, faults.drop_rate] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "fault rates must be between 0 and 1",
            ));
        }
    }
    shared.set_faults(faults.clone());
    ok(faults)
}

async fn get_state(State(shared): State<Arc<Shared>>) -> Answer {
    ok(shared.read(|s| s.clone()))
}

async fn get_calls(State(shared): State<Arc<Shared>>) -> Answer {
    ok(shared.calls())
}

async fn clear_calls(State(shared): State<Arc<Shared>>) -> Answer {
    shared
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    ok(json!({}))
}

async fn get_cluster(State(shared): State<Arc<Shared>>, Path(cluster_id): Path<String>) -> Answer {
    match shared.read(|s| s.clusters.get(&cluster_id).cloned()) {
        Some(cluster) => ok(cluster),
        None => Err(error(
            StatusCode::NOT_FOUND,
            format!("no cluster {cluster_id}"),
        )),
    }
}

async fn set_heartbeat_answer(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    #[derive(Deserialize)]
    struct Set {
        action: HeartbeatAction,
    }
    let set: Set = parse(&body)?;
    let found = shared.update(|s| match s.clusters.get_mut(&cluster_id) {
        Some(cluster) => {
            cluster.heartbeat_answer = set.action;
            true
        }
        None => false,
    });
    if !found {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no cluster {cluster_id}"),
        ));
    }
    ok(json!({ "action": set.action }))
}
