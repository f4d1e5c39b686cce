//! `/validate` (webhook `validate-helm-charts.nvca.nvcf.nvidia.io`): the objects a helm
//! function or task applies. NVIDIA's `helmMiniServiceValWebhookHandler`
//! (`N/pkg/webhook/helm_mini_service_validate_webhook.go`):
//!
//! - only requests made as the mini-service instance ServiceAccount
//!   (`system:serviceaccount:<ns>:miniservice-instance-permissions`,
//!   `N/pkg/miniservice/miniservice.go`) are judged; anyone else is admitted with
//!   "non-ICMS instance user request skipped";
//! - creates and updates (the new object) of workloads carrying a pod template (Pods,
//!   Deployments, ReplicaSets, StatefulSets, Jobs, CronJobs) are refused, when limits are
//!   enforced for them ([`Features::enforces_limits_on`]), if any container or init
//!   container has no limits, lacks a `cpu` or `memory` limit, or limits a resource other
//!   than `cpu`, `memory`, `ephemeral-storage` or `nvidia.com/*` to a non-zero amount.
//!
//! The message lists every problem, one per line, as NVIDIA's `errors.Join`.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::core::admission::Operation;
use serde_json::Value;

use super::features::Features;
use super::review::{Outcome, Request, decode, decode_old, go_quoted, namespace_of};
use crate::gpu::quantity::Quantity;

/// The ServiceAccount mini-service workloads are applied as.
pub const INSTANCE_SERVICE_ACCOUNT: &str = "miniservice-instance-permissions";

/// Whether `username` is the instance ServiceAccount of any namespace.
pub fn is_instance_user(username: &str) -> bool {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.strip_suffix(INSTANCE_SERVICE_ACCOUNT))
        .and_then(|namespace| namespace.strip_suffix(':'))
        .is_some_and(|namespace| !namespace.is_empty())
}

/// Judge one request.
pub fn handle(request: &Request, features: &Features) -> Outcome {
    let username = request.user_info.username.as_deref().unwrap_or_default();
    if !is_instance_user(username) {
        return Outcome::Allowed("non-ICMS instance user request skipped".to_string());
    }
    if request.operation == Operation::Update
        && let Err(outcome) = decode_old::<Value>(request)
    {
        return outcome;
    }
    match request.operation {
        Operation::Connect | Operation::Delete => Outcome::Allowed(String::new()),
        Operation::Create | Operation::Update => {
            let object: Value = match decode(request) {
                Ok(object) => object,
                Err(outcome) => return outcome,
            };
            match validate(&object, &request.kind.kind, request, features) {
                Ok(()) => Outcome::Allowed(String::new()),
                Err(message) => Outcome::Denied(message),
            }
        }
    }
}

/// The problems of one object, joined by newlines.
fn validate(
    object: &Value,
    kind: &str,
    request: &Request,
    features: &Features,
) -> Result<(), String> {
    let labels = object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let namespace = namespace_of(object["metadata"]["namespace"].as_str(), request);
    if !features.enforces_limits_on(&labels, &namespace) {
        return Ok(());
    }
    let Some(spec) = pod_spec(object, kind) else {
        return Ok(());
    };
    let spec: PodSpec = serde_json::from_value(spec.clone())
        .map_err(|error| format!("cannot read the pod template of this {kind}: {error}"))?;
    let mut problems = container_limit_problems(&spec.containers);
    problems.extend(container_limit_problems(
        spec.init_containers.as_deref().unwrap_or_default(),
    ));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Where each workload kind keeps its pod spec.
fn pod_spec<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    let pointer = match kind {
        "Pod" => "/spec",
        "Deployment" | "ReplicaSet" | "StatefulSet" | "Job" => "/spec/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    };
    object.pointer(pointer)
}

/// NVIDIA's `validateContainerLimits`, one message per problem.
pub fn container_limit_problems(containers: &[Container]) -> Vec<String> {
    let mut problems = Vec::new();
    for container in containers {
        let name = &container.name;
        let limits = container
            .resources
            .as_ref()
            .and_then(|resources| resources.limits.clone())
            .unwrap_or_default();
        if limits.is_empty() {
            problems.push(format!("container {name} has no resource limits"));
            continue;
        }
        let missing: Vec<String> = ["cpu", "memory"]
            .into_iter()
            .filter(|resource| !limits.contains_key(*resource))
            .map(String::from)
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "container {name} missing resource limits: {}",
                go_quoted(&missing)
            ));
        }
        let disallowed: Vec<String> = limits
            .iter()
            .filter(|(resource, quantity)| {
                !matches!(resource.as_str(), "cpu" | "memory" | "ephemeral-storage")
                    && !resource.starts_with("nvidia.com/")
                    && !Quantity::parse(&quantity.0).is_ok_and(|q| q.is_zero())
            })
            .map(|(resource, _)| resource.clone())
            .collect();
        if !disallowed.is_empty() {
            problems.push(format!(
                "container {name} has non-zero disallowed resources in limits: {}",
                go_quoted(&disallowed)
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::review::testing::request;
    use super::*;

    const INSTANCE: &str = "system:serviceaccount:sr-abc:miniservice-instance-permissions";

    fn enforcing() -> Features {
        Features::parse(&["EnforceHelmFunctionResourceLimits".to_string()], &[]).unwrap()
    }

    #[test]
    fn only_the_instance_service_account_is_judged() {
        let cases = [
            (INSTANCE, true),
            (
                "system:serviceaccount:x:miniservice-instance-permissions",
                true,
            ),
            (
                "system:serviceaccount::miniservice-instance-permissions",
                false,
            ),
            (
                "system:serviceaccount:sr-abc:helm-instance-permissions",
                false,
            ),
            (
                "system:serviceaccount:sr-abc:miniservice-instance-permissions-2",
                false,
            ),
            ("admin", false),
        ];
        for (user, expected) in cases {
            assert_eq!(is_instance_user(user), expected, "{user}");
        }
    }

    #[test]
    fn container_limits_are_checked_as_nvidia_does() {
        let container = |limits: Value| -> Container {
            serde_json::from_value(json!({"name": "c", "resources": {"limits": limits}})).unwrap()
        };
        let cases = [
            (json!({"cpu": "1", "memory": "1Gi"}), vec![]),
            (
                json!({"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi", "nvidia.com/gpu": "8"}),
                vec![],
            ),
            (json!({}), vec!["container c has no resource limits"]),
            (
                json!({"nvidia.com/gpu": "1"}),
                vec![r#"container c missing resource limits: ["cpu" "memory"]"#],
            ),
            (
                json!({"cpu": "1", "memory": "1Gi", "hugepages-2Mi": "0"}),
                vec![],
            ),
            (
                json!({"cpu": "1", "example.com/fpga": "1", "hugepages-2Mi": "2Mi"}),
                vec![
                    r#"container c missing resource limits: ["memory"]"#,
                    r#"container c has non-zero disallowed resources in limits: ["example.com/fpga" "hugepages-2Mi"]"#,
                ],
            ),
        ];
        for (limits, expected) in cases {
            assert_eq!(
                container_limit_problems(&[container(limits.clone())]),
                expected,
                "{limits}"
            );
        }
    }

    #[test]
    fn workloads_are_refused_with_every_problem() {
        let template = json!({"containers": [{"name": "app", "image": "i"}],
                              "initContainers": [{"name": "setup", "image": "i", "resources": {"limits": {"cpu": "1"}}}]});
        let labels = json!({"FUNCTION_ID": "f1"});
        let objects = [
            (
                ("", "v1", "Pod"),
                json!({"metadata": {"name": "p", "labels": labels}, "spec": template}),
            ),
            (
                ("apps", "v1", "Deployment"),
                json!({"metadata": {"name": "d", "labels": labels}, "spec": {"template": {"spec": template}}}),
            ),
            (
                ("batch", "v1", "CronJob"),
                json!({"metadata": {"name": "j", "labels": labels}, "spec": {"jobTemplate": {"spec": {"template": {"spec": template}}}}}),
            ),
        ];
        let expected = "container app has no resource limits\n\
                        container setup missing resource limits: [\"memory\"]";
        for (kind, object) in objects {
            for operation in ["CREATE", "UPDATE"] {
                let req = request(operation, kind, "sr-abc", INSTANCE, object.clone());
                assert_eq!(
                    handle(&req, &enforcing()),
                    Outcome::Denied(expected.to_string()),
                    "{kind:?} {operation}"
                );
            }
            // The same object from another user, or with enforcement off, or outside a
            // helm namespace, passes.
            let req = request("CREATE", kind, "sr-abc", "admin", object.clone());
            assert_eq!(
                handle(&req, &enforcing()),
                Outcome::Allowed("non-ICMS instance user request skipped".into())
            );
            let req = request("CREATE", kind, "sr-abc", INSTANCE, object.clone());
            assert_eq!(
                handle(&req, &Features::default()),
                Outcome::Allowed(String::new())
            );
            let req = request("CREATE", kind, "nvcf-backend", INSTANCE, object.clone());
            assert_eq!(handle(&req, &enforcing()), Outcome::Allowed(String::new()));
        }
        // Kinds without a pod template pass.
        let service = json!({"metadata": {"name": "s", "labels": labels}, "spec": {}});
        let req = request("CREATE", ("", "v1", "Service"), "sr-abc", INSTANCE, service);
        assert_eq!(handle(&req, &enforcing()), Outcome::Allowed(String::new()));
    }
}
