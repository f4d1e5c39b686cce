//! `/mutate-pod-enforcement` (webhooks `mutate-pod-enforcement` and
//! `mutate-miniservice-pod-enforcement`): pods NVCA labelled
//! `nvca.nvcf.nvidia.io/needs-enforce=true` are made to fit the cluster's isolation.
//! NVIDIA's `podEnforcementWebhook.Default` (`N/pkg/webhook/enforcement_webhook.go`,
//! `N/pkg/nvca/enforce/metadata.go`, `enforce/kata/kata.go`).
//!
//! An enforcement is on when the cluster attribute is, or when the pod's
//! `nvca.nvcf.nvidia.io/enforcements` annotation (`Name=value,…`, written by NVCA when it
//! built the pod) says `Name=true`, so pods keep their enforcement across an agent
//! restart with other attributes. The first that is on, in this order:
//!
//! 1. `KataRuntimeIsolation`: `runtimeClassName` is the Kata GPU class
//!    (`kata-qemu-nvidia-gpu`), or the non-GPU class (`kata-qemu`) for a pod that asks
//!    for no GPU when that class exists in the cluster; GPU resources become
//!    `nvidia.com/pgpu`;
//! 2. `TimeSlicingGPUEnabled`: GPU resources become `nvidia.com/gpu.shared`;
//! 3. `PassthroughGPUEnabled`: GPU resources become `nvidia.com/pgpu`.
//!
//! With Kata or time slicing on, a pod that asks for a GPU also gets the DCGM metrics
//! annotations (`webhook.dcgmAnnotations`, with `prometheus.io/port`, default 9400), the
//! label `nvca.nvcf.nvidia.io/dcgm-metrics-present=true`, and a `dcgm-metrics` TCP port
//! on each GPU container. The pod is annotated with what was changed
//! (`…/mutation-enforced`, `…/init-mutation-enforced`, `…/container-mutation-enforced`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::admission::Operation;

use super::features::Features;
use super::review::{Outcome, Request, decode, patched};
use crate::gpu::node::{GPU_RESOURCE, GPU_SHARED_RESOURCE, PGPU_RESOURCE};

pub const ENFORCEMENTS_ANNOTATION: &str = "nvca.nvcf.nvidia.io/enforcements";
pub const POD_MUTATED_ANNOTATION: &str = "nvca.nvcf.nvidia.io/mutation-enforced";
pub const INIT_MUTATED_ANNOTATION: &str = "nvca.nvcf.nvidia.io/init-mutation-enforced";
pub const CONTAINER_MUTATED_ANNOTATION: &str = "nvca.nvcf.nvidia.io/container-mutation-enforced";
pub const DCGM_PRESENT_LABEL: &str = "nvca.nvcf.nvidia.io/dcgm-metrics-present";
pub const PROMETHEUS_PORT_ANNOTATION: &str = "prometheus.io/port";
pub const DEFAULT_DCGM_PORT: i32 = 9400;
const DCGM_PORT_NAME: &str = "dcgm-metrics";
const GPU_RESOURCES: [&str; 3] = [PGPU_RESOURCE, GPU_SHARED_RESOURCE, GPU_RESOURCE];

/// The Kata RuntimeClass names (NVIDIA's defaults; `NVCA_KATA_RUNTIME_CLASS`,
/// `NVCA_KATA_RUNTIME_CLASS_GPU` and `NVCA_KATA_RUNTIME_CLASS_NON_GPU` override them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KataClasses {
    pub gpu: String,
    pub non_gpu: String,
}

impl Default for KataClasses {
    fn default() -> Self {
        KataClasses {
            gpu: "kata-qemu-nvidia-gpu".to_string(),
            non_gpu: "kata-qemu".to_string(),
        }
    }
}

impl KataClasses {
    /// NVIDIA's names with its environment overrides applied.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> KataClasses {
        let defaults = KataClasses::default();
        let set = |name: &str| var(name).filter(|value| !value.is_empty());
        KataClasses {
            gpu: set("NVCA_KATA_RUNTIME_CLASS")
                .or_else(|| set("NVCA_KATA_RUNTIME_CLASS_GPU"))
                .unwrap_or(defaults.gpu),
            non_gpu: set("NVCA_KATA_RUNTIME_CLASS_NON_GPU").unwrap_or(defaults.non_gpu),
        }
    }
}

/// The DCGM metrics metadata GPU pods get (NVIDIA's `DCGMMetricsConfigFromAnnotations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcgmMetrics {
    pub annotations: BTreeMap<String, String>,
    pub port: i32,
}

impl DcgmMetrics {
    /// From `webhook.dcgmAnnotations`; the port annotation is added when missing.
    pub fn from_annotations(
        mut annotations: BTreeMap<String, String>,
    ) -> Result<DcgmMetrics, String> {
        let port = match annotations.get(PROMETHEUS_PORT_ANNOTATION) {
            Some(port) => port.parse::<i32>().map_err(|error| {
                format!("webhook.dcgmAnnotations {PROMETHEUS_PORT_ANNOTATION}: {port:?} is not a port: {error}")
            })?,
            None => {
                annotations.insert(PROMETHEUS_PORT_ANNOTATION.to_string(), DEFAULT_DCGM_PORT.to_string());
                DEFAULT_DCGM_PORT
            }
        };
        Ok(DcgmMetrics { annotations, port })
    }
}

impl Default for DcgmMetrics {
    fn default() -> Self {
        DcgmMetrics::from_annotations(BTreeMap::new()).unwrap_or(DcgmMetrics {
            annotations: BTreeMap::new(),
            port: DEFAULT_DCGM_PORT,
        })
    }
}

/// What decides the enforcement.
#[derive(Clone, Copy, Debug)]
pub struct EnforcementOptions<'a> {
    pub features: &'a Features,
    pub kata_classes: &'a KataClasses,
    /// The non-GPU Kata RuntimeClass exists in the cluster.
    pub non_gpu_class_exists: bool,
    pub dcgm: &'a DcgmMetrics,
}

/// Judge one request.
pub fn handle(request: &Request, options: &EnforcementOptions) -> Outcome {
    if request.operation == Operation::Delete {
        return Outcome::Allowed(String::new());
    }
    let original: Pod = match decode(request) {
        Ok(pod) => pod,
        Err(outcome) => return outcome,
    };
    let mut pod = original.clone();
    enforce(&mut pod, options);
    patched(&original, &pod)
}

/// The enforcements recorded on the pod.
fn recorded(pod: &Pod) -> BTreeMap<String, String> {
    let text = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ENFORCEMENTS_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    text.split(',')
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) if !value.is_empty() => (name.to_string(), value.to_string()),
            Some((name, _)) => (name.to_string(), "true".to_string()),
            None => (entry.to_string(), "true".to_string()),
        })
        .collect()
}

/// Apply the enforcements; whether anything changed.
pub fn enforce(pod: &mut Pod, options: &EnforcementOptions) -> bool {
    let recorded = recorded(pod);
    let on =
        |attribute: bool, name: &str| attribute || recorded.get(name).is_some_and(|v| v == "true");
    let features = options.features;
    let kata = on(features.kata_runtime_isolation, "KataRuntimeIsolation");
    let time_slicing = on(features.time_slicing_gpu, "TimeSlicingGPUEnabled");
    let passthrough = on(features.passthrough_gpu, "PassthroughGPUEnabled");
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let (mut pod_changed, mut init_changed, mut containers_changed) = (false, false, false);
    let mut substitute = |spec: &mut PodSpec, resource: &str| {
        init_changed |= substitute_gpu(spec.init_containers.iter_mut().flatten(), resource);
        containers_changed |= substitute_gpu(spec.containers.iter_mut(), resource);
    };
    if kata {
        let class = if !options.non_gpu_class_exists || requests_gpu(spec) {
            &options.kata_classes.gpu
        } else {
            &options.kata_classes.non_gpu
        };
        spec.runtime_class_name = Some(class.clone());
        substitute(spec, PGPU_RESOURCE);
        pod_changed = true;
    } else if time_slicing {
        substitute(spec, GPU_SHARED_RESOURCE);
    } else if passthrough {
        substitute(spec, PGPU_RESOURCE);
    }
    if (kata || time_slicing) && requests_gpu(spec) {
        add_dcgm_ports(spec, options.dcgm.port);
        let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend(options.dcgm.annotations.clone());
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(DCGM_PRESENT_LABEL.to_string(), "true".to_string());
        pod_changed = true;
    }
    for (changed, key) in [
        (pod_changed, POD_MUTATED_ANNOTATION),
        (init_changed, INIT_MUTATED_ANNOTATION),
        (containers_changed, CONTAINER_MUTATED_ANNOTATION),
    ] {
        if changed {
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(key.to_string(), "true".to_string());
        }
    }
    pod_changed || init_changed || containers_changed
}

fn is_gpu_resource(name: &str) -> bool {
    GPU_RESOURCES.contains(&name)
}

fn container_requests_gpu(container: &Container) -> bool {
    container.resources.iter().any(|resources| {
        [&resources.requests, &resources.limits]
            .into_iter()
            .flatten()
            .any(|list| list.keys().any(|name| is_gpu_resource(name)))
    })
}

fn requests_gpu(spec: &PodSpec) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .any(container_requests_gpu)
}

/// Rename the GPU resource of each container's requests and limits to `resource`
/// (a workload asks for one GPU kind only); whether any changed.
fn substitute_gpu<'a>(containers: impl Iterator<Item = &'a mut Container>, resource: &str) -> bool {
    let mut changed = false;
    for container in containers {
        let Some(resources) = container.resources.as_mut() else {
            continue;
        };
        for list in [&mut resources.requests, &mut resources.limits]
            .into_iter()
            .flatten()
        {
            changed |= substitute_in(list, resource);
        }
    }
    changed
}

fn substitute_in(list: &mut BTreeMap<String, Quantity>, resource: &str) -> bool {
    if list.contains_key(resource) {
        return false;
    }
    let Some(name) = list.keys().find(|name| is_gpu_resource(name)).cloned() else {
        return false;
    };
    if let Some(quantity) = list.remove(&name) {
        list.insert(resource.to_string(), quantity);
    }
    true
}

/// A `dcgm-metrics` TCP port on every GPU container: the port already declared with
/// that number is renamed, else one is added; the name gets `-2`, `-3`… if taken.
fn add_dcgm_ports(spec: &mut PodSpec, port: i32) {
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for container in containers {
        if !container_requests_gpu(container) {
            continue;
        }
        let ports = container.ports.get_or_insert_with(Vec::new);
        let is_dcgm = |p: &ContainerPort| {
            p.container_port == port && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        };
        let taken: Vec<String> = ports
            .iter()
            .filter(|p| !is_dcgm(p))
            .filter_map(|p| p.name.clone())
            .collect();
        let mut name = DCGM_PORT_NAME.to_string();
        let mut counter = 2;
        while taken.contains(&name) {
            name = format!("{DCGM_PORT_NAME}-{counter}");
            counter += 1;
        }
        let dcgm = ContainerPort {
            name: Some(name),
            container_port: port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        };
        match ports.iter().position(is_dcgm) {
            Some(index) => ports[index] = dcgm,
            None => ports.push(dcgm),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn attributes(names: &[&str]) -> Features {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        Features::parse(&[], &names).unwrap()
    }

    fn pod(annotations: Value, containers: Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "w", "annotations": annotations},
                                      "spec": {"containers": containers}}),
        )
        .unwrap()
    }

    fn gpu_container(resource: &str) -> Value {
        json!([{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8000}],
                "resources": {"limits": {resource: "1", "cpu": "1"}, "requests": {resource: "1"}}}])
    }

    #[test]
    fn enforcements_rewrite_gpu_resources_and_runtime_class() {
        let classes = KataClasses::default();
        let dcgm = DcgmMetrics::default();
        let cases = [
            (
                "no enforcement: untouched",
                attributes(&[]),
                json!({}),
                gpu_container("nvidia.com/gpu"),
                false,
                None,
                "nvidia.com/gpu",
            ),
            (
                "passthrough",
                attributes(&["PassthroughGPUEnabled"]),
                json!({}),
                gpu_container("nvidia.com/gpu"),
                false,
                None,
                "nvidia.com/pgpu",
            ),
            (
                "time slicing",
                attributes(&["TimeSlicingGPUEnabled"]),
                json!({}),
                gpu_container("nvidia.com/gpu"),
                false,
                None,
                "nvidia.com/gpu.shared",
            ),
            (
                "recorded on the pod though the cluster attribute is off",
                attributes(&[]),
                json!({ENFORCEMENTS_ANNOTATION: "PassthroughGPUEnabled=true"}),
                gpu_container("nvidia.com/gpu"),
                false,
                None,
                "nvidia.com/pgpu",
            ),
            (
                "kata with a GPU",
                attributes(&["KataRuntimeIsolation"]),
                json!({}),
                gpu_container("nvidia.com/gpu"),
                true,
                Some("kata-qemu-nvidia-gpu"),
                "nvidia.com/pgpu",
            ),
            (
                "kata over time slicing",
                attributes(&["KataRuntimeIsolation", "TimeSlicingGPUEnabled"]),
                json!({}),
                gpu_container("nvidia.com/gpu.shared"),
                true,
                Some("kata-qemu-nvidia-gpu"),
                "nvidia.com/pgpu",
            ),
            (
                "already the right kind",
                attributes(&["PassthroughGPUEnabled"]),
                json!({}),
                gpu_container("nvidia.com/pgpu"),
                false,
                None,
                "nvidia.com/pgpu",
            ),
        ];
        for (name, features, annotations, containers, non_gpu_class, class, resource) in cases {
            let options = EnforcementOptions {
                features: &features,
                kata_classes: &classes,
                non_gpu_class_exists: non_gpu_class,
                dcgm: &dcgm,
            };
            let mut pod = pod(annotations, containers);
            enforce(&mut pod, &options);
            let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
            assert_eq!(spec["runtimeClassName"].as_str(), class, "{name}");
            let resources = &spec["containers"][0]["resources"];
            assert_eq!(
                resources["limits"],
                json!({resource: "1", "cpu": "1"}),
                "{name}"
            );
            assert_eq!(resources["requests"], json!({resource: "1"}), "{name}");
        }
    }

    #[test]
    fn kata_pods_without_gpus_use_the_non_gpu_class_when_it_exists() {
        let features = attributes(&["KataRuntimeIsolation"]);
        let (classes, dcgm) = (KataClasses::default(), DcgmMetrics::default());
        for (exists, expected) in [(true, "kata-qemu"), (false, "kata-qemu-nvidia-gpu")] {
            let options = EnforcementOptions {
                features: &features,
                kata_classes: &classes,
                non_gpu_class_exists: exists,
                dcgm: &dcgm,
            };
            let mut pod = pod(json!({}), json!([{"name": "c", "image": "i"}]));
            assert!(enforce(&mut pod, &options));
            assert_eq!(
                pod.spec.as_ref().unwrap().runtime_class_name.as_deref(),
                Some(expected)
            );
            let annotations = pod.metadata.annotations.unwrap();
            assert_eq!(
                annotations.get(POD_MUTATED_ANNOTATION).map(String::as_str),
                Some("true")
            );
            assert!(
                !annotations.contains_key(PROMETHEUS_PORT_ANNOTATION),
                "no GPU, no DCGM metadata"
            );
        }
    }

    #[test]
    fn gpu_pods_get_dcgm_metadata_and_a_named_port() {
        let features = attributes(&["TimeSlicingGPUEnabled"]);
        let classes = KataClasses::default();
        let dcgm = DcgmMetrics::from_annotations(BTreeMap::from([(
            "prometheus.io/scrape".to_string(),
            "true".to_string(),
        )]))
        .unwrap();
        let options = EnforcementOptions {
            features: &features,
            kata_classes: &classes,
            non_gpu_class_exists: false,
            dcgm: &dcgm,
        };
        let containers = json!([{"name": "c", "image": "i",
            "ports": [{"name": "dcgm-metrics", "containerPort": 8000}, {"name": "old", "containerPort": 9400, "protocol": "TCP"}],
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]);
        let mut pod = pod(json!({}), containers);
        assert!(enforce(&mut pod, &options));
        let value = serde_json::to_value(&pod).unwrap();
        assert_eq!(value["metadata"]["labels"][DCGM_PRESENT_LABEL], "true");
        let annotations = &value["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/port"], "9400");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations[POD_MUTATED_ANNOTATION], "true");
        assert_eq!(annotations[CONTAINER_MUTATED_ANNOTATION], "true");
        assert!(annotations.get(INIT_MUTATED_ANNOTATION).is_none());
        assert_eq!(
            value["spec"]["containers"][0]["ports"],
            json!([{"name": "dcgm-metrics", "containerPort": 8000},
                   {"name": "dcgm-metrics-2", "containerPort": 9400, "protocol": "TCP"}])
        );
    }

    #[test]
    fn dcgm_and_kata_settings_parse_as_nvidias() {
        assert_eq!(DcgmMetrics::default().port, 9400);
        let custom = DcgmMetrics::from_annotations(BTreeMap::from([(
            "prometheus.io/port".to_string(),
            "9500".to_string(),
        )]))
        .unwrap();
        assert_eq!(custom.port, 9500);
        let error = DcgmMetrics::from_annotations(BTreeMap::from([(
            "prometheus.io/port".to_string(),
            "x".to_string(),
        )]))
        .unwrap_err();
        assert!(error.contains("webhook.dcgmAnnotations"), "{error}");
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(KataClasses::from_env(env(&[])), KataClasses::default());
        let both = KataClasses::from_env(env(&[
            ("NVCA_KATA_RUNTIME_CLASS", "a"),
            ("NVCA_KATA_RUNTIME_CLASS_GPU", "b"),
            ("NVCA_KATA_RUNTIME_CLASS_NON_GPU", "c"),
        ]));
        assert_eq!((both.gpu.as_str(), both.non_gpu.as_str()), ("a", "c"));
        let gpu = KataClasses::from_env(env(&[("NVCA_KATA_RUNTIME_CLASS_GPU", "b")]));
        assert_eq!(gpu.gpu, "b");
    }
}
