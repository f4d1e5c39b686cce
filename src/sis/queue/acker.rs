//! A delivery's place in its stream and its acknowledgement on the reply subject.

use std::time::Duration;

use bytes::Bytes;

use super::QueueError;

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
    pub(super) client: async_nats::Client,
    pub(super) reply: String,
    pub(super) timeout: Duration,
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
