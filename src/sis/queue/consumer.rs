//! The cluster's pull consumers, speaking the JetStream API over the core client within
//! the permissions the control plane grants (see the module above).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use super::acker::{Acker, Position};
use super::auth::{NatsAuth, psat_connect_token};
use super::messages::*;
use super::{QueueConfig, QueueError, QueueStream};
use crate::sis::types::{CreationMessage, TerminationMessage};

/// How long an unreadable message waits before its one more delivery.
const UNREADABLE_RETRY: Duration = Duration::from_secs(1);

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
                excerpt: crate::sis::client::excerpt(&answer.payload),
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
                        excerpt: crate::sis::client::excerpt(&message.payload),
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
