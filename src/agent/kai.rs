//! The `kai-scheduler-queues` health component under the `KAIScheduler` flag (NVIDIA's
//! `N/pkg/nvca/enforce/kaischeduler/kaischeduler.go`): the KAI Scheduler must be
//! installed (`queues.scheduling.run.ai/v2`), with parent queue `default-parent-queue`
//! and its child `default-queue`, each with quota and limit -1 and over-quota weight 1
//! for cpu, gpu and memory. Anything else makes the agent unhealthy, with NVIDIA's
//! messages.

use crate::kube::not_found::not_found;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde_json::Value;

use super::health::{self, Component, Health, Level};

pub const PARENT_QUEUE: &str = "default-parent-queue";
pub const DEFAULT_QUEUE: &str = "default-queue";
const CHECK_EVERY: Duration = Duration::from_secs(30);
const QUEUES_DOC: &str = "See https://raw.githubusercontent.com/NVIDIA/KAI-Scheduler/refs/heads/main/docs/quickstart/default-queues.yaml";

/// Checks the queues now and every 30 s.
pub async fn watch_queues(client: Client, health: Arc<Health>) {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.run.ai", "v2", "Queue"),
        "queues",
    );
    let queues: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        let component = match queues.list(&ListParams::default()).await {
            Ok(list) => {
                let specs: Vec<(String, Value)> = list
                    .items
                    .iter()
                    .filter_map(|queue| {
                        let name = queue.metadata.name.clone()?;
                        Some((name, queue.data.get("spec").cloned().unwrap_or(Value::Null)))
                    })
                    .collect();
                judge(&specs)
            }
            Err(error) if not_found(&error) => Component::unhealthy(
                Level::Error,
                "KAI Scheduler is not installed but the KAIScheduler feature flag is enabled. Either install KAI Scheduler (see https://github.com/NVIDIA/KAI-Scheduler) or disable the KAIScheduler feature flag",
            ),
            Err(error) => Component::unhealthy(
                Level::Error,
                format!("Failed to list KAI Scheduler queues: {error}"),
            ),
        };
        health.set_component(health::KAI_QUEUES, component);
    }
}

/// The verdict on the cluster's queues (name, spec).
pub fn judge(queues: &[(String, Value)]) -> Component {
    let expected: Vec<&(String, Value)> = queues
        .iter()
        .filter(|(name, _)| name == PARENT_QUEUE || name == DEFAULT_QUEUE)
        .collect();
    if expected.len() != 2 {
        return Component::unhealthy(
            Level::Error,
            format!(
                "Expected the two default queues {PARENT_QUEUE} and {DEFAULT_QUEUE}, but either one or both were not found. {QUEUES_DOC} for setting up right hierarchy"
            ),
        );
    }
    for (name, spec) in &expected {
        for resource in ["cpu", "gpu", "memory"] {
            let numbers = &spec["resources"][resource];
            let value = |key: &str| numbers[key].as_f64().unwrap_or(0.0);
            let (limit, quota, weight) = (value("limit"), value("quota"), value("overQuotaWeight"));
            if limit != -1.0 || quota != -1.0 || weight != 1.0 {
                return Component::unhealthy(
                    Level::Error,
                    format!(
                        "{} resource violation for queue {name}: expected limit=-1, quota=-1, overQuotaWeight=1, got limit={limit}, quota={quota}, overQuotaWeight={weight}",
                        resource.to_uppercase().replace("MEMORY", "Memory")
                    ),
                );
            }
        }
    }
    let parent_of_default = expected
        .iter()
        .find(|(name, _)| name == DEFAULT_QUEUE)
        .and_then(|(_, spec)| spec["parentQueue"].as_str());
    let parent_has_parent = expected
        .iter()
        .find(|(name, _)| name == PARENT_QUEUE)
        .and_then(|(_, spec)| spec["parentQueue"].as_str())
        .is_some_and(|parent| !parent.is_empty());
    if parent_of_default != Some(PARENT_QUEUE) || parent_has_parent {
        return Component::unhealthy(
            Level::Error,
            format!(
                "Queue hierarchy misconfigured: '{PARENT_QUEUE}' must be a parent queue and '{DEFAULT_QUEUE}' must be a child of '{PARENT_QUEUE}'. {QUEUES_DOC} for setting up the correct hierarchy"
            ),
        );
    }
    Component::healthy(Level::Error)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn unlimited() -> Value {
        let r = json!({"quota": -1, "limit": -1, "overQuotaWeight": 1});
        json!({"cpu": r, "gpu": r, "memory": r})
    }

    #[test]
    fn the_default_hierarchy_is_healthy_and_anything_else_says_why() {
        let good = vec![
            (PARENT_QUEUE.to_string(), json!({"resources": unlimited()})),
            (
                DEFAULT_QUEUE.to_string(),
                json!({"parentQueue": PARENT_QUEUE, "resources": unlimited()}),
            ),
        ];
        assert!(judge(&good).healthy);

        let missing = judge(&good[..1]);
        assert!(!missing.healthy);
        assert!(missing.errors[0].contains("either one or both were not found"));

        let mut capped = good.clone();
        capped[1].1["resources"]["gpu"]["limit"] = json!(8);
        let capped = judge(&capped);
        assert!(capped.errors[0].starts_with("GPU resource violation for queue default-queue"));

        let mut flat = good.clone();
        flat[1].1["parentQueue"] = Value::Null;
        assert!(judge(&flat).errors[0].starts_with("Queue hierarchy misconfigured"));
    }
}
