//! The agent's session with SIS for one cluster, keyed by cluster ID: registration of the
//! cluster's GPUs, heartbeats, credential renewal, JWKS pushes, and SIS's order to stop.
//!
//! ```text
//!                RegistrationDue               Registered
//!  unregistered ───────────────▶ registering ────────────▶ registered ◀──┐
//!                                   │   ▲                    │  │        │ RegistrationDue,
//!               EffectFailed(Register)  │ RegistrationDue    │  │        │ HeartbeatDue,
//!                                   ▼   │                    │  │        │ CredentialsDue → one call each
//!                                 refused{reason} ◀──────────┘  │        │ (never two of a kind pending)
//!                               EffectFailed(Register)          │        │
//!                                                               │ HeartbeatAnswered(SelfDestruct)
//!                                                               ▼
//!                                                       self_destructed ── EvictWorkloads once;
//!                                                       no SIS call ever again for this cluster
//!
//!  JwksDue{sha256} in any state but self_destructed: PushJwks when the hash differs from
//!  the last pushed one (NVIDIA's jwks_updater pushes only on change).
//! ```
//!
//! The effects carry no request bodies: the executor builds each body when it runs, from
//! the live inventory, health and maintenance mode, so a call retried after SIS was down
//! for an hour sends what is true then, not what was true when it was queued. SIS being
//! unavailable is transient: the driver retries the effect with capped backoff and the
//! record shows the attempts and the error (`nvca-state dump`). SIS refusing a
//! registration for good parks the session in `refused` until the next registration is
//! due (inventory change, maintenance change, hourly refresh, restart).
//!
//! `self_destructed` is persisted on purpose (NVIDIA keeps it in memory): an agent that
//! restarts after SIS told it to stop stays stopped for that cluster. A new cluster ID (a
//! manual re-registration) is a new session.

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use super::{Describe, Kind, Machine, Step, Timestamp};

/// SIS's answer to a heartbeat, as the agent takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatAnswer {
    Accepted,
    SelfDestruct,
    /// `SELF_DESTRUCT`, ignored because the agent runs with `skipSelfDestruct`.
    SelfDestructSkipped,
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Event {
    /// The cluster must (re-)register: the agent started, the GPUs changed, the maintenance
    /// mode changed, or the hourly refresh is due. `reason` is for the record.
    RegistrationDue { reason: String },
    /// SIS accepted the registration (outcome of `Register`); `gpus` is a one-line summary
    /// of what was registered, `status` the cluster status sent (`READY`, `CORDON` …).
    Registered { gpus: String, status: String },
    /// The heartbeat interval has passed.
    HeartbeatDue,
    /// SIS answered a heartbeat (outcome of `Heartbeat`).
    HeartbeatAnswered { answer: HeartbeatAnswer },
    /// The credential renewal interval has passed.
    CredentialsDue,
    /// SIS gave the queue credentials (outcome of `RenewCredentials`).
    CredentialsRenewed,
    /// The JWKS interval has passed; `sha256` is the hash of the cluster's key set now.
    JwksDue { sha256: String },
    /// SIS took the key set with this hash (outcome of `PushJwks`).
    JwksPushed { sha256: String },
    /// Every workload was told to go (outcome of `EvictWorkloads`).
    WorkloadsEvicted,
    /// SIS refused a call for good, or the eviction could not be ordered.
    EffectFailed { effect: Effect, reason: String },
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Effect {
    /// `PUT /v1/nvca/clusters/{id}/register` with the GPUs, k8s version and status of now.
    Register,
    /// `POST /v1/nvca/clusters/{id}/heartbeat` with the health and `gpuUsage` of now.
    Heartbeat,
    /// `GET /v1/nvca/clusters/{id}/credentials`.
    RenewCredentials,
    /// `PUT /v1/nvca/clusters/{id}/jwks` with the key set, if it still hashes to `sha256`.
    PushJwks { sha256: String },
    /// Tell every workload to terminate (SIS said `SELF_DESTRUCT`).
    EvictWorkloads,
}

impl Describe for Effect {
    fn describe(&self) -> String {
        match self {
            Effect::Register => "register the cluster's GPUs with SIS".to_string(),
            Effect::Heartbeat => "send a heartbeat to SIS".to_string(),
            Effect::RenewCredentials => "renew the queue credentials at SIS".to_string(),
            Effect::PushJwks { sha256 } => {
                format!("push the cluster's JWKS (sha256 {}) to SIS", short(sha256))
            }
            Effect::EvictWorkloads => "evict every workload (SIS said SELF_DESTRUCT)".to_string(),
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Calls queued and not answered yet, so a tick never queues a second one of a kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    register: bool,
    heartbeat: bool,
    credentials: bool,
    jwks: bool,
}

/// What the session knows in every state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    cluster_id: String,
    pending: Pending,
    /// Why the pending registration was asked for.
    registration_reason: String,
    /// The last registration SIS accepted: when, what, with which status.
    last_registered: Option<(Timestamp, String, String)>,
    last_heartbeat: Option<Timestamp>,
    /// The hash of the key set SIS last took.
    jwks_pushed: Option<String>,
}

#[state_machine(
    initial = "State::unregistered()",
    state(derive(Clone, Debug, PartialEq, Serialize, Deserialize)),
    context_identifier = "step",
    after_transition = "Self::log_transition"
)]
impl Session {
    #[state]
    fn unregistered(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::RegistrationDue { reason } => {
                self.register(reason, step);
                Transition(State::registering())
            }
            _ => self.common(event, step),
        }
    }

    #[state]
    fn registering(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::RegistrationDue { reason } => {
                self.register(reason, step);
                Handled
            }
            Event::Registered { gpus, status } => {
                self.note_registered(gpus, status, step.now);
                Transition(State::registered(step.now))
            }
            Event::EffectFailed {
                effect: Effect::Register,
                reason,
            } => {
                self.pending.register = false;
                Transition(State::refused(reason.clone()))
            }
            _ => self.common(event, step),
        }
    }

    #[state]
    fn registered(
        &mut self,
        since: &mut Timestamp,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        let _ = since;
        match event {
            Event::RegistrationDue { reason } => {
                self.register(reason, step);
                Handled
            }
            Event::Registered { gpus, status } => {
                self.note_registered(gpus, status, step.now);
                Handled
            }
            Event::HeartbeatDue if !self.pending.heartbeat => {
                self.pending.heartbeat = true;
                step.queue(Effect::Heartbeat);
                Handled
            }
            Event::HeartbeatAnswered { answer } => {
                self.pending.heartbeat = false;
                self.last_heartbeat = Some(step.now);
                match answer {
                    HeartbeatAnswer::SelfDestruct => {
                        step.queue(Effect::EvictWorkloads);
                        Transition(State::self_destructed(step.now))
                    }
                    HeartbeatAnswer::Accepted | HeartbeatAnswer::SelfDestructSkipped => Handled,
                }
            }
            Event::CredentialsDue if !self.pending.credentials => {
                self.pending.credentials = true;
                step.queue(Effect::RenewCredentials);
                Handled
            }
            Event::CredentialsRenewed => {
                self.pending.credentials = false;
                Handled
            }
            // A refused re-registration keeps the session: heartbeats go on (as NVIDIA's
            // registration syncer does), the next change or refresh tries again.
            _ => self.common(event, step),
        }
    }

    #[state]
    fn refused(
        &mut self,
        reason: &mut String,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        let _ = reason;
        match event {
            Event::RegistrationDue { reason } => {
                self.register(reason, step);
                Transition(State::registering())
            }
            _ => self.common(event, step),
        }
    }

    /// SIS said stop: nothing more goes to SIS for this cluster.
    #[state]
    fn self_destructed(
        &mut self,
        since: &mut Timestamp,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        let _ = (since, step);
        match event {
            Event::EffectFailed { effect, reason } => {
                tracing::warn!(effect = %effect.describe(), %reason, "failed for good after SELF_DESTRUCT");
                Handled
            }
            _ => Handled,
        }
    }
}

impl Session {
    fn register(&mut self, reason: &str, step: &mut Step<Effect>) {
        self.registration_reason = reason.to_string();
        if !self.pending.register {
            self.pending.register = true;
            step.queue(Effect::Register);
        }
    }

    fn note_registered(&mut self, gpus: &str, status: &str, now: Timestamp) {
        self.pending.register = false;
        self.last_registered = Some((now, gpus.to_string(), status.to_string()));
    }

    /// What every state but `self_destructed` does alike: the JWKS, answers to calls that
    /// finished after the state changed, and failures of calls that are not registrations.
    fn common(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::JwksDue { sha256 }
                if !self.pending.jwks && self.jwks_pushed.as_ref() != Some(sha256) =>
            {
                self.pending.jwks = true;
                step.queue(Effect::PushJwks {
                    sha256: sha256.clone(),
                });
            }
            Event::JwksPushed { sha256 } => {
                self.pending.jwks = false;
                self.jwks_pushed = Some(sha256.clone());
            }
            Event::HeartbeatAnswered { .. } => self.pending.heartbeat = false,
            Event::CredentialsRenewed => self.pending.credentials = false,
            Event::EffectFailed { effect, reason } => {
                tracing::warn!(effect = %effect.describe(), %reason, "SIS refused; the next tick tries again");
                match effect {
                    Effect::Register => self.pending.register = false,
                    Effect::Heartbeat => self.pending.heartbeat = false,
                    Effect::RenewCredentials => self.pending.credentials = false,
                    Effect::PushJwks { .. } => self.pending.jwks = false,
                    Effect::EvictWorkloads => {}
                }
            }
            _ => tracing::debug!(event = <&'static str>::from(event), "ignored"),
        }
        Handled
    }

    fn log_transition(&mut self, source: &State, target: &State, _step: &mut Step<Effect>) {
        tracing::debug!(from = state_name(source), to = state_name(target), cluster = %self.cluster_id, "SIS session");
    }
}

/// Every state's name, as [`Machine::state_name`] gives it (crash points use them).
pub const STATE_NAMES: &[&str] = &[
    "unregistered",
    "registering",
    "registered",
    "refused",
    "self_destructed",
];

/// The states of a SIS session by name: what a stored summary's `state` holds
/// (snake_case), for code outside the machines to ask about without spelling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum SessionState {
    Unregistered,
    Registering,
    Registered,
    Refused,
    SelfDestructed,
}

impl SessionState {
    /// The typed state a summary\'s `state` names; `None` for no state of this machine.
    pub fn of(state: &str) -> Option<SessionState> {
        state.parse().ok()
    }

    /// Whether `state` (a summary's) is this one.
    pub fn is(self, state: &str) -> bool {
        state.parse() == Ok(self)
    }
}

fn state_name(state: &State) -> &'static str {
    let name = match state {
        State::Unregistered {} => SessionState::Unregistered,
        State::Registering {} => SessionState::Registering,
        State::Registered { .. } => SessionState::Registered,
        State::Refused { .. } => SessionState::Refused,
        State::SelfDestructed { .. } => SessionState::SelfDestructed,
    };
    name.into()
}

/// The SIS session of one cluster, as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionMachine {
    machine: StateMachine<Session>,
}

impl SessionMachine {
    pub fn new(cluster_id: &str) -> Self {
        SessionMachine {
            machine: Session {
                cluster_id: cluster_id.to_string(),
                pending: Pending::default(),
                registration_reason: String::new(),
                last_registered: None,
                last_heartbeat: None,
                jwks_pushed: None,
            }
            .state_machine(),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.machine.inner().cluster_id
    }

    /// True once SIS said `SELF_DESTRUCT` (and it was not skipped).
    pub fn self_destructed(&self) -> bool {
        matches!(self.machine.state(), State::SelfDestructed { .. })
    }

    /// True once SIS accepted a registration and did not tell the cluster to stop.
    pub fn registered(&self) -> bool {
        matches!(self.machine.state(), State::Registered { .. })
    }

    /// Why SIS refused the registration, while it does.
    pub fn refusal(&self) -> Option<&str> {
        match self.machine.state() {
            State::Refused { reason } => Some(reason),
            _ => None,
        }
    }

    /// When SIS last accepted a registration, the GPUs registered and the status sent.
    pub fn last_registered(&self) -> Option<(Timestamp, &str, &str)> {
        self.machine
            .inner()
            .last_registered
            .as_ref()
            .map(|(at, gpus, status)| (*at, gpus.as_str(), status.as_str()))
    }

    pub fn last_heartbeat(&self) -> Option<Timestamp> {
        self.machine.inner().last_heartbeat
    }

    /// Run statig's entry actions after a restore; there are none that act.
    pub fn init(&mut self, step: &mut Step<Effect>) {
        self.machine.init_with_context(step);
    }
}

impl Machine for SessionMachine {
    const KIND: Kind = Kind::Session;
    type Event = Event;
    type Effect = Effect;

    fn handle(&mut self, event: &Event, step: &mut Step<Effect>) {
        self.machine.handle_with_context(event, step);
    }

    fn effect_failed(effect: &Effect, error: &str) -> Event {
        Event::EffectFailed {
            effect: effect.clone(),
            reason: error.to_string(),
        }
    }

    fn state_name(&self) -> &'static str {
        state_name(self.machine.state())
    }

    /// A session is never done: even a self-destructed one keeps the cluster silent.
    fn is_final(&self) -> bool {
        false
    }
}

#[cfg(test)]
pub(crate) fn registered_ok() -> Event {
    Event::Registered {
        gpus: "H100 16, A100 8".into(),
        status: "READY".into(),
    }
}

#[cfg(test)]
pub(crate) fn due(reason: &str) -> Event {
    Event::RegistrationDue {
        reason: reason.into(),
    }
}

#[cfg(test)]
pub(crate) fn sample_machines() -> Vec<SessionMachine> {
    let at = |events: &[Event]| {
        let mut machine = SessionMachine::new("c-1");
        super::testkit::run(&mut machine, events);
        machine
    };
    vec![
        at(&[]),
        at(&[due("agent started")]),
        at(&[due("agent started"), registered_ok()]),
        at(&[
            due("agent started"),
            SessionMachine::effect_failed(&Effect::Register, "404 unknown cluster"),
        ]),
        at(&[
            due("agent started"),
            registered_ok(),
            Event::HeartbeatDue,
            Event::HeartbeatAnswered {
                answer: HeartbeatAnswer::SelfDestruct,
            },
        ]),
    ]
}

#[cfg(test)]
pub(crate) fn sample_events() -> Vec<Event> {
    vec![
        due("GPUs changed"),
        registered_ok(),
        Event::HeartbeatDue,
        Event::HeartbeatAnswered {
            answer: HeartbeatAnswer::SelfDestruct,
        },
        Event::CredentialsDue,
        Event::CredentialsRenewed,
        Event::JwksDue {
            sha256: "ab".repeat(32),
        },
        Event::JwksPushed {
            sha256: "ab".repeat(32),
        },
        Event::WorkloadsEvicted,
        SessionMachine::effect_failed(&Effect::Register, "400 bad GPU name"),
    ]
}

#[cfg(test)]
pub(crate) fn sample_effects() -> Vec<Effect> {
    vec![
        Effect::Register,
        Effect::Heartbeat,
        Effect::RenewCredentials,
        Effect::PushJwks {
            sha256: "ab".repeat(32),
        },
        Effect::EvictWorkloads,
    ]
}

#[cfg(test)]
mod tests {
    use strum::VariantNames;

    use super::*;
    use crate::machines::testkit::{self, Row, assert_covers, names, row, step};

    const REGISTER: &[&str] = &["Register"];
    const HEARTBEAT: &[&str] = &["Heartbeat"];
    const CREDENTIALS: &[&str] = &["RenewCredentials"];
    const JWKS: &[&str] = &["PushJwks"];
    const EVICT: &[&str] = &["EvictWorkloads"];
    const NONE: &[&str] = &[];

    /// Every pair not listed here must be ignored: same state, no effect.
    const ROWS: &[Row] = &[
        row("unregistered", "RegistrationDue", "registering", REGISTER),
        row("unregistered", "JwksDue", "unregistered", JWKS),
        row("registering", "Registered", "registered", NONE),
        row("registering", "EffectFailed", "refused", NONE),
        row("registering", "JwksDue", "registering", JWKS),
        row("registered", "RegistrationDue", "registered", REGISTER),
        row("registered", "HeartbeatDue", "registered", HEARTBEAT),
        row("registered", "HeartbeatAnswered", "self_destructed", EVICT),
        row("registered", "CredentialsDue", "registered", CREDENTIALS),
        row("registered", "JwksDue", "registered", JWKS),
        row("refused", "RegistrationDue", "registering", REGISTER),
        row("refused", "JwksDue", "refused", JWKS),
    ];

    fn machine_in(state: &str) -> SessionMachine {
        sample_machines()
            .into_iter()
            .find(|machine| machine.state_name() == state)
            .expect("a sample in that state")
    }

    #[test]
    fn every_state_meets_every_event_as_the_table_says() {
        testkit::assert_matrix(&sample_machines(), &sample_events(), ROWS);
    }

    #[test]
    fn samples_cover_every_state_event_and_effect() {
        let states: Vec<&str> = sample_machines().iter().map(Machine::state_name).collect();
        assert_covers("states", &states, STATE_NAMES);
        assert_covers("named states", STATE_NAMES, &states);
        assert_covers("events", &names(&sample_events()), Event::VARIANTS);
        assert_covers("effects", &names(&sample_effects()), Effect::VARIANTS);
    }

    #[test]
    fn every_state_restores_without_effects() {
        for machine in sample_machines() {
            testkit::assert_restores_quietly(&machine, SessionMachine::init);
        }
    }

    #[test]
    fn effects_describe_themselves_on_one_line() {
        testkit::assert_one_line_descriptions(&sample_effects());
    }

    #[test]
    fn ticks_never_queue_a_second_call_of_a_kind() {
        let mut machine = machine_in("registered");
        assert_eq!(
            step(&mut machine, &Event::HeartbeatDue),
            vec![Effect::Heartbeat]
        );
        assert!(step(&mut machine, &Event::HeartbeatDue).is_empty());
        assert_eq!(
            step(&mut machine, &due("GPUs changed")),
            vec![Effect::Register]
        );
        assert!(step(&mut machine, &due("maintenance mode CordonOnly")).is_empty());
        assert!(
            step(
                &mut machine,
                &Event::HeartbeatAnswered {
                    answer: HeartbeatAnswer::Accepted
                }
            )
            .is_empty()
        );
        assert_eq!(
            step(&mut machine, &Event::HeartbeatDue),
            vec![Effect::Heartbeat]
        );
        assert!(step(&mut machine, &registered_ok()).is_empty());
        assert_eq!(step(&mut machine, &due("hourly")), vec![Effect::Register]);
        assert!(machine.registered());
    }

    #[test]
    fn the_jwks_is_pushed_only_when_it_changed() {
        let mut machine = machine_in("registered");
        let one = "11".repeat(32);
        let two = "22".repeat(32);
        let due = |sha256: &str| Event::JwksDue {
            sha256: sha256.into(),
        };
        assert_eq!(
            step(&mut machine, &due(&one)),
            vec![Effect::PushJwks {
                sha256: one.clone()
            }]
        );
        assert!(
            step(&mut machine, &due(&one)).is_empty(),
            "one push in flight"
        );
        step(
            &mut machine,
            &Event::JwksPushed {
                sha256: one.clone(),
            },
        );
        assert!(step(&mut machine, &due(&one)).is_empty(), "unchanged");
        assert_eq!(
            step(&mut machine, &due(&two)),
            vec![Effect::PushJwks { sha256: two }]
        );
    }

    #[test]
    fn self_destruct_evicts_once_and_silences_the_cluster() {
        let mut machine = machine_in("self_destructed");
        assert!(machine.self_destructed());
        for event in sample_events() {
            assert!(step(&mut machine, &event).is_empty(), "{event:?}");
        }
        assert_eq!(machine.state_name(), "self_destructed");

        let mut skipping = machine_in("registered");
        step(&mut skipping, &Event::HeartbeatDue);
        assert!(
            step(
                &mut skipping,
                &Event::HeartbeatAnswered {
                    answer: HeartbeatAnswer::SelfDestructSkipped
                }
            )
            .is_empty()
        );
        assert!(skipping.registered());
    }

    #[test]
    fn a_refusal_parks_until_the_next_registration_is_due() {
        let mut machine = machine_in("refused");
        assert_eq!(machine.refusal(), Some("404 unknown cluster"));
        assert!(step(&mut machine, &Event::HeartbeatDue).is_empty());
        assert_eq!(
            step(&mut machine, &due("GPUs changed")),
            vec![Effect::Register]
        );
        step(&mut machine, &registered_ok());
        assert_eq!(
            machine.last_registered().map(|r| r.1),
            Some("H100 16, A100 8")
        );
    }

    #[test]
    fn a_failed_heartbeat_lets_the_next_tick_try() {
        let mut machine = machine_in("registered");
        step(&mut machine, &Event::HeartbeatDue);
        step(
            &mut machine,
            &SessionMachine::effect_failed(&Effect::Heartbeat, "409 cluster mismatch"),
        );
        assert_eq!(machine.state_name(), "registered");
        assert_eq!(
            step(&mut machine, &Event::HeartbeatDue),
            vec![Effect::Heartbeat]
        );
    }
}
