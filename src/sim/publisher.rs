//! The simulator's NATS side, doing what SIS does: create the two work-queue streams
//! (memory storage, work-queue retention, at most 1,000,000 messages, no age limit) and
//! publish plain JetStream messages without a message id, so JetStream never
//! de-duplicates them.

use async_nats::jetstream;
use bytes::Bytes;

use super::{SimError, SimNats};
use crate::sis::queue::QueueStream;

pub struct Publisher {
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Publisher {
    pub async fn connect(nats: &SimNats) -> Result<Publisher, SimError> {
        crate::tls::ensure_crypto_provider();
        let mut options = async_nats::ConnectOptions::new().name("sis-sim");
        if let (Some(user), Some(password)) = (&nats.user, &nats.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let client = options
            .connect(nats.url.as_str())
            .await
            .map_err(|e| SimError::Nats {
                url: nats.url.clone(),
                reason: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        Ok(Publisher {
            url: nats.url.clone(),
            client,
            js,
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Creates both streams unless they exist.
    pub async fn ensure_streams(&self) -> Result<(), SimError> {
        for stream in QueueStream::ALL {
            let config = jetstream::stream::Config {
                name: stream.name().to_string(),
                subjects: vec![stream.subjects().to_string()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::Memory,
                max_messages: 1_000_000,
                ..Default::default()
            };
            self.js
                .get_or_create_stream(config)
                .await
                .map_err(|e| SimError::Nats {
                    url: self.url.clone(),
                    reason: format!("creating stream {}: {e}", stream.name()),
                })?;
        }
        Ok(())
    }

    /// Publishes `payload` on `subject` and waits for JetStream to store it; returns the
    /// stream sequence.
    pub async fn publish(&self, subject: &str, payload: Vec<u8>) -> Result<u64, SimError> {
        let nats = |reason: String| SimError::Nats {
            url: self.url.clone(),
            reason,
        };
        let ack = self
            .js
            .publish(subject.to_string(), Bytes::from(payload))
            .await
            .map_err(|e| nats(format!("publishing on {subject}: {e}")))?
            .await
            .map_err(|e| {
                nats(format!(
                    "JetStream did not store the message on {subject}: {e}"
                ))
            })?;
        Ok(ack.sequence)
    }
}
