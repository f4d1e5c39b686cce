//! Where each instance's pod is — its node's and its own IP — as the pod watch last saw
//! them, for the `instanceIps` of status updates: NVIDIA's agent sends
//! `[hostIP, podIP]` under `LowLatencyStreaming` (on by default) so that NVCF can stream
//! to the instance directly (`k8scomputebackend.go`,
//! `GetICMSRequestUpdatesForCreatePodRequest`). Either may still be empty for a pod not
//! yet placed, as NVIDIA sends them. Kept in memory only: it is what the cluster says
//! now, not a decision, so the next watch after a restart fills it again.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Default)]
pub struct Addresses {
    by_instance: Mutex<HashMap<String, [String; 2]>>,
}

impl Addresses {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, [String; 2]>> {
        self.by_instance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pod `name` as just seen.
    pub fn seen(&self, name: &str, pod: &Pod) {
        let status = pod.status.as_ref();
        let ip = |read: fn(&k8s_openapi::api::core::v1::PodStatus) -> Option<&String>| {
            status.and_then(read).cloned().unwrap_or_default()
        };
        let addresses = [ip(|s| s.host_ip.as_ref()), ip(|s| s.pod_ip.as_ref())];
        self.map().insert(name.to_string(), addresses);
    }

    /// The pod `name` is gone: its updates carry no addresses any more (NVIDIA's
    /// pod-not-found updates have none either).
    pub fn gone(&self, name: &str) {
        self.map().remove(name);
    }

    /// `[hostIP, podIP]` of instance `name`, when its pod has been seen.
    pub fn of(&self, name: &str) -> Vec<String> {
        self.map()
            .get(name)
            .map(|addresses| addresses.to_vec())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    #[test]
    fn host_first_then_pod_and_nothing_once_gone() {
        let addresses = Addresses::default();
        let mut pod = Pod::default();
        addresses.seen("0-sr-r1", &pod);
        assert_eq!(addresses.of("0-sr-r1"), ["", ""], "a pod not yet placed");
        pod.status = Some(PodStatus {
            host_ip: Some("10.0.0.7".to_string()),
            pod_ip: Some("10.244.1.9".to_string()),
            ..PodStatus::default()
        });
        addresses.seen("0-sr-r1", &pod);
        assert_eq!(addresses.of("0-sr-r1"), ["10.0.0.7", "10.244.1.9"]);
        addresses.gone("0-sr-r1");
        assert!(addresses.of("0-sr-r1").is_empty());
    }
}
