//! `/nvca-mutating-webhook` (webhook `nvca-mutating-webhook.nvca.nvcf.nvidia.io`): what
//! every workload pod gets. NVIDIA's `nvcaMutatingWebhook`
//! (`N/pkg/webhook/nvca_mutating_webhook.go`), in its order:
//!
//! 1. when limits are enforced for the pod ([`Features::enforces_limits_on`]): the
//!    infrastructure containers of a utils pod (init container `init`, container `utils`)
//!    get the configured utils resources as limits where they set none, then every
//!    container's requests become its limits (a request without a limit first becomes
//!    the limit too);
//! 2. the toleration `nvidia.com/gpu` `Exists` `NoSchedule`, once;
//! 3. `automountServiceAccountToken: false`, unless the pod is an infrastructure object
//!    (annotation `nvca.nvcf.nvidia.io/nvca-infra-object`) or
//!    `AllowWorkloadKubernetesAPIAccess` is on.
//!
//! Only Pods change. The other kinds the rules send (ConfigMaps, Secrets, PVCs, Services;
//! NVIDIA's scheme also knows Deployments, ReplicaSets, StatefulSets, Jobs, CronJobs) are
//! admitted as they are; kinds outside that list are admitted with NVIDIA's
//! "not handled" message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::admission::Operation;

use super::features::{Features, is_helm_namespace};
use super::review::{Outcome, Request, decode, namespace_of, patched};
use crate::gpu::node::GPU_RESOURCE;
use crate::gpu::quantity::Quantity as Exact;

/// Resource name to quantity, as in a container's `resources`.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The annotation that marks objects NVCA itself creates.
pub const INFRA_OBJECT_ANNOTATION: &str = "nvca.nvcf.nvidia.io/nvca-infra-object";
/// Infrastructure container names (`icms-translate/translate/common/translator.go`,
/// `translate/function/llm.go`).
pub const UTILS_CONTAINER: &str = "utils";
pub const INIT_CONTAINER: &str = "init";
pub const LLM_WORKER_CONTAINER: &str = "llm-worker";
/// Only NVCA's worker container carries this variable.
pub const INSTANCE_ID_ENV: &str = "INSTANCE_ID";

/// NVIDIA's default utils container limits (`N/internal/util/k8sutil/nvcf_resources.go`).
pub fn default_utils_resources() -> ResourceList {
    BTreeMap::from([
        ("cpu".to_string(), Quantity("4".to_string())),
        ("memory".to_string(), Quantity("4Gi".to_string())),
    ])
}

/// `(group, version, kind)`s this webhook decodes.
const KNOWN_KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("", "v1", "Pod"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "Service"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "ReplicaSet"),
    ("apps", "v1", "StatefulSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
];

/// Judge one request.
pub fn handle(request: &Request, features: &Features, utils_resources: &ResourceList) -> Outcome {
    let kind = &request.kind;
    if !KNOWN_KINDS.iter().any(|known| {
        *known
            == (
                kind.group.as_str(),
                kind.version.as_str(),
                kind.kind.as_str(),
            )
    }) {
        return Outcome::Allowed(format!(
            "gvk \"{}/{}, Kind={}\" not handled by webhook",
            kind.group, kind.version, kind.kind
        ));
    }
    match request.operation {
        Operation::Connect | Operation::Delete => return Outcome::Allowed(String::new()),
        Operation::Create | Operation::Update => {}
    }
    if kind.kind != "Pod" {
        return match decode::<serde_json::Value>(request) {
            Ok(_) => Outcome::Allowed(String::new()),
            Err(outcome) => outcome,
        };
    }
    let original: Pod = match decode(request) {
        Ok(pod) => pod,
        Err(outcome) => return outcome,
    };
    let mut pod = original.clone();
    let namespace = namespace_of(original.metadata.namespace.as_deref(), request);
    if mutate_pod(&mut pod, &namespace, features, utils_resources) {
        patched(&original, &pod)
    } else {
        Outcome::Allowed(String::new())
    }
}

/// Apply the mutations; whether anything changed.
pub fn mutate_pod(
    pod: &mut Pod,
    namespace: &str,
    features: &Features,
    utils_resources: &ResourceList,
) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let infra = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(INFRA_OBJECT_ANNOTATION))
        .is_some_and(|value| !value.is_empty());
    let utils_pod = is_utils_pod(pod, namespace);
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let mut changed = false;
    if features.enforces_limits_on(&labels, namespace) {
        if utils_pod {
            changed |= default_infra_limits(spec, utils_resources);
        }
        changed |= requests_from_limits(&mut spec.init_containers);
        changed |= requests_from_limits_in(&mut spec.containers);
    }
    changed |= tolerate_gpu_nodes(spec);
    if !infra
        && !features.allow_workload_api_access
        && spec.automount_service_account_token != Some(false)
    {
        spec.automount_service_account_token = Some(false);
        changed = true;
    }
    changed
}

/// NVIDIA's `IsUtilsPod`: the helm `utils` pod, or a pod whose first `utils` or
/// `llm-worker` container is NVCA's worker (it has `INSTANCE_ID`).
pub fn is_utils_pod(pod: &Pod, namespace: &str) -> bool {
    if pod.metadata.name.as_deref() == Some(UTILS_CONTAINER) && is_helm_namespace(namespace) {
        return true;
    }
    pod.spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .find(|c| c.name == UTILS_CONTAINER || c.name == LLM_WORKER_CONTAINER)
        .is_some_and(|c| {
            c.env
                .iter()
                .flatten()
                .any(|env| env.name == INSTANCE_ID_ENV)
        })
}

fn default_infra_limits(spec: &mut PodSpec, utils_resources: &ResourceList) -> bool {
    let mut changed = false;
    if let Some(init) = spec
        .init_containers
        .iter_mut()
        .flatten()
        .find(|c| c.name == INIT_CONTAINER)
    {
        changed |= default_limits(init, utils_resources);
    }
    if let Some(utils) = spec
        .containers
        .iter_mut()
        .find(|c| c.name == UTILS_CONTAINER)
    {
        changed |= default_limits(utils, utils_resources);
    }
    changed
}

/// Add each of `defaults` the container does not limit.
fn default_limits(container: &mut Container, defaults: &ResourceList) -> bool {
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    let limits = resources.limits.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (name, quantity) in defaults {
        if !limits.contains_key(name) {
            limits.insert(name.clone(), quantity.clone());
            changed = true;
        }
    }
    if limits.is_empty() {
        resources.limits = None;
    }
    changed
}

fn requests_from_limits(containers: &mut Option<Vec<Container>>) -> bool {
    containers
        .as_mut()
        .is_some_and(|list| requests_from_limits_in(list))
}

/// Every container's requests equal its limits: a request without a limit becomes a
/// limit, then every limit becomes the request. Equal quantities in other spellings
/// (`1` and `1000m`) are left as written.
fn requests_from_limits_in(containers: &mut [Container]) -> bool {
    let mut changed = false;
    for container in containers {
        let resources = container.resources.clone().unwrap_or_default();
        let mut requests = resources.requests.clone().unwrap_or_default();
        let mut limits = resources.limits.clone().unwrap_or_default();
        let mut this = false;
        for (name, request) in &requests {
            if !limits.contains_key(name) {
                limits.insert(name.clone(), request.clone());
                this = true;
            }
        }
        for (name, limit) in &limits {
            if !requests
                .get(name)
                .is_some_and(|request| same_quantity(request, limit))
            {
                requests.insert(name.clone(), limit.clone());
                this = true;
            }
        }
        if this {
            container.resources = Some(ResourceRequirements {
                requests: Some(requests),
                limits: Some(limits),
                ..resources
            });
            changed = true;
        }
    }
    changed
}

fn same_quantity(a: &Quantity, b: &Quantity) -> bool {
    match (Exact::parse(&a.0), Exact::parse(&b.0)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.0 == b.0,
    }
}

/// `nvidia.com/gpu` `Exists` `NoSchedule`, unless the same toleration is there.
fn tolerate_gpu_nodes(spec: &mut PodSpec) -> bool {
    let gpu = Toleration {
        key: Some(GPU_RESOURCE.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some("NoSchedule".to_string()),
        value: None,
        toleration_seconds: None,
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if tolerations.iter().any(|t| same_toleration(t, &gpu)) {
        return false;
    }
    tolerations.push(gpu);
    true
}

/// Go compares tolerations as structs, where an empty string and an absent one are the same.
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    text(&a.key) == text(&b.key)
        && text(&a.operator) == text(&b.operator)
        && text(&a.value) == text(&b.value)
        && text(&a.effect) == text(&b.effect)
        && a.toleration_seconds == b.toleration_seconds
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::review::testing::request;
    use super::*;

    fn pod(name: &str, metadata: Value, spec: Value) -> Pod {
        let mut metadata = metadata;
        metadata["name"] = json!(name);
        serde_json::from_value(json!({"metadata": metadata, "spec": spec})).unwrap()
    }

    fn features(flags: &[&str]) -> Features {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        Features::parse(&flags, &[]).unwrap()
    }

    const GPU_TOLERATION: &str =
        r#"{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}"#;

    fn gpu() -> Value {
        serde_json::from_str(GPU_TOLERATION).unwrap()
    }

    #[test]
    fn every_pod_gets_the_toleration_and_no_token_unless_exempt() {
        let plain = json!({"containers": [{"name": "c", "image": "i"}]});
        let cases = [
            (
                "plain pod",
                json!({}),
                plain.clone(),
                features(&[]),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [gpu()], "automountServiceAccountToken": false}),
            ),
            (
                "token explicitly on is turned off",
                json!({}),
                json!({"containers": [{"name": "c", "image": "i"}], "automountServiceAccountToken": true}),
                features(&[]),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [gpu()], "automountServiceAccountToken": false}),
            ),
            (
                "infra object keeps its token",
                json!({"annotations": {INFRA_OBJECT_ANNOTATION: "true"}}),
                plain.clone(),
                features(&[]),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [gpu()]}),
            ),
            (
                "API access allowed keeps the token",
                json!({}),
                plain.clone(),
                features(&["AllowWorkloadKubernetesAPIAccess"]),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [gpu()]}),
            ),
            (
                "toleration already there is not doubled",
                json!({}),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [gpu()], "automountServiceAccountToken": false}),
                features(&[]),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [gpu()], "automountServiceAccountToken": false}),
            ),
            (
                "a different gpu toleration is kept and ours added",
                json!({}),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
                features(&[]),
                json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}, gpu()], "automountServiceAccountToken": false}),
            ),
        ];
        for (name, metadata, spec, features, expected) in cases {
            let mut pod = pod("w", metadata, spec);
            mutate_pod(
                &mut pod,
                "nvcf-backend",
                &features,
                &default_utils_resources(),
            );
            assert_eq!(
                serde_json::to_value(pod.spec.unwrap()).unwrap(),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn enforced_limits_make_requests_equal_limits() {
        let enforce = features(&["EnforceContainerFunctionResourceLimits"]);
        let function = json!({"labels": {"FUNCTION_ID": "f1"}});
        let resources = |spec: &Value, i: usize| spec["containers"][i]["resources"].clone();
        let cases = [
            (
                "request without limit becomes both",
                json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2"}}),
                json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}),
            ),
            (
                "limit overwrites a different request",
                json!({"requests": {"cpu": "1"}, "limits": {"cpu": "3", "nvidia.com/gpu": "1"}}),
                json!({"requests": {"cpu": "3", "nvidia.com/gpu": "1"}, "limits": {"cpu": "3", "nvidia.com/gpu": "1"}}),
            ),
            (
                "equal in another spelling is left alone",
                json!({"requests": {"cpu": "1000m"}, "limits": {"cpu": "1"}}),
                json!({"requests": {"cpu": "1000m"}, "limits": {"cpu": "1"}}),
            ),
            ("no resources stay none", json!({}), json!({})),
        ];
        for (name, given, expected) in cases {
            let mut pod = pod(
                "w",
                function.clone(),
                json!({"containers": [{"name": "c", "image": "i", "resources": given}]}),
            );
            mutate_pod(
                &mut pod,
                "nvcf-backend",
                &enforce,
                &default_utils_resources(),
            );
            let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
            assert_eq!(resources(&spec, 0), expected, "{name}");
        }

        // Not enforced: the flag is for container functions, this is a task.
        let mut task = pod(
            "w",
            json!({"labels": {"TASK_ID": "t"}}),
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        mutate_pod(
            &mut task,
            "nvcf-backend",
            &enforce,
            &default_utils_resources(),
        );
        let spec = serde_json::to_value(task.spec.unwrap()).unwrap();
        assert_eq!(resources(&spec, 0), json!({"requests": {"cpu": "1"}}));
    }

    #[test]
    fn utils_pods_get_the_configured_infra_limits_first() {
        let enforce = features(&["EnforceContainerFunctionResourceLimits"]);
        let worker_env = json!([{"name": "INSTANCE_ID", "value": "x"}]);
        let mut pod = pod(
            "w",
            json!({"labels": {"FUNCTION_ID": "f1"}}),
            json!({
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [
                {"name": "inference", "image": "i", "resources": {"limits": {"cpu": "8"}}},
                {"name": "utils", "image": "i", "env": worker_env, "resources": {"limits": {"cpu": "1"}}},
            ]}),
        );
        assert!(is_utils_pod(&pod, "nvcf-backend"));
        mutate_pod(
            &mut pod,
            "nvcf-backend",
            &enforce,
            &default_utils_resources(),
        );
        let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
        assert_eq!(
            spec["initContainers"][0]["resources"],
            json!({"limits": {"cpu": "4", "memory": "4Gi"}, "requests": {"cpu": "4", "memory": "4Gi"}})
        );
        assert_eq!(
            spec["containers"][1]["resources"],
            json!({"limits": {"cpu": "1", "memory": "4Gi"}, "requests": {"cpu": "1", "memory": "4Gi"}})
        );
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"limits": {"cpu": "8"}, "requests": {"cpu": "8"}})
        );
    }

    #[test]
    fn utils_pods_are_recognised_as_nvidia_does() {
        let env = json!([{"name": "INSTANCE_ID", "value": "x"}]);
        let cases = [
            (
                "utils",
                "sr-abc",
                json!([{"name": "a", "image": "i"}]),
                true,
            ),
            (
                "utils",
                "nvcf-backend",
                json!([{"name": "a", "image": "i"}]),
                false,
            ),
            (
                "w",
                "nvcf-backend",
                json!([{"name": "llm-worker", "image": "i", "env": env}]),
                true,
            ),
            (
                "w",
                "nvcf-backend",
                json!([{"name": "utils", "image": "i"}, {"name": "llm-worker", "image": "i", "env": env}]),
                false,
            ),
        ];
        for (name, namespace, containers, expected) in cases {
            let pod = pod(name, json!({}), json!({"containers": containers}));
            assert_eq!(
                is_utils_pod(&pod, namespace),
                expected,
                "{name} {namespace} {containers}"
            );
        }
    }

    #[test]
    fn other_kinds_pass_and_unknown_kinds_say_so() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let req = request(
            "CREATE",
            ("", "v1", "ConfigMap"),
            "nvcf-backend",
            "u",
            cm.clone(),
        );
        assert_eq!(
            handle(&req, &Features::default(), &default_utils_resources()),
            Outcome::Allowed(String::new())
        );
        let req = request("CREATE", ("", "v1", "Endpoints"), "nvcf-backend", "u", cm);
        assert_eq!(
            handle(&req, &Features::default(), &default_utils_resources()),
            Outcome::Allowed("gvk \"/v1, Kind=Endpoints\" not handled by webhook".to_string())
        );
    }
}
