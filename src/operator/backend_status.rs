//! The NVCFBackend's status as a pure function of the machine's [`StatusProjection`], the
//! object as it is, the operator's settings and the time: the whole `status` nvca owns
//! (applied with server-side apply by the executor, so a field it stops writing goes) and
//! the Events the change deserves. Unchanged conditions keep their `lastTransitionTime`;
//! `lastUpdatedAgentStatus` and `kubernetesVersion` keep theirs until they change.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::kube::crd::NVCFBackend;
use crate::kube::resources::OperatorSettings;
use crate::machines::backend::{ConditionKind, StatusProjection};

/// An Event the status change deserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
}

/// What the executor writes and tells.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectedStatus {
    pub status: Value,
    pub events: Vec<StatusEvent>,
}

/// The status of `backend` for `projection`; `version` is the applied spec's version.
pub fn project(
    backend: &NVCFBackend,
    projection: &StatusProjection,
    settings: &OperatorSettings,
    version: &str,
    now: Time,
) -> ProjectedStatus {
    let old = backend.status.clone().unwrap_or_default();
    let generation = projection
        .observed_generation
        .and_then(|g| i64::try_from(g).ok());
    let conditions: Vec<Condition> = projection
        .conditions
        .iter()
        .map(|condition| {
            let type_ = <&str>::from(condition.kind).to_string();
            let status = <&str>::from(condition.status).to_string();
            let kept = old
                .conditions
                .iter()
                .find(|old| old.type_ == type_ && old.status == status)
                .map(|old| old.last_transition_time.clone());
            Condition {
                type_,
                status,
                reason: condition.reason.clone(),
                message: condition.message.clone(),
                observed_generation: generation,
                last_transition_time: kept.unwrap_or_else(|| now.clone()),
            }
        })
        .collect();
    let agent = &projection.agent;
    let gpu_usage: BTreeMap<&String, Value> = agent
        .gpu_usage
        .iter()
        .map(|(gpu, usage)| {
            (
                gpu,
                json!({"available": usage.available, "capacity": usage.capacity, "allocated": usage.allocated}),
            )
        })
        .collect();
    let agent_status = <&str>::from(agent.status);
    let mut status = applied_spec(backend, settings);
    let fields = [
        ("version", json!(version)),
        ("agentStatus", json!(agent_status)),
        ("lastUpdated", json!(now)),
        ("conditions", json!(conditions)),
        ("observedGeneration", json!(generation)),
        ("phase", json!(<&str>::from(projection.phase))),
    ];
    for (key, value) in fields {
        status[key] = value;
    }
    // An empty map is stored as null by server-side apply; no GPUs is no field.
    if !gpu_usage.is_empty() {
        status["gpuUsage"] = json!(gpu_usage);
    }
    if let Some(step) = &projection.step {
        status["step"] = json!(step);
    }
    let kubernetes_version = if agent.k8s_version.is_empty() {
        &old.kubernetes_version
    } else {
        &agent.k8s_version
    };
    if !kubernetes_version.is_empty() {
        status["kubernetesVersion"] = json!(kubernetes_version);
    }
    let agent_changed = old.agent_status != agent_status;
    let agent_since = if agent_changed {
        Some(now)
    } else {
        old.last_updated_agent_status.clone()
    };
    if let Some(since) = agent_since {
        status["lastUpdatedAgentStatus"] = json!(since);
    }

    let mut events = Vec::new();
    // One Event per step: when the condition that tells the step (Deleting while deleting,
    // else Ready) says something new.
    let telling = [ConditionKind::Deleting, ConditionKind::Ready]
        .iter()
        .find_map(|kind| projection.conditions.iter().find(|c| c.kind == *kind));
    if let Some(condition) = telling {
        let type_ = <&str>::from(condition.kind);
        let unchanged = old.conditions.iter().any(|old| {
            old.type_ == type_ && old.reason == condition.reason && old.message == condition.message
        });
        if !unchanged {
            events.push(StatusEvent {
                warning: condition.reason.ends_with("Failed"),
                reason: condition.reason.clone(),
                action: projection
                    .step
                    .clone()
                    .unwrap_or_else(|| condition.reason.clone()),
                note: condition.message.clone(),
            });
        }
    }
    if !old.agent_status.is_empty() && agent_changed {
        events.push(StatusEvent {
            warning: agent_status != "healthy",
            reason: "Health".into(),
            action: "Health".into(),
            note: format!(
                "the agent's /healthz says {agent_status} (was {})",
                old.agent_status
            ),
        });
    }
    ProjectedStatus { status, events }
}

/// NVIDIA's status mirrors what its operator applied (`NVCFBackendStatus` embeds the
/// spec, with `spec.overrides` laid over it, and the workload settings it rolls out on):
/// the same fields, beside nvca's conditions, so what reads NVIDIA's status reads this one.
fn applied_spec(backend: &NVCFBackend, settings: &OperatorSettings) -> Value {
    let mut applied = serde_json::to_value(&backend.spec.fields).unwrap_or_default();
    if let Some(overrides) = &backend.spec.overrides {
        json_patch::merge(
            &mut applied,
            &serde_json::to_value(overrides).unwrap_or_default(),
        );
    }
    let mut status = json!({});
    if let Value::Object(fields) = applied {
        for (key, value) in fields.into_iter().filter(|(key, _)| key != "version") {
            status[key] = value;
        }
    }
    status["k8sClusterNetworkCIDRs"] = json!(settings.cluster_network_cidrs);
    for (key, overrides) in [
        ("functionEnvOverridesB64", &settings.function_env_overrides),
        ("taskEnvOverridesB64", &settings.task_env_overrides),
    ] {
        if !overrides.is_empty() {
            status[key] = json!(
                base64::engine::general_purpose::STANDARD.encode(json!(overrides).to_string())
            );
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::testing::backend;
    use crate::machines::backend::{
        AgentReport, AgentStatus, Condition as StepCondition, ConditionStatus, Phase,
    };

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn projection(reason: &str, agent: AgentStatus, k8s: &str) -> StatusProjection {
        StatusProjection {
            observed_generation: Some(3),
            phase: Phase::Ready,
            step: None,
            agent: AgentReport {
                status: agent,
                k8s_version: k8s.into(),
                gpu_usage: BTreeMap::new(),
            },
            conditions: vec![StepCondition {
                kind: ConditionKind::Ready,
                status: ConditionStatus::True,
                reason: reason.into(),
                message: "applied".into(),
            }],
        }
    }

    /// The backend after `status` was applied, as the next projection reads it.
    fn written(status: &Value) -> NVCFBackend {
        let mut object = backend();
        object.status = Some(serde_json::from_value(status.clone()).unwrap());
        object
    }

    #[test]
    fn an_unchanged_condition_keeps_its_time_and_tells_no_event_again() {
        let settings = OperatorSettings::default();
        let first = project(
            &backend(),
            &projection("Provisioned", AgentStatus::Healthy, "v1.37.2"),
            &settings,
            "2.52.1",
            at(100),
        );
        assert_eq!(first.events.len(), 1, "a new Ready reason is told");
        assert_eq!(
            first.status["conditions"][0]["lastTransitionTime"],
            json!(at(100))
        );
        assert_eq!(
            first.status["clusterConfig"]["clusterID"], "c-1",
            "the applied spec"
        );
        assert!(first.status.get("step").is_none());
        assert!(
            first.status.get("gpuUsage").is_none(),
            "no GPUs, no field (server-side apply stores an empty map as null)"
        );

        // The agent now reports no version: the last one stays; nothing changed, so no
        // Event and the times stay.
        let again = project(
            &written(&first.status),
            &projection("Provisioned", AgentStatus::Healthy, ""),
            &settings,
            "2.52.1",
            at(200),
        );
        assert!(again.events.is_empty(), "{:?}", again.events);
        assert_eq!(
            again.status["conditions"][0]["lastTransitionTime"],
            json!(at(100))
        );
        assert_eq!(again.status["kubernetesVersion"], "v1.37.2");
        assert_eq!(again.status["lastUpdatedAgentStatus"], json!(at(100)));
        assert_eq!(again.status["lastUpdated"], json!(at(200)));
    }

    #[test]
    fn a_change_of_the_agents_health_is_a_warning_event_with_its_time() {
        let settings = OperatorSettings::default();
        let healthy = project(
            &backend(),
            &projection("Provisioned", AgentStatus::Healthy, "v1.37.2"),
            &settings,
            "2.52.1",
            at(100),
        );
        let unhealthy = project(
            &written(&healthy.status),
            &projection("Provisioned", AgentStatus::Unhealthy, "v1.37.2"),
            &settings,
            "2.52.1",
            at(300),
        );
        assert_eq!(unhealthy.status["lastUpdatedAgentStatus"], json!(at(300)));
        assert_eq!(
            unhealthy.events,
            vec![StatusEvent {
                warning: true,
                reason: "Health".into(),
                action: "Health".into(),
                note: "the agent's /healthz says unhealthy (was healthy)".into(),
            }]
        );
    }
}
