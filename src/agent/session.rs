//! The imperative half of the SIS session ([`crate::machines::session`]): the executor
//! that makes its calls, and the tasks that tell it when calls are due.
//!
//! Calls and their bodies (NVIDIA's `N/pkg/nvca/agent.go`, `agent_updates.go`,
//! `jwks_updater.go`):
//! - register: `status` from the maintenance mode, `k8sVersion` (the API server's, or
//!   `agent.kubernetesVersionOverride`), the inventory's `gpus[]`,
//!   `allowTaskClusterCreationQueues: true`, `nvcaVersion`; at start, whenever
//!   [`registration::decide`] says so (checked on every inventory publish and every
//!   registration diff interval), and when the maintenance mode changes;
//! - heartbeat: `status` (health), `gpuUsage`, `clusterOwnerNcaID`, versions,
//!   `clusterName`, `maintenanceMode`; right after the first registration, then every
//!   heartbeat interval. `SELF_DESTRUCT` is obeyed unless `agent.skipSelfDestruct`;
//! - credentials: right after the first registration, then every renewal interval;
//!   empty answers (self-managed) leave the derived NATS streams;
//! - JWKS (PSAT identity only): the API server's key set (`/openid/v1/jwks`), pushed when
//!   its SHA-256 differs from the last one SIS took, checked every JWKS interval.
//!
//! An answer-less SIS (down, timeout, 5xx) is a transient failure: the driver retries
//! with capped backoff, the record shows it, and `/healthz` shows a warn-level `sis`
//! component. A refusal (4xx) is permanent for that call.

use crate::kube::not_found::not_found;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use tokio::sync::watch;

use super::health::{self, Component, Health, Level};
use super::maintenance::MaintenanceMode;
use super::metrics::{self, Metrics};
use crate::driver::{Driver, EffectError, Executor};
use crate::gpu::Inventory;
use crate::gpu::registration::{self, Registered, Reregister};
use crate::machines::Timestamp;
use crate::machines::session::SessionState;
use crate::machines::session::{Effect, Event, HeartbeatAnswer, SessionMachine};
use crate::sis::types::{
    HealthStatus, HeartbeatAction, HeartbeatRequest, JwksUpdate, QueueCredentials,
    RegistrationRequest,
};
use crate::sis::{SisClient, SisError};
use crate::store::Summary;

/// The label NVIDIA puts on every workload pod, naming its request.
pub const WORKLOAD_LABEL: &str = "icms-request-id";

/// What the executor needs besides the SIS client.
pub struct SessionExecutor {
    pub sis: SisClient,
    pub client: kube::Client,
    pub cluster_id: String,
    pub nca_id: String,
    pub cluster_name: String,
    pub operator_version: String,
    pub requests_namespace: String,
    pub skip_self_destruct: bool,
    /// Feature flag `ClusterTargeting` (on by NVIDIA's default): registered as
    /// `allowClusterTargeting`, so NVCF may place deployments that name this cluster
    /// (NVIDIA's `RegisterWithICMS`).
    pub cluster_targeting: bool,
    pub k8s_version_override: Option<String>,
    pub inventory: watch::Receiver<Option<Arc<Inventory>>>,
    pub maintenance: watch::Receiver<MaintenanceMode>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub credentials: watch::Sender<QueueCredentials>,
    pub self_destructed: watch::Sender<bool>,
    /// What SIS accepted last, for [`registration::decide`].
    pub last_registered: Arc<Mutex<Option<Registered>>>,
}

fn classify(error: SisError) -> EffectError {
    if error.is_transient() {
        EffectError::Transient(error.to_string())
    } else {
        EffectError::Permanent(error.to_string())
    }
}

/// `H100 16 (4 types), A100 8 (4 types)`: what a registration held, for the record.
pub fn summarize(gpus: &[crate::sis::types::Gpu]) -> String {
    if gpus.is_empty() {
        return "no GPUs".to_string();
    }
    gpus.iter()
        .map(|gpu| {
            format!(
                "{} {} ({} types)",
                gpu.name,
                gpu.capacity,
                gpu.instance_types.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SHA-256 of a key set, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// The API server's service-account key set (NVIDIA's fallback source when the token's
/// issuer cannot be reached; in-cluster it is the issuer's own set).
pub async fn fetch_jwks(client: &kube::Client) -> Result<String, String> {
    let request = axum::http::Request::get("/openid/v1/jwks")
        .body(Vec::new())
        .map_err(|error| error.to_string())?;
    client
        .request_text(request)
        .await
        .map_err(|error| format!("cannot read the API server's JWKS (/openid/v1/jwks): {error}"))
}

impl SessionExecutor {
    async fn k8s_version(&self) -> Result<String, EffectError> {
        if let Some(version) = &self.k8s_version_override {
            return Ok(version.clone());
        }
        let cached = self.health.k8s_version();
        if !cached.is_empty() {
            return Ok(cached);
        }
        let info = self.client.apiserver_version().await.map_err(|error| {
            EffectError::Transient(format!("cannot read the Kubernetes version: {error}"))
        })?;
        self.health.set_k8s_version(&info.git_version);
        Ok(info.git_version)
    }

    async fn register(&self) -> Result<Event, EffectError> {
        let Some(inventory) = self.inventory.borrow().clone() else {
            return Err(EffectError::Transient(
                "the GPU inventory is not known yet (the node watch has not listed the nodes)"
                    .to_string(),
            ));
        };
        let mode = *self.maintenance.borrow();
        let request = RegistrationRequest {
            status: mode.cluster_status(),
            k8s_version: self.k8s_version().await?,
            gpus: inventory.registration.clone(),
            allow_cluster_targeting: self.cluster_targeting,
            allow_task_cluster_creation_queues: true,
            nvca_version: env!("CARGO_PKG_VERSION").to_string(),
            jwks: None,
            oidc_issuer: None,
        };
        let answer = self.sis.register(&self.cluster_id, &request).await;
        self.metrics
            .upstream(metrics::OP_REGISTER, answer.is_ok(), status_of(&answer));
        let response = answer.map_err(classify)?;
        *self
            .last_registered
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Registered {
            gpus: request.gpus.clone(),
            at: Timestamp::now(),
        });
        if let Some(credentials) = response.credentials {
            self.credentials.send_replace(credentials);
        }
        tracing::info!(gpus = %summarize(&request.gpus), status = %request.status, "registered with SIS");
        Ok(Event::Registered {
            gpus: summarize(&request.gpus),
            status: request.status.to_string(),
        })
    }

    async fn heartbeat(&self) -> Result<Event, EffectError> {
        let gpu_usage = self
            .inventory
            .borrow()
            .as_ref()
            .map(|inventory| inventory.gpu_usage())
            .unwrap_or_default();
        let request = HeartbeatRequest {
            status: if self.health.is_healthy() {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            },
            upgrade_status: String::new(),
            gpu_usage,
            cluster_owner_nca_id: self.nca_id.clone(),
            nvca_agent_version: env!("CARGO_PKG_VERSION").to_string(),
            nvca_operator_version: self.operator_version.clone(),
            cluster_name: self.cluster_name.clone(),
            maintenance_mode: self.maintenance.borrow().as_str().to_string(),
        };
        let answer = self.sis.heartbeat(&self.cluster_id, &request).await;
        self.metrics
            .upstream(metrics::OP_HEARTBEAT, answer.is_ok(), status_of(&answer));
        let answer = match answer.map_err(classify)? {
            HeartbeatAction::Accepted => HeartbeatAnswer::Accepted,
            HeartbeatAction::SelfDestruct if self.skip_self_destruct => {
                tracing::warn!(
                    "SIS answered SELF_DESTRUCT; ignored because agent.skipSelfDestruct is set"
                );
                HeartbeatAnswer::SelfDestructSkipped
            }
            HeartbeatAction::SelfDestruct => {
                tracing::warn!(
                    "SIS answered SELF_DESTRUCT: evicting every workload and no longer talking to SIS"
                );
                HeartbeatAnswer::SelfDestruct
            }
        };
        Ok(Event::HeartbeatAnswered { answer })
    }

    async fn renew_credentials(&self) -> Result<Event, EffectError> {
        let answer = self.sis.credentials(&self.cluster_id).await;
        self.metrics
            .upstream(metrics::OP_CREDENTIALS, answer.is_ok(), status_of(&answer));
        let credentials = answer.map_err(classify)?;
        self.credentials.send_replace(credentials);
        Ok(Event::CredentialsRenewed)
    }

    async fn push_jwks(&self) -> Result<Event, EffectError> {
        let jwks = fetch_jwks(&self.client)
            .await
            .map_err(EffectError::Transient)?;
        let sha256 = sha256_hex(jwks.as_bytes());
        let update = JwksUpdate {
            jwks,
            oidc_issuer: None,
        };
        let answer = self.sis.push_jwks(&self.cluster_id, &update).await;
        self.metrics
            .upstream(metrics::OP_JWKS, answer.is_ok(), status_of(&answer));
        answer.map_err(classify)?;
        tracing::info!(%sha256, "JWKS pushed to SIS");
        Ok(Event::JwksPushed { sha256 })
    }

    /// Tell the function deployments to terminate everything, and delete the workload
    /// pods of the requests namespace, so nothing keeps running even without them.
    async fn evict_workloads(&self) -> Result<Event, EffectError> {
        self.self_destructed.send_replace(true);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.requests_namespace);
        let selector = ListParams::default().labels(WORKLOAD_LABEL);
        match pods
            .delete_collection(&DeleteParams::default(), &selector)
            .await
        {
            Ok(_) => {}
            Err(error) if not_found(&error) => {}
            Err(error) => {
                return Err(EffectError::Transient(format!(
                    "cannot delete the workload pods in {}: {error}",
                    self.requests_namespace
                )));
            }
        }
        tracing::warn!(namespace = %self.requests_namespace, "workloads evicted after SELF_DESTRUCT");
        Ok(Event::WorkloadsEvicted)
    }
}

fn status_of<T>(answer: &Result<T, SisError>) -> Option<u16> {
    match answer {
        Ok(_) => Some(200),
        Err(error) => error.status(),
    }
}

impl Executor<SessionMachine> for SessionExecutor {
    async fn execute(&self, _name: &str, _id: &str, effect: &Effect) -> Result<Event, EffectError> {
        match effect {
            Effect::Register => self.register().await,
            Effect::Heartbeat => self.heartbeat().await,
            Effect::RenewCredentials => self.renew_credentials().await,
            Effect::PushJwks { .. } => self.push_jwks().await,
            Effect::EvictWorkloads => self.evict_workloads().await,
        }
    }
}

/// The `sis` health component from the session's record: unhealthy (warn level) while a
/// call keeps failing, while SIS refuses the registration, and after `SELF_DESTRUCT`.
pub fn sis_component(summary: &Summary) -> Component {
    if SessionState::SelfDestructed.is(&summary.state) {
        return Component::unhealthy(
            Level::Warn,
            "SIS answered SELF_DESTRUCT: workloads evicted, no further calls to SIS",
        );
    }
    if SessionState::Refused.is(&summary.state) {
        let reason = summary.last_error.clone().unwrap_or_default();
        return Component::unhealthy(
            Level::Warn,
            format!("SIS refused the registration: {reason}"),
        );
    }
    match summary.pending.iter().find(|p| p.attempts > 0) {
        Some(failing) => Component::unhealthy(
            Level::Warn,
            format!(
                "{} failed {} time(s), retrying: {}",
                failing.description,
                failing.attempts,
                failing.last_error.clone().unwrap_or_default()
            ),
        ),
        None => Component::healthy(Level::Warn),
    }
}

/// Keeps the `sis` component current, and starts heartbeats and credential renewal the
/// moment the first registration is accepted (NVIDIA's start-up order).
pub async fn follow_session(
    mut summaries: watch::Receiver<Summary>,
    health: Arc<Health>,
    due: impl Fn(Event) + Send + 'static,
) {
    let mut was_registered = false;
    loop {
        let summary = summaries.borrow_and_update().clone();
        health.set_component(health::SIS, sis_component(&summary));
        let registered = SessionState::Registered.is(&summary.state);
        if registered && !was_registered {
            due(Event::HeartbeatDue);
            due(Event::CredentialsDue);
        }
        was_registered = registered;
        if summaries.changed().await.is_err() {
            return;
        }
    }
}

/// The session's driver.
pub type SessionDriver = Driver<SessionMachine, SessionExecutor>;

pub(super) async fn send(driver: &SessionDriver, cluster_id: &str, event: Event) {
    if let Err(error) = driver.send(cluster_id, event).await {
        tracing::error!(%error, "the SIS session cannot take an event");
    }
}

/// Registers again when [`registration::decide`] says so: on every inventory publish and
/// every registration diff interval; and when the maintenance mode changes.
pub(super) async fn sync_registration(
    driver: SessionDriver,
    cluster_id: String,
    mut inventory: watch::Receiver<Option<Arc<Inventory>>>,
    mut maintenance: watch::Receiver<MaintenanceMode>,
    last: Arc<Mutex<Option<Registered>>>,
    dynamic: bool,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    maintenance.mark_unchanged();
    loop {
        tokio::select! {
            changed = inventory.changed() => if changed.is_err() { return },
            changed = maintenance.changed() => {
                if changed.is_err() { return }
                let mode = *maintenance.borrow_and_update();
                send(&driver, &cluster_id, Event::RegistrationDue {
                    reason: format!("maintenance mode {mode}"),
                }).await;
                continue;
            }
            _ = ticker.tick() => {}
        }
        let Some(current) = inventory.borrow_and_update().clone() else {
            continue;
        };
        let decision = {
            let last = last.lock().unwrap_or_else(|e| e.into_inner());
            registration::decide(
                last.as_ref(),
                &current.registration,
                dynamic,
                Timestamp::now(),
            )
        };
        let reason = match decision {
            None => continue,
            // Not registered yet: a registration still pending ignores this; one SIS
            // refused (no GPUs then, say) is tried again with what is there now.
            Some(Reregister::First) => "not registered yet".to_string(),
            Some(Reregister::Refresh) => "hourly refresh".to_string(),
            Some(Reregister::Changed(changes)) => {
                let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
                format!("GPUs changed: {}", text.join("; "))
            }
        };
        if last.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            tracing::info!(%reason, "registering again");
        }
        send(&driver, &cluster_id, Event::RegistrationDue { reason }).await;
    }
}

pub(super) async fn tick(interval: Duration, due: impl Fn(Event), event: impl Fn() -> Event) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        due(event());
    }
}

/// Every `interval` (the first at once), hashes the API server's key set; the session
/// pushes it when the hash is new.
pub(super) async fn check_jwks(client: kube::Client, interval: Duration, due: impl Fn(Event)) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match fetch_jwks(&client).await {
            Ok(jwks) => due(Event::JwksDue {
                sha256: sha256_hex(jwks.as_bytes()),
            }),
            Err(error) => tracing::warn!(%error, "JWKS not checked this time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::Kind;
    use crate::store::PendingMeta;

    fn summary(state: &str, attempts: u32) -> Summary {
        Summary {
            kind: Kind::Session,
            name: "c-1".into(),
            state: state.into(),
            since: Timestamp(0),
            updated: Timestamp(0),
            seq: 3,
            last_event: None,
            last_error: Some("connection refused".into()),
            pending: vec![PendingMeta {
                id: "session/c-1#3.0".into(),
                description: "send a heartbeat to SIS".into(),
                queued_at: Timestamp(0),
                attempts,
                next_attempt_at: None,
                last_error: Some("connection refused".into()),
            }],
            history: Vec::new(),
            is_final: false,
        }
    }

    #[test]
    fn a_lost_sis_shows_as_a_warn_level_component() {
        assert!(sis_component(&summary("registered", 0)).healthy);
        let lost = sis_component(&summary("registered", 2));
        assert!(!lost.healthy);
        assert_eq!(lost.level, Level::Warn);
        assert_eq!(
            lost.errors,
            ["send a heartbeat to SIS failed 2 time(s), retrying: connection refused"]
        );
        assert!(!sis_component(&summary("self_destructed", 0)).healthy);
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
