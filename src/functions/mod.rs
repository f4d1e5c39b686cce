//! Function deployments: from a creation message on the work queue to running GPU pods,
//! reported to SIS, and back to nothing on termination. One component with one entry:
//!
//! ```ignore
//! let handle = nvca::functions::start(FunctionsContext { .. }).await?;
//! // … the agent runs …
//! handle.stop().await;
//! ```
//!
//! `nvca` builds the [`FunctionsContext`] from its `AgentContext`
//! ([`FunctionsContext::new`] takes its plain parts: kube client, SIS client, queue
//! config, store, the inventory and maintenance receivers); tests build it directly.
//!
//! Inside:
//! - [`intake`]: the queue consumers (creation and termination), the GPU capacity gate,
//!   writing the ICMSRequest and Secret of a new request, starting its machine;
//! - the function machines ([`crate::machines::function`]), run by the driver with
//!   [`executor::FunctionExecutor`] (pods, the ICMSRequest projection, SIS calls, queue
//!   acks, Events);
//! - [`pods`]: the pod watch feeding `PodObserved` and `InstanceDeleted`, and what
//!   status updates carry of each pod ([`seen_pods`]: `instanceIps`, container states);
//! - [`reconcile`]: SIS's periodic instance list, handed to the machines;
//! - [`projector`]: the ICMSRequest status, written off the deployments' path;
//! - [`rebuild`]: at start, a machine for every ICMSRequest the store has lost, and the
//!   statuses the last process did not write;
//! - [`requests_api`]: whether the ICMSRequest kind is served; no creation message is
//!   taken while it is not, and the agent's `/healthz` says why;
//! - drain: under `CordonAndDrainMaintenance` every machine is told `DrainRequested`.
//!
//! Pure parts: [`launch`] (what a creation message asks for), [`objects`] (the
//! Kubernetes objects of a request), [`pull_secrets`] (its image pull Secrets),
//! [`observe`] (a pod as the machine judges it).
//! docs/functions.md describes the flow and its NVIDIA sources.

pub mod executor;
mod intake;
mod kube_failure;
pub mod launch;
pub mod metrics;
pub mod objects;
pub mod observe;
mod pods;
mod projector;
pub mod pull_secrets;
mod rebuild;
mod reconcile;
pub mod requests_api;
mod seen_pods;
mod sis_view;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::driver::{DriverConfig, DriverError, Hooks, NoHooks};
use crate::gpu::Inventory;
use crate::machines::Kind;
use crate::machines::failure::Timeouts;
use crate::machines::function::{Event, FunctionMachine};
pub use crate::sis::MaintenanceMode as Mode;
use crate::sis::{QueueConfig, QueueConsumer, QueueError, SisClient};
use crate::store::Store;
use executor::FunctionExecutor;
pub use intake::Pacing;
use metrics::Metrics;
pub use objects::{Placement, Streaming};
pub use requests_api::ApiState;
use requests_api::RequestsApi;

/// The driver of function machines.
pub type Driver = crate::driver::Driver<FunctionMachine, FunctionExecutor>;

/// How function deployments behave; NVIDIA's defaults unless a test says otherwise.
#[derive(Clone, Debug)]
pub struct FunctionsSettings {
    /// Namespace, cluster name, region, scheduler and pull secrets of the workloads.
    pub placement: Placement,
    /// `workload.functionEnvOverrides`: laid over every worker environment (e.g.
    /// `UTILS_CONTAINER`, `INIT_CONTAINER` to use mirrored images).
    pub env_overrides: BTreeMap<String, String>,
    /// NVIDIA's instance timeouts (image pull, scheduling, restarts, degradation …).
    pub timeouts: Timeouts,
    pub pacing: Pacing,
    /// How often pods that are not ready are judged again.
    pub rejudge: Duration,
    /// How long SIS may answer 404 to an acknowledgement (NVIDIA: 5 min).
    pub ack_retry: Duration,
    /// How often SIS's instance list is reconciled (NVIDIA: 5 min).
    pub sis_sync: Duration,
    pub driver: DriverConfig,
}

impl FunctionsSettings {
    pub fn new(placement: Placement) -> Self {
        FunctionsSettings {
            placement,
            env_overrides: BTreeMap::new(),
            timeouts: Timeouts::default(),
            pacing: Pacing::default(),
            rejudge: Duration::from_secs(5),
            ack_retry: Duration::from_secs(300),
            sis_sync: Duration::from_secs(300),
            driver: DriverConfig::default(),
        }
    }
}

/// What function deployments need, as plain parts.
pub struct FunctionsContext {
    pub client: kube::Client,
    pub sis: Arc<SisClient>,
    /// The cluster's NATS work queue; the component connects its own consumer.
    pub queue: QueueConfig,
    pub store: Store,
    pub settings: FunctionsSettings,
    /// The GPU inventory (`None` until discovery has run: nothing is accepted then).
    pub inventory: watch::Receiver<Option<Arc<Inventory>>>,
    pub maintenance: watch::Receiver<Mode>,
    /// Observation points (crash tests); [`NoHooks`] in production.
    pub hooks: Arc<dyn Hooks>,
}

impl FunctionsContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        sis: Arc<SisClient>,
        queue: QueueConfig,
        store: Store,
        settings: FunctionsSettings,
        inventory: watch::Receiver<Option<Arc<Inventory>>>,
        maintenance: watch::Receiver<Mode>,
    ) -> Self {
        FunctionsContext {
            client,
            sis,
            queue,
            store,
            settings,
            inventory,
            maintenance,
            hooks: Arc::new(NoHooks),
        }
    }
}

#[derive(Debug, Error)]
pub enum FunctionsError {
    #[error("function deployments cannot reach the work queue: {0}")]
    Queue(#[from] QueueError),
    #[error("function deployments cannot load their machines: {0}")]
    Driver(#[from] DriverError),
}

impl FunctionsError {
    pub fn category(&self) -> &'static str {
        match self {
            FunctionsError::Queue(error) => error.category(),
            FunctionsError::Driver(error) => error.category(),
        }
    }
}

/// The running component.
pub struct FunctionsHandle {
    pub driver: Driver,
    pub metrics: Arc<Metrics>,
    /// Whether ICMSRequests are served (the host shows it in its health).
    pub requests_api: watch::Receiver<ApiState>,
    /// Whether the last pull of each work queue worked (the host's liveness).
    pub pulls_ok: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl FunctionsHandle {
    /// Stop pulling and watching, then stop every machine after its current step.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.driver.shutdown().await;
    }
}

/// Start function deployments: resume every machine in the store, then pull the queue,
/// watch pods and follow the maintenance mode.
pub async fn start(context: FunctionsContext) -> Result<FunctionsHandle, FunctionsError> {
    let FunctionsContext {
        client,
        sis,
        queue,
        store,
        settings,
        inventory,
        maintenance,
        hooks,
    } = context;
    let cluster_id = queue.cluster_id.clone();
    let consumer = Arc::new(QueueConsumer::connect(queue).await?);
    let metrics = Arc::new(Metrics::default());
    // Effects pending now may have made their calls before the last process died.
    let sis_view = Arc::new(sis_view::SisView::new(&cluster_id));
    match store.summaries(Some(Kind::Function)) {
        Ok((summaries, _)) => sis_view.resumed(
            summaries
                .into_iter()
                .flat_map(|summary| summary.pending.into_iter().map(|effect| effect.id)),
        ),
        Err(error) => tracing::warn!(%error, "cannot list the effects pending at start"),
    }
    let seen_pods = Arc::new(seen_pods::SeenPods::default());
    let executor = Arc::new(FunctionExecutor::new(
        client.clone(),
        sis.clone(),
        consumer.clone(),
        settings.placement.clone(),
        settings.env_overrides.clone(),
        settings.ack_retry,
        metrics.clone(),
        sis_view.clone(),
        seen_pods.clone(),
    ));
    let (driver, report) = Driver::start(store, executor.clone(), hooks, settings.driver.clone())?;
    for quarantined in &report.quarantined {
        tracing::error!(key = %quarantined.key, reason = %quarantined.reason, "function record set aside");
    }
    let api = RequestsApi::new(client.clone(), &settings.placement.namespace);
    api.look().await;
    // Before pulling: a redelivered message must find its rebuilt machine. A kind that is
    // not served holds no ICMSRequest to rebuild from (deleting a CRD deletes its objects).
    let rebuilt = if api.is_served() {
        rebuild::run(
            &client,
            &settings.placement.namespace,
            &driver,
            &executor,
            settings.timeouts,
        )
        .await
    } else {
        Ok(0)
    };
    match rebuilt {
        Ok(0) => {}
        Ok(rebuilt) => tracing::warn!(rebuilt, "function machines rebuilt from the cluster"),
        Err(error) => tracing::error!(%error, "cannot look for ICMSRequests without machines"),
    }
    let pulls = intake::Pulls::new();
    let pulls_ok = pulls.ok();
    let intake = intake::Intake {
        consumer,
        pulls,
        starter: intake::Starter {
            driver: driver.clone(),
            executor,
            client: client.clone(),
            placement: settings.placement.clone(),
            timeouts: settings.timeouts,
            api: Arc::clone(&api),
            metrics: Arc::clone(&metrics),
        },
        overrides: settings.env_overrides.clone(),
        pacing: settings.pacing,
        inventory,
        mode: maintenance.clone(),
        waiting: HashMap::new(),
        in_flight: HashMap::new(),
        copies: HashMap::new(),
    };
    let pods = pods::PodWatch {
        client,
        namespace: settings.placement.namespace.clone(),
        driver: driver.clone(),
        rejudge: settings.rejudge,
        seen: HashMap::new(),
        seen_pods,
    };
    let projector = intake.starter.executor.projector().clone();
    let requests_api = api.state();
    let tasks = vec![
        tokio::spawn(api.run()),
        tokio::spawn(async move { projector.run().await }),
        tokio::spawn(intake.run()),
        tokio::spawn(pods.run()),
        tokio::spawn(drain(driver.clone(), maintenance)),
        tokio::spawn(reconcile::run(
            driver.clone(),
            sis_view,
            sis,
            cluster_id,
            settings.sis_sync,
        )),
    ];
    Ok(FunctionsHandle {
        driver,
        metrics,
        requests_api,
        pulls_ok,
        tasks,
    })
}

/// Under `CordonAndDrainMaintenance`, tell every machine to take its instances down, and
/// again whenever the mode turns to it.
async fn drain(driver: Driver, mut mode: watch::Receiver<Mode>) {
    loop {
        if mode.borrow_and_update().drains() {
            for name in driver.names() {
                if driver
                    .summary(&name)
                    .is_some_and(|summary| !summary.is_final)
                    && let Err(error) = driver.send(&name, Event::DrainRequested).await
                {
                    tracing::warn!(request = %name, %error, "cannot drain a function deployment");
                }
            }
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}
