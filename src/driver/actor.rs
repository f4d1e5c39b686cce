//! One machine's task: it owns the record, takes events and effect outcomes from its
//! inbox one at a time, persists each step, and runs the pending effects in order.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Backoff, DriverError, EffectError, Executor, Flow, Hooks};
use crate::machines::{Machine, Timestamp};
use crate::store::{Record, Store, Summary, Write};

pub(super) enum Message<M: Machine> {
    Event {
        event: M::Event,
        reply: Option<oneshot::Sender<Result<Summary, DriverError>>>,
    },
    EffectDone {
        id: String,
        outcome: Result<M::Event, EffectError>,
    },
    Stop,
}

pub(super) struct Actor<M: Machine, X: Executor<M>> {
    pub(super) record: Record<M>,
    pub(super) store: Store,
    pub(super) executor: Arc<X>,
    pub(super) hooks: Arc<dyn Hooks>,
    pub(super) backoff: Backoff,
    /// The actor's own inbox, where running effects post their outcomes.
    pub(super) inbox: mpsc::UnboundedSender<Message<M>>,
    pub(super) publish: watch::Sender<Summary>,
    /// The id of the effect running now, if any.
    pub(super) in_flight: Option<String>,
}

impl<M: Machine, X: Executor<M>> Actor<M, X> {
    pub(super) async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message<M>>) {
        loop {
            let message = match self.start_due_effect() {
                Some(at) => {
                    let delay = at.since(Timestamp::now());
                    tokio::select! {
                        message = messages.recv() => message,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
                None => messages.recv().await,
            };
            let flow = match message {
                None | Some(Message::Stop) => return,
                Some(Message::Event { event, reply }) => {
                    let result = self.step(&event, None).await;
                    let flow = *result.as_ref().map(|(_, flow)| flow).unwrap_or(&Flow::Halt);
                    if let Some(reply) = reply {
                        let _ = reply.send(result.map(|(summary, _)| summary));
                    }
                    flow
                }
                Some(Message::EffectDone { id, outcome }) => self.effect_done(id, outcome).await,
            };
            if flow == Flow::Halt {
                return;
            }
        }
    }

    /// Start the first pending effect if nothing runs and it is due. Returns when to wake
    /// up for a retry that is not due yet.
    fn start_due_effect(&mut self) -> Option<Timestamp> {
        if self.in_flight.is_some() {
            return None;
        }
        let (meta, effect) = self.record.first_pending()?;
        if let Some(at) = meta.next_attempt_at.filter(|at| *at > Timestamp::now()) {
            return Some(at);
        }
        let id = meta.id.clone();
        let effect = effect.clone();
        let name = self.record.summary.name.clone();
        let executor = Arc::clone(&self.executor);
        let inbox = self.inbox.clone();
        self.in_flight = Some(id.clone());
        tracing::debug!(effect = %id, "effect started");
        tokio::spawn(async move {
            // A panicking executor must not leave the machine waiting for an outcome forever.
            let running = AssertUnwindSafe(executor.execute(&name, &id, &effect)).catch_unwind();
            let outcome = running.await.unwrap_or_else(|_| {
                Err(EffectError::Transient(
                    "the effect panicked; see the log".to_string(),
                ))
            });
            let _ = inbox.send(Message::EffectDone { id, outcome });
        });
        None
    }

    async fn effect_done(&mut self, id: String, outcome: Result<M::Event, EffectError>) -> Flow {
        if self.in_flight.as_deref() == Some(id.as_str()) {
            self.in_flight = None;
        }
        let name = self
            .record
            .pending()
            .find(|(meta, _)| meta.id == id)
            .map_or("", |(_, effect)| effect.clone().into());
        if self.hooks.effect_ran(&self.record.summary, &id, name) == Flow::Halt {
            return Flow::Halt;
        }
        match outcome {
            Ok(event) => {
                let recovered = self
                    .record
                    .pending()
                    .any(|(meta, _)| meta.id == id && meta.attempts > 0);
                if recovered {
                    self.record.summary.last_error = None;
                }
                self.step_or_halt(&event, Some(&id)).await
            }
            Err(EffectError::Permanent(error)) => {
                tracing::warn!(effect = %id, %error, "effect failed for good");
                let Some((_, effect)) = self.record.pending().find(|(meta, _)| meta.id == id)
                else {
                    return Flow::Continue;
                };
                let event = M::effect_failed(effect, &error);
                self.record.summary.last_error = Some(error);
                self.step_or_halt(&event, Some(&id)).await
            }
            Err(EffectError::Transient(error)) => self.retry_later(&id, error).await,
        }
    }

    /// Record a transient failure; the effect stays first in line until its next attempt.
    async fn retry_later(&mut self, id: &str, error: String) -> Flow {
        let now = Timestamp::now();
        let backoff = self.backoff;
        let Some(meta) = self.record.pending_meta_mut(id) else {
            return Flow::Continue;
        };
        meta.attempts = meta.attempts.saturating_add(1);
        let delay = backoff.delay(meta.attempts, rand::random::<f64>());
        meta.next_attempt_at = Some(now.plus(delay));
        meta.last_error = Some(error.clone());
        tracing::info!(effect = %id, attempts = meta.attempts, retry_in = %humantime::format_duration(delay), %error, "effect failed, will retry");
        self.record.summary.last_error = Some(error);
        self.record.summary.updated = now;
        match self.persist().await {
            Ok(()) => Flow::Continue,
            Err(error) => {
                tracing::error!(%error, "cannot persist the retry state: stopping this machine");
                Flow::Halt
            }
        }
    }

    async fn step_or_halt(&mut self, event: &M::Event, completed: Option<&str>) -> Flow {
        match self.step(event, completed).await {
            Ok((_, flow)) => flow,
            Err(error) => {
                tracing::error!(%error, "cannot persist a step: stopping this machine");
                Flow::Halt
            }
        }
    }

    /// One machine step: handle the event, queue its effects, persist, publish.
    async fn step(
        &mut self,
        event: &M::Event,
        completed: Option<&str>,
    ) -> Result<(Summary, Flow), DriverError> {
        if let Some(id) = completed {
            self.record.remove_effect(id);
        }
        let in_flight = self.in_flight.clone();
        if let Some(transition) = self
            .record
            .step(event, Timestamp::now(), in_flight.as_deref())
        {
            tracing::info!(from = %transition.from, to = %transition.to, event = %transition.event, "transition");
        }
        self.persist().await?;
        let flow = self.hooks.persisted(&self.record.summary);
        Ok((self.record.summary.clone(), flow))
    }

    async fn persist(&mut self) -> Result<(), DriverError> {
        let key = self.record.key();
        let bytes = self.record.encode().map_err(|reason| DriverError::Encode {
            key: key.clone(),
            reason,
        })?;
        self.store.commit(vec![Write::Put { key, bytes }]).await?;
        self.publish.send_replace(self.record.summary.clone());
        Ok(())
    }
}
