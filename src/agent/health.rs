//! The agent's health as NVIDIA's agent reports it on `:8000/healthz`
//! (`N/pkg/nvca/health/readiness.go`, `status.go`; `AgentHealth` in `N/pkg/types/types.go`).
//!
//! The body is Go's encoding of `AgentHealth`: capitalised keys, lowercase values,
//! `Errors` `null` when there are none, served as `text/plain` (Go's sniffed type):
//!
//! ```text
//! {"Status":"healthy","K8sVersion":"v1.37.2",
//!  "GPUUsage":{"H100":{"available":16,"capacity":16,"allocated":0}},
//!  "Components":{"gpu":{"Status":"healthy","Errors":null}, ...}}
//! ```
//!
//! `K8sVersion` is nvca's addition (the operator projects it into the NVCFBackend's
//! status); NVIDIA's operator and nvca's both read the rest. A component has a level:
//! an unhealthy *error*-level component makes the agent unhealthy (503), a *warn*-level
//! one is shown but does not (NVIDIA's `GetStatusForLevel(StatusLevelWarn)`). Components:
//! `gpu` and `gpumonitor` (no GPUs is unhealthy), `kai-scheduler-queues` under the
//! `KAIScheduler` flag, nvca's `sis` (warn level: SIS unreachable or refusing) and
//! nvca's `icmsrequests` (error level: the ICMSRequest kind is not served, so no function
//! can be taken; it names the CRD and the fix).
//! Before start-up completes the answer is 503 `not ready`, as NVIDIA's.
//!
//! `/livez` is NVIDIA's liveness (`N/pkg/nvca/health/liveness.go`): 503 `not alive` before
//! start-up, 503 `liveness probe check has failed` while a liveness check fails, else
//! `ok`. The checks are NVIDIA's queue manager's (`queue_manager.go` `SetStatusOK`: the
//! last pull of each work queue failed); NVIDIA's other two, its FNDS and ReVal token
//! fetchers, have no counterpart in nvca yet.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;

use tokio::sync::watch;

use crate::functions::ApiState;
use crate::sis::types::GpuUsage;

/// NVIDIA's component names.
pub const GPU: &str = "gpu";
pub const GPU_MONITOR: &str = "gpumonitor";
pub const KAI_QUEUES: &str = "kai-scheduler-queues";
/// nvca's: the SIS session.
pub const SIS: &str = "sis";
/// nvca's: whether the ICMSRequest kind is served.
pub const ICMS_REQUESTS: &str = "icmsrequests";

/// How much an unhealthy component weighs (NVIDIA's `StatusLevel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Unhealthy means the agent is unhealthy.
    Error,
    /// Shown, but the agent stays healthy.
    Warn,
}

/// One component's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub healthy: bool,
    pub errors: Vec<String>,
    pub level: Level,
}

impl Component {
    pub fn healthy(level: Level) -> Self {
        Component {
            healthy: true,
            errors: Vec::new(),
            level,
        }
    }

    pub fn unhealthy(level: Level, error: impl Into<String>) -> Self {
        Component {
            healthy: false,
            errors: vec![error.into()],
            level,
        }
    }
}

/// `healthy` or `unhealthy`, as NVIDIA writes them.
fn word(healthy: bool) -> &'static str {
    if healthy { "healthy" } else { "unhealthy" }
}

#[derive(Serialize)]
struct ComponentBody<'a> {
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "Errors")]
    errors: Option<&'a [String]>,
}

#[derive(Serialize)]
struct HealthBody<'a> {
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "K8sVersion", skip_serializing_if = "str::is_empty")]
    k8s_version: &'a str,
    #[serde(rename = "GPUUsage")]
    gpu_usage: &'a BTreeMap<String, GpuUsage>,
    #[serde(rename = "Components")]
    components: BTreeMap<&'a str, ComponentBody<'a>>,
}

#[derive(Debug, Default)]
struct Inputs {
    started: bool,
    k8s_version: String,
    gpu_usage: BTreeMap<String, GpuUsage>,
    components: BTreeMap<String, Component>,
    /// Liveness checks by name: whether each is fine now.
    alive: BTreeMap<String, bool>,
}

/// The agent's health, written by its tasks and read by `/healthz`, `/livez` and the
/// heartbeat.
#[derive(Debug, Default)]
pub struct Health {
    inputs: RwLock<Inputs>,
}

impl Health {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inputs> {
        self.inputs.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inputs> {
        self.inputs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Start-up is complete: `/healthz` and `/livez` answer from now on.
    pub fn set_started(&self) {
        self.write().started = true;
    }

    pub fn started(&self) -> bool {
        self.read().started
    }

    pub fn set_k8s_version(&self, version: &str) {
        self.write().k8s_version = version.to_string();
    }

    pub fn k8s_version(&self) -> String {
        self.read().k8s_version.clone()
    }

    pub fn set_gpu_usage(&self, usage: BTreeMap<String, GpuUsage>) {
        self.write().gpu_usage = usage;
    }

    pub fn gpu_usage(&self) -> BTreeMap<String, GpuUsage> {
        self.read().gpu_usage.clone()
    }

    pub fn set_component(&self, name: &str, component: Component) {
        self.write().components.insert(name.to_string(), component);
    }

    pub fn remove_component(&self, name: &str) {
        self.write().components.remove(name);
    }

    /// A liveness check's outcome (`/livez`).
    pub fn set_alive(&self, check: &str, alive: bool) {
        self.write().alive.insert(check.to_string(), alive);
    }

    /// The `/livez` answer: status code and body.
    pub fn livez(&self) -> (u16, &'static str) {
        let inputs = self.read();
        if !inputs.started {
            (503, "not alive\n")
        } else if let Some((check, _)) = inputs.alive.iter().find(|(_, alive)| !**alive) {
            tracing::debug!(%check, "liveness check failed");
            (503, "liveness probe check has failed\n")
        } else {
            (200, "ok\n")
        }
    }

    /// Healthy unless an error-level component is unhealthy.
    pub fn is_healthy(&self) -> bool {
        self.read()
            .components
            .values()
            .all(|c| c.healthy || c.level == Level::Warn)
    }

    /// The `/healthz` answer: status code and body. 503 `not ready` before start-up.
    pub fn healthz(&self) -> (u16, String) {
        let inputs = self.read();
        if !inputs.started {
            return (503, "not ready\n".to_string());
        }
        let healthy = inputs
            .components
            .values()
            .all(|c| c.healthy || c.level == Level::Warn);
        let body = HealthBody {
            status: word(healthy),
            k8s_version: &inputs.k8s_version,
            gpu_usage: &inputs.gpu_usage,
            components: inputs
                .components
                .iter()
                .map(|(name, c)| {
                    (
                        name.as_str(),
                        ComponentBody {
                            status: word(c.healthy),
                            errors: (!c.errors.is_empty()).then_some(c.errors.as_slice()),
                        },
                    )
                })
                .collect(),
        };
        let mut text = serde_json::to_string(&body).unwrap_or_else(|error| {
            format!("{{\"Status\":\"unhealthy\",\"Errors\":[\"{error}\"]}}")
        });
        // Go's json.Encoder ends the body with a newline.
        text.push('\n');
        (if healthy { 200 } else { 503 }, text)
    }
}

/// The liveness check of the work queues (NVIDIA's `queuemanager`).
pub const QUEUE_LIVENESS: &str = "queuemanager";

/// Follow whether the last pulls of the work queues worked, as liveness check
/// [`QUEUE_LIVENESS`], until the function deployments stop.
pub async fn follow_queue(mut pulls_ok: watch::Receiver<bool>, health: std::sync::Arc<Health>) {
    loop {
        health.set_alive(QUEUE_LIVENESS, *pulls_ok.borrow_and_update());
        if pulls_ok.changed().await.is_err() {
            return;
        }
    }
}

/// Show whether ICMSRequests are served as component [`ICMS_REQUESTS`], until the
/// function deployments stop.
pub async fn follow_requests_api(
    mut state: watch::Receiver<ApiState>,
    health: std::sync::Arc<Health>,
) {
    loop {
        let component = match &*state.borrow_and_update() {
            ApiState::Unknown => None,
            ApiState::Served => Some(Component::healthy(Level::Error)),
            ApiState::Missing(why) => Some(Component::unhealthy(Level::Error, why.clone())),
        };
        if let Some(component) = component {
            health.set_component(ICMS_REQUESTS, component);
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn livez_fails_as_nvidias_while_a_liveness_check_fails() {
        let health = Health::default();
        assert_eq!(health.livez(), (503, "not alive\n"));
        health.set_started();
        assert_eq!(health.livez(), (200, "ok\n"));
        health.set_alive(QUEUE_LIVENESS, false);
        assert_eq!(health.livez(), (503, "liveness probe check has failed\n"));
        health.set_alive(QUEUE_LIVENESS, true);
        assert_eq!(health.livez(), (200, "ok\n"));
    }

    #[test]
    fn the_body_is_nvidias_agent_health() {
        let health = Health::default();
        assert_eq!(health.healthz(), (503, "not ready\n".to_string()));
        health.set_started();
        health.set_k8s_version("v1.37.2");
        health.set_gpu_usage(BTreeMap::from([(
            "H100".to_string(),
            GpuUsage {
                available: 14,
                capacity: 16,
                allocated: 2,
            },
        )]));
        health.set_component(GPU, Component::healthy(Level::Error));
        health.set_component(SIS, Component::unhealthy(Level::Warn, "SIS unreachable"));
        let (code, body) = health.healthz();
        assert_eq!(
            code, 200,
            "a warn-level component does not make it unhealthy"
        );
        assert_eq!(
            body,
            "{\"Status\":\"healthy\",\"K8sVersion\":\"v1.37.2\",\
             \"GPUUsage\":{\"H100\":{\"available\":14,\"capacity\":16,\"allocated\":2}},\
             \"Components\":{\"gpu\":{\"Status\":\"healthy\",\"Errors\":null},\
             \"sis\":{\"Status\":\"unhealthy\",\"Errors\":[\"SIS unreachable\"]}}}\n"
        );

        health.set_component(
            KAI_QUEUES,
            Component::unhealthy(Level::Error, "KAI Scheduler is not installed"),
        );
        let (code, body) = health.healthz();
        assert_eq!(code, 503);
        assert!(body.starts_with("{\"Status\":\"unhealthy\""), "{body}");
        assert!(!health.is_healthy());
    }
}
