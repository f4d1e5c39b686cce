//! The GPU inventory, kept current from watches: GPU nodes (`nvidia.com/gpu.present=true`,
//! as NVIDIA's node informer selects them) and the pods of the requests namespace (GPUs
//! they request are allocated). A change marks the [`Debouncer`]; when it says so the
//! inventory is computed again ([`crate::gpu::discover`], or [`crate::gpu::from_manual`]
//! with `DynamicGPUDiscovery` off), the `nvca.nvcf.nvidia.io/instance-type` labels it asks
//! for are written (dynamic discovery only, as NVIDIA's `NodeUpdater`), health and metrics
//! are updated, and the inventory is published on the watch channel.
//!
//! It is also computed again every registration diff interval, changed or not, as NVIDIA
//! recomputes on that tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};

use super::health::{self, Component, Health, Level};
use super::metrics::Metrics;
use crate::gpu::node::{GPU_PRESENT_LABEL, GPU_RESOURCE};
use crate::gpu::{Debouncer, DiscoveryOptions, Inventory, ManualConfig, discover, from_manual};
use crate::kube::watched_pod::WatchedPod;
use crate::machines::Timestamp;

/// The field manager of the agent's node label writes.
pub const FIELD_MANAGER: &str = "nvca-agent";
/// NVIDIA's ConfigMap of the manual GPU configuration, key `gpus` (JSON), in the system
/// namespace (`N/pkg/nodefeatures/static_client.go`).
pub const MANUAL_CONFIGMAP: &str = "nvca-config";
pub const MANUAL_KEY: &str = "gpus";

/// What the inventory task needs.
pub struct InventorySource {
    pub client: kube::Client,
    pub options: DiscoveryOptions,
    pub dynamic: bool,
    /// `agent.gpuManualInstanceConfigB64`, when set; else ConfigMap `nvca-config`.
    pub manual_b64: Option<String>,
    pub system_namespace: String,
    pub requests_namespace: String,
    pub quiet: Duration,
    pub max_delay: Duration,
    pub resync: Duration,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub publish: watch::Sender<Option<Arc<Inventory>>>,
}

/// What the watches have seen so far.
#[derive(Default)]
struct Seen {
    nodes: HashMap<String, Node>,
    /// GPUs requested per node, by pod (namespace-local names).
    pods: HashMap<String, (String, u32)>,
}

enum Change {
    Node(Box<WatchEvent<Node>>),
    Pod(Box<WatchEvent<WatchedPod>>),
}

/// GPUs a pod asks for: requests, else limits, of `nvidia.com/gpu`, over its containers;
/// finished pods ask for none.
fn requested_gpus(pod: &Pod) -> u32 {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    if finished {
        return 0;
    }
    let Some(spec) = &pod.spec else { return 0 };
    spec.containers
        .iter()
        .filter_map(|c| {
            let resources = c.resources.as_ref()?;
            let quantity = resources
                .requests
                .as_ref()
                .and_then(|r| r.get(GPU_RESOURCE))
                .or_else(|| resources.limits.as_ref()?.get(GPU_RESOURCE))?;
            quantity.0.parse::<u32>().ok()
        })
        .sum()
}

impl InventorySource {
    /// Runs until `publish` has no receivers left.
    pub async fn run(self) {
        let (changes, mut incoming) = mpsc::unbounded_channel();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node_config = watcher::Config::default().labels(&format!("{GPU_PRESENT_LABEL}=true"));
        let node_changes = changes.clone();
        let node_task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher::watcher(nodes, node_config).default_backoff());
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if node_changes.send(Change::Node(Box::new(event))).is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "node watch interrupted; resuming"),
                }
            }
        });
        let pods: Api<WatchedPod> = Api::namespaced(self.client.clone(), &self.requests_namespace);
        let pod_task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(
                watcher::watcher(pods, watcher::Config::default()).default_backoff()
            );
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if changes.send(Change::Pod(Box::new(event))).is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "pod watch interrupted; resuming"),
                }
            }
        });

        let mut seen = Seen::default();
        let mut debouncer = Debouncer::new(self.quiet, self.max_delay);
        let mut nodes_listed = false;
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = debouncer.publish_at().map(|at| at.since(Timestamp::now()));
            let mut publish_now = false;
            tokio::select! {
                change = incoming.recv() => {
                    let Some(change) = change else { break };
                    if apply(&mut seen, change, &mut nodes_listed) && nodes_listed {
                        debouncer.changed(Timestamp::now());
                    }
                }
                () = sleep_or_forever(due) => {}
                _ = resync.tick() => publish_now = nodes_listed,
                () = self.publish.closed() => break,
            }
            if debouncer.poll(Timestamp::now()) || publish_now {
                self.recompute(&seen).await;
            }
        }
        node_task.abort();
        pod_task.abort();
    }

    async fn recompute(&self, seen: &Seen) {
        let nodes: Vec<Node> = seen.nodes.values().cloned().collect();
        let mut per_node: HashMap<&str, u32> = HashMap::new();
        for (node, gpus) in seen.pods.values() {
            *per_node.entry(node.as_str()).or_default() += gpus;
        }
        let requested = |node: &str| per_node.get(node).copied().unwrap_or(0);
        let inventory = if self.dynamic {
            discover(&nodes, &self.options, &requested)
        } else {
            match self.manual_config().await {
                Ok(config) => from_manual(&config, &nodes, &requested),
                Err(error) => {
                    tracing::error!(%error, "manual GPU configuration unusable");
                    self.health
                        .set_component(health::GPU, Component::unhealthy(Level::Error, error));
                    return;
                }
            }
        };
        if self.dynamic {
            self.write_labels(&inventory).await;
        }
        for skipped in &inventory.skipped {
            tracing::debug!(node = %skipped.node, reason = %skipped.reason, "GPU node not used");
        }
        self.health
            .set_component(health::GPU, Component::healthy(Level::Error));
        self.health.set_component(
            health::GPU_MONITOR,
            if inventory.is_empty() {
                Component::unhealthy(Level::Error, "no GPUs available in cluster")
            } else {
                Component::healthy(Level::Error)
            },
        );
        self.health.set_gpu_usage(inventory.gpu_usage());
        self.metrics.set_inventory(&inventory);
        let inventory = Arc::new(inventory);
        self.publish.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&*inventory);
            if changed {
                let summary: Vec<String> = inventory
                    .registration
                    .iter()
                    .map(|gpu| format!("{} {}", gpu.name, gpu.capacity))
                    .collect();
                tracing::info!(gpus = %summary.join(", "), unclassified = inventory.unclassified_nodes(), skipped = inventory.skipped.len(), "GPU inventory");
                *current = Some(Arc::clone(&inventory));
            }
            changed
        });
    }

    /// The instance-type labels discovery asks for, merge-patched one node at a time.
    async fn write_labels(&self, inventory: &Inventory) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        for patch in &inventory.label_patches {
            match nodes
                .patch(&patch.node, &params, &Patch::Merge(patch.merge_patch()))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %patch.node, value = ?patch.value, "instance-type label written")
                }
                Err(error) => {
                    tracing::warn!(node = %patch.node, %error, "cannot write the instance-type label; the next change tries again")
                }
            }
        }
    }

    async fn manual_config(&self) -> Result<ManualConfig, String> {
        if let Some(b64) = &self.manual_b64 {
            return ManualConfig::decode(b64).map_err(|error| error.to_string());
        }
        let configmaps: Api<ConfigMap> =
            Api::namespaced(self.client.clone(), &self.system_namespace);
        let namespace = &self.system_namespace;
        let configmap = configmaps
            .get_opt(MANUAL_CONFIGMAP)
            .await
            .map_err(|error| format!("cannot read ConfigMap {namespace}/{MANUAL_CONFIGMAP}: {error}"))?
            .ok_or_else(|| {
                format!(
                    "DynamicGPUDiscovery is off and ConfigMap {namespace}/{MANUAL_CONFIGMAP} does not exist: set gpuManualInstanceConfigB64 in the chart, or turn DynamicGPUDiscovery on"
                )
            })?;
        let json = configmap
            .data
            .as_ref()
            .and_then(|data| data.get(MANUAL_KEY))
            .ok_or_else(|| {
                format!("ConfigMap {namespace}/{MANUAL_CONFIGMAP} has no key {MANUAL_KEY}")
            })?;
        ManualConfig::parse_json(json).map_err(|error| error.to_string())
    }
}

/// Record a watch event; true when it may change the inventory.
fn apply(seen: &mut Seen, change: Change, nodes_listed: &mut bool) -> bool {
    let change = match change {
        Change::Node(event) => Ok(*event),
        Change::Pod(event) => Err(*event),
    };
    match change {
        Ok(WatchEvent::Init) => {
            seen.nodes.clear();
            false
        }
        Ok(WatchEvent::InitApply(node) | WatchEvent::Apply(node)) => {
            let name = node.name_any();
            let changed = seen.nodes.get(&name).is_none_or(|old| differs(old, &node));
            seen.nodes.insert(name, node);
            changed
        }
        Ok(WatchEvent::Delete(node)) => seen.nodes.remove(&node.name_any()).is_some(),
        Ok(WatchEvent::InitDone) => {
            *nodes_listed = true;
            true
        }
        Err(WatchEvent::Init) => {
            seen.pods.clear();
            false
        }
        Err(WatchEvent::InitDone) => true,
        Err(WatchEvent::InitApply(WatchedPod(pod)) | WatchEvent::Apply(WatchedPod(pod))) => {
            let gpus = requested_gpus(&pod);
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let entry = (node, gpus);
            let key = pod.name_any();
            if gpus == 0 || entry.0.is_empty() {
                return seen.pods.remove(&key).is_some();
            }
            seen.pods.insert(key, entry.clone()) != Some(entry)
        }
        Err(WatchEvent::Delete(pod)) => seen.pods.remove(&pod.name_any()).is_some(),
    }
}

/// Whether a node update may matter to discovery: labels, allocatable, readiness or
/// cordon. A kubelet heartbeat (condition timestamps only) does not.
fn differs(old: &Node, new: &Node) -> bool {
    let ready = |node: &Node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    old.metadata.labels != new.metadata.labels
        || old.spec.as_ref().and_then(|s| s.unschedulable)
            != new.spec.as_ref().and_then(|s| s.unschedulable)
        || old.status.as_ref().and_then(|s| s.allocatable.clone())
            != new.status.as_ref().and_then(|s| s.allocatable.clone())
        || ready(old) != ready(new)
}

async fn sleep_or_forever(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, request: Option<&str>, limit: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "gpu-h100-0", "containers": [{
                "name": "inference",
                "resources": {
                    "requests": request.map(|q| serde_json::json!({"nvidia.com/gpu": q})),
                    "limits": limit.map(|q| serde_json::json!({"nvidia.com/gpu": q})),
                }
            }]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn pods_allocate_what_they_request_until_they_finish() {
        assert_eq!(requested_gpus(&pod("Running", Some("2"), Some("2"))), 2);
        assert_eq!(requested_gpus(&pod("Pending", None, Some("1"))), 1);
        assert_eq!(requested_gpus(&pod("Succeeded", Some("2"), None)), 0);
        assert_eq!(requested_gpus(&pod("Running", None, None)), 0);
    }

    #[test]
    fn heartbeats_are_not_changes_but_labels_and_readiness_are() {
        let node = |label: &str, ready: &str, heartbeat: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": label}},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}
            }))
            .unwrap()
        };
        let base = node("NVIDIA-H100-80GB-HBM3", "True", "2026-11-30T10:00:00Z");
        assert!(!differs(
            &base,
            &node("NVIDIA-H100-80GB-HBM3", "True", "2026-11-30T10:00:40Z")
        ));
        assert!(differs(
            &base,
            &node("NVIDIA-A100-SXM4-80GB", "True", "2026-11-30T10:00:00Z")
        ));
        assert!(differs(
            &base,
            &node("NVIDIA-H100-80GB-HBM3", "False", "2026-11-30T10:00:00Z")
        ));
    }
}
