//! What the pod watch last saw of each function pod that status updates carry, as
//! NVIDIA's agent reads them from the pod when it reports
//! (`N/pkg/nvca/k8scomputebackend.go`, `GetICMSRequestUpdatesForCreatePodRequest` and
//! `GetErroredPodLogs`):
//! - its addresses, `[hostIP, podIP]`, the `instanceIps` sent under `LowLatencyStreaming`
//!   (on by default) so that NVCF can stream to the instance directly; either may still
//!   be empty for a pod not yet placed, as NVIDIA sends them;
//! - each container's state, the lines NVIDIA appends to a failed instance's `errorLog`
//!   (`INIT CONTAINER init EXITED, CODE=1`, `(CONTAINER IN RESTART LOOP)`).
//!
//! A pod being deleted is set aside first, so the `terminated` update that follows its
//! deletion still has its last container states. Kept in memory only: it is what the
//! cluster says now, not a decision, so the next watch after a restart fills it again.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// One pod as last seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    addresses: [String; 2],
    containers: String,
}

#[derive(Debug, Default)]
pub struct SeenPods {
    live: Mutex<HashMap<String, Seen>>,
    /// Pods being deleted, until their `terminated` update.
    set_aside: Mutex<HashMap<String, Seen>>,
}

fn lock(map: &Mutex<HashMap<String, Seen>>) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SeenPods {
    /// The pod `name` as just seen.
    pub fn seen(&self, name: &str, pod: &Pod) {
        let status = pod.status.clone().unwrap_or_default();
        let seen = Seen {
            addresses: [
                status.host_ip.clone().unwrap_or_default(),
                status.pod_ip.clone().unwrap_or_default(),
            ],
            containers: container_lines(
                status
                    .init_container_statuses
                    .as_deref()
                    .unwrap_or_default(),
                status.container_statuses.as_deref().unwrap_or_default(),
            ),
        };
        lock(&self.live).insert(name.to_string(), seen);
    }

    /// The pod `name` is gone: its updates carry no addresses any more (NVIDIA's
    /// pod-not-found updates have none either).
    pub fn gone(&self, name: &str) {
        lock(&self.live).remove(name);
    }

    /// The pod `name` is about to be deleted: keep what it showed for its last update.
    pub fn set_aside(&self, name: &str) {
        if let Some(seen) = lock(&self.live).get(name).cloned() {
            lock(&self.set_aside).insert(name.to_string(), seen);
        }
    }

    /// `[hostIP, podIP]` of instance `name` while its pod is there.
    pub fn addresses(&self, name: &str) -> Vec<String> {
        lock(&self.live)
            .get(name)
            .map(|seen| seen.addresses.to_vec())
            .unwrap_or_default()
    }

    /// The container lines of `name` for its `terminated` update, which is its last: what
    /// was set aside is let go.
    pub fn last_containers(&self, name: &str) -> Option<String> {
        let set_aside = lock(&self.set_aside).remove(name);
        set_aside
            .or_else(|| lock(&self.live).get(name).cloned())
            .map(|seen| seen.containers)
            .filter(|lines| !lines.is_empty())
    }
}

/// NVIDIA's lines, init containers first: `[INIT ]CONTAINER <name> RUNNING|WAITING|EXITED,
/// CODE=<n>`, then `:` and `(CONTAINER IN RESTART LOOP)` after a restart, each ended by
/// `---`. (NVIDIA adds the failed containers' last log lines under `LogPosting`, off by
/// default; nvca does not fetch logs.)
fn container_lines(init: &[ContainerStatus], containers: &[ContainerStatus]) -> String {
    let mut out = String::new();
    let lines = init
        .iter()
        .map(|status| (true, status))
        .chain(containers.iter().map(|status| (false, status)));
    for (is_init, status) in lines {
        if is_init {
            out.push_str("INIT ");
        }
        out.push_str("CONTAINER ");
        out.push_str(&status.name);
        let state = status.state.as_ref();
        if state.is_some_and(|s| s.running.is_some()) {
            out.push_str(" RUNNING");
        } else if state.is_some_and(|s| s.waiting.is_some()) {
            out.push_str(" WAITING");
        } else if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
            out.push_str(&format!(" EXITED, CODE={}", done.exit_code));
        }
        if status.restart_count > 0 {
            out.push_str(":\n(CONTAINER IN RESTART LOOP)");
        }
        out.push_str("\n---\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodStatus,
    };

    fn status(name: &str, state: ContainerState, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.to_string(),
            state: Some(state),
            restart_count: restarts,
            ..ContainerStatus::default()
        }
    }

    fn pod(status: PodStatus) -> Pod {
        Pod {
            status: Some(status),
            ..Pod::default()
        }
    }

    #[test]
    fn host_first_then_pod_and_no_addresses_once_gone() {
        let seen = SeenPods::default();
        seen.seen("0-sr-r1", &Pod::default());
        assert_eq!(seen.addresses("0-sr-r1"), ["", ""], "a pod not yet placed");
        seen.seen(
            "0-sr-r1",
            &pod(PodStatus {
                host_ip: Some("10.0.0.7".to_string()),
                pod_ip: Some("10.244.1.9".to_string()),
                ..PodStatus::default()
            }),
        );
        assert_eq!(seen.addresses("0-sr-r1"), ["10.0.0.7", "10.244.1.9"]);
        seen.gone("0-sr-r1");
        assert!(seen.addresses("0-sr-r1").is_empty());
    }

    #[test]
    fn container_lines_read_as_nvidias_and_outlive_the_deletion_until_reported() {
        let seen = SeenPods::default();
        seen.seen(
            "0-sr-r1",
            &pod(PodStatus {
                init_container_statuses: Some(vec![status(
                    "init",
                    ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 0,
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    },
                    0,
                )]),
                container_statuses: Some(vec![
                    status(
                        "inference",
                        ContainerState {
                            waiting: Some(ContainerStateWaiting::default()),
                            ..ContainerState::default()
                        },
                        4,
                    ),
                    status(
                        "utils",
                        ContainerState {
                            running: Some(ContainerStateRunning::default()),
                            ..ContainerState::default()
                        },
                        0,
                    ),
                ]),
                ..PodStatus::default()
            }),
        );
        let expected = "INIT CONTAINER init EXITED, CODE=0\n---\n\
                        CONTAINER inference WAITING:\n(CONTAINER IN RESTART LOOP)\n---\n\
                        CONTAINER utils RUNNING\n---\n";
        seen.set_aside("0-sr-r1");
        seen.gone("0-sr-r1");
        assert_eq!(seen.last_containers("0-sr-r1").as_deref(), Some(expected));
        assert_eq!(
            seen.last_containers("0-sr-r1"),
            None,
            "let go once reported"
        );
    }
}
