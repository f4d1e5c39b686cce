//! `sis-sim`: a stand-in for SIS (NVIDIA's ICMS) on loopback, for tests and the demo.
//!
//! It serves the endpoints nvca calls with the validation the real service applies (the
//! Java DTOs' required fields and enums, the services' rules, the `{"error": "..."}` body
//! and its status codes), issues and checks bearer tokens, creates the two JetStream
//! streams in a real `nats-server`, and — through an admin API doing what the NVCF API or
//! CLI would — publishes creation and termination messages on the real subjects with the
//! real JSON. Faults (errors, latency, 401s, malformed bodies, dropped connections,
//! duplicated queue messages) can be set at start and changed live.
//!
//! Layout: [`state`] is the memory, [`api`] the SIS endpoints, [`admin`] the admin API,
//! [`launch`] what a function's options add to its creation messages, [`publisher`] the
//! NATS side, [`auth_callout`] NATS's callout for PSAT agents; this file holds the shared context, the faults and the server loop.

pub mod admin;
pub mod api;
pub mod auth_callout;
pub mod control_plane_nats;
pub mod launch;
pub mod nats_authorize;
pub mod nats_jwt;
pub mod psat;
pub mod publisher;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Notify;

use self::publisher::Publisher;
use self::state::SimState;

/// Why the simulator could not start or act.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}; pick another address or port")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "NATS at {url}: {reason}; start nats-server with JetStream (scripts/testenv up) or fix --nats-url"
    )]
    Nats { url: String, reason: String },
    #[error("state file {path}: {source}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SimError {
    pub fn category(&self) -> &'static str {
        match self {
            SimError::Bind { .. } => "bind",
            SimError::Nats { .. } => "nats",
            SimError::StateFile { .. } => "state_file",
        }
    }
}

/// The fault switches. Rates are probabilities per call in `[0, 1]`; `*_next` counts force
/// the fault on that many coming calls first (deterministic, for tests).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Answer 500 `{"error":"Internal Server Error"}`.
    pub error_rate: f64,
    pub error_next: u32,
    /// Delay every SIS answer by this much.
    pub latency_ms: u64,
    /// After this many authenticated calls, the token in use expires: that call and
    /// every later one with it get 401 (a newer token works). Fires once, then clears.
    pub unauthorized_after: Option<u64>,
    /// Answer 200 with a truncated body.
    pub malformed_rate: f64,
    pub malformed_next: u32,
    /// Close the connection without answering.
    pub drop_rate: f64,
    pub drop_next: u32,
    /// Publish every queue message twice, as a redelivery would.
    pub duplicate_messages: bool,
}

impl Faults {
    fn roll(rate: f64, next: &mut u32) -> bool {
        if *next > 0 {
            *next -= 1;
            return true;
        }
        rate > 0.0 && rand::random::<f64>() < rate
    }
}

/// One SIS call as the simulator saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub method: String,
    /// The route template, e.g. `/v1/sirs/{requestId}`.
    pub route: String,
    pub path: String,
    pub status: u16,
    /// `error`, `drop` or `malformed` when a fault decided the answer.
    pub fault: Option<String>,
}

/// How the simulator reaches NATS.
#[derive(Clone, Debug)]
pub struct SimNats {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Answer NATS's auth callout with these keys (a server configured as
    /// [`control_plane_nats`] writes it).
    pub auth_callout: Option<auth_callout::CalloutKeys>,
}

/// Start-up settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Loopback address; port 0 picks a free one.
    pub listen: SocketAddr,
    pub nats: Option<SimNats>,
    pub state_file: Option<PathBuf>,
    pub faults: Faults,
    /// SIS's `oidcClusterIdentityEnabled`: without it the JWKS push answers 404.
    pub oidc_identity: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nats: None,
            state_file: None,
            faults: Faults::default(),
            oidc_identity: true,
        }
    }
}

/// The simulator's shared context.
pub struct Shared {
    state: Mutex<SimState>,
    state_file: Option<PathBuf>,
    faults: Mutex<Faults>,
    authenticated_calls: Mutex<u64>,
    calls: Mutex<Vec<CallRecord>>,
    publisher: Option<Publisher>,
    oidc_identity: bool,
}

impl Shared {
    /// Runs `f` on the state and saves it when a state file is set.
    pub fn update<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut state);
        if let Some(path) = &self.state_file
            && let Err(error) = state.save(path)
        {
            tracing::error!(path = %path.display(), %error, "cannot save the simulator state");
        }
        out
    }

    pub fn read<T>(&self, f: impl FnOnce(&SimState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
        *self
            .authenticated_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = 0;
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, call: CallRecord) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.len() >= 10_000 {
            calls.drain(..1_000);
        }
        calls.push(call);
    }

    /// Counts an authenticated call; true when the `unauthorized_after` fault fires now.
    fn token_expires_now(&self) -> bool {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut count = self
            .authenticated_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *count += 1;
        match faults.unauthorized_after {
            Some(limit) if *count > limit => {
                faults.unauthorized_after = None;
                true
            }
            _ => false,
        }
    }

    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Arc<Notify>,
    /// Turns true at [`SimHandle::stop`]: open connections close too, as when SIS goes down.
    closing: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    callout: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the SIS base URL, and the admin API under `/admin`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting connections, closes the open ones (keep-alive connections of
    /// clients included, so the simulator is really gone) and waits for the loop to end.
    pub async fn stop(self) {
        if let Some(callout) = &self.callout {
            callout.abort();
        }
        self.closing.send_replace(true);
        self.shutdown.notify_one();
        let _ = self.task.await;
    }

    /// Runs until the process is stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the simulator: loads the state file, connects to NATS and creates the streams,
/// answers NATS's auth callout when configured, then serves HTTP on `config.listen`.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    let state = match &config.state_file {
        Some(path) => SimState::load(path).map_err(|source| SimError::StateFile {
            path: path.clone(),
            source,
        })?,
        None => SimState::default(),
    };
    let publisher = match &config.nats {
        Some(nats) => {
            let publisher = Publisher::connect(nats).await?;
            publisher.ensure_streams().await?;
            Some(publisher)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        state_file: config.state_file.clone(),
        faults: Mutex::new(config.faults.clone()),
        authenticated_calls: Mutex::new(0),
        calls: Mutex::new(Vec::new()),
        publisher,
        oidc_identity: config.oidc_identity,
    });
    let callout = match config
        .nats
        .as_ref()
        .and_then(|n| Some((n, n.auth_callout.as_ref()?)))
    {
        Some((nats, keys)) => Some(auth_callout::start(&nats.url, keys, shared.clone()).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    let router = router(shared.clone());
    let shutdown = Arc::new(Notify::new());
    let stop = shutdown.clone();
    let (closing, closed) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(serve_connection(stream, router.clone(), closed.clone()));
                }
                _ = stop.notified() => break,
            }
        }
    });
    Ok(SimHandle {
        addr,
        shared,
        shutdown,
        closing,
        task,
        callout,
    })
}

/// Put in each request's extensions: notifying it closes the connection unanswered.
#[derive(Clone)]
struct DropConnection(Arc<Notify>);

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    use tower::Service;
    let kill = Arc::new(Notify::new());
    let handle = DropConnection(kill.clone());
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(handle.clone());
            let mut router = router.clone();
            async move { router.call(request.map(Body::new)).await }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = kill.notified() => {}
        _ = closed.wait_for(|closed| *closed) => {}
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let sis = api::routes().route_layer(axum::middleware::from_fn_with_state(
        shared.clone(),
        fault_layer,
    ));
    sis.merge(admin::routes()).with_state(shared)
}

/// Applies the fault switches to SIS calls (never to the admin API) and records each call.
async fn fault_layer(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let (latency, error, drop, malformed) = {
        let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        let faults = &mut *faults;
        (
            faults.latency_ms,
            Faults::roll(faults.error_rate, &mut faults.error_next),
            Faults::roll(faults.drop_rate, &mut faults.drop_next),
            Faults::roll(faults.malformed_rate, &mut faults.malformed_next),
        )
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let record = |status: u16, fault: Option<&str>| CallRecord {
        method: method.clone(),
        route: route.clone(),
        path: path.clone(),
        status,
        fault: fault.map(str::to_string),
    };
    if drop && let Some(handle) = request.extensions().get::<DropConnection>().cloned() {
        shared.record(record(0, Some("drop")));
        handle.0.notify_one();
        std::future::pending::<()>().await;
    }
    if error {
        shared.record(record(500, Some("error")));
        return api::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    let response = next.run(request).await;
    let status = response.status();
    if malformed && status == StatusCode::OK {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let cut = if bytes.len() < 4 {
            b"{\"".to_vec()
        } else {
            bytes[..bytes.len() / 2].to_vec()
        };
        shared.record(record(200, Some("malformed")));
        return (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            cut,
        )
            .into_response();
    }
    shared.record(record(status.as_u16(), None));
    response
}

/// Counts of calls per `"<METHOD> <route> <status>"`, for quick assertions.
pub fn call_counts(calls: &[CallRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts
            .entry(format!("{} {} {}", call.method, call.route, call.status))
            .or_insert(0) += 1;
    }
    counts
}
