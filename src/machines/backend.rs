//! One NVCFBackend, keyed by `<namespace>/<name>`: provision NVCA's agent step by step,
//! keep it, and when the NVCFBackend is deleted drain, clean up in NVIDIA's order and
//! release the finalizer.
//!
//! ```text
//!  live ─────────────────────────────────────────────────────────────────────────────┐
//!  │ pending ──FinalizerAdded──▶ provisioning{step} ──StepApplied(last)──▶ ready      │
//!  │  │ SpecChanged:                │  StepApplied(step): next step   ↺ AgentObserved │
//!  │  │ AddFinalizer                │  EffectFailed          SpecChanged, DriftDetected│
//!  │  ▲                             ▼                      → provisioning{first}      │
//!  │  └────── SpecChanged ──── failed{reason}                                         │
//!  └───────────────────────────────── DeletionObserved{remaining} ───────────────────┘
//!            deployments remain │                    │ none remain
//!                               ▼                    │
//!  deleting ── draining{remaining} ─ DeploymentsObserved [] ─┐
//!  │                                                 ▼       ▼
//!  │   cleanup_failed{reason} ◀─EffectFailed─ cleaning_up{step} ─StepCleaned(last)─▶ releasing
//!  │            └── DeletionObserved: from the first step ──▲                          │
//!  └───────────────────────────────────────────────────────────────── FinalizerRemoved ▼
//!                                                                                released
//! ```
//!
//! Every transition queues its work (one effect per step, each answered by an event) and
//! then `ProjectStatus`, so status, conditions and Events follow each step. Every apply is
//! idempotent, which is why a spec change or drift simply starts over from the first step,
//! and why a failed clean-up retries from its first step too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statig::prelude::*;
use strum::VariantArray;

use super::{Describe, Kind, Machine, Step};

/// The finalizer nvca puts on every NVCFBackend, NVIDIA's name.
pub const FINALIZER: &str = "nvca-operator.finalizers.nvidia.io";

/// What the operator applies for the agent, in the order of NVIDIA's `setupNVCAAgentInfra`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    VariantArray,
)]
pub enum ProvisionStep {
    /// Namespace `nvca-system` with its labels, annotations and ResourceQuota.
    SystemNamespace,
    /// Namespace `nvcf-backend`, where function workloads run.
    RequestsNamespace,
    /// The agent's image pull secrets.
    PullSecrets,
    /// Secrets `nvca-webhook-tls-server-certs` and `nvca-webhook-tls-ca-certs`.
    WebhookCerts,
    /// ConfigMap `nvca-namespace-networkpolicies`.
    NetworkPolicies,
    /// ServiceAccount, ClusterRole and ClusterRoleBinding `nvca`.
    Rbac,
    /// Service `nvca` in `nvca-system`.
    Service,
    /// ValidatingWebhookConfiguration and MutatingWebhookConfiguration `nvca`.
    WebhookConfigurations,
    /// ConfigMap `agent-config`.
    AgentConfig,
    /// Deployment `nvca` in `nvca-system`.
    AgentDeployment,
}

/// What deletion removes, in the order of NVIDIA's `CleanupBackendResources`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    VariantArray,
)]
pub enum CleanupStep {
    /// Strip the finalizers of every ICMSRequest and delete them.
    IcmsRequests,
    /// Namespaces labelled `nvca.nvcf.nvidia.io/workload-instance-type` (`sr-*`).
    WorkloadNamespaces,
    /// Namespaces `nvca-system` and `nvca-modelcache-init`.
    SystemNamespace,
    /// Namespace `nvcf-backend`.
    RequestsNamespace,
    /// ValidatingWebhookConfiguration and MutatingWebhookConfiguration `nvca`.
    WebhookConfigurations,
    /// ClusterRole and ClusterRoleBinding `nvca`.
    ClusterRbac,
    /// Secrets that `nvca-mirror` copied (label `app.kubernetes.io/managed-by=nvca-mirror`).
    MirroredSecrets,
}

/// Steps taken in their declared order.
trait Ordered: Copy + PartialEq + VariantArray + Into<&'static str> {
    fn first() -> Self {
        Self::VARIANTS[0]
    }

    fn next(self) -> Option<Self> {
        let index = Self::VARIANTS.iter().position(|step| *step == self)?;
        Self::VARIANTS.get(index + 1).copied()
    }

    /// "`<name>` (`n` of `total`)", for status messages.
    fn progress(self) -> String {
        let index = Self::VARIANTS
            .iter()
            .position(|step| *step == self)
            .unwrap_or(0);
        format!(
            "{} ({} of {})",
            self.into(),
            index + 1,
            Self::VARIANTS.len()
        )
    }
}

impl Ordered for ProvisionStep {}
impl Ordered for CleanupStep {}

/// NVIDIA's maintenance modes, set as feature flags in ConfigMap `agent-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum MaintenanceMode {
    /// Existing workloads keep running; no new ones are scheduled.
    CordonMaintenance,
    /// Every workload is terminated and state updates are ignored.
    CordonAndDrainMaintenance,
}

/// The agent's `/healthz` status, as NVIDIA's operator copies it into `status.agentStatus`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr,
)]
pub enum AgentStatus {
    #[strum(serialize = "healthy")]
    Healthy,
    #[strum(serialize = "unhealthy")]
    Unhealthy,
    /// The health endpoint did not answer.
    #[default]
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub available: u64,
    pub capacity: u64,
    pub allocated: u64,
}

/// One reading of the agent's `/healthz`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    pub status: AgentStatus,
    pub k8s_version: String,
    /// By GPU name.
    pub gpu_usage: BTreeMap<String, GpuUsage>,
}

/// `status.phase` of the NVCFBackend: nvca's addition beside NVIDIA's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum Phase {
    Pending,
    Provisioning,
    Ready,
    Failed,
    Draining,
    CleaningUp,
    CleanupFailed,
    Releasing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ConditionKind {
    /// The agent's infrastructure is applied as the spec says.
    Ready,
    /// The agent's `/healthz` says healthy.
    AgentHealthy,
    /// The NVCFBackend is being deleted; the reason says what deletion waits for.
    Deleting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub kind: ConditionKind,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl Condition {
    fn new(kind: ConditionKind, status: ConditionStatus, reason: &str, message: String) -> Self {
        Condition {
            kind,
            status,
            reason: reason.to_string(),
            message,
        }
    }
}

/// The NVCFBackend's status as the machine sees it; the kube layer writes it (keeping
/// `lastTransitionTime` of unchanged conditions) and emits an Event per step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusProjection {
    /// `status.observedGeneration`.
    pub observed_generation: Option<u64>,
    pub phase: Phase,
    /// The provisioning or clean-up step under way.
    pub step: Option<String>,
    /// `status.agentStatus`, `kubernetesVersion` and `gpuUsage`.
    pub agent: AgentReport,
    pub conditions: Vec<Condition>,
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Event {
    /// The NVCFBackend's spec was observed at this `metadata.generation`; a change of the
    /// cluster IDs reaches the spec, and so this event, too.
    SpecChanged { generation: u64 },
    /// The finalizer is on the NVCFBackend (outcome of `AddFinalizer`).
    FinalizerAdded,
    /// A provisioning step is applied (outcome of `Provision`).
    StepApplied(ProvisionStep),
    /// An object of this step no longer matches what was applied.
    DriftDetected(ProvisionStep),
    /// The agent's health endpoint was read.
    AgentObserved(AgentReport),
    /// The status is written (outcome of `ProjectStatus`).
    StatusProjected,
    /// The NVCFBackend has a deletion timestamp; `remaining` names the ICMSRequests left.
    DeletionObserved { remaining: Vec<String> },
    /// The ICMSRequests that remain.
    DeploymentsObserved { remaining: Vec<String> },
    /// The maintenance mode is set (outcome of `SetMaintenance`).
    MaintenanceSet,
    /// A clean-up step is done: what it deletes is gone (outcome of `Cleanup`).
    StepCleaned(CleanupStep),
    /// The finalizer is off (outcome of `RemoveFinalizer`).
    FinalizerRemoved,
    /// An effect failed for good.
    EffectFailed { effect: Effect, reason: String },
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Effect {
    /// Add finalizer [`FINALIZER`] to the NVCFBackend.
    AddFinalizer,
    /// Apply the objects of one step, built from the NVCFBackend's current spec.
    Provision(ProvisionStep),
    /// Write the NVCFBackend's status.
    ProjectStatus(StatusProjection),
    /// Set a maintenance mode in ConfigMap `agent-config`.
    SetMaintenance(MaintenanceMode),
    /// Delete the objects of one step; absent ones count as deleted.
    Cleanup(CleanupStep),
    /// Remove finalizer [`FINALIZER`] from the NVCFBackend.
    RemoveFinalizer,
}

impl Describe for Effect {
    fn describe(&self) -> String {
        match self {
            Effect::AddFinalizer => format!("add finalizer {FINALIZER}"),
            Effect::Provision(step) => format!("apply {}", <&str>::from(step)),
            Effect::ProjectStatus(status) => {
                let step = status
                    .step
                    .as_deref()
                    .map(|step| format!(" at {step}"))
                    .unwrap_or_default();
                format!("write status {}{step}", <&str>::from(status.phase))
            }
            Effect::SetMaintenance(mode) => format!("set maintenance mode {}", <&str>::from(mode)),
            Effect::Cleanup(step) => format!("delete {}", <&str>::from(step)),
            Effect::RemoveFinalizer => format!("remove finalizer {FINALIZER}"),
        }
    }
}

/// How many remaining deployments a condition names before it only counts.
const NAMED_DEPLOYMENTS: usize = 10;

/// The shared storage of the machine: what it knows in every state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    namespace: String,
    name: String,
    /// The newest spec generation seen.
    generation: Option<u64>,
    agent: AgentReport,
}

#[state_machine(
    initial = "State::pending()",
    state(derive(Clone, Debug, PartialEq, Serialize, Deserialize)),
    context_identifier = "step",
    after_transition = "Self::log_transition"
)]
impl Backend {
    /// Waiting for the finalizer, which goes on before anything is applied.
    #[state(superstate = "live")]
    fn pending(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::SpecChanged { generation } => {
                let first_sight = self.generation.is_none();
                self.is_newer(*generation);
                if first_sight {
                    self.go(State::pending(), Some(Effect::AddFinalizer), step)
                } else {
                    Handled
                }
            }
            Event::FinalizerAdded => self.provision_from_start(step),
            Event::EffectFailed {
                effect: Effect::AddFinalizer,
                reason,
            } => self.go(
                State::failed(format!("adding finalizer {FINALIZER}: {reason}")),
                None,
                step,
            ),
            _ => Super,
        }
    }

    #[state(superstate = "live")]
    fn provisioning(
        &mut self,
        current: &mut ProvisionStep,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::StepApplied(applied) if applied == current => match current.next() {
                Some(next) => self.go(
                    State::provisioning(next),
                    Some(Effect::Provision(next)),
                    step,
                ),
                None => self.go(State::ready(), None, step),
            },
            Event::SpecChanged { generation } if self.is_newer(*generation) => {
                step.cancel_pending();
                self.provision_from_start(step)
            }
            // A step already applied drifted; a later one is applied anyway.
            Event::DriftDetected(drifted) if drifted < current => {
                step.cancel_pending();
                self.provision_from_start(step)
            }
            Event::EffectFailed {
                effect: Effect::Provision(failed),
                reason,
            } if failed == current => {
                let reason = format!("applying {}: {reason}", <&str>::from(*current));
                self.go(State::failed(reason), None, step)
            }
            _ => Super,
        }
    }

    #[state(superstate = "live")]
    fn ready(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::SpecChanged { generation } if self.is_newer(*generation) => {
                self.provision_from_start(step)
            }
            Event::DriftDetected(_) => self.provision_from_start(step),
            Event::AgentObserved(report) if *report != self.agent => {
                self.agent = report.clone();
                step.queue(Effect::ProjectStatus(self.project(&State::ready())));
                Handled
            }
            _ => Super,
        }
    }

    /// Parked after a permanent failure, until the spec changes.
    #[state(superstate = "live")]
    fn failed(
        &mut self,
        reason: &mut String,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::SpecChanged { generation } if self.is_newer(*generation) => {
                tracing::info!(%reason, "provisioning again after a failure");
                self.go(State::pending(), Some(Effect::AddFinalizer), step)
            }
            _ => Super,
        }
    }

    /// The NVCFBackend exists and is not being deleted.
    #[superstate]
    fn live(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::DeletionObserved { remaining } => {
                // Whatever provisioning still had queued is moot now.
                step.cancel_pending();
                self.start_deletion(remaining, step)
            }
            Event::AgentObserved(report) => {
                // Shown with the next status this machine writes.
                self.agent = report.clone();
                Handled
            }
            _ => self.ignore(event),
        }
    }

    /// Function deployments remain; the agent drains them in maintenance mode.
    #[state(superstate = "deleting")]
    fn draining(
        &mut self,
        remaining: &mut Vec<String>,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::DeploymentsObserved { remaining: now }
            | Event::DeletionObserved { remaining: now } => {
                let now = sorted(now);
                if now.is_empty() {
                    self.clean_up_from_start(step)
                } else if now != *remaining {
                    step.queue(Effect::ProjectStatus(
                        self.project(&State::draining(now.clone())),
                    ));
                    *remaining = now;
                    Handled
                } else {
                    Handled
                }
            }
            _ => Super,
        }
    }

    #[state(superstate = "deleting")]
    fn cleaning_up(
        &mut self,
        current: &mut CleanupStep,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::StepCleaned(cleaned) if cleaned == current => match current.next() {
                Some(next) => self.go(State::cleaning_up(next), Some(Effect::Cleanup(next)), step),
                None => self.go(State::releasing(), Some(Effect::RemoveFinalizer), step),
            },
            Event::EffectFailed {
                effect: Effect::Cleanup(failed),
                reason,
            } if failed == current => {
                let reason = format!("deleting {}: {reason}", <&str>::from(*current));
                self.go(State::cleanup_failed(reason), None, step)
            }
            _ => Super,
        }
    }

    /// Parked after a permanent failure; the next observation of the deletion retries.
    #[state(superstate = "deleting")]
    fn cleanup_failed(
        &mut self,
        reason: &mut String,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::DeletionObserved { .. } => {
                tracing::info!(%reason, "cleaning up again after a failure");
                self.clean_up_from_start(step)
            }
            _ => Super,
        }
    }

    #[state(superstate = "deleting")]
    fn releasing(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::FinalizerRemoved => Transition(State::released()),
            Event::EffectFailed {
                effect: Effect::RemoveFinalizer,
                reason,
            } => {
                let reason = format!("removing finalizer {FINALIZER}: {reason}");
                self.go(State::cleanup_failed(reason), None, step)
            }
            _ => Super,
        }
    }

    #[superstate]
    fn deleting(&mut self, event: &Event) -> Outcome<State> {
        self.ignore(event)
    }

    /// The finalizer is off; Kubernetes removes the NVCFBackend.
    #[state]
    fn released(&mut self, event: &Event) -> Outcome<State> {
        self.ignore(event)
    }
}

impl Backend {
    /// Transition to `target`: queue the status it projects, then its work, so that while
    /// a step works (a namespace can take minutes to go) the status already names it.
    fn go(&self, target: State, work: Option<Effect>, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(Effect::ProjectStatus(self.project(&target)));
        if let Some(work) = work {
            step.queue(work);
        }
        Transition(target)
    }

    fn provision_from_start(&self, step: &mut Step<Effect>) -> Outcome<State> {
        let first = ProvisionStep::first();
        self.go(
            State::provisioning(first),
            Some(Effect::Provision(first)),
            step,
        )
    }

    fn clean_up_from_start(&self, step: &mut Step<Effect>) -> Outcome<State> {
        let first = CleanupStep::first();
        self.go(
            State::cleaning_up(first),
            Some(Effect::Cleanup(first)),
            step,
        )
    }

    fn start_deletion(&self, remaining: &[String], step: &mut Step<Effect>) -> Outcome<State> {
        let remaining = sorted(remaining);
        if remaining.is_empty() {
            return self.clean_up_from_start(step);
        }
        let drain = Effect::SetMaintenance(MaintenanceMode::CordonAndDrainMaintenance);
        self.go(State::draining(remaining), Some(drain), step)
    }

    /// Remember `generation` if it is newer than any seen; say whether it was.
    fn is_newer(&mut self, generation: u64) -> bool {
        let newer = self.generation.is_none_or(|seen| generation > seen);
        if newer {
            self.generation = Some(generation);
        }
        newer
    }

    /// The status that goes with `state`.
    fn project(&self, state: &State) -> StatusProjection {
        use ConditionKind::{Deleting, Ready};
        use ConditionStatus::{False, True};
        let not_ready =
            |reason: &str, message: String| Condition::new(Ready, False, reason, message);
        let deleting = |reason: &str, message: String| {
            vec![
                not_ready("Deleting", "the NVCFBackend is being deleted".to_string()),
                Condition::new(Deleting, True, reason, message),
            ]
        };
        let (phase, step, mut conditions) = match state {
            State::Pending {} => (
                Phase::Pending,
                None,
                vec![not_ready(
                    "AddingFinalizer",
                    format!("adding finalizer {FINALIZER}"),
                )],
            ),
            State::Provisioning { current } => (
                Phase::Provisioning,
                Some(<&str>::from(*current)),
                vec![not_ready(
                    "Provisioning",
                    format!("applying {}", current.progress()),
                )],
            ),
            State::Ready {} => (
                Phase::Ready,
                None,
                vec![Condition::new(
                    Ready,
                    True,
                    "Provisioned",
                    "the agent's objects are applied".to_string(),
                )],
            ),
            State::Failed { reason } => (
                Phase::Failed,
                None,
                vec![not_ready("ProvisioningFailed", reason.clone())],
            ),
            State::Draining { remaining } => (
                Phase::Draining,
                None,
                deleting("FunctionDeploymentsRemain", drain_message(remaining)),
            ),
            State::CleaningUp { current } => (
                Phase::CleaningUp,
                Some(<&str>::from(*current)),
                deleting("CleaningUp", format!("deleting {}", current.progress())),
            ),
            State::CleanupFailed { reason } => (
                Phase::CleanupFailed,
                None,
                deleting("CleanupFailed", reason.clone()),
            ),
            State::Releasing {} | State::Released {} => (
                Phase::Releasing,
                None,
                deleting(
                    "RemovingFinalizer",
                    format!("removing finalizer {FINALIZER}"),
                ),
            ),
        };
        conditions.insert(1, self.agent_condition());
        StatusProjection {
            observed_generation: self.generation,
            phase,
            step: step.map(str::to_string),
            agent: self.agent.clone(),
            conditions,
        }
    }

    fn agent_condition(&self) -> Condition {
        let (status, reason) = match self.agent.status {
            AgentStatus::Healthy => (ConditionStatus::True, "Healthy"),
            AgentStatus::Unhealthy => (ConditionStatus::False, "Unhealthy"),
            AgentStatus::Unknown => (ConditionStatus::Unknown, "NoAnswer"),
        };
        let message = format!(
            "the agent's /healthz says {}",
            <&str>::from(self.agent.status)
        );
        Condition::new(ConditionKind::AgentHealthy, status, reason, message)
    }

    /// Stale outcomes, repeated observations and failures of effects nobody waits for.
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
        tracing::debug!(from = state_name(source), to = state_name(target), backend = %format!("{}/{}", self.namespace, self.name), "backend");
    }
}

/// What the drain waits for, and the two ways out.
fn drain_message(remaining: &[String]) -> String {
    let mut named = remaining
        .iter()
        .take(NAMED_DEPLOYMENTS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if remaining.len() > NAMED_DEPLOYMENTS {
        named.push_str(&format!(
            " and {} more",
            remaining.len() - NAMED_DEPLOYMENTS
        ));
    }
    format!(
        "waiting for {} function deployment(s) to end: {named}. Undeploy them through NVCF, \
         or run `nvca-state force-cleanup` to remove them",
        remaining.len()
    )
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    names
}

/// The states of an NVCFBackend by name: what a stored summary's `state` holds
/// (snake_case), for code outside the machines to ask about without spelling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum BackendState {
    Pending,
    Provisioning,
    Ready,
    Failed,
    Draining,
    CleaningUp,
    CleanupFailed,
    Releasing,
    Released,
}

impl BackendState {
    /// The typed state a summary\'s `state` names; `None` for no state of this machine.
    pub fn of(state: &str) -> Option<BackendState> {
        state.parse().ok()
    }

    /// Whether `state` (a summary's) is this one.
    pub fn is(self, state: &str) -> bool {
        state.parse() == Ok(self)
    }
}

fn state_name(state: &State) -> &'static str {
    let name = match state {
        State::Pending {} => BackendState::Pending,
        State::Provisioning { .. } => BackendState::Provisioning,
        State::Ready {} => BackendState::Ready,
        State::Failed { .. } => BackendState::Failed,
        State::Draining { .. } => BackendState::Draining,
        State::CleaningUp { .. } => BackendState::CleaningUp,
        State::CleanupFailed { .. } => BackendState::CleanupFailed,
        State::Releasing {} => BackendState::Releasing,
        State::Released {} => BackendState::Released,
    };
    name.into()
}

/// One NVCFBackend, as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct BackendMachine {
    machine: StateMachine<Backend>,
}

impl BackendMachine {
    pub fn new(namespace: &str, name: &str) -> Self {
        let backend = Backend {
            namespace: namespace.to_string(),
            name: name.to_string(),
            generation: None,
            agent: AgentReport::default(),
        };
        BackendMachine {
            machine: backend.state_machine(),
        }
    }

    /// The status that goes with the current state.
    pub fn status(&self) -> StatusProjection {
        self.machine.inner().project(self.machine.state())
    }

    /// Run statig's entry actions after a restore; they only log.
    pub fn init(&mut self, step: &mut Step<Effect>) {
        self.machine.init_with_context(step);
    }
}

impl Machine for BackendMachine {
    const KIND: Kind = Kind::Backend;
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

    fn is_final(&self) -> bool {
        matches!(self.machine.state(), State::Released {})
    }
}

#[cfg(test)]
fn healthy() -> AgentReport {
    let h100 = GpuUsage {
        available: 6,
        capacity: 8,
        allocated: 2,
    };
    AgentReport {
        status: AgentStatus::Healthy,
        k8s_version: "v1.33.1".to_string(),
        gpu_usage: BTreeMap::from([("H100".to_string(), h100)]),
    }
}

#[cfg(test)]
fn deployments(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// The events that take a new NVCFBackend to `ready`.
#[cfg(test)]
fn to_ready() -> Vec<Event> {
    let mut events = vec![Event::SpecChanged { generation: 1 }, Event::FinalizerAdded];
    events.extend(
        ProvisionStep::VARIANTS
            .iter()
            .map(|step| Event::StepApplied(*step)),
    );
    events
}

/// The events that take a `ready` NVCFBackend through deletion to `releasing`.
#[cfg(test)]
fn to_releasing() -> Vec<Event> {
    let mut events = vec![Event::DeletionObserved {
        remaining: Vec::new(),
    }];
    events.extend(
        CleanupStep::VARIANTS
            .iter()
            .map(|step| Event::StepCleaned(*step)),
    );
    events
}

/// One machine per state, each reached through real events.
#[cfg(test)]
pub(crate) fn sample_machines() -> Vec<BackendMachine> {
    let at = |groups: &[&[Event]]| {
        let mut machine = BackendMachine::new("nvca-operator", "ncp-local");
        for events in groups {
            super::testkit::run(&mut machine, events);
        }
        machine
    };
    let ready = to_ready();
    let provisioning = &ready[..2];
    let failed = Event::EffectFailed {
        effect: Effect::Provision(ProvisionStep::SystemNamespace),
        reason: "422 Unprocessable Entity".to_string(),
    };
    let deletion = to_releasing();
    let cleanup_failed = Event::EffectFailed {
        effect: Effect::Cleanup(CleanupStep::IcmsRequests),
        reason: "403 Forbidden".to_string(),
    };
    vec![
        at(&[]),
        at(&[provisioning]),
        at(&[&ready]),
        at(&[provisioning, &[failed]]),
        at(&[
            &ready,
            &[Event::DeletionObserved {
                remaining: deployments(&["sr-b", "sr-a"]),
            }],
        ]),
        at(&[&ready, &deletion[..1]]),
        at(&[&ready, &deletion[..1], &[cleanup_failed]]),
        at(&[&ready, &deletion]),
        at(&[&ready, &deletion, &[Event::FinalizerRemoved]]),
    ]
}

/// One event of every variant.
#[cfg(test)]
pub(crate) fn sample_events() -> Vec<Event> {
    vec![
        Event::SpecChanged { generation: 2 },
        Event::FinalizerAdded,
        Event::StepApplied(ProvisionStep::SystemNamespace),
        Event::DriftDetected(ProvisionStep::Rbac),
        Event::AgentObserved(healthy()),
        Event::StatusProjected,
        Event::DeletionObserved {
            remaining: deployments(&["sr-a"]),
        },
        Event::DeploymentsObserved {
            remaining: Vec::new(),
        },
        Event::MaintenanceSet,
        Event::StepCleaned(CleanupStep::IcmsRequests),
        Event::FinalizerRemoved,
        Event::EffectFailed {
            effect: Effect::Provision(ProvisionStep::SystemNamespace),
            reason: "422 Unprocessable Entity".to_string(),
        },
    ]
}

/// One effect of every variant.
#[cfg(test)]
pub(crate) fn sample_effects() -> Vec<Effect> {
    vec![
        Effect::AddFinalizer,
        Effect::Provision(ProvisionStep::AgentDeployment),
        Effect::ProjectStatus(sample_machines()[4].status()),
        Effect::SetMaintenance(MaintenanceMode::CordonAndDrainMaintenance),
        Effect::Cleanup(CleanupStep::MirroredSecrets),
        Effect::RemoveFinalizer,
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use strum::VariantNames;

    use super::*;
    use crate::machines::testkit::{self, Row, T0, assert_covers, names, row, run, step, step_at};

    const ADD: &[&str] = &["ProjectStatus", "AddFinalizer"];
    const PROVISION: &[&str] = &["ProjectStatus", "Provision"];
    const STATUS: &[&str] = &["ProjectStatus"];
    const DRAIN: &[&str] = &["ProjectStatus", "SetMaintenance"];
    const CLEAN: &[&str] = &["ProjectStatus", "Cleanup"];
    const NONE: &[&str] = &[];

    /// Every pair not listed here must be ignored: same state, no effect.
    const ROWS: &[Row] = &[
        row("pending", "SpecChanged", "pending", ADD),
        row("pending", "FinalizerAdded", "provisioning", PROVISION),
        row("pending", "DeletionObserved", "draining", DRAIN),
        row("provisioning", "SpecChanged", "provisioning", PROVISION),
        row("provisioning", "StepApplied", "provisioning", PROVISION),
        row("provisioning", "DeletionObserved", "draining", DRAIN),
        row("provisioning", "EffectFailed", "failed", STATUS),
        row("ready", "SpecChanged", "provisioning", PROVISION),
        row("ready", "DriftDetected", "provisioning", PROVISION),
        row("ready", "AgentObserved", "ready", STATUS),
        row("ready", "DeletionObserved", "draining", DRAIN),
        row("failed", "SpecChanged", "pending", ADD),
        row("failed", "DeletionObserved", "draining", DRAIN),
        row("draining", "DeletionObserved", "draining", STATUS),
        row("draining", "DeploymentsObserved", "cleaning_up", CLEAN),
        row("cleaning_up", "StepCleaned", "cleaning_up", CLEAN),
        row("cleanup_failed", "DeletionObserved", "cleaning_up", CLEAN),
        row("releasing", "FinalizerRemoved", "released", NONE),
    ];

    fn machine_in(state: &str) -> BackendMachine {
        sample_machines()
            .into_iter()
            .find(|machine| machine.state_name() == state)
            .expect("a sample in that state")
    }

    fn statuses(effects: &[Effect]) -> Vec<&StatusProjection> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::ProjectStatus(status) => Some(status),
                _ => None,
            })
            .collect()
    }

    fn condition(status: &StatusProjection, kind: ConditionKind) -> &Condition {
        status
            .conditions
            .iter()
            .find(|condition| condition.kind == kind)
            .expect("the condition is projected")
    }

    #[test]
    fn every_state_meets_every_event_as_the_table_says() {
        testkit::assert_matrix(&sample_machines(), &sample_events(), ROWS);
    }

    #[test]
    fn samples_cover_every_state_event_and_effect() {
        let states: Vec<&str> = sample_machines().iter().map(Machine::state_name).collect();
        let all = [
            "pending",
            "provisioning",
            "ready",
            "failed",
            "draining",
            "cleaning_up",
            "cleanup_failed",
            "releasing",
            "released",
        ];
        assert_covers("states", &states, &all);
        assert_covers("events", &names(&sample_events()), Event::VARIANTS);
        assert_covers("effects", &names(&sample_effects()), Effect::VARIANTS);
    }

    #[test]
    fn every_state_restores_without_effects() {
        for machine in sample_machines() {
            testkit::assert_restores_quietly(&machine, BackendMachine::init);
        }
    }

    #[test]
    fn effects_describe_themselves_on_one_line() {
        testkit::assert_one_line_descriptions(&sample_effects());
    }

    #[test]
    fn the_finalizer_goes_on_before_nvidias_provisioning_order() {
        let mut machine = BackendMachine::new("nvca-operator", "ncp-local");
        let mut work = Vec::new();
        for event in to_ready() {
            work.extend(
                step(&mut machine, &event)
                    .into_iter()
                    .filter(|effect| !matches!(effect, Effect::ProjectStatus(_))),
            );
        }
        let mut expected = vec![Effect::AddFinalizer];
        expected.extend(
            ProvisionStep::VARIANTS
                .iter()
                .map(|step| Effect::Provision(*step)),
        );
        assert_eq!(work, expected);
        assert_eq!(machine.state_name(), "ready");
    }

    #[test]
    fn every_step_is_announced_by_its_status_before_it_runs() {
        let mut machine = machine_in("provisioning");
        let effects = step(
            &mut machine,
            &Event::StepApplied(ProvisionStep::SystemNamespace),
        );
        assert!(matches!(effects[0], Effect::ProjectStatus(_)));
        assert_eq!(
            effects[1],
            Effect::Provision(ProvisionStep::RequestsNamespace)
        );
        let status = statuses(&effects)[0];
        assert_eq!(
            (status.phase, status.step.as_deref()),
            (Phase::Provisioning, Some("RequestsNamespace"))
        );
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            condition(status, ConditionKind::Ready).message,
            "applying RequestsNamespace (2 of 10)"
        );
    }

    #[test]
    fn a_repeated_or_foreign_step_outcome_does_no_work() {
        let mut machine = machine_in("provisioning");
        run(
            &mut machine,
            &[Event::StepApplied(ProvisionStep::SystemNamespace)],
        );
        assert!(
            step(
                &mut machine,
                &Event::StepApplied(ProvisionStep::SystemNamespace)
            )
            .is_empty()
        );
        assert!(step(&mut machine, &Event::StepApplied(ProvisionStep::Service)).is_empty());
        assert_eq!(machine.status().step.as_deref(), Some("RequestsNamespace"));
    }

    #[test]
    fn a_newer_spec_starts_over_and_drops_queued_work() {
        let mut machine = machine_in("provisioning");
        run(
            &mut machine,
            &[Event::StepApplied(ProvisionStep::SystemNamespace)],
        );
        let outcome = step_at(&mut machine, &Event::SpecChanged { generation: 2 }, T0);
        assert!(outcome.cancels);
        assert_eq!(
            outcome.effects[1],
            Effect::Provision(ProvisionStep::SystemNamespace)
        );
        for generation in [1, 2] {
            assert!(
                step(&mut machine, &Event::SpecChanged { generation }).is_empty(),
                "generation {generation}"
            );
        }
    }

    #[test]
    fn drift_reapplies_from_the_first_step() {
        let mut machine = machine_in("ready");
        let effects = step(
            &mut machine,
            &Event::DriftDetected(ProvisionStep::AgentConfig),
        );
        assert_eq!(
            effects[1],
            Effect::Provision(ProvisionStep::SystemNamespace)
        );
        run(
            &mut machine,
            &[Event::StepApplied(ProvisionStep::SystemNamespace)],
        );
        assert!(
            step(&mut machine, &Event::DriftDetected(ProvisionStep::Service)).is_empty(),
            "not applied yet"
        );
        let outcome = step_at(
            &mut machine,
            &Event::DriftDetected(ProvisionStep::SystemNamespace),
            T0,
        );
        assert!(outcome.cancels);
        assert_eq!(
            outcome.effects[1],
            Effect::Provision(ProvisionStep::SystemNamespace)
        );
    }

    #[test]
    fn agent_health_is_projected_once_per_change() {
        let mut machine = machine_in("ready");
        let effects = step(&mut machine, &Event::AgentObserved(healthy()));
        let status = statuses(&effects)[0];
        assert_eq!(<&str>::from(status.agent.status), "healthy");
        assert_eq!(status.agent.gpu_usage["H100"].available, 6);
        assert_eq!(
            condition(status, ConditionKind::AgentHealthy).status,
            ConditionStatus::True
        );
        assert!(step(&mut machine, &Event::AgentObserved(healthy())).is_empty());
        let unhealthy = AgentReport {
            status: AgentStatus::Unhealthy,
            ..healthy()
        };
        assert_eq!(
            names(&step(&mut machine, &Event::AgentObserved(unhealthy))),
            STATUS
        );
    }

    #[test]
    fn health_seen_while_provisioning_shows_in_the_next_status() {
        let mut machine = machine_in("provisioning");
        assert!(step(&mut machine, &Event::AgentObserved(healthy())).is_empty());
        let effects = step(
            &mut machine,
            &Event::StepApplied(ProvisionStep::SystemNamespace),
        );
        assert_eq!(statuses(&effects)[0].agent, healthy());
    }

    #[test]
    fn a_failed_step_parks_until_the_spec_changes() {
        let mut machine = machine_in("failed");
        let status = machine.status();
        assert_eq!(status.phase, Phase::Failed);
        assert_eq!(
            condition(&status, ConditionKind::Ready).message,
            "applying SystemNamespace: 422 Unprocessable Entity"
        );
        assert!(step(&mut machine, &Event::SpecChanged { generation: 1 }).is_empty());
        assert!(step(&mut machine, &Event::DriftDetected(ProvisionStep::Rbac)).is_empty());
        assert_eq!(
            names(&step(&mut machine, &Event::SpecChanged { generation: 2 })),
            ADD
        );
    }

    #[test]
    fn deletion_drains_while_function_deployments_remain() {
        let mut machine = machine_in("ready");
        let outcome = step_at(
            &mut machine,
            &Event::DeletionObserved {
                remaining: deployments(&["sr-b", "sr-a"]),
            },
            T0,
        );
        assert!(outcome.cancels);
        assert_eq!(
            outcome.effects[1],
            Effect::SetMaintenance(MaintenanceMode::CordonAndDrainMaintenance)
        );
        let deleting = condition(statuses(&outcome.effects)[0], ConditionKind::Deleting);
        assert_eq!(deleting.reason, "FunctionDeploymentsRemain");
        assert!(
            deleting
                .message
                .contains("2 function deployment(s) to end: sr-a, sr-b"),
            "{}",
            deleting.message
        );
        assert!(deleting.message.contains("Undeploy them through NVCF"));
        assert!(deleting.message.contains("nvca-state force-cleanup"));

        assert!(
            step(
                &mut machine,
                &Event::DeploymentsObserved {
                    remaining: deployments(&["sr-a", "sr-b"])
                }
            )
            .is_empty()
        );
        assert_eq!(
            names(&step(
                &mut machine,
                &Event::DeploymentsObserved {
                    remaining: deployments(&["sr-a"])
                }
            )),
            STATUS
        );
        let effects = step(
            &mut machine,
            &Event::DeploymentsObserved {
                remaining: Vec::new(),
            },
        );
        assert_eq!(effects[1], Effect::Cleanup(CleanupStep::IcmsRequests));
    }

    #[test]
    fn a_long_drain_list_is_cut_short() {
        let many: Vec<String> = (0..12).map(|index| format!("sr-{index:02}")).collect();
        let message = drain_message(&many);
        assert!(message.contains("sr-09 and 2 more"), "{message}");
        assert!(!message.contains("sr-10"));
    }

    #[test]
    fn cleanup_follows_nvidias_order_then_releases_the_finalizer() {
        let mut machine = machine_in("ready");
        let mut work = Vec::new();
        for event in to_releasing() {
            work.extend(
                step(&mut machine, &event)
                    .into_iter()
                    .filter(|effect| !matches!(effect, Effect::ProjectStatus(_))),
            );
        }
        let mut expected: Vec<Effect> = CleanupStep::VARIANTS
            .iter()
            .map(|step| Effect::Cleanup(*step))
            .collect();
        expected.push(Effect::RemoveFinalizer);
        assert_eq!(work, expected);
        assert!(!machine.is_final());
        assert!(step(&mut machine, &Event::FinalizerRemoved).is_empty());
        assert!(machine.is_final());
    }

    #[test]
    fn deletion_before_the_finalizer_is_confirmed_still_cleans_up() {
        let mut machine = BackendMachine::new("nvca-operator", "ncp-local");
        run(&mut machine, &[Event::SpecChanged { generation: 1 }]);
        let outcome = step_at(
            &mut machine,
            &Event::DeletionObserved {
                remaining: Vec::new(),
            },
            T0,
        );
        assert!(outcome.cancels, "the finalizer is not needed any more");
        assert_eq!(
            outcome.effects[1],
            Effect::Cleanup(CleanupStep::IcmsRequests)
        );
        assert!(step(&mut machine, &Event::FinalizerAdded).is_empty());
    }

    #[test]
    fn a_failed_cleanup_retries_from_the_first_step_when_deletion_is_seen_again() {
        let mut machine = machine_in("cleanup_failed");
        assert_eq!(
            condition(&machine.status(), ConditionKind::Deleting).message,
            "deleting IcmsRequests: 403 Forbidden"
        );
        assert!(step(&mut machine, &Event::StepCleaned(CleanupStep::IcmsRequests)).is_empty());
        let effects = step(
            &mut machine,
            &Event::DeletionObserved {
                remaining: Vec::new(),
            },
        );
        assert_eq!(effects[1], Effect::Cleanup(CleanupStep::IcmsRequests));

        let mut releasing = machine_in("releasing");
        let refused = Event::EffectFailed {
            effect: Effect::RemoveFinalizer,
            reason: "409 Conflict".to_string(),
        };
        assert_eq!(names(&step(&mut releasing, &refused)), STATUS);
        assert_eq!(releasing.state_name(), "cleanup_failed");
    }

    #[test]
    fn released_is_final_and_inert() {
        let mut machine = machine_in("released");
        for event in sample_events() {
            assert!(step(&mut machine, &event).is_empty());
        }
        assert!(machine.is_final());
    }

    fn fuzz_events() -> Vec<Event> {
        let mut events = sample_events();
        events.extend(
            ProvisionStep::VARIANTS
                .iter()
                .map(|step| Event::StepApplied(*step)),
        );
        events.extend(
            CleanupStep::VARIANTS
                .iter()
                .map(|step| Event::StepCleaned(*step)),
        );
        events.extend([
            Event::SpecChanged { generation: 1 },
            Event::SpecChanged { generation: 3 },
            Event::DriftDetected(ProvisionStep::SystemNamespace),
            Event::AgentObserved(AgentReport::default()),
            Event::DeletionObserved {
                remaining: Vec::new(),
            },
            Event::DeploymentsObserved {
                remaining: deployments(&["sr-a", "sr-b"]),
            },
        ]);
        events.extend(
            sample_effects()
                .iter()
                .map(|effect| BackendMachine::effect_failed(effect, "refused")),
        );
        events
    }

    proptest! {
        #[test]
        fn random_events_never_panic_and_repeats_do_nothing(
            start in 0..9usize,
            picks in prop::collection::vec((0..64usize, any::<bool>(), 0..600_000u64), 0..60),
        ) {
            testkit::replay(sample_machines()[start].clone(), &fuzz_events(), &picks, |_| false);
        }
    }
}
