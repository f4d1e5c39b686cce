//! The agent's HTTP endpoint on `:8000` (NVIDIA's `agent.svcAddress`): `/healthz`
//! (readiness, the JSON of [`super::health`]), `/livez` (NVIDIA's liveness), `/version`
//! (the startup probe) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::health::Health;
use super::metrics::Metrics;

/// Extra metrics to append to `/metrics` (the function deployments' own).
pub type ExtraMetrics = Arc<std::sync::Mutex<Vec<Arc<dyn Fn() -> String + Send + Sync>>>>;

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    extra: ExtraMetrics,
}

/// Serve until the task is dropped; returns the bound address.
pub async fn serve(
    address: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    extra: ExtraMetrics,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/version", get(version))
        .route("/metrics", get(render_metrics))
        .with_state(Shared {
            health,
            metrics,
            extra,
        });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "health endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "health, version and metrics endpoint listening");
    Ok(bound)
}

fn text(code: u16, body: String, content_type: &'static str) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn healthz(State(shared): State<Shared>) -> Response {
    let (code, body) = shared.health.healthz();
    text(code, body, "text/plain; charset=utf-8")
}

async fn livez(State(shared): State<Shared>) -> Response {
    let (code, body) = shared.health.livez();
    text(code, body.to_string(), "text/plain; charset=utf-8")
}

async fn version() -> Response {
    let body = serde_json::json!({"version": env!("CARGO_PKG_VERSION")}).to_string();
    text(200, body, "application/json")
}

async fn render_metrics(State(shared): State<Shared>) -> Response {
    let mut body = shared.metrics.render();
    let extra: Vec<_> = shared
        .extra
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for render in extra {
        body.push_str(&render());
    }
    text(200, body, "text/plain; version=0.0.4; charset=utf-8")
}
