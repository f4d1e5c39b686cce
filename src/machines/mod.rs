//! Pure state machines: every multi-step job of nvca as an explicit, persistent machine.
//!
//! A machine is a statig state machine wrapped in a struct that the store can serialise.
//! Handlers never do I/O and never read the clock: time arrives as [`Step::now`], and
//! whatever must happen in the world is queued as an effect on the [`Step`]. The driver
//! persists the new state together with those effects, then runs them, and feeds each
//! outcome back as an event.
//!
//! Entry and exit actions may only log: statig re-runs entry actions when a stored
//! machine is restored, so an effect queued there would run twice.

pub mod backend;
pub mod cluster;
pub mod failure;
pub mod function;
pub mod instance;
pub mod session;
#[cfg(test)]
mod testkit;
mod time;

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};

pub use time::Timestamp;

/// The kinds of machine, each with its own key space in the store (`<kind>/<name>`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum Kind {
    /// One cluster registration with SIS, keyed by cluster name.
    Cluster,
    /// One NVCFBackend, keyed by `<namespace>/<name>`.
    Backend,
    /// One function deployment (an SIS request), keyed by its request id.
    Function,
    /// The agent's SIS session (register, heartbeat, credentials, JWKS), keyed by cluster ID.
    Session,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Backend, Kind::Function, Kind::Session];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Backend => "backend",
            Kind::Function => "function",
            Kind::Session => "session",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// "cluster, backend, function or session", for messages about a bad kind.
    pub fn choices() -> String {
        let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one handler call may do besides changing state: queue effects, or drop the
/// effects still pending from earlier steps because the world they were for is gone.
/// It is the statig context of every machine.
#[derive(Debug)]
pub struct Step<E> {
    /// The time of the event, as the driver read it.
    pub now: Timestamp,
    effects: Vec<E>,
    cancel_pending: bool,
}

impl<E> Step<E> {
    pub fn new(now: Timestamp) -> Self {
        Step {
            now,
            effects: Vec::new(),
            cancel_pending: false,
        }
    }

    /// Queue an effect; the driver runs the effects of one machine in queue order.
    pub fn queue(&mut self, effect: E) {
        self.effects.push(effect);
    }

    /// Drop the effects of earlier steps that have not completed yet.
    pub fn cancel_pending(&mut self) {
        self.cancel_pending = true;
    }

    pub fn effects(&self) -> &[E] {
        &self.effects
    }

    pub fn cancels_pending(&self) -> bool {
        self.cancel_pending
    }

    pub fn into_effects(self) -> Vec<E> {
        self.effects
    }
}

/// A one-line, secret-free description, as `nvca-state dump` prints it.
pub trait Describe {
    fn describe(&self) -> String;
}

/// What the driver and the store need of every machine.
pub trait Machine: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: Kind;
    /// Facts the machine reacts to: watch observations, SIS answers, effect outcomes.
    type Event: Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + Into<&'static str>
        + 'static;
    /// Work for the driver to do. Idempotent by construction: fixed names, applies,
    /// 404-tolerant deletes, look-ups before creates.
    /// Its variant name (`Into<&'static str>`) is what crash points and logs call it.
    type Effect: Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + PartialEq
        + Send
        + Sync
        + Describe
        + Into<&'static str>
        + 'static;

    /// Handle one event. Pure: the same machine, event and `step.now` give the same result.
    fn handle(&mut self, event: &Self::Event, step: &mut Step<Self::Effect>);

    /// The event a permanently failed effect turns into (a transient failure is retried by
    /// the driver and never reaches the machine).
    fn effect_failed(effect: &Self::Effect, error: &str) -> Self::Event;

    /// The name of the current leaf state, as `dump` shows it.
    fn state_name(&self) -> &'static str;

    /// True once the machine has nothing more to do and no event can change that.
    fn is_final(&self) -> bool;
}

#[cfg(test)]
mod state_names {
    use super::session::SessionState;
    use super::{backend::BackendState, cluster::ClusterState, function::FunctionState};

    #[test]
    fn a_summarys_state_reads_back_as_the_typed_state_that_named_it() {
        let name: &'static str = BackendState::CleanupFailed.into();
        assert_eq!(name, "cleanup_failed");
        assert_eq!(BackendState::of(name), Some(BackendState::CleanupFailed));
        assert!(SessionState::SelfDestructed.is("self_destructed"));
        assert!(ClusterState::LookingUp.is("looking_up"));
        assert!(FunctionState::InstancesStarting.is("instances_starting"));
        assert!(!BackendState::Ready.is("readyish"));
        assert_eq!(SessionState::of("provisioning"), None);
    }
}
