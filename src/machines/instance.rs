//! One instance of a function deployment (one pod), and how its state reads on the wire of
//! SIS's instance status update (`POST /v1/sirs/{requestId}/{instanceId}`).
//!
//! SIS accepts only `starting`, `running`, `shutting-down` and `terminated` as
//! `instanceState`; a failure is `terminated`, `instance-terminated-by-service`, request
//! `closed`, with NVIDIA's detailed state in `terminationCause` and `systemFailure`.

use serde::{Deserialize, Serialize};

use super::failure::{FailureClass, Progress};

/// A function or a task; it picks the legacy action name of status updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    Function,
    Task,
}

impl WorkloadKind {
    fn action(self) -> LegacyAction {
        match self {
            WorkloadKind::Function => LegacyAction::RequestSpotInstances,
            WorkloadKind::Task => LegacyAction::RequestSpotInstancesForTask,
        }
    }
}

/// Why an instance was taken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndCause {
    /// A termination request from NVCF.
    ByUser,
    /// `CordonAndDrainMaintenance`.
    Maintenance,
    /// It failed.
    Failure(FailureClass),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Being created, or created and waiting for a node.
    Pending,
    /// On a node; init containers or image pulls under way.
    Scheduled,
    /// Containers run, not ready yet (or not ready any more).
    Starting,
    Running,
    /// Failed for good; its pod is being deleted.
    Failed(FailureClass),
    /// Its pod is being deleted on request.
    Terminating(EndCause),
    /// Its pod is gone.
    Terminated(EndCause),
}

impl From<Progress> for InstanceState {
    fn from(progress: Progress) -> Self {
        match progress {
            Progress::Unscheduled => InstanceState::Pending,
            Progress::Scheduled => InstanceState::Scheduled,
            Progress::Starting => InstanceState::Starting,
            Progress::Ready => InstanceState::Running,
        }
    }
}

/// `instanceState` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum WireInstanceState {
    #[strum(serialize = "starting")]
    Starting,
    #[strum(serialize = "running")]
    Running,
    #[strum(serialize = "shutting-down")]
    ShuttingDown,
    #[strum(serialize = "terminated")]
    Terminated,
}

/// `status` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum WireStatus {
    #[strum(serialize = "fulfilled")]
    Fulfilled,
    #[strum(serialize = "instance-terminated-by-service")]
    TerminatedByService,
    #[strum(serialize = "instance-terminated-by-user")]
    TerminatedByUser,
}

/// `requestState` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum RequestState {
    #[strum(serialize = "active")]
    Active,
    #[strum(serialize = "closed")]
    Closed,
}

/// `action` on the wire: NVIDIA's legacy names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum LegacyAction {
    RequestSpotInstances,
    RequestSpotInstancesForTask,
    TerminateInstances,
}

/// The body of one instance status update, field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub instance_state: WireInstanceState,
    pub status: WireStatus,
    pub request_state: RequestState,
    pub action: LegacyAction,
    /// `terminationCause`, by its [`FailureClass::wire`] value.
    pub termination_cause: Option<FailureClass>,
    /// `systemFailure`: NVIDIA sends the cause's wire value here too.
    pub system_failure: Option<String>,
    /// `healthInfo.errorLog`: what went wrong, in a sentence.
    pub error_log: Option<String>,
}

/// One instance inside a function deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub index: u32,
    /// Its create succeeded or its pod was seen.
    pub created: bool,
    pub state: InstanceState,
    /// Why it failed, for `healthInfo.errorLog`.
    pub detail: Option<String>,
    /// What SIS was last told, so that each change is reported once.
    pub reported: Option<InstanceReport>,
}

impl Instance {
    pub fn new(index: u32) -> Self {
        Instance {
            index,
            created: false,
            state: InstanceState::Pending,
            detail: None,
            reported: None,
        }
    }

    /// Neither failed nor taken down.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state,
            InstanceState::Pending
                | InstanceState::Scheduled
                | InstanceState::Starting
                | InstanceState::Running
        )
    }

    /// The failure it ended with, if it did.
    pub fn failure(&self) -> Option<FailureClass> {
        match self.state {
            InstanceState::Failed(class) | InstanceState::Terminated(EndCause::Failure(class)) => {
                Some(class)
            }
            _ => None,
        }
    }

    /// How its state reads on the wire; `None` while SIS has nothing to learn yet.
    pub fn report(&self, instance_id: &str, kind: WorkloadKind) -> Option<InstanceReport> {
        use WireInstanceState::{Running, ShuttingDown, Starting, Terminated};
        let (instance_state, cause) = match self.state {
            InstanceState::Pending if !self.created => return None,
            InstanceState::Pending | InstanceState::Scheduled | InstanceState::Starting => {
                (Starting, None)
            }
            InstanceState::Running => (Running, None),
            InstanceState::Failed(class) => (Terminated, Some(EndCause::Failure(class))),
            InstanceState::Terminating(cause) => (ShuttingDown, Some(cause)),
            InstanceState::Terminated(cause) => (Terminated, Some(cause)),
        };
        let request_state = if instance_state == Terminated {
            RequestState::Closed
        } else {
            RequestState::Active
        };
        let (status, action, termination_cause) = match cause {
            None => (WireStatus::Fulfilled, kind.action(), None),
            Some(EndCause::ByUser) => (
                WireStatus::TerminatedByUser,
                LegacyAction::TerminateInstances,
                None,
            ),
            Some(EndCause::Maintenance) => (
                WireStatus::TerminatedByService,
                LegacyAction::TerminateInstances,
                Some(FailureClass::TerminatedServiceMaintenance),
            ),
            Some(EndCause::Failure(class)) => (
                WireStatus::TerminatedByService,
                LegacyAction::TerminateInstances,
                Some(class),
            ),
        };
        Some(InstanceReport {
            instance_id: instance_id.to_string(),
            instance_state,
            status,
            request_state,
            action,
            termination_cause,
            system_failure: termination_cause.map(|cause| cause.wire().to_string()),
            error_log: self.error_log(cause),
        })
    }

    /// `healthInfo.errorLog`: for a failed pod NVIDIA's first line of its log
    /// (`k8scomputebackend.go`), for a request refused before any pod the reason alone.
    fn error_log(&self, cause: Option<EndCause>) -> Option<String> {
        let Some(EndCause::Failure(class)) = cause else {
            return None;
        };
        match (&self.detail, self.created) {
            (Some(detail), false) => Some(detail.clone()),
            (Some(detail), true) => Some(format!(
                "pod terminated due to state {}: {detail}",
                class.wire()
            )),
            (None, _) => Some(format!("pod terminated due to state {}", class.wire())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Wire = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    );

    fn wire(instance: &Instance, kind: WorkloadKind) -> Option<Wire> {
        instance.report("0-sr-r1", kind).map(|report| {
            (
                report.instance_state.into(),
                report.status.into(),
                report.request_state.into(),
                report.action.into(),
                report.termination_cause.map(FailureClass::wire),
            )
        })
    }

    fn instance(state: InstanceState) -> Instance {
        Instance {
            created: true,
            state,
            ..Instance::new(0)
        }
    }

    #[test]
    fn every_state_reads_as_nvidia_reports_it() {
        use InstanceState::*;
        let image = FailureClass::FailedImagePullIssues;
        let cases: Vec<(Instance, Option<Wire>)> = vec![
            (Instance::new(0), None),
            (
                instance(Pending),
                Some((
                    "starting",
                    "fulfilled",
                    "active",
                    "RequestSpotInstances",
                    None,
                )),
            ),
            (
                instance(Scheduled),
                Some((
                    "starting",
                    "fulfilled",
                    "active",
                    "RequestSpotInstances",
                    None,
                )),
            ),
            (
                instance(Starting),
                Some((
                    "starting",
                    "fulfilled",
                    "active",
                    "RequestSpotInstances",
                    None,
                )),
            ),
            (
                instance(Running),
                Some((
                    "running",
                    "fulfilled",
                    "active",
                    "RequestSpotInstances",
                    None,
                )),
            ),
            (
                instance(Failed(image)),
                Some((
                    "terminated",
                    "instance-terminated-by-service",
                    "closed",
                    "TerminateInstances",
                    Some("image-pull-issues"),
                )),
            ),
            (
                instance(Terminated(EndCause::Failure(image))),
                Some((
                    "terminated",
                    "instance-terminated-by-service",
                    "closed",
                    "TerminateInstances",
                    Some("image-pull-issues"),
                )),
            ),
            (
                instance(Terminating(EndCause::ByUser)),
                Some((
                    "shutting-down",
                    "instance-terminated-by-user",
                    "active",
                    "TerminateInstances",
                    None,
                )),
            ),
            (
                instance(Terminated(EndCause::ByUser)),
                Some((
                    "terminated",
                    "instance-terminated-by-user",
                    "closed",
                    "TerminateInstances",
                    None,
                )),
            ),
            (
                instance(Terminating(EndCause::Maintenance)),
                Some((
                    "shutting-down",
                    "instance-terminated-by-service",
                    "active",
                    "TerminateInstances",
                    Some("instance-terminated-service-maintenance"),
                )),
            ),
            (
                instance(Terminated(EndCause::Maintenance)),
                Some((
                    "terminated",
                    "instance-terminated-by-service",
                    "closed",
                    "TerminateInstances",
                    Some("instance-terminated-service-maintenance"),
                )),
            ),
        ];
        for (instance, expected) in cases {
            assert_eq!(
                wire(&instance, WorkloadKind::Function),
                expected,
                "{:?}",
                instance.state
            );
        }
    }

    #[test]
    fn a_task_reports_with_its_own_action() {
        let report = instance(InstanceState::Running).report("0-sr-r1", WorkloadKind::Task);
        assert_eq!(
            report.map(|report| report.action),
            Some(LegacyAction::RequestSpotInstancesForTask)
        );
    }

    #[test]
    fn a_failure_carries_its_cause_and_detail_and_keeps_reading_the_same_once_gone() {
        let class = FailureClass::DegradedWorker;
        let failed = Instance {
            detail: Some("worker not ready for 30m".to_string()),
            ..instance(InstanceState::Failed(class))
        };
        let report = failed
            .report("1-sr-r1", WorkloadKind::Function)
            .expect("a failure is reported");
        assert_eq!(report.system_failure.as_deref(), Some("degraded-worker"));
        assert_eq!(
            report.error_log.as_deref(),
            Some("pod terminated due to state degraded-worker: worker not ready for 30m")
        );
        let gone = Instance {
            state: InstanceState::Terminated(EndCause::Failure(class)),
            ..failed.clone()
        };
        assert_eq!(gone.report("1-sr-r1", WorkloadKind::Function), Some(report));
        assert_eq!(gone.failure(), Some(class));
    }
}
