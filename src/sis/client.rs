//! The SIS (ICMS) HTTP client: every call nvca makes, with NVIDIA's paths, headers and
//! success rule (only 200), a bearer token from a rotating file, timeouts, and backoff on
//! 5xx, timeouts and dropped connections.
//!
//! What a caller can rely on:
//! - A 401 makes the client read its token file again and retry once; a second 401 is
//!   [`SisError::Unauthorized`], naming the token file.
//! - 5xx, 429, timeouts and connection failures are retried up to `max_attempts` with capped
//!   exponential backoff and jitter; every other answer is returned at once.
//! - A 4xx comes back as an error naming the endpoint and SIS's own `error` message.
//! - A 200 whose body does not parse is [`SisError::Decode`] with a short excerpt.
//! - A duplicate cluster creation is [`SisError::AlreadyExists`] (SIS answers 400 with
//!   "Cluster with clusterName … already exists"), so callers can look the cluster up.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::token::{TokenError, TokenSource};
use super::types::*;

/// NVCA's cluster header (`N/pkg/types/types.go` HeaderNVClusterID).
pub const HEADER_CLUSTER_ID: &str = "X-Nv-Cluster-Id";
/// NVCA caps response bodies at 250 KiB; so do we.
pub const MAX_RESPONSE_BYTES: usize = 250 * 1024;

/// The SIS endpoints nvca calls. Its `Display` is the method and path template, a bounded
/// value fit for logs and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ListClusters,
    CreateCluster,
    DeleteCluster,
    Register,
    Credentials,
    Heartbeat,
    Jwks,
    Acknowledge,
    InstanceStatus,
    InstanceList,
}

impl Endpoint {
    pub fn method(self) -> Method {
        match self {
            Endpoint::ListClusters | Endpoint::Credentials | Endpoint::InstanceList => Method::GET,
            Endpoint::CreateCluster | Endpoint::Heartbeat | Endpoint::InstanceStatus => {
                Method::POST
            }
            Endpoint::DeleteCluster => Method::DELETE,
            Endpoint::Register | Endpoint::Jwks | Endpoint::Acknowledge => Method::PUT,
        }
    }

    pub fn template(self) -> &'static str {
        match self {
            Endpoint::ListClusters | Endpoint::CreateCluster => "/v1/accounts/{ncaId}/clusters",
            Endpoint::DeleteCluster => "/v1/accounts/{ncaId}/clusters/{clusterId}",
            Endpoint::Register => "/v1/nvca/clusters/{clusterId}/register",
            Endpoint::Credentials => "/v1/nvca/clusters/{clusterId}/credentials",
            Endpoint::Heartbeat => "/v1/nvca/clusters/{clusterId}/heartbeat",
            Endpoint::Jwks => "/v1/nvca/clusters/{clusterId}/jwks",
            Endpoint::Acknowledge => "/v1/sirs/{requestId}",
            Endpoint::InstanceStatus => "/v1/sirs/{requestId}/{instanceId}",
            Endpoint::InstanceList => "/v1/si/clusters/{clusterId}/instances",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method(), self.template())
    }
}

/// Everything that can go wrong talking to SIS.
#[derive(Debug, Error)]
pub enum SisError {
    #[error("SIS client configuration: {0}")]
    Config(String),
    #[error("no SIS token: {0}")]
    Token(#[from] TokenError),
    #[error(
        "SIS refused the token for {endpoint} (401: {message}) even after re-reading the {token}; the token has expired or was revoked: check that the vault agent (or kubelet) renews it"
    )]
    Unauthorized {
        endpoint: Endpoint,
        message: String,
        token: String,
    },
    #[error(
        "SIS denied {endpoint} (403: {message}); the token lacks the authority for this call (nvca-cluster for agent calls, cluster-management for cluster create/list/delete)"
    )]
    Forbidden { endpoint: Endpoint, message: String },
    #[error(
        "cluster {name} already exists in the account (SIS: {message}); look it up by name and reuse its IDs"
    )]
    AlreadyExists { name: String, message: String },
    #[error("{endpoint}: not found (404: {message})")]
    NotFound { endpoint: Endpoint, message: String },
    #[error(
        "{endpoint}: conflict (409: {message}); for agent calls the token's cluster must match the cluster ID in the path"
    )]
    Conflict { endpoint: Endpoint, message: String },
    #[error("{endpoint}: precondition failed (412: {message})")]
    PreconditionFailed { endpoint: Endpoint, message: String },
    #[error("{endpoint}: SIS rejected the request ({status}: {message}); fix the request")]
    Rejected {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    #[error(
        "{endpoint}: SIS failed ({status}: {message}) {attempts} time(s); it is unavailable, retry later"
    )]
    Server {
        endpoint: Endpoint,
        status: u16,
        message: String,
        attempts: u32,
    },
    #[error(
        "{endpoint}: no answer within {timeout:?}, {attempts} time(s); check that SIS is reachable at {base_url}"
    )]
    Timeout {
        endpoint: Endpoint,
        timeout: Duration,
        attempts: u32,
        base_url: String,
    },
    #[error(
        "{endpoint}: connection to SIS at {base_url} failed {attempts} time(s) ({reason}); check the URL and the network"
    )]
    Connect {
        endpoint: Endpoint,
        base_url: String,
        reason: String,
        attempts: u32,
    },
    #[error(
        "{endpoint}: SIS answered 200 with a body that does not parse ({reason}); body starts: {excerpt:?}"
    )]
    Decode {
        endpoint: Endpoint,
        reason: String,
        excerpt: String,
    },
    #[error("{endpoint}: SIS answered {status}; only 200 counts as success")]
    UnexpectedStatus { endpoint: Endpoint, status: u16 },
}

impl SisError {
    /// A short label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            SisError::Config(_) => "config",
            SisError::Token(error) => error.category(),
            SisError::Unauthorized { .. } => "unauthorized",
            SisError::Forbidden { .. } => "forbidden",
            SisError::AlreadyExists { .. } => "already_exists",
            SisError::NotFound { .. } => "not_found",
            SisError::Conflict { .. } => "conflict",
            SisError::PreconditionFailed { .. } => "precondition_failed",
            SisError::Rejected { .. } => "rejected",
            SisError::Server { .. } => "server_error",
            SisError::Timeout { .. } => "timeout",
            SisError::Connect { .. } => "connect",
            SisError::Decode { .. } => "decode",
            SisError::UnexpectedStatus { .. } => "unexpected_status",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything
    /// (SIS down, network, a rotating token not yet rendered).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SisError::Server { .. }
                | SisError::Timeout { .. }
                | SisError::Connect { .. }
                | SisError::Decode { .. }
                | SisError::Unauthorized { .. }
                | SisError::Token(TokenError::Missing { .. } | TokenError::Empty { .. })
        )
    }

    /// The HTTP status SIS answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SisError::Unauthorized { .. } => Some(401),
            SisError::Forbidden { .. } => Some(403),
            SisError::AlreadyExists { .. } | SisError::Rejected { status: 400, .. } => Some(400),
            SisError::NotFound { .. } => Some(404),
            SisError::Conflict { .. } => Some(409),
            SisError::PreconditionFailed { .. } => Some(412),
            SisError::Rejected { status, .. }
            | SisError::Server { status, .. }
            | SisError::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Retry timing. NVCA uses go-retryablehttp with waits of 3 s to 1 min.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total tries of one call, the first included.
    pub max_attempts: u32,
    pub min_wait: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            min_wait: Duration::from_secs(3),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (attempt counts from 1): doubling from
    /// `min_wait`, capped, the upper half randomised.
    pub fn wait(&self, attempt: u32) -> Duration {
        let full = self
            .min_wait
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_wait);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// How to reach SIS.
#[derive(Clone, Debug)]
pub struct SisConfig {
    /// `icmsConfig.icmsServiceURL`; a trailing `/` is dropped.
    pub base_url: String,
    /// Sent as `X-Nv-Cluster-Id` when set (the agent always sets it).
    pub cluster_id: Option<String>,
    /// Per try, connect and answer together.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `icmsServiceHostHeaderOverride`.
    pub host_override: Option<String>,
}

impl SisConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        SisConfig {
            base_url: base_url.into(),
            cluster_id: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            host_override: None,
        }
    }
}

/// What a cluster deletion found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// SIS had no such cluster (404): nothing left to do.
    AlreadyGone,
}

/// A SIS client. Clone it freely: clones share the connection pool and token cache.
#[derive(Clone)]
pub struct SisClient {
    http: reqwest::Client,
    base_url: String,
    cluster_id: Option<String>,
    host_override: Option<HeaderValue>,
    retry: RetryPolicy,
    timeout: Duration,
    token: Arc<TokenSource>,
    /// At most [`MAX_IN_FLIGHT`] calls at once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// SIS calls one client has in flight at once; more wait their turn. A thousand
/// terminations arrive together, and each call in flight holds its own connection.
const MAX_IN_FLIGHT: usize = 32;

impl std::fmt::Debug for SisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SisClient")
            .field("base_url", &self.base_url)
            .field("cluster_id", &self.cluster_id)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

enum Body<'a> {
    None,
    Json(&'a (dyn erased::Json + Sync)),
}

mod erased {
    /// Object-safe serialisation, so one request path serves every body type.
    pub trait Json {
        fn to_json(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl SisClient {
    pub fn new(config: SisConfig, token: TokenSource) -> Result<Self, SisError> {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|e| SisError::Config(format!("base URL {base_url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SisError::Config(format!(
                "base URL {base_url:?} must start with http:// or https://"
            )));
        }
        crate::tls::ensure_crypto_provider();
        let user_agent = format!("nvca/{}", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build()
            .map_err(|e| SisError::Config(format!("cannot build the HTTP client: {e}")))?;
        let host_override = match config.host_override {
            Some(host) => Some(HeaderValue::from_str(&host).map_err(|_| {
                SisError::Config(format!("host override {host:?} is not a valid Host header"))
            })?),
            None => None,
        };
        Ok(SisClient {
            http,
            base_url,
            cluster_id: config.cluster_id,
            host_override,
            retry: config.retry,
            timeout: config.timeout,
            token: Arc::new(token),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// The token source, e.g. to report which file is used.
    pub fn token_source(&self) -> &TokenSource {
        &self.token
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    // --- cluster management (bootstrap) ------------------------------------------------

    /// Every cluster of the account (`GET /v1/accounts/{ncaId}/clusters`).
    pub async fn list_clusters(&self, nca_id: &str) -> Result<Vec<Cluster>, SisError> {
        let path = format!("/v1/accounts/{}/clusters", seg(nca_id));
        self.call_json(Endpoint::ListClusters, &path, Body::None)
            .await
    }

    /// The account's cluster called `name`, if any.
    pub async fn find_cluster_by_name(
        &self,
        nca_id: &str,
        name: &str,
    ) -> Result<Option<Cluster>, SisError> {
        let clusters = self.list_clusters(nca_id).await?;
        Ok(clusters.into_iter().find(|c| c.cluster_name == name))
    }

    /// Creates a cluster. A cluster of that name already in the account is
    /// [`SisError::AlreadyExists`].
    pub async fn create_cluster(
        &self,
        nca_id: &str,
        request: &ClusterCreationRequest,
    ) -> Result<ClusterIds, SisError> {
        let path = format!("/v1/accounts/{}/clusters", seg(nca_id));
        match self
            .call_json(Endpoint::CreateCluster, &path, Body::Json(request))
            .await
        {
            Err(SisError::Rejected {
                status: 400,
                message,
                ..
            }) if message.contains("already exists") => Err(SisError::AlreadyExists {
                name: request.cluster_name.clone(),
                message,
            }),
            other => other,
        }
    }

    /// Deletes a cluster; a 404 is [`Deleted::AlreadyGone`].
    pub async fn delete_cluster(
        &self,
        nca_id: &str,
        cluster_id: &str,
    ) -> Result<Deleted, SisError> {
        let path = format!("/v1/accounts/{}/clusters/{}", seg(nca_id), seg(cluster_id));
        match self.call(Endpoint::DeleteCluster, &path, Body::None).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(SisError::NotFound { .. }) => Ok(Deleted::AlreadyGone),
            Err(error) => Err(error),
        }
    }

    // --- agent ----------------------------------------------------------------------------

    /// Registers (or re-registers) the cluster with its GPUs and instance types.
    pub async fn register(
        &self,
        cluster_id: &str,
        request: &RegistrationRequest,
    ) -> Result<RegistrationResponse, SisError> {
        let path = format!("/v1/nvca/clusters/{}/register", seg(cluster_id));
        self.call_json(Endpoint::Register, &path, Body::Json(request))
            .await
    }

    /// The queue credentials; empty for self-managed clusters.
    pub async fn credentials(&self, cluster_id: &str) -> Result<QueueCredentials, SisError> {
        let path = format!("/v1/nvca/clusters/{}/credentials", seg(cluster_id));
        self.call_json(Endpoint::Credentials, &path, Body::None)
            .await
    }

    /// Sends a heartbeat and returns SIS's answer. As in NVCA, an empty or unreadable
    /// answer body counts as `ACCEPTED` (a garbled body must never make a cluster evict its
    /// workloads); it is logged with an excerpt.
    pub async fn heartbeat(
        &self,
        cluster_id: &str,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatAction, SisError> {
        let path = format!("/v1/nvca/clusters/{}/heartbeat", seg(cluster_id));
        let answer = self
            .call(Endpoint::Heartbeat, &path, Body::Json(request))
            .await?;
        match serde_json::from_slice::<HeartbeatResponse>(&answer.body) {
            Ok(HeartbeatResponse {
                action: Some(action),
            }) => Ok(action),
            Ok(HeartbeatResponse { action: None }) => Ok(HeartbeatAction::Accepted),
            Err(error) => {
                tracing::warn!(
                    endpoint = %Endpoint::Heartbeat,
                    reason = %error,
                    excerpt = %excerpt(&answer.body),
                    "heartbeat answer does not parse; taken as ACCEPTED, as NVCA does"
                );
                Ok(HeartbeatAction::Accepted)
            }
        }
    }

    /// Pushes the cluster's JWKS (PSAT identity).
    pub async fn push_jwks(&self, cluster_id: &str, request: &JwksUpdate) -> Result<(), SisError> {
        let path = format!("/v1/nvca/clusters/{}/jwks", seg(cluster_id));
        self.call(Endpoint::Jwks, &path, Body::Json(request))
            .await
            .map(drop)
    }

    /// Acknowledges a creation request (`status: pending-fulfillment`).
    pub async fn acknowledge(
        &self,
        request_id: &str,
        request: &AckRequest,
    ) -> Result<(), SisError> {
        let path = format!("/v1/sirs/{}", seg(request_id));
        self.call(Endpoint::Acknowledge, &path, Body::Json(request))
            .await
            .map(drop)
    }

    /// Reports one instance's state.
    pub async fn report_instance(
        &self,
        request_id: &str,
        instance_id: &str,
        update: &InstanceStatusUpdate,
    ) -> Result<(), SisError> {
        let path = format!("/v1/sirs/{}/{}", seg(request_id), seg(instance_id));
        self.call(Endpoint::InstanceStatus, &path, Body::Json(update))
            .await
            .map(drop)
    }

    /// The instances SIS believes active on the cluster.
    pub async fn list_instances(&self, cluster_id: &str) -> Result<Vec<InstanceInfo>, SisError> {
        let path = format!("/v1/si/clusters/{}/instances", seg(cluster_id));
        let list: InstanceList = self
            .call_json(Endpoint::InstanceList, &path, Body::None)
            .await?;
        Ok(list.instances.unwrap_or_default())
    }

    // --- the one request path -----------------------------------------------------------

    async fn call_json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        body: Body<'_>,
    ) -> Result<T, SisError> {
        let answer = self.call(endpoint, path, body).await?;
        serde_json::from_slice(&answer.body).map_err(|error| SisError::Decode {
            endpoint,
            reason: error.to_string(),
            excerpt: excerpt(&answer.body),
        })
    }

    async fn call(
        &self,
        endpoint: Endpoint,
        path: &str,
        body: Body<'_>,
    ) -> Result<Answer, SisError> {
        let payload = match body {
            Body::None => None,
            Body::Json(value) => Some(value.to_json().map_err(|e| {
                SisError::Config(format!("cannot encode the {endpoint} body: {e}"))
            })?),
        };
        let url = format!("{}{}", self.base_url, path);
        let mut attempts = 0u32;
        let mut reauthenticated = false;
        loop {
            attempts += 1;
            let token = self.token.token()?;
            let outcome = self.send(endpoint, &url, &token, payload.as_deref()).await;
            let retryable = match outcome {
                Ok(answer) if answer.status == StatusCode::OK => return Ok(answer),
                Ok(answer) if answer.status == StatusCode::UNAUTHORIZED => {
                    if !reauthenticated {
                        // The vault agent or kubelet may have rotated the token since we
                        // read it: read again and retry once, without spending an attempt.
                        reauthenticated = true;
                        attempts -= 1;
                        self.token.invalidate();
                        tracing::info!(%endpoint, "SIS answered 401; re-reading the token file");
                        continue;
                    }
                    return Err(SisError::Unauthorized {
                        endpoint,
                        message: error_message(&answer.body),
                        token: self.token.describe(),
                    });
                }
                Ok(answer)
                    if answer.status.is_server_error()
                        || answer.status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    SisError::Server {
                        endpoint,
                        status: answer.status.as_u16(),
                        message: error_message(&answer.body),
                        attempts,
                    }
                }
                Ok(answer) => return Err(classify(endpoint, answer)),
                Err(error) if error.is_timeout() => SisError::Timeout {
                    endpoint,
                    timeout: self.timeout,
                    attempts,
                    base_url: self.base_url.clone(),
                },
                Err(error) => SisError::Connect {
                    endpoint,
                    base_url: self.base_url.clone(),
                    reason: error_chain(&error),
                    attempts,
                },
            };
            if attempts >= self.retry.max_attempts {
                return Err(retryable);
            }
            let wait = self.retry.wait(attempts);
            tracing::warn!(%endpoint, attempt = attempts, ?wait, error = %retryable, "SIS call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send(
        &self,
        endpoint: Endpoint,
        url: &str,
        token: &str,
        payload: Option<&[u8]>,
    ) -> Result<Answer, reqwest::Error> {
        // Never closed, so acquiring cannot fail.
        let _turn = self.in_flight.acquire().await.ok();
        let mut request = self
            .http
            .request(endpoint.method(), url)
            .bearer_auth(token)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json");
        if let Some(cluster_id) = &self.cluster_id {
            request = request.header(HEADER_CLUSTER_ID, cluster_id);
        }
        if let Some(host) = &self.host_override {
            request = request.header(HOST, host.clone());
        }
        if let Some(payload) = payload {
            request = request.body(payload.to_vec());
        }
        let mut response = request.send().await?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(Answer { status, body })
    }
}

fn classify(endpoint: Endpoint, answer: Answer) -> SisError {
    let message = error_message(&answer.body);
    match answer.status {
        StatusCode::FORBIDDEN => SisError::Forbidden { endpoint, message },
        StatusCode::NOT_FOUND => SisError::NotFound { endpoint, message },
        StatusCode::CONFLICT => SisError::Conflict { endpoint, message },
        StatusCode::PRECONDITION_FAILED => SisError::PreconditionFailed { endpoint, message },
        status if status.is_client_error() => SisError::Rejected {
            endpoint,
            status: status.as_u16(),
            message,
        },
        status => SisError::UnexpectedStatus {
            endpoint,
            status: status.as_u16(),
        },
    }
}

/// SIS's `{"error": "..."}` message, or an excerpt of whatever else came back.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error: Some(error) }) => error,
        _ if body.is_empty() => "empty body".to_string(),
        _ => format!("body: {:?}", excerpt(body)),
    }
}

/// The first 120 characters of a body, for messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cut: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        cut.push('…');
    }
    cut
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// A path segment, percent-encoded so an ID can never change the path.
fn seg(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_minimum_and_stop_at_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            min_wait: Duration::from_secs(3),
            max_wait: Duration::from_secs(60),
        };
        for attempt in 1..10 {
            let wait = policy.wait(attempt);
            let full = Duration::from_secs(3 * (1 << (attempt - 1))).min(Duration::from_secs(60));
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("0-sr-abc_1.2"), "0-sr-abc_1.2");
    }

    #[test]
    fn errors_carry_sis_message_and_a_bounded_category() {
        let answer = Answer {
            status: StatusCode::BAD_REQUEST,
            body: br#"{"error":"k8sVersion must be provided"}"#.to_vec(),
        };
        let error = classify(Endpoint::Register, answer);
        assert_eq!(error.category(), "rejected");
        let text = error.to_string();
        assert!(
            text.contains("PUT /v1/nvca/clusters/{clusterId}/register"),
            "{text}"
        );
        assert!(text.contains("k8sVersion must be provided"), "{text}");
        assert_eq!(
            error_message(&[b'x'; 500]).chars().count(),
            "body: \"\"".len() + 121
        );
    }
}
