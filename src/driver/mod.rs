//! The imperative shell around the pure machines: event in → machine step → persist →
//! run effects → outcomes back in as events.
//!
//! Guarantees, for every machine of one kind:
//! - a step's new state and the effects it queued are durable before any of them runs;
//! - effects of one machine run one at a time, in the order they were queued; machines
//!   run concurrently, each in its own task;
//! - an effect's outcome is persisted together with the step it causes, in which the
//!   effect leaves the pending list;
//! - on start every machine is reloaded and its pending effects run again. Effects are
//!   idempotent, so running one twice after a crash is harmless;
//! - a transient failure is retried with capped, jittered exponential backoff; the count,
//!   next attempt time and error are in the record.

mod actor;
pub mod admin;
pub mod backoff;
pub mod crash_point;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use backoff::Backoff;
pub use crash_point::CrashPoint;

use crate::machines::{Machine, Timestamp};
use crate::store::{Quarantined, Record, Store, StoreError, Summary, Write};
use actor::{Actor, Message};

/// Why an effect did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectError {
    /// Worth retrying as it is: a timeout, a 5xx, a conflict, a lost connection.
    Transient(String),
    /// Retrying will not help until something changes: the machine is told and parks.
    Permanent(String),
}

impl EffectError {
    /// An adapter's judgement of a failure (`crate::kube::write_failure`), as the driver
    /// takes it.
    pub fn judged(permanent: bool, reason: String) -> EffectError {
        if permanent {
            EffectError::Permanent(reason)
        } else {
            EffectError::Transient(reason)
        }
    }
}

/// Runs the effects of one machine kind against the world. One real implementation per
/// edge (Kubernetes, SIS, queue); tests use recording ones.
pub trait Executor<M: Machine>: Send + Sync + 'static {
    /// Carry out `effect` of machine `name`. `id` is stable across re-runs after a crash.
    fn execute(
        &self,
        name: &str,
        id: &str,
        effect: &M::Effect,
    ) -> impl Future<Output = Result<M::Event, EffectError>> + Send;
}

/// Whether the driver goes on after a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop this machine's task at once, as if the process died here.
    Halt,
}

/// Observation points for tests and metrics.
pub trait Hooks: Send + Sync + 'static {
    /// A step is durable; its effects have not started.
    fn persisted(&self, _summary: &Summary) -> Flow {
        Flow::Continue
    }
    /// An effect has run; its outcome is not yet persisted. `effect` is its variant name.
    fn effect_ran(&self, _summary: &Summary, _effect_id: &str, _effect: &'static str) -> Flow {
        Flow::Continue
    }
}

/// The hooks of production: none.
pub struct NoHooks;
impl Hooks for NoHooks {}

#[derive(Clone, Debug, Default)]
pub struct DriverConfig {
    pub backoff: Backoff,
}

#[derive(Debug, Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no {kind} machine named {name}")]
    UnknownMachine { kind: &'static str, name: String },
    #[error(
        "the {kind} machine {name} has stopped (see the log for why); restart the process to resume it"
    )]
    MachineStopped { kind: &'static str, name: String },
    #[error("record {key} cannot be encoded: {reason}")]
    Encode { key: String, reason: String },
}

impl DriverError {
    /// A short, bounded name for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            DriverError::Store(error) => error.category(),
            DriverError::UnknownMachine { .. } => "unknown_machine",
            DriverError::MachineStopped { .. } => "machine_stopped",
            DriverError::Encode { .. } => "encode",
        }
    }
}

/// What start-up found in the store.
#[derive(Debug, Default)]
pub struct StartReport {
    pub loaded: usize,
    /// Effects that were pending at the last stop and run again now.
    pub requeued: usize,
    pub quarantined: Vec<Quarantined>,
}

struct Handle<M: Machine> {
    inbox: mpsc::UnboundedSender<Message<M>>,
    summary: watch::Receiver<Summary>,
    task: JoinHandle<()>,
}

/// Drives every machine of kind `M`. Cheap to clone.
pub struct Driver<M: Machine, X: Executor<M>> {
    shared: Arc<Shared<M, X>>,
}

impl<M: Machine, X: Executor<M>> Clone for Driver<M, X> {
    fn clone(&self) -> Self {
        Driver {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<M: Machine, X: Executor<M>> {
    store: Store,
    executor: Arc<X>,
    hooks: Arc<dyn Hooks>,
    config: DriverConfig,
    machines: Mutex<HashMap<String, Handle<M>>>,
}

impl<M: Machine, X: Executor<M>> Driver<M, X> {
    /// Load every machine of kind `M` from the store and resume it: pending effects run
    /// again. Records that do not decode are quarantined and reported.
    pub fn start(
        store: Store,
        executor: Arc<X>,
        hooks: Arc<dyn Hooks>,
        config: DriverConfig,
    ) -> Result<(Self, StartReport), DriverError> {
        let (records, quarantined) = store.load::<M>(Timestamp::now())?;
        let driver = Driver {
            shared: Arc::new(Shared {
                store,
                executor,
                hooks,
                config,
                machines: Mutex::new(HashMap::new()),
            }),
        };
        let mut report = StartReport {
            quarantined,
            ..StartReport::default()
        };
        {
            let mut machines = driver.lock();
            for record in records {
                report.loaded += 1;
                report.requeued += record.summary.pending.len();
                let name = record.summary.name.clone();
                machines.insert(name, driver.spawn_actor(record));
            }
        }
        tracing::info!(kind = %M::KIND, loaded = report.loaded, requeued = report.requeued,
            quarantined = report.quarantined.len(), "machines resumed");
        Ok((driver, report))
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Create the machine `name` with `make` unless it exists. The new record is durable
    /// before this returns. Returns whether it was created.
    pub async fn ensure(&self, name: &str, make: impl FnOnce() -> M) -> Result<bool, DriverError> {
        if self.lock().contains_key(name) {
            return Ok(false);
        }
        let record = Record::new(name, make(), Timestamp::now());
        self.write_new(&record).await?;
        Ok(self.adopt(name, record))
    }

    /// Create machine `name` with `make` and take its first step on `first`, in one durable
    /// write: a crash can never leave it created but not started (a created machine waits
    /// for an event that, once its message was taken, may not come again for minutes).
    /// When the machine exists, `first` goes to it as [`Driver::send`] would. Returns the
    /// summary after the step.
    pub async fn create_with(
        &self,
        name: &str,
        make: impl FnOnce() -> M,
        first: M::Event,
    ) -> Result<Summary, DriverError> {
        if self.lock().contains_key(name) {
            return self.send(name, first).await;
        }
        let now = Timestamp::now();
        let mut record = Record::new(name, make(), now);
        if let Some(transition) = record.step(&first, now, None) {
            tracing::info!(machine = %name, from = %transition.from, to = %transition.to, event = %transition.event, "transition");
        }
        self.write_new(&record).await?;
        let summary = record.summary.clone();
        if self.shared.hooks.persisted(&summary) == Flow::Halt {
            return Ok(summary);
        }
        if self.adopt(name, record) {
            Ok(summary)
        } else {
            self.send(name, first).await
        }
    }

    /// Write the first record of a new machine; durable when this returns.
    async fn write_new(&self, record: &Record<M>) -> Result<(), DriverError> {
        let key = record.key();
        let bytes = record.encode().map_err(|reason| DriverError::Encode {
            key: key.clone(),
            reason,
        })?;
        self.shared
            .store
            .commit(vec![Write::Put { key, bytes }])
            .await?;
        Ok(())
    }

    /// Start the actor of a machine just written, unless another caller created it while
    /// the record was written (the same first record, written twice). Whether it started.
    fn adopt(&self, name: &str, record: Record<M>) -> bool {
        let mut machines = self.lock();
        if machines.contains_key(name) {
            return false;
        }
        machines.insert(name.to_string(), self.spawn_actor(record));
        true
    }

    /// Hand `event` to machine `name`; returns its summary once the step is durable.
    pub async fn send(&self, name: &str, event: M::Event) -> Result<Summary, DriverError> {
        let (reply, answer) = oneshot::channel();
        let inbox = self.inbox(name)?;
        inbox
            .send(Message::Event {
                event,
                reply: Some(reply),
            })
            .map_err(|_| self.stopped(name))?;
        answer.await.map_err(|_| self.stopped(name))?
    }

    /// The current summary of machine `name`.
    pub fn summary(&self, name: &str) -> Option<Summary> {
        self.lock()
            .get(name)
            .map(|handle| handle.summary.borrow().clone())
    }

    /// A receiver that sees every durable step of machine `name`.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<Summary>> {
        self.lock().get(name).map(|handle| handle.summary.clone())
    }

    /// The names of every machine of this kind.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Stop every machine after the step it is in, and wait for their tasks. Effects that
    /// already started finish on their own; their outcomes are dropped and they run again
    /// at the next start.
    pub async fn shutdown(&self) {
        let handles: Vec<Handle<M>> = self.lock().drain().map(|(_, handle)| handle).collect();
        for handle in &handles {
            let _ = handle.inbox.send(Message::Stop);
        }
        for handle in handles {
            let _ = handle.task.await;
        }
    }

    fn spawn_actor(&self, record: Record<M>) -> Handle<M> {
        let (inbox, messages) = mpsc::unbounded_channel();
        let (publish, summary) = watch::channel(record.summary.clone());
        let record_key = record.key();
        let actor = Actor {
            record,
            store: self.shared.store.clone(),
            executor: Arc::clone(&self.shared.executor),
            hooks: Arc::clone(&self.shared.hooks),
            backoff: self.shared.config.backoff,
            inbox: inbox.clone(),
            publish,
            in_flight: None,
        };
        // Every log line of a machine's task carries its key.
        let span = tracing::info_span!("machine", key = %record_key);
        let task = tokio::spawn(actor.run(messages).instrument(span));
        Handle {
            inbox,
            summary,
            task,
        }
    }

    fn inbox(&self, name: &str) -> Result<mpsc::UnboundedSender<Message<M>>, DriverError> {
        self.lock()
            .get(name)
            .map(|handle| handle.inbox.clone())
            .ok_or_else(|| DriverError::UnknownMachine {
                kind: M::KIND.as_str(),
                name: name.to_string(),
            })
    }

    fn stopped(&self, name: &str) -> DriverError {
        DriverError::MachineStopped {
            kind: M::KIND.as_str(),
            name: name.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle<M>>> {
        // A poisoned map only means another task panicked while holding it; the map itself
        // is still consistent (every update is a single insert or drain).
        self.shared
            .machines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests;
