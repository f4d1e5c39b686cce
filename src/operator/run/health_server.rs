//! The operator's health endpoint: `/healthz`, `/version` and `/metrics` on `--listen`
//! (NVIDIA's `:8000` form), for the chart's probes and scrapes.

use super::*;

/// `:8000` (every interface) or `host:port`.
pub(crate) fn parse_listen(
    text: &str,
    what: &'static str,
    flag: &'static str,
) -> Result<SocketAddr, RunError> {
    crate::process::listen_address(text).map_err(|reason| RunError::Listen {
        what,
        address: text.to_string(),
        reason,
        flag,
    })
}

pub(super) async fn serve_health(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, RunError> {
    use axum::Router;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| RunError::Listen {
            what: "health endpoint",
            address: address.to_string(),
            reason: error.to_string(),
            flag: "listen",
        })?;
    let bound = listener.local_addr().map_err(|error| RunError::Listen {
        what: "health endpoint",
        address: address.to_string(),
        reason: error.to_string(),
        flag: "listen",
    })?;
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/version",
            get(|| async { axum::Json(json!({"version": env!("CARGO_PKG_VERSION")})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "health endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "health endpoint listening");
    Ok(bound)
}
