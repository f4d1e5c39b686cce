//! The local admin endpoint: a read-only snapshot of every machine in the store.
//!
//! sled lets one process hold a store directory, so `nvca-state dump` cannot open the
//! directory of a running operator or agent; it asks this endpoint instead. It binds to
//! loopback by default, serves only summaries (which never hold secrets), and writes its
//! address into the store directory so `nvca-state --store DIR` can find it.

use std::net::SocketAddr;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::machines::Kind;
use crate::store::{ADMIN_ADDRESS_FILE, Quarantined, Store, Summary};

/// What the admin endpoint answers and `nvca-state` reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub machines: Vec<Summary>,
    /// Records set aside because they did not decode.
    pub quarantined: Vec<Quarantined>,
}

impl Snapshot {
    /// Read a snapshot straight from a store.
    pub fn read(store: &Store, kind: Option<Kind>) -> Result<Snapshot, crate::store::StoreError> {
        let (machines, mut quarantined) = store.summaries(kind)?;
        quarantined.extend(store.quarantined()?);
        Ok(Snapshot {
            machines,
            quarantined,
        })
    }
}

#[derive(Deserialize)]
struct MachinesQuery {
    kind: Option<String>,
}

/// Serve the admin endpoint on `address` until the task is dropped. Returns the bound
/// address (useful with port 0).
pub async fn serve(store: Store, address: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    std::fs::write(store.dir().join(ADMIN_ADDRESS_FILE), bound.to_string())?;
    let app = Router::new()
        .route("/machines", get(machines))
        .with_state(store);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "admin endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "admin endpoint listening");
    Ok(bound)
}

async fn machines(
    State(store): State<Store>,
    Query(query): Query<MachinesQuery>,
) -> Result<Json<Snapshot>, (StatusCode, String)> {
    let kind = match query.kind.as_deref() {
        None => None,
        Some(name) => Some(Kind::parse(name).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("unknown kind {name:?}: use {}", Kind::choices()),
            )
        })?),
    };
    let snapshot = tokio::task::spawn_blocking(move || Snapshot::read(&store, kind))
        .await
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    Ok(Json(snapshot))
}
