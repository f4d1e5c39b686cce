//! The HTTPS server: NVIDIA's webhook paths (`N/pkg/webhook/cmd.go` `startWebhooks`),
//! each answering POSTed AdmissionReviews, and `GET /healthz` for probes.
//!
//! | path | here |
//! |---|---|
//! | `/mutate-pod-nodeaffinity` | [`super::node_affinity`] |
//! | `/nvca-mutating-webhook` | [`super::nvca_mutating`] |
//! | `/validate` | [`super::validate`] |
//! | `/mutate-helm-storage` | admits (NVIDIA's is a stub kept for old configurations) |
//! | `/mutate-helm-persistent-storage` | admits while `HelmInternalPersistentStorage` is off, as NVIDIA's; refuses otherwise (not built) |
//! | `/mutate-pod-enforcement` | [`super::enforcement`] |
//! | `/mutate-miniservice`, `/validate-instance-type-nodeaffinity` | refuse, saying they are not built yet |
//!
//! `GET /metrics` has NVIDIA's webhook metrics ([`super::metrics`]).
//!
//! Requests are limited to 7 MiB (NVIDIA's, after controller-runtime). Shutdown stops
//! accepting, lets requests in flight finish, and gives up after
//! [`SHUTDOWN_GRACE`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{MethodRouter, get, post};
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::certs::ReloadingCert;
use super::enforcement::{self, DcgmMetrics, EnforcementOptions, KataClasses};
use super::error::WebhookError;
use super::features::Features;
use super::metrics::{self, Metrics};
use super::node_affinity::{self, NodeAffinityOptions};
use super::nvca_mutating::{self, ResourceList};
use super::review::{self, Outcome, Request};
use super::validate;

/// NVIDIA's request size limit.
pub const MAX_REQUEST_BYTES: usize = 7 * 1024 * 1024;
/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every admission path served, for the metrics.
pub const PATHS: &[&str] = &[
    "/mutate-pod-nodeaffinity",
    "/nvca-mutating-webhook",
    "/validate",
    "/mutate-helm-storage",
    "/mutate-helm-persistent-storage",
    "/mutate-pod-enforcement",
    "/mutate-miniservice",
    "/validate-instance-type-nodeaffinity",
];

/// What the webhooks decide with.
#[derive(Debug)]
pub struct Webhooks {
    pub features: Features,
    pub utils_resources: ResourceList,
    pub dcgm: DcgmMetrics,
    pub kata_classes: KataClasses,
    /// Kept current by [`super::shared_cluster::watch`].
    pub shared_cluster: Arc<AtomicBool>,
    /// Set by [`super::runtime_class::watch`].
    pub kata_non_gpu_class: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Webhooks {
    /// NVIDIA's defaults for what is not given; no shared cluster, no non-GPU Kata
    /// class until the watches say otherwise.
    pub fn new(features: Features, utils_resources: ResourceList) -> Webhooks {
        Webhooks {
            features,
            utils_resources,
            dcgm: DcgmMetrics::default(),
            kata_classes: KataClasses::default(),
            shared_cluster: Arc::new(AtomicBool::new(false)),
            kata_non_gpu_class: Arc::new(AtomicBool::new(false)),
            metrics: Metrics::new(PATHS),
        }
    }

    fn enforcement(&self, request: &Request) -> Outcome {
        let options = EnforcementOptions {
            features: &self.features,
            kata_classes: &self.kata_classes,
            non_gpu_class_exists: self.kata_non_gpu_class.load(Ordering::Relaxed),
            dcgm: &self.dcgm,
        };
        enforcement::handle(request, &options)
    }

    fn node_affinity(&self, request: &Request) -> Outcome {
        let options = NodeAffinityOptions {
            shared_cluster: self.shared_cluster.load(Ordering::Relaxed),
            uniform_instance_labels: self.features.uniform_instance_labels,
            host_isolation: self.features.host_isolation,
            account_isolation: self.features.account_isolation,
        };
        node_affinity::handle(request, &options)
    }

    fn nvca_mutating(&self, request: &Request) -> Outcome {
        nvca_mutating::handle(request, &self.features, &self.utils_resources)
    }

    fn validate(&self, request: &Request) -> Outcome {
        validate::handle(request, &self.features)
    }

    fn helm_storage(&self, _request: &Request) -> Outcome {
        Outcome::Allowed(String::new())
    }

    fn helm_persistent_storage(&self, request: &Request) -> Outcome {
        if self.features.helm_internal_persistent_storage {
            not_built("/mutate-helm-persistent-storage")(self, request)
        } else {
            Outcome::Allowed(String::new())
        }
    }
}

fn not_built(path: &'static str) -> impl Fn(&Webhooks, &Request) -> Outcome + Clone + Send + Sync {
    move |_, _| {
        Outcome::Denied(format!(
            "nvca's webhook does not implement NVIDIA's {path} yet (issue 6); \
             remove the webhook that calls it or use NVIDIA's agent for this workload"
        ))
    }
}

/// The routes, for a server or a test.
pub fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route(
            "/mutate-pod-nodeaffinity",
            admission("/mutate-pod-nodeaffinity", Webhooks::node_affinity),
        )
        .route(
            "/nvca-mutating-webhook",
            admission("/nvca-mutating-webhook", Webhooks::nvca_mutating),
        )
        .route("/validate", admission("/validate", Webhooks::validate))
        .route(
            "/mutate-helm-storage",
            admission("/mutate-helm-storage", Webhooks::helm_storage),
        )
        .route(
            "/mutate-helm-persistent-storage",
            admission(
                "/mutate-helm-persistent-storage",
                Webhooks::helm_persistent_storage,
            ),
        )
        .route(
            "/mutate-pod-enforcement",
            admission("/mutate-pod-enforcement", Webhooks::enforcement),
        )
        .route(
            "/mutate-miniservice",
            admission("/mutate-miniservice", not_built("/mutate-miniservice")),
        )
        .route(
            "/validate-instance-type-nodeaffinity",
            admission(
                "/validate-instance-type-nodeaffinity",
                not_built("/validate-instance-type-nodeaffinity"),
            ),
        )
        .route(
            "/metrics",
            get(|State(webhooks): State<Arc<Webhooks>>| async move {
                (
                    [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    webhooks.metrics.encode(),
                )
            }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "healthy"})) }),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(webhooks)
}

fn admission<F>(path: &'static str, decide: F) -> MethodRouter<Arc<Webhooks>>
where
    F: Fn(&Webhooks, &Request) -> Outcome + Clone + Send + Sync + 'static,
{
    post(
        move |State(webhooks): State<Arc<Webhooks>>, body: Bytes| async move {
            // Every review is answered with 200; a refusal is inside it.
            let review = webhooks.metrics.observe(path, || {
                let review = review::answer(&body, |request| {
                    let outcome = decide(&webhooks, request);
                    log(path, request, &outcome);
                    outcome
                });
                (200, review)
            });
            axum::Json(review)
        },
    )
}

fn log(path: &str, request: &Request, outcome: &Outcome) {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let kind = &request.kind.kind;
    let name = &request.name;
    match outcome {
        Outcome::Denied(message) | Outcome::BadRequest(message) => {
            tracing::info!(path, %kind, namespace, name, uid = %request.uid, "refused: {message}")
        }
        Outcome::Patched { .. } => tracing::debug!(path, %kind, namespace, name, "patched"),
        Outcome::Allowed(_) => tracing::debug!(path, %kind, namespace, name, "allowed"),
    }
}

/// TLS connections, handshaken off the accept loop so a slow client delays no one.
pub struct TlsListener {
    local: SocketAddr,
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    /// Listen on `address` with the certificate of `cert`.
    pub async fn bind(
        address: &str,
        cert: &Arc<ReloadingCert>,
    ) -> Result<TlsListener, WebhookError> {
        let listen_error = |reason: String| WebhookError::Listen {
            address: address.to_string(),
            reason,
        };
        let candidates = bind_candidates(address).await.map_err(listen_error)?;
        let tcp = TcpListener::bind(candidates.as_slice())
            .await
            .map_err(|e| listen_error(e.to_string()))?;
        let local = tcp.local_addr().map_err(|e| listen_error(e.to_string()))?;
        let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()?));
        let (sender, incoming) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, acceptor, sender));
        Ok(TlsListener {
            local,
            incoming,
            accepting,
        })
    }
}

/// The socket addresses for `address`. Go's `:PORT` (what the operator configures) is
/// every interface: IPv6 with IPv4 mapped where the host has IPv6, else IPv4. Other
/// addresses are resolved (`localhost:8443` works, as in Go).
async fn bind_candidates(address: &str) -> Result<Vec<SocketAddr>, String> {
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|error| format!("{port:?} is not a port: {error}"))?;
        return Ok(vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
        ]);
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|error| format!("not a HOST:PORT address: {error}"))?
        .collect();
    if resolved.is_empty() {
        return Err("the host name resolves to no address".to_string());
    }
    Ok(resolved)
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accepting a connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, "TLS handshake failed: {error}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serve until `shutdown` completes, then drain for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TlsListener,
    webhooks: Arc<Webhooks>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let server = axum::serve(listener, router(webhooks)).with_graceful_shutdown(signal);
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            if let Err(error) = result {
                tracing::warn!("the webhook server stopped: {error}");
            }
            return;
        }
        _ = stopped => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn go_style_addresses_mean_every_interface() {
        assert_eq!(
            bind_candidates(":8443").await.unwrap(),
            vec![
                "[::]:8443".parse::<SocketAddr>().unwrap(),
                "0.0.0.0:8443".parse().unwrap()
            ]
        );
        assert_eq!(
            bind_candidates("127.0.0.1:0").await.unwrap(),
            vec!["127.0.0.1:0".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            bind_candidates(":https")
                .await
                .unwrap_err()
                .contains("not a port")
        );
        assert!(bind_candidates("127.0.0.1").await.is_err());
    }
}
