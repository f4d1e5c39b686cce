//! `/mutate-pod-nodeaffinity` (webhook `mutate-pod-nodeaffinity.nvca.nvcf.nvidia.io`):
//! where a workload pod may run. NVIDIA's `podAffinityWebhook.Default`
//! (`N/pkg/webhook/pod_nodeaffinity_webhook.go`, `pod_affinity.go`), in its order:
//!
//! 1. shared cluster (some node labelled `nvca.nvcf.nvidia.io/schedule=true`): every
//!    required node-selector term also requires `nvca.nvcf.nvidia.io/schedule In [true]`;
//!    a term that already names the key differently is refused;
//! 2. `UniformInstanceLabels`: a `node.kubernetes.io/instance-type` node selector becomes
//!    `nvca.nvcf.nvidia.io/instance-type`, and every required term without the uniform
//!    key gets it (replacing the deprecated key) with the instance types found first;
//! 3. `HostIsolation`: a `NoExecute` toleration for the pod's tenant (its
//!    `function-version-id` or `task-id` label) and a preferred anti-affinity (weight 100)
//!    to other tenants' pods on the same host;
//! 4. `AccountIsolation`: the same keyed by `nca-id`, with required anti-affinity.
//!
//! Every failure is collected; any failure refuses the pod, with Kubernetes' aggregate
//! message (`a` or `[a, b]`).

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSpec, Toleration, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::admission::Operation;

use super::review::{Outcome, Request, decode, patched};
use crate::gpu::node::{INSTANCE_TYPE_LABEL, SCHEDULE_LABEL};

/// The instance-type label pods used before NVCA labelled nodes itself.
pub const DEPRECATED_INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// Tenant labels on workload pods (`N/pkg/types/common_labels.go`).
pub const NCA_ID_LABEL: &str = "nca-id";
pub const FUNCTION_VERSION_ID_LABEL: &str = "function-version-id";
pub const TASK_ID_LABEL: &str = "task-id";
const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// What decides this webhook's mutations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAffinityOptions {
    /// Some node carries `nvca.nvcf.nvidia.io/schedule=true`.
    pub shared_cluster: bool,
    pub uniform_instance_labels: bool,
    pub host_isolation: bool,
    pub account_isolation: bool,
}

/// Judge one request.
pub fn handle(request: &Request, options: &NodeAffinityOptions) -> Outcome {
    if request.operation == Operation::Delete {
        return Outcome::Allowed(String::new());
    }
    let original: Pod = match decode(request) {
        Ok(pod) => pod,
        Err(outcome) => return outcome,
    };
    let mut pod = original.clone();
    match default_pod(&mut pod, options) {
        Ok(()) => patched(&original, &pod),
        Err(message) => Outcome::Denied(message),
    }
}

/// Apply the mutations to `pod`; `Err` is the message that refuses it.
pub fn default_pod(pod: &mut Pod, options: &NodeAffinityOptions) -> Result<(), String> {
    let mut errors = Vec::new();
    let (namespace, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if options.shared_cluster {
        require_shared_cluster_nodes(spec, &mut errors);
    }
    if options.uniform_instance_labels {
        use_uniform_instance_label(spec);
    }
    for (enabled, by_account) in [
        (options.host_isolation, false),
        (options.account_isolation, true),
    ] {
        if !enabled {
            continue;
        }
        match tenant(&labels, by_account) {
            Ok((key, value)) => isolate_tenant(spec, key, &value, by_account),
            Err(problem) => errors.push(format!("pod {namespace}/{name} {problem}")),
        }
    }
    aggregate(errors)
}

/// Kubernetes' `utilerrors.NewAggregate(...).Error()`: duplicates once, one message
/// as is, more in brackets.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    let mut unique: Vec<String> = Vec::new();
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    match unique.len() {
        0 => Ok(()),
        1 => Err(unique.remove(0)),
        _ => Err(format!("[{}]", unique.join(", "))),
    }
}

/// The required node selector, created empty when missing.
fn required_node_selector(spec: &mut PodSpec) -> &mut NodeSelector {
    spec.affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default)
}

fn requirement(key: &str, values: Option<Vec<String>>) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: "In".to_string(),
        values,
    }
}

fn require_shared_cluster_nodes(spec: &mut PodSpec, errors: &mut Vec<String>) {
    let schedule_true = || requirement(SCHEDULE_LABEL, Some(vec!["true".to_string()]));
    let selector = required_node_selector(spec);
    for term in &mut selector.node_selector_terms {
        let existing = term
            .match_expressions
            .iter()
            .flatten()
            .find(|expression| expression.key == SCHEDULE_LABEL);
        let found = match existing {
            Some(expression) if *expression == schedule_true() => true,
            Some(_) => {
                errors.push(format!(
                    "match expression key \"{SCHEDULE_LABEL}\" exists, but either operation \
                     is not \"In\" or values are not [\"true\"]"
                ));
                false
            }
            None => false,
        };
        if !found {
            term.match_expressions
                .get_or_insert_with(Vec::new)
                .push(schedule_true());
        }
    }
    if selector.node_selector_terms.is_empty() {
        selector.node_selector_terms.push(NodeSelectorTerm {
            match_expressions: Some(vec![schedule_true()]),
            match_fields: None,
        });
    }
}

/// The values of the first required expression on either instance-type key.
fn instance_types_required(spec: &PodSpec) -> Option<Option<Vec<String>>> {
    let selector = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    selector
        .node_selector_terms
        .iter()
        .flat_map(|term| term.match_expressions.iter().flatten())
        .find(|expression| {
            expression.key == DEPRECATED_INSTANCE_TYPE_LABEL
                || expression.key == INSTANCE_TYPE_LABEL
        })
        .map(|expression| expression.values.clone())
}

fn use_uniform_instance_label(spec: &mut PodSpec) {
    if let Some(selector) = spec.node_selector.as_mut()
        && let Some(value) = selector.remove(DEPRECATED_INSTANCE_TYPE_LABEL)
    {
        selector.insert(INSTANCE_TYPE_LABEL.to_string(), value);
    }
    // Only a pod that already requires an instance type gets terms: the API server
    // refuses a required node selector without any.
    let Some(values) = instance_types_required(spec) else {
        return;
    };
    for term in &mut required_node_selector(spec).node_selector_terms {
        let expressions = term.match_expressions.get_or_insert_with(Vec::new);
        if expressions.iter().any(|e| e.key == INSTANCE_TYPE_LABEL) {
            continue;
        }
        let uniform = requirement(INSTANCE_TYPE_LABEL, values.clone());
        match expressions
            .iter()
            .rposition(|e| e.key == DEPRECATED_INSTANCE_TYPE_LABEL)
        {
            Some(index) => expressions[index] = uniform,
            None => expressions.push(uniform),
        }
    }
}

/// The tenant label and its value, by account or by function/task.
fn tenant(
    labels: &std::collections::BTreeMap<String, String>,
    by_account: bool,
) -> Result<(&'static str, String), &'static str> {
    if by_account {
        return labels
            .get(NCA_ID_LABEL)
            .map(|id| (NCA_ID_LABEL, id.clone()))
            .ok_or("has no tenant label cannot set pod tolerations");
    }
    match (
        labels.get(FUNCTION_VERSION_ID_LABEL),
        labels.get(TASK_ID_LABEL),
    ) {
        (Some(id), None) => Ok((FUNCTION_VERSION_ID_LABEL, id.clone())),
        (None, Some(id)) => Ok((TASK_ID_LABEL, id.clone())),
        _ => Err("has no tenant label or conflicting labels, cannot set pod tolerations"),
    }
}

fn isolate_tenant(spec: &mut PodSpec, key: &str, value: &str, required: bool) {
    let toleration = Toleration {
        key: Some(key.to_string()),
        operator: Some("Equal".to_string()),
        value: Some(value.to_string()),
        effect: Some("NoExecute".to_string()),
        toleration_seconds: None,
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&toleration) {
        tolerations.push(toleration);
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: "NotIn".to_string(),
                    values: Some(vec![value.to_string()]),
                },
                LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: "Exists".to_string(),
                    values: None,
                },
            ]),
            match_labels: None,
        }),
        topology_key: HOSTNAME_TOPOLOGY.to_string(),
        ..PodAffinityTerm::default()
    };
    let anti = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    if required {
        let terms = anti
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new);
        if !terms.contains(&term) {
            terms.push(term);
        }
    } else {
        let weighted = WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: term,
        };
        let terms = anti
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new);
        if !terms.contains(&weighted) {
            terms.push(weighted);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::review::testing::request;
    use super::*;

    fn pod(spec: Value, labels: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "w", "namespace": "nvcf-backend", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn spec_of(pod: &Pod) -> Value {
        serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap()
    }

    const CONTAINERS: &str = r#"[{"name":"c","image":"i"}]"#;

    fn containers() -> Value {
        serde_json::from_str(CONTAINERS).unwrap()
    }

    fn required(terms: Value) -> Value {
        json!({"containers": containers(), "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    const UNIFORM: NodeAffinityOptions = NodeAffinityOptions {
        shared_cluster: false,
        uniform_instance_labels: true,
        host_isolation: false,
        account_isolation: false,
    };
    const SHARED: NodeAffinityOptions = NodeAffinityOptions {
        shared_cluster: true,
        uniform_instance_labels: false,
        host_isolation: false,
        account_isolation: false,
    };

    #[test]
    fn mutations_match_nvidias_table() {
        let schedule = json!({"key": SCHEDULE_LABEL, "operator": "In", "values": ["true"]});
        let it = |key: &str, values: Value| json!({"key": key, "operator": "In", "values": values});
        let cases: Vec<(&str, NodeAffinityOptions, Value, Value)> = vec![
            (
                "nothing on: untouched",
                NodeAffinityOptions::default(),
                json!({"containers": containers(), "nodeSelector": {DEPRECATED_INSTANCE_TYPE_LABEL: "x"}}),
                json!({"containers": containers(), "nodeSelector": {DEPRECATED_INSTANCE_TYPE_LABEL: "x"}}),
            ),
            (
                "deprecated node selector becomes uniform",
                UNIFORM,
                json!({"containers": containers(), "nodeSelector": {DEPRECATED_INSTANCE_TYPE_LABEL: "OCI.GPU.H100_8x", "a": "b"}}),
                json!({"containers": containers(), "nodeSelector": {INSTANCE_TYPE_LABEL: "OCI.GPU.H100_8x", "a": "b"}}),
            ),
            (
                "no instance type anywhere: no affinity invented",
                UNIFORM,
                json!({"containers": containers()}),
                json!({"containers": containers()}),
            ),
            (
                "deprecated expression replaced in place, other terms get the first values",
                UNIFORM,
                required(json!([
                    {"matchExpressions": [it("zone", json!(["a"])), it(DEPRECATED_INSTANCE_TYPE_LABEL, json!(["T1", "T2"]))]},
                    {"matchExpressions": [it("zone", json!(["b"]))]},
                ])),
                required(json!([
                    {"matchExpressions": [it("zone", json!(["a"])), it(INSTANCE_TYPE_LABEL, json!(["T1", "T2"]))]},
                    {"matchExpressions": [it("zone", json!(["b"])), it(INSTANCE_TYPE_LABEL, json!(["T1", "T2"]))]},
                ])),
            ),
            (
                "uniform already required: unchanged",
                UNIFORM,
                required(json!([{"matchExpressions": [it(INSTANCE_TYPE_LABEL, json!(["T1"]))]}])),
                required(json!([{"matchExpressions": [it(INSTANCE_TYPE_LABEL, json!(["T1"]))]}])),
            ),
            (
                "shared cluster, no affinity: one term requiring schedule=true",
                SHARED,
                json!({"containers": containers()}),
                required(json!([{"matchExpressions": [schedule.clone()]}])),
            ),
            (
                "shared cluster: every term gets schedule=true once",
                SHARED,
                required(json!([
                    {"matchExpressions": [it(INSTANCE_TYPE_LABEL, json!(["T1"]))]},
                    {"matchExpressions": [schedule.clone()]},
                ])),
                required(json!([
                    {"matchExpressions": [it(INSTANCE_TYPE_LABEL, json!(["T1"])), schedule.clone()]},
                    {"matchExpressions": [schedule.clone()]},
                ])),
            ),
        ];
        for (name, options, spec, expected) in cases {
            let mut pod = pod(spec, json!({}));
            default_pod(&mut pod, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(spec_of(&pod), expected, "{name}");
        }
    }

    #[test]
    fn shared_cluster_refuses_a_schedule_key_with_other_values() {
        let mut pod = pod(
            required(json!([{"matchExpressions": [
                {"key": SCHEDULE_LABEL, "operator": "NotIn", "values": ["true"]}]}])),
            json!({}),
        );
        let error = default_pod(&mut pod, &SHARED).unwrap_err();
        assert_eq!(
            error,
            "match expression key \"nvca.nvcf.nvidia.io/schedule\" exists, but either operation \
             is not \"In\" or values are not [\"true\"]"
        );
    }

    #[test]
    fn isolation_tolerates_the_tenant_and_repels_others() {
        let host = NodeAffinityOptions {
            host_isolation: true,
            ..NodeAffinityOptions::default()
        };
        let account = NodeAffinityOptions {
            account_isolation: true,
            ..NodeAffinityOptions::default()
        };
        let selector = |key: &str, value: &str| {
            json!({"matchExpressions": [
                {"key": key, "operator": "NotIn", "values": [value]},
                {"key": key, "operator": "Exists"}]})
        };
        let cases = [
            (
                host,
                json!({"function-version-id": "fv1"}),
                Ok(("function-version-id", "fv1", false)),
            ),
            (host, json!({"task-id": "t1"}), Ok(("task-id", "t1", false))),
            (
                host,
                json!({"task-id": "t1", "function-version-id": "fv1"}),
                Err(
                    "pod nvcf-backend/w has no tenant label or conflicting labels, cannot set pod tolerations",
                ),
            ),
            (
                host,
                json!({}),
                Err(
                    "pod nvcf-backend/w has no tenant label or conflicting labels, cannot set pod tolerations",
                ),
            ),
            (
                account,
                json!({"nca-id": "nca-abc-nca"}),
                Ok(("nca-id", "nca-abc-nca", true)),
            ),
            (
                account,
                json!({"task-id": "t1"}),
                Err("pod nvcf-backend/w has no tenant label cannot set pod tolerations"),
            ),
        ];
        for (options, labels, expected) in cases {
            let mut pod = pod(json!({"containers": containers()}), labels.clone());
            let result = default_pod(&mut pod, &options);
            match expected {
                Err(message) => assert_eq!(result, Err(message.to_string()), "{labels}"),
                Ok((key, value, required)) => {
                    result.unwrap();
                    let spec = spec_of(&pod);
                    assert_eq!(
                        spec["tolerations"],
                        json!([{"key": key, "operator": "Equal", "value": value, "effect": "NoExecute"}])
                    );
                    let anti = &spec["affinity"]["podAntiAffinity"];
                    let term = json!({"labelSelector": selector(key, value), "topologyKey": "kubernetes.io/hostname"});
                    if required {
                        assert_eq!(
                            anti["requiredDuringSchedulingIgnoredDuringExecution"],
                            json!([term])
                        );
                    } else {
                        assert_eq!(
                            anti["preferredDuringSchedulingIgnoredDuringExecution"],
                            json!([{"weight": 100, "podAffinityTerm": term}])
                        );
                    }
                    // Idempotent: a second admission (an UPDATE) adds nothing.
                    let once = pod.clone();
                    default_pod(&mut pod, &options).unwrap();
                    assert_eq!(pod, once);
                }
            }
        }
    }

    #[test]
    fn errors_aggregate_as_kubernetes_prints_them() {
        assert_eq!(aggregate(vec![]), Ok(()));
        assert_eq!(aggregate(vec!["a".into(), "a".into()]), Err("a".into()));
        assert_eq!(
            aggregate(vec!["a".into(), "b".into()]),
            Err("[a, b]".into())
        );
    }

    #[test]
    fn the_handler_patches_only_what_it_changed() {
        let object = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "w", "namespace": "nvcf-backend", "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}],
                     "nodeSelector": {DEPRECATED_INSTANCE_TYPE_LABEL: "T"}},
            "status": {}});
        let req = request("CREATE", ("", "v1", "Pod"), "nvcf-backend", "u", object);
        let Outcome::Patched { before, after } = handle(&req, &UNIFORM) else {
            panic!("expected a patch");
        };
        let patch = serde_json::to_value(json_patch::diff(&before, &after)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/spec/nodeSelector/nvca.nvcf.nvidia.io~1instance-type", "value": "T"},
                {"op": "remove", "path": "/spec/nodeSelector/node.kubernetes.io~1instance-type"}
            ])
        );
    }
}
