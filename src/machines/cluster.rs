//! Registration of one cluster with SIS, keyed by cluster name.
//!
//! ```text
//!                 RegistrationRequested
//!  unregistered ───────────────────────▶ looking_up ───LookupMissing───▶ registering
//!       ▲                                  │ ▲                           │    │
//!       │                                  │ └───────AlreadyExists───────┘    │
//!       │                       LookupFound│                        Registered│
//!       │                                  ▼                                  │
//!       │                     registered{ids} ◀───────────────────────────────┘
//!       │        IdsChanged: adopt ↺ │     │ RegistrationRequested → looking_up
//!       │                            │     │ DeregistrationRequested (from any state)
//!       │ Deregistered,              ▼     ▼
//!       └─ LookupMissing ─── deregistering{cluster_id}
//!                            cluster_id None: LookUpCluster first, LookupFound → DeregisterCluster
//!
//!  rejected{reason}: SIS refused a call for good (looking_up, registering,
//!  deregistering). RegistrationRequested, a changed ConfigChanged or IdsChanged leave it.
//! ```
//!
//! SIS knows a cluster by account and name, so registration always looks the name up
//! first and an "already exists" answer goes back to the look-up: there is never a second
//! create. SIS being unavailable is transient and retried by the driver; this machine only
//! sees answers. The IDs end up in ConfigMap `nvca-cluster-registration`; when someone
//! re-registers by hand and writes other IDs there, they are adopted.

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use super::{Describe, Kind, Machine, Step};

/// Who the cluster is, as `cluster-dto.yaml` says; the body of the SIS create call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub cluster_name: String,
    pub nca_id: String,
    pub group_name: String,
    pub region: String,
    pub cloud_provider: String,
    pub nvca_version: String,
    pub capabilities: Vec<String>,
}

impl ClusterSpec {
    pub fn key(&self) -> ClusterKey {
        ClusterKey {
            nca_id: self.nca_id.clone(),
            cluster_name: self.cluster_name.clone(),
        }
    }
}

/// How SIS finds a cluster: the account and the cluster name. SIS answers carry it, so an
/// answer about a name the cluster no longer has is recognised as stale.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterKey {
    pub nca_id: String,
    pub cluster_name: String,
}

/// What SIS calls the cluster once it is registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIds {
    pub cluster_id: String,
    pub cluster_group_id: String,
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Event {
    /// The bootstrap ran, at start or by hand: make sure the cluster is registered.
    RegistrationRequested,
    /// `cluster-dto.yaml` changed.
    ConfigChanged { spec: ClusterSpec },
    /// `nvca-cluster-registration` was observed; `None` when it is gone or holds no IDs.
    IdsChanged { ids: Option<ClusterIds> },
    /// SIS lists a cluster of that name (outcome of `LookUpCluster`).
    LookupFound { key: ClusterKey, ids: ClusterIds },
    /// SIS lists no cluster of that name.
    LookupMissing { key: ClusterKey },
    /// SIS created the cluster (outcome of `RegisterCluster`).
    Registered { key: ClusterKey, ids: ClusterIds },
    /// SIS answered that a cluster of that name already exists.
    AlreadyExists { key: ClusterKey },
    /// The IDs are in the ConfigMap (outcome of `WriteRegistration`).
    RegistrationWritten,
    /// Someone asked to remove the registration.
    DeregistrationRequested,
    /// SIS no longer knows the cluster (outcome of `DeregisterCluster`; a 404 counts).
    Deregistered,
    /// The ConfigMap holds no IDs any more (outcome of `ClearRegistration`).
    RegistrationCleared,
    /// An effect failed for good: SIS rejected the call, or the ConfigMap write was refused.
    EffectFailed { effect: Effect, reason: String },
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Effect {
    /// `GET /v1/accounts/{ncaId}/clusters` and match on the name.
    LookUpCluster { key: ClusterKey },
    /// `POST /v1/accounts/{ncaId}/clusters`; the driver adds the JWKS and OIDC issuer.
    RegisterCluster { spec: ClusterSpec },
    /// Write `clusterId` and `clusterGroupId` into ConfigMap `nvca-cluster-registration`.
    WriteRegistration { ids: ClusterIds },
    /// `DELETE /v1/accounts/{ncaId}/clusters/{clusterId}`; a 404 is success.
    DeregisterCluster { nca_id: String, cluster_id: String },
    /// Remove the IDs from ConfigMap `nvca-cluster-registration`: they name nothing now.
    ClearRegistration,
}

impl Describe for Effect {
    fn describe(&self) -> String {
        match self {
            Effect::LookUpCluster { key } => {
                format!(
                    "look up cluster {} in account {} at SIS",
                    key.cluster_name, key.nca_id
                )
            }
            Effect::RegisterCluster { spec } => {
                format!(
                    "register cluster {} in account {} with SIS",
                    spec.cluster_name, spec.nca_id
                )
            }
            Effect::WriteRegistration { ids } => format!(
                "write clusterId {} and clusterGroupId {} into nvca-cluster-registration",
                ids.cluster_id, ids.cluster_group_id
            ),
            Effect::DeregisterCluster { nca_id, cluster_id } => {
                format!("deregister cluster {cluster_id} from account {nca_id} at SIS")
            }
            Effect::ClearRegistration => "clear the IDs in nvca-cluster-registration".to_string(),
        }
    }
}

/// The shared storage of the machine: what it knows in every state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    spec: ClusterSpec,
    /// The last observation of `nvca-cluster-registration`, so a repeated one is ignored:
    /// `None` before any, `Some(None)` when it held no IDs.
    seen_ids: Option<Option<ClusterIds>>,
}

#[state_machine(
    initial = "State::unregistered()",
    state(derive(Clone, Debug, PartialEq, Serialize, Deserialize)),
    context_identifier = "step",
    after_transition = "Self::log_transition"
)]
impl Registration {
    #[state]
    fn unregistered(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::RegistrationRequested => self.look_up(step),
            // The store may have been lost while SIS still knows the cluster: look.
            Event::DeregistrationRequested => self.find_to_deregister(step),
            Event::ConfigChanged { spec } => {
                self.spec = spec.clone();
                Handled
            }
            Event::IdsChanged { ids } => {
                // Not adopted: the bootstrap's look-up finds the registration by name.
                self.note_ids(ids);
                Handled
            }
            _ => self.ignore(event),
        }
    }

    #[state]
    fn looking_up(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::LookupMissing { key } if *key == self.spec.key() => self.register(step),
            Event::EffectFailed { effect, reason } if *effect == self.look_up_effect() => {
                Transition(State::rejected(reason.clone()))
            }
            _ => self.registration_pending(event, step),
        }
    }

    #[state]
    fn registering(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::AlreadyExists { key } if *key == self.spec.key() => self.look_up(step),
            Event::EffectFailed { effect, reason } if *effect == self.register_effect() => {
                Transition(State::rejected(reason.clone()))
            }
            _ => self.registration_pending(event, step),
        }
    }

    #[state]
    fn registered(
        &mut self,
        ids: &mut ClusterIds,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::RegistrationRequested => self.look_up(step),
            Event::ConfigChanged { spec } if spec.key() != self.spec.key() => {
                self.spec = spec.clone();
                step.cancel_pending();
                self.look_up(step)
            }
            // SIS offers no update in this flow: the other fields only matter at create.
            Event::ConfigChanged { spec } => {
                self.spec = spec.clone();
                Handled
            }
            Event::IdsChanged { ids: observed } => {
                if !self.note_ids(observed) {
                    return Handled;
                }
                match observed {
                    // Re-registered by hand: the ConfigMap is the truth.
                    Some(adopted) if adopted != ids => {
                        Transition(State::registered(adopted.clone()))
                    }
                    Some(_) => Handled,
                    // Someone emptied or deleted the ConfigMap: put the IDs back.
                    None => {
                        step.queue(Effect::WriteRegistration { ids: ids.clone() });
                        Handled
                    }
                }
            }
            Event::DeregistrationRequested => {
                step.cancel_pending();
                self.deregister(&ids.cluster_id, step)
            }
            _ => self.ignore(event),
        }
    }

    #[state]
    #[expect(
        clippy::ptr_arg,
        reason = "statig hands state-local storage over as `&mut`"
    )]
    fn rejected(
        &mut self,
        reason: &mut String,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::RegistrationRequested => self.retry(reason, step),
            Event::ConfigChanged { spec } if *spec != self.spec => {
                self.spec = spec.clone();
                self.retry(reason, step)
            }
            Event::IdsChanged { ids } => match (self.note_ids(ids), ids) {
                (true, Some(adopted)) => Transition(State::registered(adopted.clone())),
                _ => Handled,
            },
            Event::DeregistrationRequested => self.find_to_deregister(step),
            _ => self.ignore(event),
        }
    }

    /// Removing the registration; `cluster_id` is `None` while the look-up runs that finds it.
    #[state]
    fn deregistering(
        &mut self,
        cluster_id: &mut Option<String>,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match (event, cluster_id.as_ref()) {
            (Event::LookupFound { key, ids }, None) if *key == self.spec.key() => {
                self.deregister(&ids.cluster_id, step)
            }
            // A create that was in flight when deregistration began: delete what it made.
            (Event::Registered { key, ids }, None) if *key == self.spec.key() => {
                step.cancel_pending();
                self.deregister(&ids.cluster_id, step)
            }
            (Event::LookupMissing { key }, None) if *key == self.spec.key() => self.forget(step),
            (Event::Deregistered, Some(_)) => self.forget(step),
            (Event::EffectFailed { effect, reason }, None) if *effect == self.look_up_effect() => {
                Transition(State::rejected(reason.clone()))
            }
            (Event::EffectFailed { effect, reason }, Some(id))
                if *effect == self.deregister_effect(id) =>
            {
                Transition(State::rejected(reason.clone()))
            }
            (Event::ConfigChanged { spec }, _) => {
                self.spec = spec.clone();
                Handled
            }
            (Event::IdsChanged { ids }, _) => {
                self.note_ids(ids);
                Handled
            }
            _ => self.ignore(event),
        }
    }
}

impl Registration {
    /// What `looking_up` and `registering` have in common: an answer about the current name
    /// settles the registration, a change of config starts over, deregistration wins.
    fn registration_pending(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::LookupFound { key, ids } | Event::Registered { key, ids }
                if *key == self.spec.key() =>
            {
                step.queue(Effect::WriteRegistration { ids: ids.clone() });
                Transition(State::registered(ids.clone()))
            }
            Event::ConfigChanged { spec } if *spec != self.spec => {
                self.spec = spec.clone();
                step.cancel_pending();
                self.look_up(step)
            }
            Event::IdsChanged { ids } => {
                // The look-up under way finds whatever was registered by hand.
                self.note_ids(ids);
                Handled
            }
            Event::DeregistrationRequested => {
                step.cancel_pending();
                self.find_to_deregister(step)
            }
            _ => self.ignore(event),
        }
    }

    fn look_up_effect(&self) -> Effect {
        Effect::LookUpCluster {
            key: self.spec.key(),
        }
    }

    fn register_effect(&self) -> Effect {
        Effect::RegisterCluster {
            spec: self.spec.clone(),
        }
    }

    fn look_up(&self, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(self.look_up_effect());
        Transition(State::looking_up())
    }

    fn retry(&self, rejection: &str, step: &mut Step<Effect>) -> Outcome<State> {
        tracing::info!(%rejection, "registering again after a rejection");
        self.look_up(step)
    }

    fn register(&self, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(self.register_effect());
        Transition(State::registering())
    }

    fn find_to_deregister(&self, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(self.look_up_effect());
        Transition(State::deregistering(None))
    }

    fn deregister_effect(&self, cluster_id: &str) -> Effect {
        Effect::DeregisterCluster {
            nca_id: self.spec.nca_id.clone(),
            cluster_id: cluster_id.to_string(),
        }
    }

    fn deregister(&self, cluster_id: &str, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(self.deregister_effect(cluster_id));
        Transition(State::deregistering(Some(cluster_id.to_string())))
    }

    fn forget(&self, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(Effect::ClearRegistration);
        Transition(State::unregistered())
    }

    /// Remember an observation of the ConfigMap; false if it is the one seen last.
    fn note_ids(&mut self, ids: &Option<ClusterIds>) -> bool {
        let new = self.seen_ids.as_ref() != Some(ids);
        self.seen_ids = Some(ids.clone());
        new
    }

    /// Stale answers, repeated requests and failures of effects nobody waits for.
    fn ignore(&self, event: &Event) -> Outcome<State> {
        match event {
            Event::EffectFailed { effect, reason } => {
                tracing::warn!(effect = %effect.describe(), %reason, "effect failed for good")
            }
            _ => tracing::debug!(event = <&'static str>::from(event), "ignored"),
        }
        Handled
    }

    fn log_transition(&mut self, source: &State, target: &State, _step: &mut Step<Effect>) {
        tracing::debug!(from = state_name(source), to = state_name(target), cluster = %self.spec.cluster_name, "cluster registration");
    }
}

/// The states of a cluster registration by name: what a stored summary's `state` holds
/// (snake_case), for code outside the machines to ask about without spelling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum ClusterState {
    Unregistered,
    LookingUp,
    Registering,
    Registered,
    Rejected,
    Deregistering,
}

impl ClusterState {
    /// The typed state a summary\'s `state` names; `None` for no state of this machine.
    pub fn of(state: &str) -> Option<ClusterState> {
        state.parse().ok()
    }

    /// Whether `state` (a summary's) is this one.
    pub fn is(self, state: &str) -> bool {
        state.parse() == Ok(self)
    }
}

fn state_name(state: &State) -> &'static str {
    let name = match state {
        State::Unregistered {} => ClusterState::Unregistered,
        State::LookingUp {} => ClusterState::LookingUp,
        State::Registering {} => ClusterState::Registering,
        State::Registered { .. } => ClusterState::Registered,
        State::Rejected { .. } => ClusterState::Rejected,
        State::Deregistering { .. } => ClusterState::Deregistering,
    };
    name.into()
}

/// The registration of one cluster, as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterMachine {
    machine: StateMachine<Registration>,
}

impl ClusterMachine {
    /// A cluster not registered yet; `spec` is what `cluster-dto.yaml` says.
    pub fn new(spec: ClusterSpec) -> Self {
        ClusterMachine {
            machine: Registration {
                spec,
                seen_ids: None,
            }
            .state_machine(),
        }
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.machine.inner().spec
    }

    /// The IDs SIS gave, once registered.
    pub fn ids(&self) -> Option<&ClusterIds> {
        match self.machine.state() {
            State::Registered { ids } => Some(ids),
            _ => None,
        }
    }

    /// Why SIS refused, while the registration is parked.
    pub fn rejection(&self) -> Option<&str> {
        match self.machine.state() {
            State::Rejected { reason } => Some(reason),
            _ => None,
        }
    }

    /// Run statig's entry actions after a restore; they only log.
    pub fn init(&mut self, step: &mut Step<Effect>) {
        self.machine.init_with_context(step);
    }
}

impl Machine for ClusterMachine {
    const KIND: Kind = Kind::Cluster;
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

    /// A registration is never done: it can always be re-requested or removed.
    fn is_final(&self) -> bool {
        false
    }
}

#[cfg(test)]
pub(crate) fn sample_spec() -> ClusterSpec {
    ClusterSpec {
        cluster_name: "ncp-local".to_string(),
        nca_id: "nca-1".to_string(),
        group_name: "ncp-local".to_string(),
        region: "us-west-1".to_string(),
        cloud_provider: "ON-PREM".to_string(),
        nvca_version: "3.0.4".to_string(),
        capabilities: vec!["DynamicGPUDiscovery".to_string()],
    }
}

#[cfg(test)]
fn sample_ids() -> ClusterIds {
    ClusterIds {
        cluster_id: "c-1".to_string(),
        cluster_group_id: "g-1".to_string(),
    }
}

#[cfg(test)]
fn renamed_spec() -> ClusterSpec {
    ClusterSpec {
        cluster_name: "ncp-renamed".to_string(),
        ..sample_spec()
    }
}

/// One machine per state, each reached through real events.
#[cfg(test)]
pub(crate) fn sample_machines() -> Vec<ClusterMachine> {
    use super::testkit::run;
    let key = sample_spec().key();
    let at = |events: &[Event]| {
        let mut machine = ClusterMachine::new(sample_spec());
        run(&mut machine, events);
        machine
    };
    vec![
        at(&[]),
        at(&[Event::RegistrationRequested]),
        at(&[
            Event::RegistrationRequested,
            Event::LookupMissing { key: key.clone() },
        ]),
        at(&[
            Event::RegistrationRequested,
            Event::LookupFound {
                key: key.clone(),
                ids: sample_ids(),
            },
        ]),
        at(&[
            Event::RegistrationRequested,
            Event::EffectFailed {
                effect: Effect::LookUpCluster { key: key.clone() },
                reason: "403 Forbidden".to_string(),
            },
        ]),
        at(&[
            Event::RegistrationRequested,
            Event::LookupFound {
                key,
                ids: sample_ids(),
            },
            Event::DeregistrationRequested,
        ]),
    ]
}

/// One event of every variant, about the sample cluster.
#[cfg(test)]
pub(crate) fn sample_events() -> Vec<Event> {
    let key = sample_spec().key();
    vec![
        Event::RegistrationRequested,
        Event::ConfigChanged {
            spec: renamed_spec(),
        },
        Event::IdsChanged {
            ids: Some(ClusterIds {
                cluster_id: "c-2".to_string(),
                cluster_group_id: "g-2".to_string(),
            }),
        },
        Event::LookupFound {
            key: key.clone(),
            ids: sample_ids(),
        },
        Event::LookupMissing { key: key.clone() },
        Event::Registered {
            key: key.clone(),
            ids: sample_ids(),
        },
        Event::AlreadyExists { key: key.clone() },
        Event::RegistrationWritten,
        Event::DeregistrationRequested,
        Event::Deregistered,
        Event::RegistrationCleared,
        Event::EffectFailed {
            effect: Effect::LookUpCluster { key },
            reason: "403 Forbidden".to_string(),
        },
    ]
}

/// One effect of every variant.
#[cfg(test)]
pub(crate) fn sample_effects() -> Vec<Effect> {
    vec![
        Effect::LookUpCluster {
            key: sample_spec().key(),
        },
        Effect::RegisterCluster {
            spec: sample_spec(),
        },
        Effect::WriteRegistration { ids: sample_ids() },
        Effect::DeregisterCluster {
            nca_id: "nca-1".to_string(),
            cluster_id: "c-1".to_string(),
        },
        Effect::ClearRegistration,
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use strum::VariantNames;

    use super::*;
    use crate::machines::testkit::{self, Row, assert_covers, names, row, run, step, step_at};

    const LOOK_UP: &[&str] = &["LookUpCluster"];
    const REGISTER: &[&str] = &["RegisterCluster"];
    const WRITE: &[&str] = &["WriteRegistration"];
    const DEREGISTER: &[&str] = &["DeregisterCluster"];
    const CLEAR: &[&str] = &["ClearRegistration"];
    const NONE: &[&str] = &[];

    /// Every pair not listed here must be ignored: same state, no effect.
    const ROWS: &[Row] = &[
        row(
            "unregistered",
            "RegistrationRequested",
            "looking_up",
            LOOK_UP,
        ),
        row(
            "unregistered",
            "DeregistrationRequested",
            "deregistering",
            LOOK_UP,
        ),
        row("looking_up", "LookupFound", "registered", WRITE),
        row("looking_up", "Registered", "registered", WRITE),
        row("looking_up", "LookupMissing", "registering", REGISTER),
        row("looking_up", "ConfigChanged", "looking_up", LOOK_UP),
        row(
            "looking_up",
            "DeregistrationRequested",
            "deregistering",
            LOOK_UP,
        ),
        row("looking_up", "EffectFailed", "rejected", NONE),
        row("registering", "LookupFound", "registered", WRITE),
        row("registering", "Registered", "registered", WRITE),
        row("registering", "AlreadyExists", "looking_up", LOOK_UP),
        row("registering", "ConfigChanged", "looking_up", LOOK_UP),
        row(
            "registering",
            "DeregistrationRequested",
            "deregistering",
            LOOK_UP,
        ),
        row("registered", "RegistrationRequested", "looking_up", LOOK_UP),
        row("registered", "ConfigChanged", "looking_up", LOOK_UP),
        row("registered", "IdsChanged", "registered", NONE),
        row(
            "registered",
            "DeregistrationRequested",
            "deregistering",
            DEREGISTER,
        ),
        row("rejected", "RegistrationRequested", "looking_up", LOOK_UP),
        row("rejected", "ConfigChanged", "looking_up", LOOK_UP),
        row("rejected", "IdsChanged", "registered", NONE),
        row(
            "rejected",
            "DeregistrationRequested",
            "deregistering",
            LOOK_UP,
        ),
        row("deregistering", "Deregistered", "unregistered", CLEAR),
    ];

    fn machine_in(state: &str) -> ClusterMachine {
        sample_machines()
            .into_iter()
            .find(|machine| machine.state_name() == state)
            .expect("a sample in that state")
    }

    fn key() -> ClusterKey {
        sample_spec().key()
    }

    #[test]
    fn every_state_meets_every_event_as_the_table_says() {
        testkit::assert_matrix(&sample_machines(), &sample_events(), ROWS);
    }

    #[test]
    fn samples_cover_every_state_event_and_effect() {
        let states: Vec<&str> = sample_machines().iter().map(Machine::state_name).collect();
        let all = [
            "unregistered",
            "looking_up",
            "registering",
            "registered",
            "rejected",
            "deregistering",
        ];
        assert_covers("states", &states, &all);
        assert_covers("events", &names(&sample_events()), Event::VARIANTS);
        assert_covers("effects", &names(&sample_effects()), Effect::VARIANTS);
    }

    #[test]
    fn every_state_restores_without_effects() {
        for machine in sample_machines() {
            testkit::assert_restores_quietly(&machine, ClusterMachine::init);
        }
    }

    #[test]
    fn effects_describe_themselves_on_one_line() {
        testkit::assert_one_line_descriptions(&sample_effects());
    }

    #[test]
    fn registration_looks_up_before_it_creates() {
        let mut machine = ClusterMachine::new(sample_spec());
        assert_eq!(
            step(&mut machine, &Event::RegistrationRequested),
            vec![Effect::LookUpCluster { key: key() }]
        );
        assert_eq!(
            step(&mut machine, &Event::LookupMissing { key: key() }),
            vec![Effect::RegisterCluster {
                spec: sample_spec()
            }]
        );
        assert_eq!(
            step(
                &mut machine,
                &Event::Registered {
                    key: key(),
                    ids: sample_ids()
                }
            ),
            vec![Effect::WriteRegistration { ids: sample_ids() }]
        );
        assert_eq!(machine.ids(), Some(&sample_ids()));
    }

    #[test]
    fn already_exists_rediscovers_instead_of_creating_again() {
        let mut machine = machine_in("registering");
        assert_eq!(
            step(&mut machine, &Event::AlreadyExists { key: key() }),
            vec![Effect::LookUpCluster { key: key() }]
        );
        assert_eq!(
            step(
                &mut machine,
                &Event::LookupFound {
                    key: key(),
                    ids: sample_ids()
                }
            ),
            vec![Effect::WriteRegistration { ids: sample_ids() }]
        );
        assert_eq!(machine.state_name(), "registered");
    }

    #[test]
    fn answers_about_a_former_name_are_stale() {
        let mut machine = machine_in("looking_up");
        let outcome = step_at(
            &mut machine,
            &Event::ConfigChanged {
                spec: renamed_spec(),
            },
            testkit::T0,
        );
        assert!(outcome.cancels, "the look-up for the old name is obsolete");
        assert_eq!(
            outcome.effects,
            vec![Effect::LookUpCluster {
                key: renamed_spec().key()
            }]
        );
        assert!(
            step(
                &mut machine,
                &Event::LookupFound {
                    key: key(),
                    ids: sample_ids()
                }
            )
            .is_empty()
        );
        assert!(step(&mut machine, &Event::LookupMissing { key: key() }).is_empty());
        assert_eq!(machine.state_name(), "looking_up");
    }

    #[test]
    fn ids_written_by_hand_are_adopted() {
        let other = ClusterIds {
            cluster_id: "c-2".to_string(),
            cluster_group_id: "g-2".to_string(),
        };
        for state in ["registered", "rejected"] {
            let mut machine = machine_in(state);
            assert!(
                step(
                    &mut machine,
                    &Event::IdsChanged {
                        ids: Some(other.clone())
                    }
                )
                .is_empty()
            );
            assert_eq!(machine.ids(), Some(&other), "from {state}");
        }
    }

    #[test]
    fn an_emptied_config_map_is_written_again_once() {
        let mut machine = machine_in("registered");
        let gone = Event::IdsChanged { ids: None };
        assert_eq!(
            step(&mut machine, &gone),
            vec![Effect::WriteRegistration { ids: sample_ids() }]
        );
        assert!(
            step(&mut machine, &gone).is_empty(),
            "the same observation again"
        );
        assert!(
            step(
                &mut machine,
                &Event::IdsChanged {
                    ids: Some(sample_ids())
                }
            )
            .is_empty()
        );
        assert_eq!(
            step(&mut machine, &gone),
            vec![Effect::WriteRegistration { ids: sample_ids() }]
        );
    }

    #[test]
    fn deregistration_supersedes_pending_work() {
        let mut machine = machine_in("registered");
        let outcome = step_at(&mut machine, &Event::DeregistrationRequested, testkit::T0);
        assert!(outcome.cancels);
        assert_eq!(
            outcome.effects,
            vec![Effect::DeregisterCluster {
                nca_id: "nca-1".to_string(),
                cluster_id: "c-1".to_string()
            }]
        );
        assert_eq!(
            step(&mut machine, &Event::Deregistered),
            vec![Effect::ClearRegistration]
        );
        assert_eq!(machine.state_name(), "unregistered");
    }

    #[test]
    fn deregistration_without_ids_looks_the_cluster_up_first() {
        let mut machine = ClusterMachine::new(sample_spec());
        assert_eq!(
            step(&mut machine, &Event::DeregistrationRequested),
            vec![Effect::LookUpCluster { key: key() }]
        );
        assert_eq!(
            step(
                &mut machine,
                &Event::LookupFound {
                    key: key(),
                    ids: sample_ids()
                }
            ),
            vec![Effect::DeregisterCluster {
                nca_id: "nca-1".to_string(),
                cluster_id: "c-1".to_string()
            }]
        );

        let mut unknown = ClusterMachine::new(sample_spec());
        run(&mut unknown, &[Event::DeregistrationRequested]);
        assert_eq!(
            step(&mut unknown, &Event::LookupMissing { key: key() }),
            vec![Effect::ClearRegistration]
        );
        assert_eq!(unknown.state_name(), "unregistered");
    }

    #[test]
    fn a_create_in_flight_during_deregistration_is_undone() {
        let mut machine = machine_in("registering");
        assert_eq!(
            step(&mut machine, &Event::DeregistrationRequested),
            vec![Effect::LookUpCluster { key: key() }]
        );
        let outcome = step_at(
            &mut machine,
            &Event::Registered {
                key: key(),
                ids: sample_ids(),
            },
            testkit::T0,
        );
        assert!(outcome.cancels, "the look-up is no longer needed");
        assert_eq!(
            outcome.effects,
            vec![Effect::DeregisterCluster {
                nca_id: "nca-1".to_string(),
                cluster_id: "c-1".to_string()
            }]
        );
        assert!(
            step(
                &mut machine,
                &Event::LookupFound {
                    key: key(),
                    ids: sample_ids()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn a_rejection_parks_until_asked_again() {
        let mut machine = machine_in("registering");
        let refused = Event::EffectFailed {
            effect: Effect::RegisterCluster {
                spec: sample_spec(),
            },
            reason: "400 clusterName is invalid".to_string(),
        };
        assert!(step(&mut machine, &refused).is_empty());
        assert_eq!(machine.rejection(), Some("400 clusterName is invalid"));
        assert!(
            step(
                &mut machine,
                &Event::ConfigChanged {
                    spec: sample_spec()
                }
            )
            .is_empty(),
            "nothing changed"
        );
        assert_eq!(
            step(&mut machine, &Event::RegistrationRequested),
            vec![Effect::LookUpCluster { key: key() }]
        );
    }

    #[test]
    fn a_failed_write_keeps_the_registration() {
        let mut machine = machine_in("registered");
        let refused = Event::EffectFailed {
            effect: Effect::WriteRegistration { ids: sample_ids() },
            reason: "403 Forbidden".to_string(),
        };
        assert!(step(&mut machine, &refused).is_empty());
        assert_eq!(machine.ids(), Some(&sample_ids()));
    }

    #[test]
    fn a_stale_failure_does_not_park() {
        let mut machine = machine_in("registering");
        let stale = Event::EffectFailed {
            effect: Effect::LookUpCluster { key: key() },
            reason: "timeout".to_string(),
        };
        assert!(step(&mut machine, &stale).is_empty());
        assert_eq!(machine.state_name(), "registering");
    }

    fn fuzz_events() -> Vec<Event> {
        let mut events = sample_events();
        events.extend([
            Event::ConfigChanged {
                spec: sample_spec(),
            },
            Event::IdsChanged { ids: None },
            Event::IdsChanged {
                ids: Some(sample_ids()),
            },
            Event::LookupFound {
                key: renamed_spec().key(),
                ids: sample_ids(),
            },
            Event::LookupMissing {
                key: renamed_spec().key(),
            },
        ]);
        events.extend(
            sample_effects()
                .iter()
                .map(|effect| ClusterMachine::effect_failed(effect, "refused")),
        );
        events
    }

    proptest! {
        #[test]
        fn random_events_never_panic_and_repeats_do_nothing(
            start in 0..6usize,
            picks in prop::collection::vec((0..64usize, any::<bool>(), 0..600_000u64), 0..40),
        ) {
            testkit::replay(sample_machines()[start].clone(), &fuzz_events(), &picks, |_| false);
        }
    }
}
