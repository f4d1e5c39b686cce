//! [`AgentContext`]: what the agent's run loop hands to the parts that run beside it
//! (function deployments in `src/functions/`, the queue consumer). One struct, cloned
//! into each task; everything in it is cheap to clone and safe to share.
//!
//! The receivers are the agent's live state. Read them with `borrow()`, wait for a change
//! with `changed().await`; they never block the agent.

use std::sync::Arc;

use tokio::sync::watch;

use super::config::{ClusterIdentity, FeatureFlags};
use super::maintenance::MaintenanceMode;
use crate::gpu::Inventory;
use crate::sis::types::QueueCredentials;
use crate::sis::{QueueConfig, SisClient};
use crate::store::Store;

/// Everything a part of the agent needs, built once by `nvca`.
#[derive(Clone)]
pub struct AgentContext {
    /// Kubernetes, as the agent's ServiceAccount `nvca` (or `--kubeconfig`).
    pub client: kube::Client,
    /// SIS, with the agent's token and `X-Nv-Cluster-Id`. Its own retries are few: a
    /// caller that must not lose a call keeps it in a machine and lets the driver retry.
    pub sis: SisClient,
    /// Who the cluster is (`cluster.*` of config.yaml).
    pub cluster: ClusterIdentity,
    /// How to reach the NATS work queue: URL, cluster ID (durables `<stream>-<id>`),
    /// authentication (the projected token in PSAT mode). `QueueConsumer::connect(it)`.
    pub queue: QueueConfig,
    /// The agent's store (sled). Machines of every kind live here; the agent serves
    /// them on its admin endpoint for `nvca-state dump`.
    pub store: Store,
    /// `agent.featureFlags` of config.yaml at start (e.g. `KAIScheduler`).
    pub features: FeatureFlags,
    /// `agent.systemNamespace` (`nvca-system`).
    pub system_namespace: String,
    /// `agent.requestsNamespace` (`nvcf-backend`): where workloads and ICMSRequests live.
    pub requests_namespace: String,
    /// The GPU inventory, republished after node changes (debounced). `None` until the
    /// first look at the nodes. Capacity gates creation requests
    /// (`Inventory::gpus[gpu].available`).
    pub inventory: watch::Receiver<Option<Arc<Inventory>>>,
    /// The maintenance mode, from config.yaml's feature flags; changes without a restart
    /// when the operator patches the file (drain on uninstall). `accepts_new_work()`:
    /// pull creation messages; `drains()`: terminate every running workload.
    pub maintenance: watch::Receiver<MaintenanceMode>,
    /// True once SIS answered a heartbeat with `SELF_DESTRUCT` (and the agent does not
    /// skip it): terminate every workload, report only terminations, pull nothing.
    pub self_destructed: watch::Receiver<bool>,
    /// The queue credentials of the last registration or renewal. Empty (`{}`) for
    /// self-managed clusters: the streams are then `CreateNvcaFunctionTaskStream` and
    /// `TerminateNvcaStream` (NVIDIA's `postProcessQueueCredentials`).
    pub credentials: watch::Receiver<QueueCredentials>,
    /// Turns true when the agent is stopping (SIGTERM, Ctrl-C): finish the step in hand.
    pub shutdown: watch::Receiver<bool>,
}

impl AgentContext {
    /// Waits until the agent is stopping.
    pub async fn stopping(&self) {
        let mut shutdown = self.shutdown.clone();
        // An error means the sender is gone, which only happens when the agent stops.
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    }

    /// The current inventory, if discovery has run.
    pub fn current_inventory(&self) -> Option<Arc<Inventory>> {
        self.inventory.borrow().clone()
    }

    /// The current maintenance mode.
    pub fn current_maintenance(&self) -> MaintenanceMode {
        *self.maintenance.borrow()
    }
}
