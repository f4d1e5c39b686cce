//! NVIDIA's instance failure classes, and the judgement of one pod observation against
//! NVIDIA's timeouts. Pure: time comes in as `now`.
//!
//! NVIDIA measures most timeouts from the pod's launch, and worker degradation from the
//! last change of its Ready condition; so does this module, which needs no memory of
//! earlier observations and gives the same verdict after a restart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Why an instance ended, NVIDIA's `ICMSInstanceState` names without the `ICMSInstance`
/// prefix. Each has its wire value (`terminationCause` and `systemFailure` of the status
/// update) and its `failure_category` label of `nvca_workload_result_total`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
pub enum FailureClass {
    FailedImagePullIssues,
    FailedInitContainerStuck,
    FailedInitContainerRestartLoop,
    FailedContainerRestartLoop,
    FailedCreateContainerError,
    KilledNoCapacity,
    KilledAdmissionError,
    SharedStorageFailure,
    InternalPersistentStorageFailure,
    DegradedWorker,
    FailedNotFound,
    TerminatedTerminalError,
    TerminatedDuetoSyncAction,
    TerminatedServiceMaintenance,
    TerminatedPreconditionFailure,
    /// The fallback.
    Failed,
}

impl FailureClass {
    /// (wire value, metric category), NVIDIA's strings.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            FailureClass::FailedImagePullIssues => ("image-pull-issues", "image_pull"),
            FailureClass::FailedInitContainerStuck => ("init-container-stuck", "init_stuck"),
            FailureClass::FailedInitContainerRestartLoop => {
                ("init-container-restart-loop", "init_restart_loop")
            }
            FailureClass::FailedContainerRestartLoop => {
                ("container-restart-loop", "container_restart_loop")
            }
            FailureClass::FailedCreateContainerError => {
                ("create-container-error", "create_container_error")
            }
            FailureClass::KilledNoCapacity => ("instance-terminated-no-capacity", "no_capacity"),
            FailureClass::KilledAdmissionError => {
                ("instance-terminated-admission-error", "admission_error")
            }
            FailureClass::SharedStorageFailure => ("shared-storage-failure", "shared_storage"),
            FailureClass::InternalPersistentStorageFailure => {
                ("internal-persistent-storage-failure", "persistent_storage")
            }
            FailureClass::DegradedWorker => ("degraded-worker", "degraded_worker"),
            FailureClass::FailedNotFound => ("instance-not-found", "not_found"),
            FailureClass::TerminatedTerminalError => {
                ("instance-terminated-terminal-error", "terminal_error")
            }
            FailureClass::TerminatedDuetoSyncAction => {
                ("instance-terminated-sync-action", "sync_action")
            }
            FailureClass::TerminatedServiceMaintenance => (
                "instance-terminated-service-maintenance",
                "service_maintenance",
            ),
            FailureClass::TerminatedPreconditionFailure => (
                "instance-terminated-precondition-failure",
                "precondition_failure",
            ),
            FailureClass::Failed => ("failed", "unknown"),
        }
    }

    /// The value of `terminationCause` and `systemFailure` on the wire.
    pub fn wire(self) -> &'static str {
        self.names().0
    }

    /// The `failure_category` metric label.
    pub fn category(self) -> &'static str {
        self.names().1
    }
}

/// NVIDIA's instance health timeouts. Only the degradation period is configurable there
/// (`agent.workerDegradationPeriod`); the rest are its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// An image pull failing this long after launch fails the instance.
    pub image_pull: Duration,
    /// A function pod not scheduled this long after launch: no capacity.
    pub scheduling: Duration,
    /// How long a task may wait for a node (NVIDIA uses the task's max queued duration,
    /// which the machines do not parse).
    pub pending: Duration,
    /// Restarts that make a restart loop ...
    pub restart_threshold: u32,
    /// ... once the pod is this old.
    pub restart_loop: Duration,
    /// Init containers still running this long after launch.
    pub init_stuck: Duration,
    /// A worker never ready this long after its start.
    pub startup: Duration,
    /// A worker that was ready and has not been for this long.
    pub degradation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MINUTE: Duration = Duration::from_secs(60);
        Timeouts {
            image_pull: MINUTE,
            scheduling: 10 * MINUTE,
            pending: 180 * MINUTE,
            restart_threshold: 3,
            restart_loop: 10 * MINUTE,
            init_stuck: 120 * MINUTE,
            startup: 120 * MINUTE,
            degradation: 30 * MINUTE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// What the pod watch saw of one instance's pod: plain data taken from its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodObservation {
    pub phase: PodPhase,
    /// `status.reason`, such as `UnexpectedAdmissionError`.
    pub reason: Option<String>,
    /// Condition `PodScheduled` is true.
    pub scheduled: bool,
    /// Condition `Initialized` is true.
    pub initialized: bool,
    /// Condition `Ready` is true.
    pub ready: bool,
    /// `metadata.creationTimestamp`.
    pub launched_at: Timestamp,
    /// `status.startTime`.
    pub started_at: Option<Timestamp>,
    /// `lastTransitionTime` of condition `Ready`.
    pub ready_changed_at: Option<Timestamp>,
    /// Why containers wait (`ErrImagePull`, `CreateContainerConfigError`, …), init
    /// containers' included.
    pub waiting_reasons: Vec<String>,
    /// The most restarts of any main container.
    pub restarts: u32,
    /// The most restarts of any init container.
    pub init_restarts: u32,
}

/// How far a healthy pod has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// Waiting for a node.
    Unscheduled,
    /// On a node; init containers or image pulls under way.
    Scheduled,
    /// Containers run but are not ready.
    Starting,
    Ready,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy(Progress),
    /// Failed for good; the detail goes to `healthInfo.errorLog`.
    Failed(FailureClass, String),
}

const ADMISSION_ERROR: &str = "UnexpectedAdmissionError";
const IMAGE_PULL_REASONS: &[&str] = &["ErrImagePull", "ImagePullBackOff"];
const CREATE_CONTAINER_REASONS: &[&str] = &["CreateContainerError", "CreateContainerConfigError"];

/// A started pod whose Ready condition last changed within this of its start has never
/// been ready (NVIDIA's test for the initial start-up).
const STARTUP_SLACK: Duration = Duration::from_secs(1);

/// Judge `pod` at `now`, in NVIDIA's order of checks.
pub fn judge(pod: &PodObservation, now: Timestamp, timeouts: &Timeouts) -> Verdict {
    let age = now.since(pod.launched_at);
    let fail = |class: FailureClass, detail: String| Verdict::Failed(class, detail);
    match pod.phase {
        PodPhase::Failed if pod.reason.as_deref() == Some(ADMISSION_ERROR) => {
            return fail(
                FailureClass::KilledAdmissionError,
                format!("pod rejected at admission: {ADMISSION_ERROR}"),
            );
        }
        PodPhase::Failed => {
            let reason = pod.reason.as_deref().unwrap_or("no reason given");
            return fail(FailureClass::Failed, format!("pod failed: {reason}"));
        }
        // NVIDIA reports a pod that ran to completion as running.
        PodPhase::Succeeded => return Verdict::Healthy(Progress::Ready),
        PodPhase::Running if pod.ready => return Verdict::Healthy(Progress::Ready),
        PodPhase::Pending | PodPhase::Unknown if !pod.scheduled => {
            return if age >= timeouts.scheduling {
                fail(
                    FailureClass::KilledNoCapacity,
                    format!("not scheduled within {}", show(timeouts.scheduling)),
                )
            } else {
                Verdict::Healthy(Progress::Unscheduled)
            };
        }
        _ => {}
    }
    if let Some(reason) = waiting(pod, CREATE_CONTAINER_REASONS) {
        return fail(
            FailureClass::FailedCreateContainerError,
            format!("container cannot be created: {reason}"),
        );
    }
    if let Some(reason) = waiting(pod, IMAGE_PULL_REASONS).filter(|_| age >= timeouts.image_pull) {
        return fail(
            FailureClass::FailedImagePullIssues,
            format!("image pull failing ({reason}) after {}", show(age)),
        );
    }
    if let Some(verdict) = restart_loop(pod, age, timeouts) {
        return verdict;
    }
    if pod.phase == PodPhase::Running {
        return match degraded(pod, now, timeouts) {
            Some(detail) => fail(FailureClass::DegradedWorker, detail),
            None => Verdict::Healthy(Progress::Starting),
        };
    }
    if age >= timeouts.init_stuck {
        return fail(
            FailureClass::FailedInitContainerStuck,
            format!("still initialising after {}", show(age)),
        );
    }
    Verdict::Healthy(if pod.initialized {
        Progress::Starting
    } else {
        Progress::Scheduled
    })
}

fn waiting<'a>(pod: &'a PodObservation, reasons: &[&str]) -> Option<&'a str> {
    pod.waiting_reasons
        .iter()
        .map(String::as_str)
        .find(|reason| reasons.contains(reason))
}

/// Main containers once initialised, init containers before.
fn restart_loop(pod: &PodObservation, age: Duration, timeouts: &Timeouts) -> Option<Verdict> {
    let (restarts, class, which) = if pod.initialized {
        (
            pod.restarts,
            FailureClass::FailedContainerRestartLoop,
            "container",
        )
    } else {
        (
            pod.init_restarts,
            FailureClass::FailedInitContainerRestartLoop,
            "init container",
        )
    };
    (restarts >= timeouts.restart_threshold && age >= timeouts.restart_loop).then(|| {
        Verdict::Failed(
            class,
            format!("{which} restarted {restarts} times in {}", show(age)),
        )
    })
}

/// A running, initialised pod not ready for longer than allowed: the start-up timeout if
/// it was never ready, the degradation period if it was.
fn degraded(pod: &PodObservation, now: Timestamp, timeouts: &Timeouts) -> Option<String> {
    let changed = pod.ready_changed_at.filter(|_| pod.initialized)?;
    let never_ready = pod
        .started_at
        .is_none_or(|started| changed <= started.plus(STARTUP_SLACK));
    let (limit, what) = if never_ready {
        (timeouts.startup, "never became ready")
    } else {
        (timeouts.degradation, "not ready")
    };
    let for_how_long = now.since(changed);
    (for_how_long >= limit).then(|| format!("worker {what} for {}", show(for_how_long)))
}

fn show(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strum::VariantArray;

    use super::*;
    use crate::machines::testkit::T0;

    const SECOND: u64 = 1000;
    const MINUTE: u64 = 60 * SECOND;

    /// A pod launched at `T0`, scheduled and initialised, running but not ready.
    fn pod() -> PodObservation {
        PodObservation {
            phase: PodPhase::Running,
            reason: None,
            scheduled: true,
            initialized: true,
            ready: false,
            launched_at: T0,
            started_at: Some(T0),
            ready_changed_at: Some(T0),
            waiting_reasons: Vec::new(),
            restarts: 0,
            init_restarts: 0,
        }
    }

    fn pending() -> PodObservation {
        PodObservation {
            phase: PodPhase::Pending,
            initialized: false,
            ready_changed_at: None,
            ..pod()
        }
    }

    fn unscheduled() -> PodObservation {
        PodObservation {
            scheduled: false,
            started_at: None,
            ..pending()
        }
    }

    fn waiting_on(reason: &str, base: PodObservation) -> PodObservation {
        PodObservation {
            waiting_reasons: vec![reason.to_string()],
            ..base
        }
    }

    /// Ready at `T0 + 10m`, not ready again since `T0 + 1h`.
    fn was_ready() -> PodObservation {
        PodObservation {
            ready_changed_at: Some(Timestamp(T0.0 + 60 * MINUTE)),
            ..pod()
        }
    }

    fn class(verdict: Verdict) -> Result<Progress, FailureClass> {
        match verdict {
            Verdict::Healthy(progress) => Ok(progress),
            Verdict::Failed(class, _) => Err(class),
        }
    }

    #[test]
    fn each_timeout_fails_at_nvidias_default_and_not_before() {
        use FailureClass::*;
        use Progress::*;
        let cases: Vec<(&str, PodObservation, u64, Result<Progress, FailureClass>)> = vec![
            (
                "unscheduled",
                unscheduled(),
                10 * MINUTE - 1,
                Ok(Unscheduled),
            ),
            (
                "unscheduled",
                unscheduled(),
                10 * MINUTE,
                Err(KilledNoCapacity),
            ),
            (
                "image pull",
                waiting_on("ErrImagePull", pending()),
                MINUTE - 1,
                Ok(Scheduled),
            ),
            (
                "image pull",
                waiting_on("ImagePullBackOff", pending()),
                MINUTE,
                Err(FailedImagePullIssues),
            ),
            (
                "create container",
                waiting_on("CreateContainerConfigError", pending()),
                0,
                Err(FailedCreateContainerError),
            ),
            (
                "restarts",
                PodObservation {
                    restarts: 3,
                    ..pod()
                },
                10 * MINUTE - 1,
                Ok(Starting),
            ),
            (
                "restarts",
                PodObservation {
                    restarts: 3,
                    ..pod()
                },
                10 * MINUTE,
                Err(FailedContainerRestartLoop),
            ),
            (
                "two restarts",
                PodObservation {
                    restarts: 2,
                    ..pod()
                },
                100 * MINUTE,
                Ok(Starting),
            ),
            (
                "init restarts",
                PodObservation {
                    init_restarts: 3,
                    ..pending()
                },
                10 * MINUTE,
                Err(FailedInitContainerRestartLoop),
            ),
            ("initialising", pending(), 120 * MINUTE - 1, Ok(Scheduled)),
            (
                "initialising",
                pending(),
                120 * MINUTE,
                Err(FailedInitContainerStuck),
            ),
            (
                "initialised",
                PodObservation {
                    initialized: true,
                    ..pending()
                },
                MINUTE,
                Ok(Starting),
            ),
            ("never ready", pod(), 120 * MINUTE - 1, Ok(Starting)),
            ("never ready", pod(), 120 * MINUTE, Err(DegradedWorker)),
            ("was ready", was_ready(), 90 * MINUTE - 1, Ok(Starting)),
            ("was ready", was_ready(), 90 * MINUTE, Err(DegradedWorker)),
            (
                "ready",
                PodObservation {
                    ready: true,
                    ..pod()
                },
                1000 * MINUTE,
                Ok(Ready),
            ),
            (
                "succeeded",
                PodObservation {
                    phase: PodPhase::Succeeded,
                    ..pod()
                },
                0,
                Ok(Ready),
            ),
            (
                "admission",
                PodObservation {
                    phase: PodPhase::Failed,
                    reason: Some(ADMISSION_ERROR.to_string()),
                    ..pending()
                },
                0,
                Err(KilledAdmissionError),
            ),
            (
                "failed",
                PodObservation {
                    phase: PodPhase::Failed,
                    reason: Some("Evicted".to_string()),
                    ..pod()
                },
                0,
                Err(Failed),
            ),
        ];
        for (name, pod, elapsed, expected) in cases {
            let verdict = judge(&pod, Timestamp(T0.0 + elapsed), &Timeouts::default());
            assert_eq!(class(verdict), expected, "{name} after {elapsed} ms");
        }
    }

    #[test]
    fn the_degradation_period_is_configurable() {
        let timeouts = Timeouts {
            degradation: Duration::from_secs(90 * 60),
            ..Timeouts::default()
        };
        let at = |minutes: u64| Timestamp(T0.0 + (60 + minutes) * MINUTE);
        assert_eq!(
            class(judge(&was_ready(), at(89), &timeouts)),
            Ok(Progress::Starting)
        );
        assert_eq!(
            class(judge(&was_ready(), at(90), &timeouts)),
            Err(FailureClass::DegradedWorker)
        );
    }

    #[test]
    fn a_failure_says_what_happened() {
        let verdict = judge(
            &waiting_on("ErrImagePull", pending()),
            Timestamp(T0.0 + 65 * SECOND),
            &Timeouts::default(),
        );
        assert_eq!(
            verdict,
            Verdict::Failed(
                FailureClass::FailedImagePullIssues,
                "image pull failing (ErrImagePull) after 1m 5s".to_string()
            )
        );
    }

    #[test]
    fn every_class_has_nvidias_distinct_wire_value_and_category() {
        let wires: BTreeSet<&str> = FailureClass::VARIANTS
            .iter()
            .map(|class| class.wire())
            .collect();
        let categories: BTreeSet<&str> = FailureClass::VARIANTS
            .iter()
            .map(|class| class.category())
            .collect();
        assert_eq!(wires.len(), FailureClass::VARIANTS.len());
        assert_eq!(categories.len(), FailureClass::VARIANTS.len());
        assert_eq!(
            FailureClass::KilledNoCapacity.wire(),
            "instance-terminated-no-capacity"
        );
        assert_eq!(FailureClass::DegradedWorker.category(), "degraded_worker");
        assert_eq!(FailureClass::Failed.category(), "unknown");
    }
}
