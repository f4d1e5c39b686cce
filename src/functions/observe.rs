//! A pod's status as the function machine judges it: plain data read from the pod. Pure.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::machines::Timestamp;
use crate::machines::failure::{PodObservation, PodPhase};

fn timestamp(time: &Time) -> Timestamp {
    Timestamp(u64::try_from(time.0.as_millisecond()).unwrap_or(0))
}

/// Read what [`crate::machines::failure::judge`] needs from `pod`.
pub fn observe(pod: &Pod) -> PodObservation {
    let status = pod.status.clone().unwrap_or_default();
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == kind)
    };
    let is_true = |kind: &str| condition(kind).is_some_and(|c| c.status == "True");
    let phase = match status.phase.as_deref() {
        Some("Pending") | None => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some(_) => PodPhase::Unknown,
    };
    let main = status.container_statuses.clone().unwrap_or_default();
    let init = status.init_container_statuses.clone().unwrap_or_default();
    let waiting_reasons = main
        .iter()
        .chain(init.iter())
        .filter_map(waiting_reason)
        .collect();
    let most_restarts =
        |statuses: &[ContainerStatus]| statuses.iter().map(|s| s.restart_count.max(0) as u32).max();
    PodObservation {
        phase,
        reason: status.reason.clone(),
        scheduled: is_true("PodScheduled"),
        initialized: is_true("Initialized"),
        ready: is_true("Ready"),
        launched_at: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(timestamp)
            .unwrap_or_default(),
        started_at: status.start_time.as_ref().map(timestamp),
        ready_changed_at: condition("Ready")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(timestamp),
        waiting_reasons,
        restarts: most_restarts(&main).unwrap_or(0),
        init_restarts: most_restarts(&init).unwrap_or(0),
    }
}

fn waiting_reason(status: &ContainerStatus) -> Option<String> {
    status
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
        .filter(|reason| !reason.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_conditions_waiting_reasons_and_restarts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "0-sr-r1", "creationTimestamp": "2026-11-30T10:00:00Z"},
            "status": {
                "phase": "Running",
                "startTime": "2026-11-30T10:00:02Z",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-30T10:05:00Z"}
                ],
                "containerStatuses": [
                    {"name": "inference", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                    {"name": "utils", "ready": true, "restartCount": 0, "image": "y", "imageID": "",
                     "state": {"running": {}}}
                ],
                "initContainerStatuses": [
                    {"name": "init", "ready": true, "restartCount": 1, "image": "z", "imageID": "",
                     "state": {"terminated": {"exitCode": 0}}}
                ]
            }
        }))
        .unwrap();
        let seen = observe(&pod);
        assert_eq!(seen.phase, PodPhase::Running);
        assert!(seen.scheduled && seen.initialized && !seen.ready);
        assert_eq!(seen.waiting_reasons, ["CrashLoopBackOff"]);
        assert_eq!((seen.restarts, seen.init_restarts), (4, 1));
        assert_eq!(
            seen.ready_changed_at.unwrap().0 - seen.launched_at.0,
            300_000
        );
        assert_eq!(seen.started_at.unwrap().0 - seen.launched_at.0, 2_000);
    }

    #[test]
    fn a_new_pod_is_pending_and_unscheduled() {
        let seen = observe(&Pod::default());
        assert_eq!(seen.phase, PodPhase::Pending);
        assert!(!seen.scheduled && !seen.ready);
    }
}
