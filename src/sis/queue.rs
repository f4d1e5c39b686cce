//! The work queue: SIS's two JetStream streams, read through one durable pull consumer
//! each, under the NATS permissions the NVCF control plane grants a cluster.
//!
//! Those permissions (`application-ncp.yaml` `natsAuth.permissions`) allow publishing only
//! to `$JS.API.CONSUMER.CREATE.<S>.<S>-<clusterId>`, `$JS.API.CONSUMER.MSG.NEXT.<S>.<S>-<clusterId>`
//! and the two `$JS.ACK` forms of that consumer, and subscribing only to `_INBOX.>`. So this
//! module speaks the JetStream API over the core client itself: it never asks for stream or
//! account info (async-nats' `get_stream()` would), creates the consumer on the filter-less
//! subject with `filter_subjects`, pulls with `_INBOX` replies, and acks on the message's
//! reply subject.
//!
//! A message that does not parse is never dropped silently: the first time it is given
//! back to the queue (nak), the second time it is terminated (`+TERM`), and both times it
//! is returned in [`Fetched::rejected`] and logged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use thiserror::Error;

use super::token::TokenSource;
use super::types::{CreationMessage, RequestAction, TerminationMessage};

/// The two streams SIS creates (`CoreNatsStreamRegistrar.java`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueStream {
    /// `CreateNvcaFunctionTaskStream`, subjects `Create.NVCA.>`.
    Creation,
    /// `TerminateNvcaStream`, subjects `Terminate.NVCA.>`.
    Termination,
}

impl QueueStream {
    pub const ALL: [QueueStream; 2] = [QueueStream::Creation, QueueStream::Termination];

    /// The stream's name; also the `url` of its queue in the credentials.
    pub fn name(self) -> &'static str {
        match self {
            QueueStream::Creation => "CreateNvcaFunctionTaskStream",
            QueueStream::Termination => "TerminateNvcaStream",
        }
    }

    /// Every subject of the stream.
    pub fn subjects(self) -> &'static str {
        match self {
            QueueStream::Creation => "Create.NVCA.>",
            QueueStream::Termination => "Terminate.NVCA.>",
        }
    }

    /// The durable consumer of one cluster: `<stream>-<clusterId>`.
    pub fn durable(self, cluster_id: &str) -> String {
        format!("{}-{}", self.name(), cluster_id)
    }

    /// The cluster's part of the stream.
    pub fn filter_subject(self, cluster_id: &str) -> String {
        match self {
            QueueStream::Creation => format!("Create.NVCA.*.{cluster_id}.*.*"),
            QueueStream::Termination => format!("Terminate.NVCA.{cluster_id}"),
        }
    }

    /// NVCA's visibility timeout: 360 s for creation, 30 s for termination.
    pub fn ack_wait(self) -> Duration {
        match self {
            QueueStream::Creation => Duration::from_secs(360),
            QueueStream::Termination => Duration::from_secs(30),
        }
    }

    /// The subject SIS publishes a creation message on (`NatsMessageSenderClient.java`):
    /// `Create.NVCA.{Function|Task}.<clusterId>.<gpu>.<instanceType with . as |>`.
    pub fn creation_subject(
        task: bool,
        cluster_id: &str,
        gpu: &str,
        instance_type: &str,
    ) -> String {
        format!(
            "Create.NVCA.{}.{cluster_id}.{gpu}.{}",
            if task { "Task" } else { "Function" },
            instance_type.replace('.', "|")
        )
    }

    /// The subject SIS publishes a termination message on: `Terminate.NVCA.<clusterId>`.
    pub fn termination_subject(cluster_id: &str) -> String {
        format!("Terminate.NVCA.{cluster_id}")
    }
}

/// How the consumer authenticates to NATS.
#[derive(Clone)]
pub enum NatsAuth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    /// A static connect token.
    Token(String),
    /// NVCA's PSAT mode: on every connect and reconnect, the projected token is read again
    /// and sent as `base64url(JSON{"account":"APP","pluginName":"oidc","payload":<jwt>})`
    /// for the control plane's auth callout.
    Psat(Arc<TokenSource>),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user})"),
            NatsAuth::Token(_) => f.write_str("Token(..)"),
            NatsAuth::Psat(source) => write!(f, "Psat({})", source.describe()),
        }
    }
}

/// The connect token of PSAT mode for `jwt` (`N/pkg/queue/nats/client_psat.go`).
pub fn psat_connect_token(jwt: &str) -> String {
    use base64::Engine;
    let json = serde_json::json!({"account": "APP", "pluginName": "oidc", "payload": jwt});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
}

/// How to reach the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// `selfManaged.natsURL`.
    pub url: String,
    pub cluster_id: String,
    pub auth: NatsAuth,
    /// Messages per pull (NVCA: the `maxQueueMessages` flag; its agent asks for 10).
    pub batch: usize,
    /// How long a pull waits for messages (NVCA: 3 s).
    pub fetch_wait: Duration,
    /// How long an API request (consumer creation, ack) may take.
    pub request_timeout: Duration,
}

impl QueueConfig {
    pub fn new(url: impl Into<String>, cluster_id: impl Into<String>) -> Self {
        QueueConfig {
            url: url.into(),
            cluster_id: cluster_id.into(),
            auth: NatsAuth::None,
            batch: 10,
            fetch_wait: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything that can go wrong with the queue.
#[derive(Debug, Error)]
pub enum QueueError {
    #[error(
        "cannot connect to NATS at {url}: {reason}; check selfManaged.natsURL and the credentials"
    )]
    Connect { url: String, reason: String },
    #[error(
        "stream {stream} does not exist on the NATS server; SIS creates it when it starts: check that SIS runs with NATS enabled against the same server"
    )]
    StreamNotFound { stream: &'static str },
    #[error(
        "NATS denied {subject}: {detail}; the cluster's NATS permissions do not allow it (check the cluster ID and the durable name {durable})"
    )]
    PermissionDenied {
        subject: String,
        durable: String,
        detail: String,
    },
    #[error(
        "creating consumer {durable} on {stream} failed: JetStream error {code}/{err_code}: {description}"
    )]
    ConsumerCreate {
        stream: &'static str,
        durable: String,
        code: u16,
        err_code: u32,
        description: String,
    },
    #[error("no answer on {subject} within {after:?}; is JetStream enabled on the server?")]
    NoAnswer { subject: String, after: Duration },
    #[error("NATS {operation} on {subject} failed: {reason}")]
    Io {
        operation: &'static str,
        subject: String,
        reason: String,
    },
    #[error("the JetStream answer on {subject} does not parse ({reason}): {excerpt:?}")]
    Decode {
        subject: String,
        reason: String,
        excerpt: String,
    },
    #[error("pulling from {durable} failed: JetStream status {status}: {description}")]
    Pull {
        durable: String,
        status: u16,
        description: String,
    },
}

impl QueueError {
    /// A short label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            QueueError::Connect { .. } => "connect",
            QueueError::StreamNotFound { .. } => "stream_not_found",
            QueueError::PermissionDenied { .. } => "permission_denied",
            QueueError::ConsumerCreate { .. } => "consumer_create",
            QueueError::NoAnswer { .. } => "no_answer",
            QueueError::Io { .. } => "io",
            QueueError::Decode { .. } => "decode",
            QueueError::Pull { .. } => "pull",
        }
    }
}

/// The JetStream position of a delivered message, read from its reply subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub stream: String,
    pub consumer: String,
    /// How many times this message has been delivered, this time included.
    pub delivered: u64,
    pub stream_sequence: u64,
    pub consumer_sequence: u64,
}

impl Position {
    /// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` and
    /// the newer form with domain and account hash after `$JS.ACK`.
    pub fn from_reply(reply: &str) -> Option<Position> {
        let tokens: Vec<&str> = reply.split('.').collect();
        if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        let at = if tokens.len() == 9 { 2 } else { 4 };
        if tokens.len() < at + 7 {
            return None;
        }
        Some(Position {
            stream: tokens[at].to_string(),
            consumer: tokens[at + 1].to_string(),
            delivered: tokens[at + 2].parse().ok()?,
            stream_sequence: tokens[at + 3].parse().ok()?,
            consumer_sequence: tokens[at + 4].parse().ok()?,
        })
    }
}

/// Acknowledges one delivered message on its reply subject.
#[derive(Clone)]
pub struct Acker {
    client: async_nats::Client,
    reply: String,
    timeout: Duration,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker").field("reply", &self.reply).finish()
    }
}

impl Acker {
    /// The reply subject the message was delivered with: `$JS.ACK.<stream>.<consumer>…`.
    /// JetStream acks by the stream sequence in it, so a later [`QueueConsumer::acker`]
    /// for the same subject acks the message after a restart, on any redelivery.
    pub fn reply(&self) -> &str {
        &self.reply
    }

    /// Done: the message leaves the work queue. Waits for the server's confirmation.
    pub async fn ack(&self) -> Result<(), QueueError> {
        let request = async_nats::Request::new()
            .payload(Bytes::from_static(b"+ACK"))
            .timeout(Some(self.timeout));
        self.client
            .send_request(self.reply.clone(), request)
            .await
            .map(drop)
            .map_err(|e| QueueError::Io {
                operation: "ack",
                subject: self.reply.clone(),
                reason: e.to_string(),
            })
    }

    /// Give it back for redelivery, at once or after `delay`.
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), QueueError> {
        let body = match delay {
            Some(delay) => format!("-NAK {{\"delay\":{}}}", delay.as_nanos()),
            None => "-NAK".to_string(),
        };
        self.send("nak", body).await
    }

    /// Still working on it: restart the ack-wait clock (`+WPI`).
    pub async fn in_progress(&self) -> Result<(), QueueError> {
        self.send("in-progress", "+WPI".to_string()).await
    }

    /// Never redeliver (`+TERM`).
    pub async fn terminate(&self) -> Result<(), QueueError> {
        self.send("terminate", "+TERM".to_string()).await
    }

    async fn send(&self, operation: &'static str, body: String) -> Result<(), QueueError> {
        let io = |e: &dyn std::fmt::Display| QueueError::Io {
            operation,
            subject: self.reply.clone(),
            reason: e.to_string(),
        };
        self.client
            .publish(self.reply.clone(), Bytes::from(body))
            .await
            .map_err(|e| io(&e))?;
        self.client.flush().await.map_err(|e| io(&e))
    }
}

/// One delivered message whose body parsed.
#[derive(Clone, Debug)]
pub struct Received<T> {
    pub body: T,
    pub subject: String,
    pub position: Position,
    pub acker: Acker,
}

impl<T> Received<T> {
    /// NVCA's receipt handle: `<subject>:<stream sequence>`.
    pub fn receipt_handle(&self) -> String {
        format!("{}:{}", self.subject, self.position.stream_sequence)
    }
}

/// How long an unreadable message waits before its one more delivery.
const UNREADABLE_RETRY: Duration = Duration::from_secs(1);

/// What was done with a message that did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// First delivery: given back to the queue.
    Requeued,
    /// Delivered before and still unreadable: terminated, never redelivered.
    Terminated,
}

/// A message that could not be read, as reported.
#[derive(Clone, Debug)]
pub struct RejectedMessage {
    pub stream: QueueStream,
    pub subject: String,
    pub position: Option<Position>,
    pub reason: String,
    /// The first 120 characters of the payload.
    pub excerpt: String,
    pub action: Rejection,
}

/// What one pull brought.
#[derive(Debug)]
pub struct Fetched<T> {
    pub messages: Vec<Received<T>>,
    pub rejected: Vec<RejectedMessage>,
}

/// A creation message, checked: what a function machine needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct CreationRequest {
    pub request_id: String,
    pub message_batch_id: Option<String>,
    pub nca_id: Option<String>,
    /// As sent (e.g. `RequestSpotInstances`).
    pub action: RequestAction,
    pub workload: Workload,
    pub gpu: String,
    pub instance_type: String,
    pub instance_count: u32,
    /// The whole message, for the launch specification.
    pub message: CreationMessage,
}

/// What a creation message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    Function {
        function_id: String,
        function_version_id: String,
        function_type: Option<String>,
    },
    Task {
        task_id: String,
        task_type: Option<String>,
    },
}

/// A termination message, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminationRequest {
    pub request_id: String,
    pub nca_id: Option<String>,
    pub instance_ids: Vec<String>,
    pub availability_zone: Option<String>,
}

/// A creation message's action as NVIDIA's agent reads it (`T/common/types.go`
/// `MessageAction.Normalize`): SIS's names, the translator's own `RequestICMSInstances`
/// and `RequestICMSInstancesForTask`, and the legacy `RequestSp…Instances[ForTask]`
/// spellings, each as the legacy name nvca reports.
fn creation_action(name: &str) -> Option<RequestAction> {
    if let Some(action) = RequestAction::from_wire(name).filter(|a| a.requests_instances()) {
        return Some(action);
    }
    let for_task = name.ends_with("ForTask");
    let legacy =
        name.len() >= 20 && name.starts_with("RequestSp") && name.find("Instances") == Some(11);
    (legacy || matches!(name, "RequestICMSInstances" | "RequestICMSInstancesForTask")).then_some(
        if for_task {
            RequestAction::RequestSpotInstancesForTask
        } else {
            RequestAction::RequestSpotInstances
        },
    )
}

pub(crate) fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.trim().is_empty()).cloned()
}

fn spec_str(message: &CreationMessage, key: &str) -> Option<String> {
    message
        .launch_specification
        .as_ref()
        .and_then(|spec| spec.get(key))
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl CreationRequest {
    /// Checks a creation message the way NVCA reads it (`T/translate.go`): the action
    /// (legacy or new name), function or task details (top-level function IDs accepted),
    /// the GPU (`gpuType`, then the launch specification, then the third part of the
    /// instance type) and the instance count.
    pub fn from_message(message: CreationMessage) -> Result<Self, String> {
        let request_id = non_empty(&message.request_id).ok_or("requestId is missing")?;
        let action_name = non_empty(&message.action).ok_or("action is missing")?;
        let action = creation_action(&action_name)
            .ok_or_else(|| format!("action {action_name:?} does not ask for instances"))?;
        let details = message.function_details.clone().unwrap_or_default();
        let function_id = non_empty(&details.function_id).or(non_empty(&message.function_id));
        let version_id =
            non_empty(&details.function_version_id).or(non_empty(&message.function_version_id));
        let task_id = message
            .task_details
            .as_ref()
            .and_then(|t| non_empty(&t.task_id));
        let workload = match (function_id, version_id, task_id) {
            (_, _, Some(task_id)) => Workload::Task {
                task_id,
                task_type: message
                    .task_details
                    .as_ref()
                    .and_then(|t| t.task_type.clone()),
            },
            (Some(function_id), Some(function_version_id), None) => Workload::Function {
                function_id,
                function_version_id,
                function_type: details.function_type.clone(),
            },
            (Some(_), None, None) => return Err("functionVersionId is missing".into()),
            _ => return Err("neither functionDetails nor taskDetails is present".into()),
        };
        if action.is_task() != matches!(workload, Workload::Task { .. }) {
            return Err(format!(
                "action {action_name} does not match the workload (function or task details)"
            ));
        }
        let instance_type = non_empty(&message.instance_type)
            .or_else(|| spec_str(&message, "instanceType"))
            .or_else(|| non_empty(&message.instance_type_value))
            .or_else(|| spec_str(&message, "instanceTypeValue"))
            .ok_or("instanceType is missing")?;
        // NVIDIA's `DecodeCreationQueueMessage`: a function with a launch specification
        // runs on its `gpuName` (the top-level `gpuType` is overwritten); a task's
        // `gpuType` is the top level's, else the launch specification's. Either way the
        // third part of the instance type when none is named.
        let named = match (&workload, &message.launch_specification) {
            (Workload::Function { .. }, Some(_)) => spec_str(&message, "gpuName"),
            _ => non_empty(&message.gpu_type).or_else(|| spec_str(&message, "gpuType")),
        };
        let gpu = named
            .or_else(|| instance_type.split('.').nth(2).map(str::to_string))
            .ok_or("gpuType is missing and instanceType has no GPU part")?;
        let instance_count = message
            .instance_count
            .or_else(|| {
                message
                    .launch_specification
                    .as_ref()
                    .and_then(|s| s.get("instanceCount"))
                    .and_then(|v| v.as_u64())
                    .map(|v| v as u32)
            })
            .filter(|count| *count > 0)
            .ok_or("instanceCount is missing or zero")?;
        Ok(CreationRequest {
            request_id,
            message_batch_id: non_empty(&message.message_batch_id),
            nca_id: non_empty(&message.nca_id),
            action,
            workload,
            gpu,
            instance_type,
            instance_count,
            message,
        })
    }
}

impl TerminationRequest {
    pub fn from_message(message: TerminationMessage) -> Result<Self, String> {
        let request_id = non_empty(&message.request_id).ok_or("requestId is missing")?;
        match message.action.as_deref() {
            Some("TerminateInstances") => {}
            other => return Err(format!("action {other:?} is not TerminateInstances")),
        }
        Ok(TerminationRequest {
            request_id,
            nca_id: non_empty(&message.nca_id),
            instance_ids: message.instance_ids,
            availability_zone: non_empty(&message.availability_zone),
        })
    }
}

#[derive(Deserialize)]
struct ApiError {
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct ApiAnswer {
    error: Option<ApiError>,
}

/// A cluster's consumer of SIS's work queue.
pub struct QueueConsumer {
    client: async_nats::Client,
    config: QueueConfig,
    ready: Mutex<HashSet<QueueStream>>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for QueueConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConsumer")
            .field("url", &self.config.url)
            .field("cluster_id", &self.config.cluster_id)
            .finish_non_exhaustive()
    }
}

impl QueueConsumer {
    /// Connects as `nvca-queue-client/<clusterId>`. Creates nothing yet.
    pub async fn connect(config: QueueConfig) -> Result<Self, QueueError> {
        crate::tls::ensure_crypto_provider();
        let violations = Arc::new(Mutex::new(Vec::new()));
        let seen = violations.clone();
        let mut options = match &config.auth {
            NatsAuth::Psat(source) => {
                let source = source.clone();
                async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
                    let source = source.clone();
                    async move {
                        let jwt = source
                            .token()
                            .map_err(|e| async_nats::AuthError::new(e.to_string()))?;
                        let mut auth = async_nats::Auth::new();
                        auth.token = Some(psat_connect_token(&jwt));
                        Ok(auth)
                    }
                })
            }
            NatsAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::new().user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => async_nats::ConnectOptions::new().token(token.clone()),
            NatsAuth::None => async_nats::ConnectOptions::new(),
        };
        options = options
            .name(format!("nvca-queue-client/{}", config.cluster_id))
            .request_timeout(Some(config.request_timeout))
            .connection_timeout(Duration::from_secs(10))
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) =
                        &event
                        && text.to_lowercase().contains("permissions violation")
                    {
                        tracing::error!(violation = %text, "NATS refused an operation");
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(text.clone());
                    }
                }
            });
        let client =
            options
                .connect(config.url.as_str())
                .await
                .map_err(|e| QueueError::Connect {
                    url: config.url.clone(),
                    reason: e.to_string(),
                })?;
        Ok(QueueConsumer {
            client,
            config,
            ready: Mutex::new(HashSet::new()),
            violations,
        })
    }

    /// The permission violations the server has reported on this connection so far.
    pub fn permission_violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    /// An acker for a delivery whose reply subject was kept (see [`Acker::reply`]).
    pub fn acker(&self, reply: &str) -> Acker {
        Acker {
            client: self.client.clone(),
            reply: reply.to_string(),
            timeout: self.config.request_timeout,
        }
    }

    /// The core client, for callers that must publish or subscribe beside the consumer.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn violation_for(&self, subject: &str) -> Option<String> {
        self.permission_violations()
            .into_iter()
            .find(|v| v.contains(subject))
    }

    /// Creates or updates the cluster's durable consumer on `stream`, as NVCA's
    /// `CreateOrUpdateConsumer` does: explicit ack, NVCA's ack wait, the cluster's filter
    /// in `filter_subjects`, on `$JS.API.CONSUMER.CREATE.<stream>.<durable>`. Done once per
    /// stream for the life of the consumer, like NVCA's cache.
    pub async fn ensure_consumer(&self, stream: QueueStream) -> Result<(), QueueError> {
        if self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&stream)
        {
            return Ok(());
        }
        let durable = stream.durable(&self.config.cluster_id);
        let subject = format!("$JS.API.CONSUMER.CREATE.{}.{}", stream.name(), durable);
        let body = serde_json::json!({
            "stream_name": stream.name(),
            "config": {
                "durable_name": durable,
                "description": format!("Consumer for {} NVCA cluster {}", stream.filter_subject(&self.config.cluster_id), self.config.cluster_id),
                "ack_policy": "explicit",
                "ack_wait": stream.ack_wait().as_nanos() as u64,
                "deliver_policy": "all",
                "replay_policy": "instant",
                "filter_subjects": [stream.filter_subject(&self.config.cluster_id)],
            }
        });
        let answer = self
            .api_request(&subject, &durable, body.to_string())
            .await?;
        let parsed: ApiAnswer =
            serde_json::from_slice(&answer.payload).map_err(|e| QueueError::Decode {
                subject: subject.clone(),
                reason: e.to_string(),
                excerpt: super::client::excerpt(&answer.payload),
            })?;
        if let Some(error) = parsed.error {
            // 10059: stream not found.
            if error.err_code == 10059 {
                return Err(QueueError::StreamNotFound {
                    stream: stream.name(),
                });
            }
            return Err(QueueError::ConsumerCreate {
                stream: stream.name(),
                durable,
                code: error.code,
                err_code: error.err_code,
                description: error.description,
            });
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream);
        Ok(())
    }

    async fn api_request(
        &self,
        subject: &str,
        durable: &str,
        body: String,
    ) -> Result<async_nats::Message, QueueError> {
        let request = async_nats::Request::new()
            .payload(Bytes::from(body))
            .timeout(Some(self.config.request_timeout));
        match self.client.send_request(subject.to_string(), request).await {
            Ok(message) => Ok(message),
            Err(error) => {
                // A denied publish is dropped by the server, which says so asynchronously;
                // give its notice a moment to arrive, then name it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(detail) = self.violation_for(subject) {
                    return Err(QueueError::PermissionDenied {
                        subject: subject.to_string(),
                        durable: durable.to_string(),
                        detail,
                    });
                }
                match error.kind() {
                    async_nats::client::RequestErrorKind::TimedOut => Err(QueueError::NoAnswer {
                        subject: subject.to_string(),
                        after: self.config.request_timeout,
                    }),
                    _ => Err(QueueError::Io {
                        operation: "request",
                        subject: subject.to_string(),
                        reason: error.to_string(),
                    }),
                }
            }
        }
    }

    /// Pulls up to `batch` raw messages from `stream`, waiting at most `fetch_wait`.
    /// An empty queue is an empty answer, not an error.
    pub async fn fetch_raw(
        &self,
        stream: QueueStream,
    ) -> Result<Vec<(async_nats::Message, Acker)>, QueueError> {
        self.ensure_consumer(stream).await?;
        let durable = stream.durable(&self.config.cluster_id);
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", stream.name(), durable);
        let inbox = self.client.new_inbox();
        let mut subscription =
            self.client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| QueueError::Io {
                    operation: "subscribe",
                    subject: inbox.clone(),
                    reason: e.to_string(),
                })?;
        let wait = self.config.fetch_wait;
        let body = serde_json::json!({
            "batch": self.config.batch,
            "expires": wait.as_nanos() as u64,
        });
        let io = |operation: &'static str, e: &dyn std::fmt::Display| QueueError::Io {
            operation,
            subject: subject.clone(),
            reason: e.to_string(),
        };
        self.client
            .publish_with_reply(
                subject.clone(),
                inbox.clone(),
                Bytes::from(body.to_string()),
            )
            .await
            .map_err(|e| io("pull", &e))?;
        self.client.flush().await.map_err(|e| io("pull", &e))?;
        let deadline = tokio::time::Instant::now() + wait + Duration::from_millis(500);
        let mut messages = Vec::new();
        while messages.len() < self.config.batch {
            let next = tokio::time::timeout_at(deadline, subscription.next()).await;
            let Ok(Some(message)) = next else { break };
            match message.status.map(|s| s.as_u16()) {
                // 404 no messages, 408 request expired: the pull is over.
                Some(404) | Some(408) => break,
                Some(100) => continue,
                Some(409) => {
                    let description = message.description.clone().unwrap_or_default();
                    if description.to_lowercase().contains("batch completed")
                        || description.to_lowercase().contains("exceeded")
                    {
                        break;
                    }
                    return Err(QueueError::Pull {
                        durable,
                        status: 409,
                        description,
                    });
                }
                Some(status) if status != 200 => {
                    return Err(QueueError::Pull {
                        durable,
                        status,
                        description: message.description.clone().unwrap_or_default(),
                    });
                }
                _ => {}
            }
            let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
                continue;
            };
            let acker = Acker {
                client: self.client.clone(),
                reply,
                timeout: self.config.request_timeout,
            };
            messages.push((message, acker));
        }
        let _ = subscription.unsubscribe().await;
        if messages.is_empty()
            && let Some(detail) = self.violation_for(&subject)
        {
            return Err(QueueError::PermissionDenied {
                subject,
                durable: stream.durable(&self.config.cluster_id),
                detail,
            });
        }
        Ok(messages)
    }

    /// Pulls creation messages. Unreadable ones are requeued once, then terminated, and
    /// returned in `rejected`.
    pub async fn fetch_creations(&self) -> Result<Fetched<CreationRequest>, QueueError> {
        self.fetch_typed(QueueStream::Creation, |payload| {
            let message: CreationMessage =
                serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            CreationRequest::from_message(message)
        })
        .await
    }

    /// Pulls termination messages, with the same rule for unreadable ones.
    pub async fn fetch_terminations(&self) -> Result<Fetched<TerminationRequest>, QueueError> {
        self.fetch_typed(QueueStream::Termination, |payload| {
            let message: TerminationMessage =
                serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            TerminationRequest::from_message(message)
        })
        .await
    }

    async fn fetch_typed<T>(
        &self,
        stream: QueueStream,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Fetched<T>, QueueError> {
        let raw = self.fetch_raw(stream).await?;
        let mut fetched = Fetched {
            messages: Vec::new(),
            rejected: Vec::new(),
        };
        for (message, acker) in raw {
            let position = Position::from_reply(&acker.reply);
            let subject = message.subject.to_string();
            match parse(&message.payload) {
                Ok(body) => match position {
                    Some(position) => fetched.messages.push(Received {
                        body,
                        subject,
                        position,
                        acker,
                    }),
                    None => {
                        tracing::warn!(reply = %acker.reply, "delivered message has an unreadable reply subject; leaving it to redelivery");
                    }
                },
                Err(reason) => {
                    let delivered = position.as_ref().map_or(1, |p| p.delivered);
                    let action = if delivered <= 1 {
                        // Once more, a moment later: a message given back at once spins.
                        acker.nak(Some(UNREADABLE_RETRY)).await?;
                        Rejection::Requeued
                    } else {
                        acker.terminate().await?;
                        Rejection::Terminated
                    };
                    let rejected = RejectedMessage {
                        stream,
                        subject,
                        position,
                        reason,
                        excerpt: super::client::excerpt(&message.payload),
                        action,
                    };
                    tracing::error!(
                        stream = stream.name(),
                        subject = %rejected.subject,
                        reason = %rejected.reason,
                        excerpt = %rejected.excerpt,
                        action = ?rejected.action,
                        "queue message does not parse"
                    );
                    fetched.rejected.push(rejected);
                }
            }
        }
        Ok(fetched)
    }
}

/// What [`RequestDedup::observe`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// A request id not seen before: handle it.
    First,
    /// The same request and batch again (SIS publishes without a message id, and
    /// JetStream redelivers un-acked messages): handle it once only.
    Duplicate,
    /// A known request with a new message batch.
    NewBatch,
}

/// Remembers the most recent request ids seen on the creation queue, so a message
/// delivered twice starts one function deployment. In memory and bounded; the function
/// machines in the store are the durable record.
#[derive(Debug)]
pub struct RequestDedup {
    capacity: usize,
    order: VecDeque<String>,
    batches: HashMap<String, HashSet<String>>,
}

impl RequestDedup {
    pub fn new(capacity: usize) -> Self {
        RequestDedup {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            batches: HashMap::new(),
        }
    }

    /// Records a sighting of `request_id` in `message_batch_id` and says what it is.
    pub fn observe(&mut self, request_id: &str, message_batch_id: Option<&str>) -> Sighting {
        let batch = message_batch_id.unwrap_or("").to_string();
        if let Some(batches) = self.batches.get_mut(request_id) {
            return if batches.insert(batch) {
                Sighting::NewBatch
            } else {
                Sighting::Duplicate
            };
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.batches.remove(&oldest);
        }
        self.order.push_back(request_id.to_string());
        self.batches
            .insert(request_id.to_string(), HashSet::from([batch]));
        Sighting::First
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_runs_on_its_launch_specifications_gpu_as_nvidias_decoder_reads_it() {
        let read = |message: serde_json::Value| {
            CreationRequest::from_message(serde_json::from_value(message).unwrap())
                .unwrap()
                .gpu
        };
        let base = serde_json::json!({
            "requestId": "r", "action": "RequestICMSInstances", "instanceCount": 1,
            "functionDetails": {"functionId": "f", "functionVersionId": "v"},
            "instanceType": "ON-PREM.GPU.H100", "gpuType": "foobar",
        });
        let mut with_spec = base.clone();
        with_spec["launchSpecification"] = serde_json::json!({"gpuName": "L40"});
        assert_eq!(
            read(with_spec),
            "L40",
            "gpuName wins over the top-level gpuType"
        );
        let mut unnamed = base.clone();
        unnamed["launchSpecification"] = serde_json::json!({});
        assert_eq!(read(unnamed), "H100", "else the instance type's third part");
        assert_eq!(
            read(base),
            "foobar",
            "no launch specification: the top level's"
        );
    }

    #[test]
    fn creation_actions_are_read_as_nvidias_agent_normalises_them() {
        use RequestAction::{
            RequestSpotInstances as Function, RequestSpotInstancesForTask as Task,
        };
        for (name, action) in [
            ("RequestSpotInstances", Some(Function)),
            ("RequestSpotInstancesForTask", Some(Task)),
            ("RequestInstances", Some(Function)),
            ("RequestInstancesForTask", Some(Task)),
            ("RequestICMSInstances", Some(Function)),
            ("RequestICMSInstancesForTask", Some(Task)),
            ("TerminateInstances", None),
            ("RequestSomething", None),
        ] {
            let read = creation_action(name);
            let as_legacy = |a: RequestAction| match a {
                RequestAction::RequestInstances => Function,
                RequestAction::RequestInstancesForTask => Task,
                other => other,
            };
            assert_eq!(read.map(as_legacy), action, "{name}");
        }
    }

    #[test]
    fn durable_names_filters_and_subjects_are_nvidias() {
        let cid = "6f1c2d3e-0000-4000-8000-000000000001";
        assert_eq!(
            QueueStream::Creation.durable(cid),
            format!("CreateNvcaFunctionTaskStream-{cid}")
        );
        assert_eq!(
            QueueStream::Termination.filter_subject(cid),
            format!("Terminate.NVCA.{cid}")
        );
        assert_eq!(
            QueueStream::creation_subject(false, cid, "H100", "NCP.GPU.H100_1x"),
            format!("Create.NVCA.Function.{cid}.H100.NCP|GPU|H100_1x")
        );
        assert_eq!(QueueStream::Creation.ack_wait(), Duration::from_secs(360));
        assert_eq!(QueueStream::Termination.ack_wait(), Duration::from_secs(30));
    }

    #[test]
    fn positions_parse_from_both_ack_subject_forms() {
        let old = Position::from_reply("$JS.ACK.S.S-c.2.17.5.1700000000.0").unwrap();
        assert_eq!(
            (old.delivered, old.stream_sequence, old.consumer_sequence),
            (2, 17, 5)
        );
        let new = Position::from_reply("$JS.ACK.dom.ACCHASH.S.S-c.1.9.3.1700000000.4.tok").unwrap();
        assert_eq!(new.stream, "S");
        assert_eq!(new.consumer, "S-c");
        assert_eq!((new.delivered, new.stream_sequence), (1, 9));
        assert_eq!(Position::from_reply("_INBOX.abc"), None);
    }

    #[test]
    fn psat_token_is_unpadded_base64url_json() {
        use base64::Engine;
        let token = psat_connect_token("a.b.c");
        assert!(!token.contains('='));
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["account"], "APP");
        assert_eq!(value["pluginName"], "oidc");
        assert_eq!(value["payload"], "a.b.c");
    }

    #[test]
    fn creation_messages_are_read_like_nvca_reads_them() {
        let message: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "r1", "action": "RequestInstances", "messageBatchId": "b1",
            "functionId": "f1", "functionVersionId": "v1",
            "launchSpecification": {"instanceType": "NCP.GPU.L40S_2x", "instanceCount": 2}
        }))
        .unwrap();
        let request = CreationRequest::from_message(message).unwrap();
        assert_eq!(request.gpu, "L40S_2x", "third part of the instance type");
        assert_eq!(request.instance_count, 2);
        assert!(
            matches!(request.workload, Workload::Function { ref function_id, .. } if function_id == "f1")
        );

        let task: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "r2", "action": "RequestSpotInstances",
            "taskDetails": {"taskId": "t1"}, "instanceType": "a.b.H100", "instanceCount": 1
        }))
        .unwrap();
        let error = CreationRequest::from_message(task).unwrap_err();
        assert!(error.contains("does not match"), "{error}");

        let nothing: CreationMessage = serde_json::from_value(
            serde_json::json!({"requestId": "r3", "action": "RequestSpotInstances"}),
        )
        .unwrap();
        assert!(CreationRequest::from_message(nothing).is_err());
    }

    #[test]
    fn dedup_tells_first_duplicate_and_new_batch_and_forgets_the_oldest() {
        let mut dedup = RequestDedup::new(2);
        assert_eq!(dedup.observe("a", Some("1")), Sighting::First);
        assert_eq!(dedup.observe("a", Some("1")), Sighting::Duplicate);
        assert_eq!(dedup.observe("a", Some("2")), Sighting::NewBatch);
        assert_eq!(dedup.observe("b", None), Sighting::First);
        assert_eq!(dedup.observe("c", None), Sighting::First);
        assert_eq!(dedup.len(), 2);
        assert_eq!(
            dedup.observe("a", Some("1")),
            Sighting::First,
            "a was evicted"
        );
    }
}
