//! One function deployment: one SIS request, keyed by its request id, as NVIDIA's
//! ICMSRequest `sr-<requestId>` tracks it.
//!
//! ```text
//!           MessageReceived                Acknowledged
//!   idle ───────────────────▶ received ───────────────────▶ acknowledged
//!    │  RecordRequest,           │   AckMessage,                  │ every pod created
//!    │  ProjectRequest,          │   CreateInstance × count       ▼
//!    │  AcknowledgeRequest       │                         instances_starting ◀──┐
//!    │                           │                                │ every pod    │ a pod not
//!    │                           │                                ▼ ready        │ ready again
//!    │                           │                             running ──────────┘
//!    │                           │ EffectFailed (record, ack),
//!    │                           │ TerminationRequested, DrainRequested:
//!    │ TerminationRequested      │ AckMessage, RemoveRequest
//!    ▼                           ▼
//!   terminated ◀──── every pod gone: RemoveRequest ──── failed{class}, terminating
//!                                                         ▲ from any state after the ack:
//!                                                         │ an instance fails → failed{class},
//!                                                         │ every pod taken down → terminating
//! ```
//!
//! From `acknowledged` on, the request's state is derived from its instances (see
//! [`Instance`]): a pod observation is judged against NVIDIA's timeouts
//! ([`failure::judge`](super::failure::judge)), and every change of an instance's wire
//! state is reported to SIS exactly once. The queue message is acked once SIS has the
//! HTTP ack (or when the request is given up), and a redelivered message is acked again
//! without creating anything.
//!
//! Retry policy: none inside a request. A failed instance's pod is deleted and the
//! instance reported terminated by the service with NVIDIA's cause; NVCF replaces it with
//! a new request, as it does for NVIDIA's agent. Instance ids are never reused, so a late
//! event about an old pod can never be mistaken for a new one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use super::failure::{FailureClass, PodObservation, Timeouts, Verdict, judge};
use super::instance::{
    EndCause, Instance, InstanceReport, InstanceState, LegacyAction, RequestState,
    WireInstanceState, WireStatus, WorkloadKind,
};
use super::{Describe, Kind, Machine, Step, Timestamp};

/// A creation message, decoded as far as the machine needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRequest {
    pub request_id: String,
    /// The function id; a task's id for tasks.
    pub function_id: String,
    /// Empty for tasks.
    pub function_version_id: String,
    pub nca_id: String,
    pub message_batch_id: String,
    pub instance_type: String,
    pub gpu_name: String,
    pub instance_count: u32,
    pub kind: WorkloadKind,
    // The message itself may hold secret values (environment, telemetry keys), so it is not
    // kept here: the intake writes it into the request's Secret `sr-<requestId>` before the
    // machine exists, and the executors read it from there.
}

/// `status.requestStatus` of the ICMSRequest, NVIDIA's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum RequestStatus {
    RequestPending,
    RequestInProgress,
    RequestInstancesInProgress,
    RequestCompleted,
    RequestFailed,
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Event {
    /// A creation message was delivered from the queue (again, if redelivered).
    MessageReceived {
        request: FunctionRequest,
        receipt: String,
    },
    /// A creation message nvca cannot run (a container task, a Helm function): it is
    /// refused with a terminal report, an Event and an ack, never left on the queue.
    MessageRefused {
        request: FunctionRequest,
        receipt: String,
        reason: String,
    },
    /// The ICMSRequest's spec or status is written (outcome of `RecordRequest`,
    /// `ProjectRequest`).
    RequestRecorded,
    /// SIS accepted the acknowledgement (outcome of `AcknowledgeRequest`).
    Acknowledged,
    /// The queue took the ack (outcome of `AckMessage`).
    MessageAcked,
    /// The instance's pod was created (outcome of `CreateInstance`).
    InstanceCreated { instance_id: String },
    /// The pod watch saw the instance's pod.
    PodObserved {
        instance_id: String,
        pod: PodObservation,
    },
    /// The instance's pod is gone: deleted by `DeleteInstance`, or seen missing.
    InstanceDeleted { instance_id: String },
    /// SIS took a status update (outcome of `ReportInstance`).
    InstanceReported { instance_id: String },
    /// SIS answered a status update with 412: it has closed the request.
    ReportPreconditionFailed { instance_id: String },
    /// The store lost the machine; its ICMSRequest and pods were found. `acknowledged`:
    /// the ICMSRequest says SIS had the ack; `pods`: the request's pods, and whether each
    /// is ready (SIS is taken to have heard `running` of a ready one, `starting` of
    /// another, so nothing it has is reported again).
    Rebuilt {
        request: FunctionRequest,
        acknowledged: bool,
        pods: Vec<(String, bool)>,
    },
    /// SIS's periodic instance list names this instance of the request as active, in
    /// `state` (`starting`, `running` or `shutting-down`).
    InstanceListed { instance_id: String, state: String },
    /// NVCF asked to terminate these instances; none named means all.
    TerminationRequested { instance_ids: Vec<String> },
    /// The agent entered `CordonAndDrainMaintenance`.
    DrainRequested,
    /// The ICMSRequest is gone (outcome of `RemoveRequest`).
    RequestRemoved,
    /// The Event is published (outcome of `RecordEvent`).
    EventRecorded,
    /// An effect failed for good.
    EffectFailed { effect: Effect, reason: String },
}

#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Effect {
    /// Apply ICMSRequest `sr-<requestId>` in `nvcf-backend` from the machine's request,
    /// with label `icms-request-id`.
    RecordRequest,
    /// Write `status.requestStatus` of the ICMSRequest.
    ProjectRequest(RequestStatus),
    /// `PUT /v1/sirs/{requestId}` with status `pending-fulfillment`. A 404 is transient
    /// for NVIDIA's five minutes after `received_at`, then permanent.
    AcknowledgeRequest {
        instance_count: u32,
        message_batch_id: String,
        received_at: Timestamp,
    },
    /// Ack one delivery of the creation message to NATS.
    AckMessage { receipt: String },
    /// Create pod `instance_id` (`<index>-sr-<requestId>`) from the machine's request.
    CreateInstance { instance_id: String, index: u32 },
    /// Delete pod `instance_id`; answered once it is gone (a 404 counts).
    DeleteInstance { instance_id: String },
    /// `POST /v1/sirs/{requestId}/{instanceId}`.
    ReportInstance(InstanceReport),
    /// Strip the ICMSRequest's finalizers and delete it.
    RemoveRequest,
    /// Publish a Kubernetes Event about the request's ICMSRequest. (Appended last: effects
    /// are stored by variant index.)
    RecordEvent {
        warning: bool,
        reason: String,
        note: String,
    },
}

impl Describe for Effect {
    fn describe(&self) -> String {
        match self {
            Effect::RecordRequest => "apply the request's ICMSRequest".to_string(),
            Effect::ProjectRequest(status) => {
                format!("set the ICMSRequest's status to {}", <&str>::from(status))
            }
            Effect::AcknowledgeRequest {
                instance_count,
                message_batch_id,
                ..
            } => format!(
                "acknowledge the request for {instance_count} instance(s) of batch {message_batch_id} to SIS"
            ),
            Effect::AckMessage { receipt } => format!("ack queue message {receipt}"),
            Effect::CreateInstance { instance_id, .. } => format!("create pod {instance_id}"),
            Effect::DeleteInstance { instance_id } => format!("delete pod {instance_id}"),
            Effect::ReportInstance(report) => {
                let cause = report
                    .termination_cause
                    .map(|cause| format!(", {}", cause.wire()))
                    .unwrap_or_default();
                format!(
                    "report instance {} {} ({}{cause}) to SIS",
                    report.instance_id,
                    <&str>::from(report.instance_state),
                    <&str>::from(report.status)
                )
            }
            Effect::RemoveRequest => "delete the request's ICMSRequest".to_string(),
            Effect::RecordEvent { reason, .. } => {
                format!("record Event {reason} on the request's ICMSRequest")
            }
        }
    }
}

/// NVIDIA's instance id, which is also the pod's name.
pub fn instance_id(request_id: &str, index: u32) -> String {
    format!("{index}-sr-{request_id}")
}

/// The request's state once SIS has the ack, as its instances make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Acknowledged,
    InstancesStarting,
    Running,
    Failed(FailureClass),
    Terminating,
    Terminated,
}

impl Phase {
    fn state(self) -> State {
        match self {
            Phase::Acknowledged => State::acknowledged(),
            Phase::InstancesStarting => State::instances_starting(),
            Phase::Running => State::running(),
            Phase::Failed(class) => State::failed(class),
            Phase::Terminating => State::terminating(),
            Phase::Terminated => State::terminated(),
        }
    }

    /// What entering this phase writes to the ICMSRequest.
    fn projection(self) -> Option<Effect> {
        let status = match self {
            Phase::Acknowledged => RequestStatus::RequestInProgress,
            Phase::InstancesStarting => RequestStatus::RequestInstancesInProgress,
            Phase::Running => RequestStatus::RequestCompleted,
            Phase::Failed(_) => RequestStatus::RequestFailed,
            Phase::Terminating => return None,
            Phase::Terminated => return Some(Effect::RemoveRequest),
        };
        Some(Effect::ProjectRequest(status))
    }
}

/// The ICMSRequest status a machine in state `state_name` has asked for last, so that a
/// restarted agent can put right a status write it lost; `None` for states that ask for
/// none (a terminating request keeps what it showed).
pub fn projected_status(state_name: &str) -> Option<RequestStatus> {
    let phase = match FunctionState::of(state_name)? {
        FunctionState::Received => return Some(RequestStatus::RequestPending),
        FunctionState::Acknowledged => Phase::Acknowledged,
        FunctionState::InstancesStarting => Phase::InstancesStarting,
        FunctionState::Running => Phase::Running,
        // The class does not change the status.
        FunctionState::Failed => Phase::Failed(FailureClass::Failed),
        _ => return None,
    };
    match phase.projection() {
        Some(Effect::ProjectRequest(status)) => Some(status),
        _ => None,
    }
}

/// The shared storage of the machine: what it knows in every state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    request_id: String,
    timeouts: Timeouts,
    request: Option<FunctionRequest>,
    /// Deliveries of the creation message to ack once SIS has the ack.
    unacked: Vec<String>,
    /// By index.
    instances: BTreeMap<u32, Instance>,
}

#[state_machine(
    initial = "State::idle()",
    state(derive(Clone, Debug, PartialEq, Serialize, Deserialize)),
    context_identifier = "step",
    after_transition = "Self::log_transition"
)]
impl Deployment {
    #[state]
    fn idle(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::MessageReceived { request, receipt }
                if request.request_id == self.request_id =>
            {
                step.queue(Effect::RecordRequest);
                step.queue(Effect::ProjectRequest(RequestStatus::RequestPending));
                step.queue(Effect::AcknowledgeRequest {
                    instance_count: request.instance_count,
                    message_batch_id: request.message_batch_id.clone(),
                    received_at: step.now,
                });
                self.request = Some(request.clone());
                self.unacked = vec![receipt.clone()];
                Transition(State::received())
            }
            Event::MessageRefused {
                request,
                receipt,
                reason,
            } if request.request_id == self.request_id => {
                self.refuse(request, receipt, reason, step)
            }
            Event::Rebuilt {
                request,
                acknowledged,
                pods,
            } if request.request_id == self.request_id => {
                self.rebuild(request, *acknowledged, pods, step)
            }
            // Nothing was ever created for a request never received.
            Event::TerminationRequested { .. } => Transition(State::terminated()),
            _ => self.ignore(event),
        }
    }

    /// Recorded and being acknowledged to SIS; the queue message waits for that.
    #[state]
    fn received(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::MessageReceived { receipt, .. } | Event::MessageRefused { receipt, .. } => {
                if !self.unacked.contains(receipt) {
                    self.unacked.push(receipt.clone());
                }
                Handled
            }
            Event::Acknowledged => self.create_instances(step),
            Event::EffectFailed {
                effect: Effect::RecordRequest | Effect::AcknowledgeRequest { .. },
                reason,
            } => {
                tracing::warn!(%reason, "the request cannot be taken on: a precondition failed");
                self.give_up(step)
            }
            Event::TerminationRequested { .. } | Event::DrainRequested => self.give_up(step),
            _ => self.ignore(event),
        }
    }

    /// Pods are being created.
    #[state]
    fn acknowledged(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        self.after_ack(Phase::Acknowledged, event, step)
    }

    /// Every pod exists; not all are ready.
    #[state]
    fn instances_starting(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        self.after_ack(Phase::InstancesStarting, event, step)
    }

    /// Every instance is ready.
    #[state]
    fn running(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        self.after_ack(Phase::Running, event, step)
    }

    /// An instance failed for good (`class` is the first failure); pods are still going.
    #[state]
    fn failed(
        &mut self,
        class: &mut FailureClass,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        self.after_ack(Phase::Failed(*class), event, step)
    }

    /// Every remaining pod is being deleted on request.
    #[state]
    fn terminating(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        self.after_ack(Phase::Terminating, event, step)
    }

    /// Every pod is gone and SIS was told.
    #[state]
    fn terminated(&mut self, event: &Event, step: &mut Step<Effect>) -> Outcome<State> {
        match event {
            Event::MessageReceived { receipt, .. } | Event::MessageRefused { receipt, .. } => {
                self.ack_again(receipt, step)
            }
            Event::InstanceListed { instance_id, state } => self.listed(instance_id, state, step),
            _ => self.ignore(event),
        }
    }
}

impl Deployment {
    /// Every state after the ack handles events alike: update the instances, report what
    /// changed, and move to the state the instances now make.
    fn after_ack(
        &mut self,
        phase: Phase,
        event: &Event,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        match event {
            Event::MessageReceived { receipt, .. } | Event::MessageRefused { receipt, .. } => {
                return self.ack_again(receipt, step);
            }
            Event::InstanceListed { instance_id, state } => {
                return self.listed(instance_id, state, step);
            }
            Event::InstanceCreated { instance_id } => {
                if let Some(instance) = self.live_instance(instance_id) {
                    instance.created = true;
                }
            }
            Event::PodObserved { instance_id, pod } => self.observe(instance_id, pod, step),
            Event::InstanceDeleted { instance_id } => self.pod_gone(instance_id),
            Event::ReportPreconditionFailed { instance_id } => {
                let detail = "SIS has closed the request (412 Precondition Failed)".to_string();
                self.fail(
                    instance_id,
                    FailureClass::TerminatedPreconditionFailure,
                    detail,
                    step,
                );
            }
            Event::TerminationRequested { instance_ids } => {
                self.take_down(instance_ids, EndCause::ByUser, step)
            }
            Event::DrainRequested => self.take_down(&[], EndCause::Maintenance, step),
            Event::EffectFailed {
                effect: Effect::CreateInstance { instance_id, .. },
                reason,
            } => self.create_failed(instance_id, reason),
            _ => return self.ignore(event),
        }
        self.report_changes(step);
        self.settle(Some(phase), step)
    }

    fn create_instances(&mut self, step: &mut Step<Effect>) -> Outcome<State> {
        self.ack_deliveries(step);
        let count = self
            .request
            .as_ref()
            .map_or(0, |request| request.instance_count);
        for index in 0..count {
            self.instances.insert(index, Instance::new(index));
            step.queue(Effect::CreateInstance {
                instance_id: instance_id(&self.request_id, index),
                index,
            });
        }
        self.settle(None, step)
    }

    /// A workload nvca cannot run yet: every instance is reported terminated with NVIDIA's
    /// precondition-failure cause (SIS records terminations in any request state), an Event
    /// says why, and the message is acked so that it does not come back.
    fn refuse(
        &mut self,
        request: &FunctionRequest,
        receipt: &str,
        reason: &str,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        self.request = Some(request.clone());
        for index in 0..request.instance_count.max(1) {
            let mut instance = Instance::new(index);
            instance.state = InstanceState::Terminated(EndCause::Failure(
                FailureClass::TerminatedPreconditionFailure,
            ));
            instance.detail = Some(reason.to_string());
            self.instances.insert(index, instance);
        }
        self.report_changes(step);
        step.queue(Effect::RecordEvent {
            warning: true,
            reason: "RequestRefused".to_string(),
            note: format!("request {} refused: {reason}", self.request_id),
        });
        step.queue(Effect::AckMessage {
            receipt: receipt.to_string(),
        });
        Transition(State::terminated())
    }

    /// Drop the request before any instance exists: whatever is still queued for it is
    /// moot, its queue message must not come back, and its ICMSRequest goes.
    fn give_up(&mut self, step: &mut Step<Effect>) -> Outcome<State> {
        step.cancel_pending();
        self.ack_deliveries(step);
        step.queue(Effect::RemoveRequest);
        Transition(State::terminated())
    }

    fn ack_deliveries(&mut self, step: &mut Step<Effect>) {
        for receipt in self.unacked.drain(..) {
            step.queue(Effect::AckMessage { receipt });
        }
    }

    /// SIS believes an instance is in `state`: when that is not what it was last told, tell
    /// it again (NVIDIA's periodic `UpdateOnly` correction); an instance this request never
    /// had is reported terminated for a sync action (`TerminateAndUpdate`).
    fn listed(
        &mut self,
        instance_id: &str,
        state: &str,
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        let kind = self.kind();
        let Some(instance) = self.instance(instance_id) else {
            step.queue(Effect::ReportInstance(sync_termination(instance_id)));
            return Handled;
        };
        if let Some(report) = instance.report(instance_id, kind)
            && <&str>::from(report.instance_state) != state
        {
            step.queue(Effect::ReportInstance(report.clone()));
            instance.reported = Some(report);
        }
        Handled
    }

    /// Start again from what the cluster shows: before the ack, acknowledge again (SIS
    /// takes the same batch twice); after it, adopt the pods found and create the others.
    fn rebuild(
        &mut self,
        request: &FunctionRequest,
        acknowledged: bool,
        pods: &[(String, bool)],
        step: &mut Step<Effect>,
    ) -> Outcome<State> {
        self.request = Some(request.clone());
        if !acknowledged {
            step.queue(Effect::AcknowledgeRequest {
                instance_count: request.instance_count,
                message_batch_id: request.message_batch_id.clone(),
                received_at: step.now,
            });
            return Transition(State::received());
        }
        let kind = request.kind;
        for index in 0..request.instance_count {
            let id = instance_id(&self.request_id, index);
            let mut instance = Instance::new(index);
            match pods.iter().find(|(pod, _)| *pod == id) {
                Some((_, ready)) => {
                    instance.created = true;
                    instance.state = if *ready {
                        InstanceState::Running
                    } else {
                        InstanceState::Starting
                    };
                    instance.reported = instance.report(&id, kind);
                }
                None => step.queue(Effect::CreateInstance {
                    instance_id: id,
                    index,
                }),
            }
            self.instances.insert(index, instance);
        }
        self.settle(None, step)
    }

    /// A redelivery after the ack: ack it, create nothing.
    fn ack_again(&self, receipt: &str, step: &mut Step<Effect>) -> Outcome<State> {
        step.queue(Effect::AckMessage {
            receipt: receipt.to_string(),
        });
        Handled
    }

    fn observe(&mut self, instance_id: &str, pod: &PodObservation, step: &mut Step<Effect>) {
        let timeouts = self.timeouts();
        let Some(instance) = self.live_instance(instance_id) else {
            return;
        };
        instance.created = true;
        match judge(pod, step.now, &timeouts) {
            Verdict::Healthy(progress) => instance.state = progress.into(),
            Verdict::Failed(class, detail) => purge(instance, instance_id, class, detail, step),
        }
    }

    fn fail(
        &mut self,
        instance_id: &str,
        class: FailureClass,
        detail: String,
        step: &mut Step<Effect>,
    ) {
        if let Some(instance) = self.live_instance(instance_id) {
            purge(instance, instance_id, class, detail, step);
        }
    }

    fn pod_gone(&mut self, instance_id: &str) {
        let Some(instance) = self.instance(instance_id) else {
            return;
        };
        instance.state = match instance.state {
            InstanceState::Failed(class) => InstanceState::Terminated(EndCause::Failure(class)),
            InstanceState::Terminating(cause) => InstanceState::Terminated(cause),
            // A pod that existed and vanished without being asked to.
            _ if instance.is_live() && instance.created => {
                instance.detail = Some(format!("pod {instance_id} was deleted outside nvca"));
                InstanceState::Terminated(EndCause::Failure(FailureClass::FailedNotFound))
            }
            // Not created yet, or already gone.
            unchanged => unchanged,
        };
    }

    /// The pod could not be created at all: nothing to delete.
    fn create_failed(&mut self, instance_id: &str, reason: &str) {
        if let Some(instance) = self
            .live_instance(instance_id)
            .filter(|instance| !instance.created)
        {
            instance.state =
                InstanceState::Terminated(EndCause::Failure(FailureClass::TerminatedTerminalError));
            instance.detail = Some(format!("pod {instance_id} cannot be created: {reason}"));
        }
    }

    /// Delete the pods of the named live instances, or of all when none are named.
    fn take_down(&mut self, instance_ids: &[String], cause: EndCause, step: &mut Step<Effect>) {
        for (index, instance) in &mut self.instances {
            let id = instance_id(&self.request_id, *index);
            if instance.is_live() && (instance_ids.is_empty() || instance_ids.contains(&id)) {
                instance.state = InstanceState::Terminating(cause);
                step.queue(Effect::DeleteInstance { instance_id: id });
            }
        }
    }

    /// Tell SIS about every instance whose wire state changed since it was last told.
    fn report_changes(&mut self, step: &mut Step<Effect>) {
        let kind = self.kind();
        for (index, instance) in &mut self.instances {
            let Some(report) = instance.report(&instance_id(&self.request_id, *index), kind) else {
                continue;
            };
            if instance.reported.as_ref() != Some(&report) {
                // SIS hears every instance start before it runs, even when the pod was
                // ready before its creation was reported.
                if instance.reported.is_none()
                    && report.instance_state == WireInstanceState::Running
                {
                    step.queue(Effect::ReportInstance(InstanceReport {
                        instance_state: WireInstanceState::Starting,
                        ..report.clone()
                    }));
                }
                step.queue(Effect::ReportInstance(report.clone()));
                instance.reported = Some(report);
            }
        }
    }

    /// Move to the state the instances make, projecting it if it is new.
    fn settle(&self, current: Option<Phase>, step: &mut Step<Effect>) -> Outcome<State> {
        let target = self.phase();
        if Some(target) == current {
            return Handled;
        }
        if let Some(projection) = target.projection() {
            step.queue(projection);
        }
        Transition(target.state())
    }

    fn phase(&self) -> Phase {
        let instances = || self.instances.values();
        if instances().all(|instance| matches!(instance.state, InstanceState::Terminated(_))) {
            return Phase::Terminated;
        }
        let mut live = instances().filter(|instance| instance.is_live()).peekable();
        let terminating =
            instances().any(|instance| matches!(instance.state, InstanceState::Terminating(_)));
        if live.peek().is_none() && terminating {
            return Phase::Terminating;
        }
        if let Some(class) = instances().find_map(Instance::failure) {
            return Phase::Failed(class);
        }
        let live: Vec<&Instance> = live.collect();
        if live
            .iter()
            .all(|instance| instance.state == InstanceState::Running)
        {
            Phase::Running
        } else if live.iter().all(|instance| instance.created) {
            Phase::InstancesStarting
        } else {
            Phase::Acknowledged
        }
    }

    fn instance(&mut self, instance_id: &str) -> Option<&mut Instance> {
        let index = instance_id
            .strip_suffix(&format!("-sr-{}", self.request_id))?
            .parse::<u32>()
            .ok()?;
        self.instances.get_mut(&index)
    }

    fn live_instance(&mut self, instance_id: &str) -> Option<&mut Instance> {
        self.instance(instance_id)
            .filter(|instance| instance.is_live())
    }

    fn kind(&self) -> WorkloadKind {
        self.request
            .as_ref()
            .map_or(WorkloadKind::Function, |request| request.kind)
    }

    /// A task waits for a node as long as NVIDIA's pending timeout allows.
    fn timeouts(&self) -> Timeouts {
        match self.kind() {
            WorkloadKind::Function => self.timeouts,
            WorkloadKind::Task => Timeouts {
                scheduling: self.timeouts.pending,
                ..self.timeouts
            },
        }
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
        tracing::debug!(from = state_name(source), to = state_name(target), request = %self.request_id, "function deployment");
    }
}

/// The report that ends an instance SIS lists but this cluster does not run (NVIDIA's
/// `handleNotFoundInstanceStatusSyncAction`).
pub fn sync_termination(instance_id: &str) -> InstanceReport {
    let cause = FailureClass::TerminatedDuetoSyncAction;
    InstanceReport {
        instance_id: instance_id.to_string(),
        instance_state: WireInstanceState::Terminated,
        status: WireStatus::TerminatedByService,
        request_state: RequestState::Closed,
        action: LegacyAction::TerminateInstances,
        termination_cause: Some(cause),
        system_failure: Some(cause.wire().to_string()),
        error_log: Some(format!("instance {instance_id} is not on this cluster")),
    }
}

/// A live instance failed for good: delete its pod.
fn purge(
    instance: &mut Instance,
    instance_id: &str,
    class: FailureClass,
    detail: String,
    step: &mut Step<Effect>,
) {
    instance.state = InstanceState::Failed(class);
    instance.detail = Some(detail);
    step.queue(Effect::DeleteInstance {
        instance_id: instance_id.to_string(),
    });
}

/// Every state's name, as [`Machine::state_name`] gives it (crash points use them).
pub const STATE_NAMES: &[&str] = &[
    "idle",
    "received",
    "acknowledged",
    "instances_starting",
    "running",
    "failed",
    "terminating",
    "terminated",
];

/// The states of a function deployment by name: what a stored summary's `state` holds
/// (snake_case), for code outside the machines to ask about without spelling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum FunctionState {
    Idle,
    Received,
    Acknowledged,
    InstancesStarting,
    Running,
    Failed,
    Terminating,
    Terminated,
}

impl FunctionState {
    /// The typed state a summary\'s `state` names; `None` for no state of this machine.
    pub fn of(state: &str) -> Option<FunctionState> {
        state.parse().ok()
    }

    /// Whether `state` (a summary's) is this one.
    pub fn is(self, state: &str) -> bool {
        state.parse() == Ok(self)
    }
}

fn state_name(state: &State) -> &'static str {
    let name = match state {
        State::Idle {} => FunctionState::Idle,
        State::Received {} => FunctionState::Received,
        State::Acknowledged {} => FunctionState::Acknowledged,
        State::InstancesStarting {} => FunctionState::InstancesStarting,
        State::Running {} => FunctionState::Running,
        State::Failed { .. } => FunctionState::Failed,
        State::Terminating {} => FunctionState::Terminating,
        State::Terminated {} => FunctionState::Terminated,
    };
    name.into()
}

/// One function deployment, as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct FunctionMachine {
    machine: StateMachine<Deployment>,
}

impl FunctionMachine {
    /// The deployment of request `request_id`, before its message is handled.
    pub fn new(request_id: &str, timeouts: Timeouts) -> Self {
        let deployment = Deployment {
            request_id: request_id.to_string(),
            timeouts,
            request: None,
            unacked: Vec::new(),
            instances: BTreeMap::new(),
        };
        FunctionMachine {
            machine: deployment.state_machine(),
        }
    }

    /// The creation message, once received.
    pub fn request(&self) -> Option<&FunctionRequest> {
        self.machine.inner().request.as_ref()
    }

    /// Every instance with its id, by index.
    pub fn instances(&self) -> impl Iterator<Item = (String, &Instance)> {
        let deployment = self.machine.inner();
        deployment
            .instances
            .iter()
            .map(|(index, instance)| (instance_id(&deployment.request_id, *index), instance))
    }

    /// The first failure of an instance, if any failed.
    pub fn failure(&self) -> Option<FailureClass> {
        self.machine
            .inner()
            .instances
            .values()
            .find_map(Instance::failure)
    }

    /// Run statig's entry actions after a restore; they only log.
    pub fn init(&mut self, step: &mut Step<Effect>) {
        self.machine.init_with_context(step);
    }
}

impl Machine for FunctionMachine {
    const KIND: Kind = Kind::Function;
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
        matches!(self.machine.state(), State::Terminated {})
    }
}

#[cfg(test)]
pub(crate) fn sample_request() -> FunctionRequest {
    FunctionRequest {
        request_id: "r1".to_string(),
        function_id: "fn-1".to_string(),
        function_version_id: "fv-1".to_string(),
        nca_id: "nca-1".to_string(),
        message_batch_id: "batch-1".to_string(),
        instance_type: "NCP.GPU.H100_1x".to_string(),
        gpu_name: "H100".to_string(),
        instance_count: 2,
        kind: WorkloadKind::Function,
    }
}

#[cfg(test)]
const RECEIPT: &str = "Create.NVCA.Function.c-1.H100.NCP|GPU|H100_1x:7";

#[cfg(test)]
fn delivered(receipt: &str) -> Event {
    Event::MessageReceived {
        request: sample_request(),
        receipt: receipt.to_string(),
    }
}

#[cfg(test)]
fn id(index: u32) -> String {
    instance_id("r1", index)
}

/// A pod launched at the test clock's start: running and ready.
#[cfg(test)]
pub(crate) fn ready_pod() -> PodObservation {
    use super::failure::PodPhase;
    use super::testkit::T0;
    PodObservation {
        phase: PodPhase::Running,
        reason: None,
        scheduled: true,
        initialized: true,
        ready: true,
        launched_at: T0,
        started_at: Some(T0),
        ready_changed_at: Some(T0),
        waiting_reasons: Vec::new(),
        restarts: 0,
        init_restarts: 0,
    }
}

/// A pod two minutes old whose image does not pull.
#[cfg(test)]
fn image_pull_pod() -> PodObservation {
    use super::failure::PodPhase;
    PodObservation {
        phase: PodPhase::Pending,
        initialized: false,
        ready: false,
        launched_at: Timestamp(super::testkit::T0.0 - 120_000),
        ready_changed_at: None,
        waiting_reasons: vec!["ErrImagePull".to_string()],
        ..ready_pod()
    }
}

#[cfg(test)]
fn observed(index: u32, pod: PodObservation) -> Event {
    Event::PodObserved {
        instance_id: id(index),
        pod,
    }
}

/// One machine per state, each reached through real events.
#[cfg(test)]
pub(crate) fn sample_machines() -> Vec<FunctionMachine> {
    let at = |events: &[Event]| {
        let mut machine = FunctionMachine::new("r1", Timeouts::default());
        super::testkit::run(&mut machine, events);
        machine
    };
    let created = [
        Event::InstanceCreated { instance_id: id(0) },
        Event::InstanceCreated { instance_id: id(1) },
    ];
    let acknowledged = [delivered(RECEIPT), Event::Acknowledged];
    let starting = [&acknowledged[..], &created].concat();
    let running = [
        &starting[..],
        &[observed(0, ready_pod()), observed(1, ready_pod())],
    ]
    .concat();
    let terminating = [
        &running[..],
        &[Event::TerminationRequested {
            instance_ids: Vec::new(),
        }],
    ]
    .concat();
    let gone = [
        Event::InstanceDeleted { instance_id: id(0) },
        Event::InstanceDeleted { instance_id: id(1) },
    ];
    vec![
        at(&[]),
        at(&acknowledged[..1]),
        at(&acknowledged),
        at(&starting),
        at(&running),
        at(&[&starting[..], &[observed(0, image_pull_pod())]].concat()),
        at(&terminating),
        at(&[&terminating[..], &gone].concat()),
    ]
}

/// One event of every variant, about the sample request.
#[cfg(test)]
pub(crate) fn sample_events() -> Vec<Event> {
    vec![
        delivered(RECEIPT),
        Event::RequestRecorded,
        Event::Acknowledged,
        Event::MessageAcked,
        Event::InstanceCreated { instance_id: id(0) },
        observed(0, ready_pod()),
        Event::InstanceDeleted { instance_id: id(0) },
        Event::InstanceReported { instance_id: id(0) },
        Event::ReportPreconditionFailed { instance_id: id(0) },
        Event::TerminationRequested {
            instance_ids: Vec::new(),
        },
        Event::DrainRequested,
        Event::RequestRemoved,
        Event::EventRecorded,
        Event::EffectFailed {
            effect: Effect::CreateInstance {
                instance_id: id(0),
                index: 0,
            },
            reason: "admission webhook denied the request".to_string(),
        },
        refused(RECEIPT),
        Event::InstanceListed {
            instance_id: id(0),
            state: "starting".to_string(),
        },
        Event::Rebuilt {
            request: sample_request(),
            acknowledged: true,
            pods: vec![(id(0), true)],
        },
    ]
}

#[cfg(test)]
fn refused(receipt: &str) -> Event {
    Event::MessageRefused {
        request: sample_request(),
        receipt: receipt.to_string(),
        reason: "Helm functions are not supported yet".to_string(),
    }
}

/// One effect of every variant.
#[cfg(test)]
pub(crate) fn sample_effects() -> Vec<Effect> {
    let report = Instance {
        created: true,
        state: InstanceState::Running,
        ..Instance::new(0)
    }
    .report(&id(0), WorkloadKind::Function);
    vec![
        Effect::RecordRequest,
        Effect::ProjectRequest(RequestStatus::RequestCompleted),
        Effect::AcknowledgeRequest {
            instance_count: 2,
            message_batch_id: "batch-1".to_string(),
            received_at: super::testkit::T0,
        },
        Effect::AckMessage {
            receipt: RECEIPT.to_string(),
        },
        Effect::CreateInstance {
            instance_id: id(0),
            index: 0,
        },
        Effect::DeleteInstance { instance_id: id(0) },
        Effect::ReportInstance(report.expect("a running instance is reported")),
        Effect::RemoveRequest,
        Effect::RecordEvent {
            warning: true,
            reason: "WorkloadNotSupported".to_string(),
            note: "request r1 refused: Helm functions are not supported yet".to_string(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use strum::VariantNames;

    use super::*;
    use crate::machines::failure::PodPhase;
    use crate::machines::instance::{LegacyAction, RequestState, WireInstanceState, WireStatus};
    use crate::machines::testkit::{self, Row, T0, assert_covers, names, row, run, step, step_at};

    const RECEIVE: &[&str] = &["RecordRequest", "ProjectRequest", "AcknowledgeRequest"];
    const CREATE: &[&str] = &[
        "AckMessage",
        "CreateInstance",
        "CreateInstance",
        "ProjectRequest",
    ];
    const GIVE_UP: &[&str] = &["AckMessage", "RemoveRequest"];
    const ACK: &[&str] = &["AckMessage"];
    const REPORT: &[&str] = &["ReportInstance"];
    const START_AND_RUN: &[&str] = &["ReportInstance", "ReportInstance"];
    const REBUILD: &[&str] = &["CreateInstance", "ProjectRequest"];
    const FAIL: &[&str] = &["ReportInstance", "ProjectRequest"];
    const PURGE: &[&str] = &["DeleteInstance", "ReportInstance", "ProjectRequest"];
    const TAKE_DOWN: &[&str] = &[
        "DeleteInstance",
        "DeleteInstance",
        "ReportInstance",
        "ReportInstance",
    ];
    const TAKE_DOWN_ONE: &[&str] = &["DeleteInstance", "ReportInstance"];
    const REFUSE: &[&str] = &[
        "ReportInstance",
        "ReportInstance",
        "RecordEvent",
        "AckMessage",
    ];
    const NONE: &[&str] = &[];

    /// Every pair not listed here must be ignored: same state, no effect.
    const ROWS: &[Row] = &[
        row("idle", "MessageReceived", "received", RECEIVE),
        row("idle", "MessageRefused", "terminated", REFUSE),
        row("idle", "Rebuilt", "acknowledged", REBUILD),
        row("idle", "TerminationRequested", "terminated", NONE),
        row("received", "Acknowledged", "acknowledged", CREATE),
        row("received", "TerminationRequested", "terminated", GIVE_UP),
        row("received", "DrainRequested", "terminated", GIVE_UP),
        row("acknowledged", "MessageReceived", "acknowledged", ACK),
        row("acknowledged", "MessageRefused", "acknowledged", ACK),
        row("acknowledged", "InstanceCreated", "acknowledged", REPORT),
        row("acknowledged", "PodObserved", "acknowledged", START_AND_RUN),
        row("acknowledged", "ReportPreconditionFailed", "failed", PURGE),
        row(
            "acknowledged",
            "TerminationRequested",
            "terminating",
            TAKE_DOWN,
        ),
        row("acknowledged", "DrainRequested", "terminating", TAKE_DOWN),
        row("acknowledged", "EffectFailed", "failed", FAIL),
        row(
            "instances_starting",
            "MessageReceived",
            "instances_starting",
            ACK,
        ),
        row(
            "instances_starting",
            "MessageRefused",
            "instances_starting",
            ACK,
        ),
        row(
            "instances_starting",
            "PodObserved",
            "instances_starting",
            REPORT,
        ),
        row("instances_starting", "InstanceDeleted", "failed", FAIL),
        row(
            "instances_starting",
            "ReportPreconditionFailed",
            "failed",
            PURGE,
        ),
        row(
            "instances_starting",
            "TerminationRequested",
            "terminating",
            TAKE_DOWN,
        ),
        row(
            "instances_starting",
            "DrainRequested",
            "terminating",
            TAKE_DOWN,
        ),
        row("running", "MessageReceived", "running", ACK),
        row("running", "InstanceListed", "running", REPORT),
        row("running", "MessageRefused", "running", ACK),
        row("running", "InstanceDeleted", "failed", FAIL),
        row("running", "ReportPreconditionFailed", "failed", PURGE),
        row("running", "TerminationRequested", "terminating", TAKE_DOWN),
        row("running", "DrainRequested", "terminating", TAKE_DOWN),
        row("failed", "MessageReceived", "failed", ACK),
        row("failed", "InstanceListed", "failed", REPORT),
        row("failed", "MessageRefused", "failed", ACK),
        row(
            "failed",
            "TerminationRequested",
            "terminating",
            TAKE_DOWN_ONE,
        ),
        row("failed", "DrainRequested", "terminating", TAKE_DOWN_ONE),
        row("terminating", "MessageReceived", "terminating", ACK),
        row("terminating", "InstanceListed", "terminating", REPORT),
        row("terminating", "MessageRefused", "terminating", ACK),
        row("terminating", "InstanceDeleted", "terminating", REPORT),
        row("terminated", "MessageReceived", "terminated", ACK),
        row("terminated", "InstanceListed", "terminated", REPORT),
        row("terminated", "MessageRefused", "terminated", ACK),
    ];

    fn machine_in(state: &str) -> FunctionMachine {
        sample_machines()
            .into_iter()
            .find(|machine| machine.state_name() == state)
            .expect("a sample in that state")
    }

    fn reports(effects: &[Effect]) -> Vec<&InstanceReport> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::ReportInstance(report) => Some(report),
                _ => None,
            })
            .collect()
    }

    fn count(effects: &[Effect], name: &str) -> usize {
        names(effects)
            .iter()
            .filter(|effect| **effect == name)
            .count()
    }

    type Wire = (
        WireInstanceState,
        WireStatus,
        RequestState,
        LegacyAction,
        Option<FailureClass>,
    );

    fn wire(report: &InstanceReport) -> Wire {
        (
            report.instance_state,
            report.status,
            report.request_state,
            report.action,
            report.termination_cause,
        )
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
            testkit::assert_restores_quietly(&machine, FunctionMachine::init);
        }
    }

    #[test]
    fn effects_describe_themselves_on_one_line_without_the_message() {
        testkit::assert_one_line_descriptions(&sample_effects());
        for effect in sample_effects() {
            assert!(
                !format!("{effect:?}").contains("instanceCount"),
                "the creation message stays out of {effect:?}"
            );
        }
    }

    #[test]
    fn a_message_is_recorded_and_acknowledged_before_its_queue_ack() {
        let mut machine = FunctionMachine::new("r1", Timeouts::default());
        assert_eq!(
            step(&mut machine, &delivered(RECEIPT)),
            vec![
                Effect::RecordRequest,
                Effect::ProjectRequest(RequestStatus::RequestPending),
                Effect::AcknowledgeRequest {
                    instance_count: 2,
                    message_batch_id: "batch-1".to_string(),
                    received_at: T0
                },
            ]
        );
        assert_eq!(machine.request(), Some(&sample_request()));
        assert_eq!(
            step(&mut machine, &Event::Acknowledged),
            vec![
                Effect::AckMessage {
                    receipt: RECEIPT.to_string()
                },
                Effect::CreateInstance {
                    instance_id: "0-sr-r1".to_string(),
                    index: 0
                },
                Effect::CreateInstance {
                    instance_id: "1-sr-r1".to_string(),
                    index: 1
                },
                Effect::ProjectRequest(RequestStatus::RequestInProgress),
            ]
        );
    }

    #[test]
    fn a_message_for_another_request_is_ignored() {
        let mut machine = FunctionMachine::new("r2", Timeouts::default());
        assert!(step(&mut machine, &delivered(RECEIPT)).is_empty());
        assert_eq!(machine.state_name(), "idle");
    }

    #[test]
    fn a_redelivered_message_never_creates_a_workload_twice() {
        let mut creations = 0;
        for machine in sample_machines().into_iter().skip(1) {
            let mut machine = machine;
            let effects = step(
                &mut machine,
                &delivered("Create.NVCA.Function.c-1.H100.NCP|GPU|H100_1x:8"),
            );
            creations += count(&effects, "CreateInstance") + count(&effects, "RecordRequest");
            assert!(
                effects
                    .iter()
                    .all(|effect| matches!(effect, Effect::AckMessage { .. })),
                "{effects:?}"
            );
        }
        assert_eq!(creations, 0);
    }

    #[test]
    fn deliveries_before_the_sis_ack_are_acked_with_it() {
        let mut machine = machine_in("received");
        let again = "Create.NVCA.Function.c-1.H100.NCP|GPU|H100_1x:9";
        assert!(step(&mut machine, &delivered(again)).is_empty());
        assert!(step(&mut machine, &delivered(again)).is_empty());
        let acks: Vec<Effect> = step(&mut machine, &Event::Acknowledged)
            .into_iter()
            .filter(|effect| matches!(effect, Effect::AckMessage { .. }))
            .collect();
        assert_eq!(
            acks,
            vec![
                Effect::AckMessage {
                    receipt: RECEIPT.to_string()
                },
                Effect::AckMessage {
                    receipt: again.to_string()
                }
            ]
        );
    }

    #[test]
    fn a_request_sis_will_not_take_is_dropped_and_its_message_acked() {
        for failed in [Effect::RecordRequest, sample_effects()[2].clone()] {
            let mut machine = machine_in("received");
            let outcome = step_at(
                &mut machine,
                &FunctionMachine::effect_failed(&failed, "403 Forbidden"),
                T0,
            );
            assert!(outcome.cancels, "nothing queued for the request may run");
            assert_eq!(names(&outcome.effects), GIVE_UP);
            assert!(machine.is_final());
            assert!(step(&mut machine, &Event::Acknowledged).is_empty());
        }
    }

    #[test]
    fn every_instance_change_is_reported_once_in_nvidias_wire_values() {
        use WireInstanceState::{Running, Starting};
        let mut machine = machine_in("acknowledged");
        let created = step(&mut machine, &Event::InstanceCreated { instance_id: id(0) });
        let starting = (
            Starting,
            WireStatus::Fulfilled,
            RequestState::Active,
            LegacyAction::RequestSpotInstances,
            None,
        );
        assert_eq!(
            reports(&created)
                .iter()
                .map(|report| wire(report))
                .collect::<Vec<_>>(),
            vec![starting]
        );
        assert_eq!(reports(&created)[0].instance_id, "0-sr-r1");
        assert!(step(&mut machine, &Event::InstanceCreated { instance_id: id(0) }).is_empty());

        let scheduled = PodObservation {
            phase: PodPhase::Pending,
            ready: false,
            initialized: false,
            ..ready_pod()
        };
        assert!(
            step(&mut machine, &observed(0, scheduled)).is_empty(),
            "still starting on the wire"
        );
        let ready = step(&mut machine, &observed(0, ready_pod()));
        assert_eq!(wire(reports(&ready)[0]).0, Running);
        assert!(step(&mut machine, &observed(0, ready_pod())).is_empty());
    }

    #[test]
    fn the_icms_request_follows_the_instances() {
        let mut machine = machine_in("acknowledged");
        let mut statuses = Vec::new();
        let events = [
            Event::InstanceCreated { instance_id: id(0) },
            Event::InstanceCreated { instance_id: id(1) },
            observed(0, ready_pod()),
            observed(1, ready_pod()),
        ];
        for event in events {
            for effect in step(&mut machine, &event) {
                if let Effect::ProjectRequest(status) = effect {
                    statuses.push(status);
                }
            }
        }
        assert_eq!(
            statuses,
            vec![
                RequestStatus::RequestInstancesInProgress,
                RequestStatus::RequestCompleted
            ]
        );
        assert_eq!(machine.state_name(), "running");
    }

    #[test]
    fn a_restart_projects_what_the_state_last_asked_for() {
        // Deploy, run, fail one instance: after every step that asked for a status, the
        // state alone gives it back.
        let mut machine = FunctionMachine::new("r1", Timeouts::default());
        let events = [
            Event::MessageReceived {
                request: sample_request(),
                receipt: "m1".to_string(),
            },
            Event::Acknowledged,
            Event::InstanceCreated { instance_id: id(0) },
            Event::InstanceCreated { instance_id: id(1) },
            observed(0, ready_pod()),
            observed(1, ready_pod()),
            Event::ReportPreconditionFailed { instance_id: id(0) },
        ];
        let mut asked = Vec::new();
        for event in events {
            for effect in step(&mut machine, &event) {
                if let Effect::ProjectRequest(status) = effect {
                    asked.push(status);
                    assert_eq!(
                        projected_status(machine.state_name()),
                        Some(status),
                        "in {}",
                        machine.state_name()
                    );
                }
            }
        }
        assert_eq!(asked.len(), 5, "{asked:?}");
        assert_eq!(projected_status("terminating"), None);
        assert_eq!(projected_status("terminated"), None);
    }

    #[test]
    fn a_task_reports_with_the_task_action_and_waits_longer_for_a_node() {
        let task = FunctionRequest {
            kind: WorkloadKind::Task,
            ..sample_request()
        };
        let mut machine = FunctionMachine::new("r1", Timeouts::default());
        run(
            &mut machine,
            &[
                Event::MessageReceived {
                    request: task,
                    receipt: RECEIPT.to_string(),
                },
                Event::Acknowledged,
            ],
        );
        let unscheduled = PodObservation {
            phase: PodPhase::Pending,
            scheduled: false,
            ready: false,
            ..ready_pod()
        };
        let effects = step_at(
            &mut machine,
            &observed(0, unscheduled),
            T0.plus(std::time::Duration::from_secs(3600)),
        )
        .effects;
        assert_eq!(
            wire(reports(&effects)[0]).3,
            LegacyAction::RequestSpotInstancesForTask
        );
        assert_eq!(
            machine.failure(),
            None,
            "a function would have failed for no capacity by now"
        );
    }

    #[test]
    fn a_failure_deletes_the_pod_and_is_reported_as_nvidia_does() {
        let mut machine = machine_in("instances_starting");
        let effects = step(&mut machine, &observed(0, image_pull_pod()));
        assert_eq!(names(&effects), PURGE);
        assert_eq!(effects[0], Effect::DeleteInstance { instance_id: id(0) });
        let report = reports(&effects)[0];
        assert_eq!(
            wire(report),
            (
                WireInstanceState::Terminated,
                WireStatus::TerminatedByService,
                RequestState::Closed,
                LegacyAction::TerminateInstances,
                Some(FailureClass::FailedImagePullIssues)
            )
        );
        assert_eq!(report.system_failure.as_deref(), Some("image-pull-issues"));
        assert_eq!(
            report.error_log.as_deref(),
            Some(
                "pod terminated due to state image-pull-issues: image pull failing (ErrImagePull) after 2m"
            )
        );
        assert_eq!(
            effects[2],
            Effect::ProjectRequest(RequestStatus::RequestFailed)
        );
        assert_eq!(machine.failure(), Some(FailureClass::FailedImagePullIssues));
    }

    #[test]
    fn a_failed_request_ends_once_every_pod_is_gone() {
        let mut machine = machine_in("failed");
        assert!(
            step(&mut machine, &Event::InstanceDeleted { instance_id: id(0) }).is_empty(),
            "already reported"
        );
        let other = PodObservation {
            restarts: 5,
            ready: false,
            ..ready_pod()
        };
        let later = T0.plus(std::time::Duration::from_secs(11 * 60));
        let effects = step_at(&mut machine, &observed(1, other), later).effects;
        assert_eq!(
            wire(reports(&effects)[0]).4,
            Some(FailureClass::FailedContainerRestartLoop)
        );
        assert_eq!(machine.state_name(), "failed");
        let effects = step(&mut machine, &Event::InstanceDeleted { instance_id: id(1) });
        assert_eq!(effects, vec![Effect::RemoveRequest]);
        assert!(machine.is_final());
        assert_eq!(
            machine.failure(),
            Some(FailureClass::FailedImagePullIssues),
            "the first failure is kept"
        );
    }

    #[test]
    fn a_vanished_pod_is_not_found() {
        let mut machine = machine_in("running");
        let effects = step(&mut machine, &Event::InstanceDeleted { instance_id: id(1) });
        assert_eq!(
            wire(reports(&effects)[0]).4,
            Some(FailureClass::FailedNotFound)
        );
        assert!(
            !names(&effects).contains(&"DeleteInstance"),
            "nothing left to delete"
        );
    }

    #[test]
    fn a_pod_that_cannot_be_created_fails_its_instance_without_a_delete() {
        let mut machine = machine_in("acknowledged");
        let effects = step(&mut machine, &sample_events()[13]);
        assert_eq!(names(&effects), FAIL);
        let report = reports(&effects)[0];
        assert_eq!(
            report.termination_cause,
            Some(FailureClass::TerminatedTerminalError)
        );
        assert_eq!(
            report.error_log.as_deref(),
            Some("pod 0-sr-r1 cannot be created: admission webhook denied the request"),
            "no pod: the reason alone"
        );
    }

    #[test]
    fn a_412_terminates_the_instance_with_a_precondition_failure() {
        let mut machine = machine_in("running");
        let effects = step(
            &mut machine,
            &Event::ReportPreconditionFailed { instance_id: id(0) },
        );
        assert_eq!(effects[0], Effect::DeleteInstance { instance_id: id(0) });
        assert_eq!(
            wire(reports(&effects)[0]).4,
            Some(FailureClass::TerminatedPreconditionFailure)
        );
        assert!(
            step(
                &mut machine,
                &Event::ReportPreconditionFailed { instance_id: id(0) }
            )
            .is_empty()
        );
    }

    #[test]
    fn termination_reports_shutting_down_then_terminated_and_removes_the_request() {
        let mut machine = machine_in("running");
        let effects = step(
            &mut machine,
            &Event::TerminationRequested {
                instance_ids: Vec::new(),
            },
        );
        let shutting_down = (
            WireInstanceState::ShuttingDown,
            WireStatus::TerminatedByUser,
            RequestState::Active,
            LegacyAction::TerminateInstances,
            None,
        );
        assert_eq!(
            reports(&effects)
                .iter()
                .map(|report| wire(report))
                .collect::<Vec<_>>(),
            vec![shutting_down; 2]
        );
        assert!(
            step(
                &mut machine,
                &Event::TerminationRequested {
                    instance_ids: Vec::new()
                }
            )
            .is_empty()
        );

        let first = step(&mut machine, &Event::InstanceDeleted { instance_id: id(0) });
        let terminated = (
            WireInstanceState::Terminated,
            WireStatus::TerminatedByUser,
            RequestState::Closed,
            LegacyAction::TerminateInstances,
            None,
        );
        assert_eq!(wire(reports(&first)[0]), terminated);
        let last = step(&mut machine, &Event::InstanceDeleted { instance_id: id(1) });
        assert_eq!(names(&last), ["ReportInstance", "RemoveRequest"]);
        assert!(machine.is_final());
    }

    #[test]
    fn terminating_some_instances_keeps_the_others_running() {
        let mut machine = machine_in("running");
        let effects = step(
            &mut machine,
            &Event::TerminationRequested {
                instance_ids: vec![id(1), "9-sr-other".to_string()],
            },
        );
        assert_eq!(names(&effects), TAKE_DOWN_ONE);
        assert_eq!(machine.state_name(), "running");
        run(
            &mut machine,
            &[Event::InstanceDeleted { instance_id: id(1) }],
        );
        assert_eq!(machine.state_name(), "running");
        let states: Vec<InstanceState> = machine
            .instances()
            .map(|(_, instance)| instance.state)
            .collect();
        assert_eq!(
            states,
            vec![
                InstanceState::Running,
                InstanceState::Terminated(EndCause::ByUser)
            ]
        );
    }

    #[test]
    fn a_drain_terminates_everything_for_service_maintenance() {
        let mut machine = machine_in("running");
        let effects = step(&mut machine, &Event::DrainRequested);
        for report in reports(&effects) {
            assert_eq!(report.status, WireStatus::TerminatedByService);
            assert_eq!(
                report.termination_cause,
                Some(FailureClass::TerminatedServiceMaintenance)
            );
        }
        assert_eq!(machine.state_name(), "terminating");
    }

    #[test]
    fn a_termination_before_the_message_has_nothing_to_do() {
        let mut machine = FunctionMachine::new("r1", Timeouts::default());
        assert!(
            step(
                &mut machine,
                &Event::TerminationRequested {
                    instance_ids: Vec::new()
                }
            )
            .is_empty()
        );
        assert!(machine.is_final());
    }

    #[test]
    fn a_machine_rebuilt_from_the_cluster_reports_nothing_sis_has() {
        let mut machine = FunctionMachine::new("r1", Timeouts::default());
        let effects = step(
            &mut machine,
            &Event::Rebuilt {
                request: sample_request(),
                acknowledged: true,
                pods: vec![(id(0), true), (id(1), true)],
            },
        );
        assert_eq!(
            effects,
            vec![Effect::ProjectRequest(RequestStatus::RequestCompleted)]
        );
        assert_eq!(machine.state_name(), "running");
        assert!(step(&mut machine, &observed(0, ready_pod())).is_empty());
        let before_ack = step(
            &mut FunctionMachine::new("r1", Timeouts::default()),
            &Event::Rebuilt {
                request: sample_request(),
                acknowledged: false,
                pods: Vec::new(),
            },
        );
        assert_eq!(names(&before_ack), ["AcknowledgeRequest"]);
    }

    #[test]
    fn sis_listing_an_instance_wrongly_is_told_again_and_a_stranger_is_terminated() {
        let mut machine = machine_in("running");
        let listed = |id: String, state: &str| Event::InstanceListed {
            instance_id: id,
            state: state.to_string(),
        };
        assert!(step(&mut machine, &listed(id(0), "running")).is_empty());
        let again = step(&mut machine, &listed(id(1), "starting"));
        assert_eq!(wire(reports(&again)[0]).0, WireInstanceState::Running);
        let stranger = step(&mut machine, &listed(id(7), "running"));
        assert_eq!(
            wire(reports(&stranger)[0]),
            (
                WireInstanceState::Terminated,
                WireStatus::TerminatedByService,
                RequestState::Closed,
                LegacyAction::TerminateInstances,
                Some(FailureClass::TerminatedDuetoSyncAction)
            )
        );
        assert_eq!(machine.state_name(), "running");
    }

    #[test]
    fn a_request_stored_with_its_creation_message_still_reads() {
        // Records written before the message moved to the request's Secret carry it.
        let old = r#"{"request_id":"r1","function_id":"fn-1","function_version_id":"fv-1",
            "nca_id":"nca-1","message_batch_id":"batch-1","instance_type":"NCP.GPU.H100_1x",
            "gpu_name":"H100","instance_count":2,"kind":"Function",
            "creation_message":"{\"requestId\":\"r1\"}"}"#;
        let request: FunctionRequest = serde_json::from_str(old).expect("an old request reads");
        assert_eq!(request, sample_request());
    }

    #[test]
    fn an_instance_id_is_nvidias_pod_name() {
        assert_eq!(instance_id("2f1c", 3), "3-sr-2f1c");
        let names: Vec<String> = machine_in("running")
            .instances()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(names, ["0-sr-r1", "1-sr-r1"]);
    }

    fn fuzz_events() -> Vec<Event> {
        let not_ready = PodObservation {
            ready: false,
            ready_changed_at: Some(T0),
            ..ready_pod()
        };
        let unscheduled = PodObservation {
            phase: PodPhase::Pending,
            scheduled: false,
            ready: false,
            ..ready_pod()
        };
        let mut events = sample_events();
        for index in 0..3 {
            events.extend([
                Event::InstanceCreated {
                    instance_id: id(index),
                },
                observed(index, ready_pod()),
                observed(index, not_ready.clone()),
                observed(index, unscheduled.clone()),
                observed(index, image_pull_pod()),
                Event::InstanceDeleted {
                    instance_id: id(index),
                },
                Event::ReportPreconditionFailed {
                    instance_id: id(index),
                },
                Event::TerminationRequested {
                    instance_ids: vec![id(index)],
                },
            ]);
        }
        events.extend([
            delivered("Create.NVCA.Function.c-1.H100.NCP|GPU|H100_1x:8"),
            Event::MessageReceived {
                request: FunctionRequest {
                    request_id: "r2".to_string(),
                    ..sample_request()
                },
                receipt: RECEIPT.to_string(),
            },
        ]);
        events.extend(
            sample_effects()
                .iter()
                .map(|effect| FunctionMachine::effect_failed(effect, "refused")),
        );
        events
    }

    proptest! {
        #[test]
        fn random_events_never_panic_and_repeated_outcomes_do_nothing(
            start in 0..8usize,
            picks in prop::collection::vec((0..64usize, any::<bool>(), 0..600_000u64), 0..60),
        ) {
            // A redelivered queue message is acked every time, and an instance SIS keeps
            // listing wrongly is reported every time: those repetitions are meant.
            let redelivery = |event: &Event| {
                matches!(
                    event,
                    Event::MessageReceived { .. }
                        | Event::MessageRefused { .. }
                        | Event::InstanceListed { .. }
                )
            };
            testkit::replay(sample_machines()[start].clone(), &fuzz_events(), &picks, redelivery);
        }
    }
}
