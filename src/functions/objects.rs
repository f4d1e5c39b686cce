//! The Kubernetes objects of one container function, built from its [`Launch`]: the
//! `ICMSRequest` projection, the request's Secret, and one pod per
//! instance. Pure; names, labels, annotations, containers and volumes follow NVIDIA's
//! agent (`N/pkg/nvca/k8scomputebackend.go` `applyFunctionCreationMessage`,
//! `N/pkg/types/common_labels.go`, and the translator's `function/translate_container.go`
//! and `common/translator.go`).
//!
//! Where nvca differs on purpose: NVIDIA writes the worker environment into the pod
//! spec's `env`; nvca keeps it in the Secret `sr-<requestId>` and the pods read each value
//! through `secretKeyRef`, so credentials in it never appear in pod specs. The values
//! nvca adds itself (instance type, GPU, provider) are plain env, as NVIDIA's are.
//! Like NVIDIA's agent for a container function, nvca makes no Service: the translator
//! adds one (`inference`) only to its utils-deployment variant
//! (`function/translate_container_utdep.go`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    Pod, PodSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::launch::Launch;
use crate::kube::crd::{ICMS_REQUEST_FINALIZER, ICMSRequest, ICMSRequestSpec};
use crate::sis::queue::QueueStream;

/// The label every object of a request carries, with the request id (NVIDIA's
/// `ICMSRequestIDKey`); the pod watch selects on it.
pub const LABEL_REQUEST_ID: &str = "icms-request-id";
/// The label (and on the ICMSRequest, the key) for the NVCF account.
pub const LABEL_NCA_ID: &str = "nca-id";
/// The instance-type node label the pods require (NVIDIA's `UniformInstanceTypeLabelKey`).
pub const INSTANCE_TYPE_LABEL: &str = "nvca.nvcf.nvidia.io/instance-type";
/// NVIDIA's KAI scheduler name and queue label (`enforce/kaischeduler`).
pub const KAI_SCHEDULER: &str = "kai-scheduler";
pub const KAI_QUEUE_LABEL: &str = "kai.scheduler/queue";
pub const KAI_DEFAULT_QUEUE: &str = "default-queue";
/// The Secret key holding the creation message as it arrived.
pub const MESSAGE_KEY: &str = "creation-message.json";
/// Prefix of the Secret keys holding the inference container's own environment.
const INFERENCE_KEY_PREFIX: &str = "inference.";
/// NVIDIA's container names.
pub const INFERENCE_CONTAINER: &str = "inference";
pub const UTILS_CONTAINER: &str = "utils";
pub const INIT_CONTAINER: &str = "init";
/// The utils sidecar's health port and paths (`common.MutateUtilsProbes`).
const UTILS_HEALTH_PORT: i32 = 8080;
/// NVIDIA's pod termination grace period for container functions.
const GRACE_SECONDS: i64 = 120;
const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// What the cluster and the agent add to every request's objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub namespace: String,
    /// `nvcf.nvidia.io/backend`: the cluster's name.
    pub cluster_name: String,
    /// `nvcf.nvidia.io/region`.
    pub region: String,
    /// `KAIScheduler`: schedule with `kai-scheduler` in queue `default-queue`.
    pub kai_scheduler: bool,
    /// `GXCache`: label pods for GXCache injection.
    pub gxcache: bool,
    /// Pull secrets in the requests namespace, by name.
    pub image_pull_secrets: Vec<String>,
}

/// `sr-<requestId>`: the name of the request's ICMSRequest and Secret.
pub fn request_name(request_id: &str) -> String {
    format!("sr-{request_id}")
}

/// NVIDIA's `nca-<ncaId>-nca` label value.
pub fn nca_label(nca_id: &str) -> String {
    format!("nca-{nca_id}-nca")
}

/// NVIDIA's labels of every workload object (`NewCommonMetadata`, `GetLabelsForRequest`).
pub fn labels(launch: &Launch, placement: &Placement) -> BTreeMap<String, String> {
    let request = &launch.request;
    let nca = nca_label(&request.nca_id);
    let mut labels = BTreeMap::from([
        (LABEL_REQUEST_ID.to_string(), request.request_id.clone()),
        (LABEL_NCA_ID.to_string(), nca.clone()),
        ("NCA_ID".to_string(), nca),
        (
            "nvcf.nvidia.io/message-batch-id".to_string(),
            request.message_batch_id.clone(),
        ),
        ("gpu-name".to_string(), request.gpu_name.clone()),
        ("environment".to_string(), launch.icms_environment.clone()),
        ("ENVIRONMENT".to_string(), launch.icms_environment.clone()),
        (
            "performance_class".to_string(),
            request.instance_type.clone(),
        ),
        ("GPU_COUNT".to_string(), launch.gpu_count.to_string()),
        ("function-id".to_string(), request.function_id.clone()),
        ("FUNCTION_ID".to_string(), request.function_id.clone()),
        (
            "function-version-id".to_string(),
            request.function_version_id.clone(),
        ),
        (
            "FUNCTION_VERSION_ID".to_string(),
            request.function_version_id.clone(),
        ),
    ]);
    if let Some(id) = &launch.deployment_id {
        labels.insert("nvcf.nvidia.io/deployment-id".to_string(), id.clone());
    }
    if let Some(id) = &launch.gpu_specification_id {
        labels.insert(
            "nvcf.nvidia.io/gpu-specification-id".to_string(),
            id.clone(),
        );
    }
    if placement.gxcache {
        labels.insert(
            "nvca.nvcf.nvidia.io/gxcache-client-inject".to_string(),
            "true".to_string(),
        );
    }
    // Label values are at most 63 characters of [A-Za-z0-9-_.]: drop what cannot be one
    // rather than have the API server refuse every object of the request.
    labels.retain(|_, value| valid_label_value(value));
    labels
}

fn valid_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

/// NVIDIA's annotations of every workload object.
pub fn annotations(launch: &Launch, placement: &Placement) -> BTreeMap<String, String> {
    let request = &launch.request;
    let mut annotations = BTreeMap::from([
        (LABEL_REQUEST_ID.to_string(), request.request_id.clone()),
        (LABEL_NCA_ID.to_string(), request.nca_id.clone()),
        (
            "instance-count".to_string(),
            request.instance_count.to_string(),
        ),
        (
            "nvcf.nvidia.io/region".to_string(),
            placement.region.clone(),
        ),
        (
            "nvcf.nvidia.io/backend".to_string(),
            placement.cluster_name.clone(),
        ),
        (
            "nvcf.nvidia.io/instance-type-name".to_string(),
            launch.instance_type_name.clone(),
        ),
        (
            "nvcf.nvidia.io/instance-type-value".to_string(),
            request.instance_type.clone(),
        ),
        (
            "nvcf.nvidia.io/environment".to_string(),
            launch.icms_environment.clone(),
        ),
    ]);
    if let Some(group) = &launch.cluster_group {
        annotations.insert("icms-cluster-group".to_string(), group.clone());
    }
    if let Some(name) = &launch.function_name {
        annotations.insert("function-name".to_string(), name.clone());
        annotations.insert("FUNCTION_NAME".to_string(), name.clone());
    }
    annotations
}

/// The ICMSRequest `sr-<requestId>`: what NVIDIA's agent writes, without the launch
/// specification (it may hold secrets; it is in the Secret).
pub fn icms_request(launch: &Launch, placement: &Placement) -> ICMSRequest {
    let request = &launch.request;
    let creation_info = json!({
        "clusterGroup": launch.cluster_group,
        "gpuName": request.gpu_name,
        "queueURL": QueueStream::Creation.name(),
        "requestId": request.request_id,
        "ncaId": request.nca_id,
        "messageBatchId": request.message_batch_id,
        "instanceCount": request.instance_count,
        "instanceType": request.instance_type,
        "instanceTypeName": launch.instance_type_name,
        "instanceTypeValue": request.instance_type,
        "requestedGPUCount": launch.gpu_count,
        "gpuType": request.gpu_name,
        "deploymentId": launch.deployment_id,
    });
    let spec = ICMSRequestSpec {
        request_id: request.request_id.clone(),
        nca_id: request.nca_id.clone(),
        message_batch_id: request.message_batch_id.clone(),
        action: "RequestICMSInstances".to_string(),
        function_id: request.function_id.clone(),
        function_version_id: request.function_version_id.clone(),
        creation_msg_info: Some(strip_nulls(creation_info)),
        termination_msg_info: None,
        other: serde_json::Map::from_iter([(
            "functionDetails".to_string(),
            json!({
                "functionId": request.function_id,
                "functionVersionId": request.function_version_id,
                "functionType": launch.function_type,
            }),
        )]),
    };
    let mut object = ICMSRequest::new(&request_name(&request.request_id), spec);
    object.metadata.namespace = Some(placement.namespace.clone());
    object.metadata.labels = Some(labels(launch, placement));
    object.metadata.annotations = Some(annotations(launch, placement));
    // NVIDIA's finalizer: a `kubectl delete` waits until every instance is terminated and
    // reported (the function machine's RemoveRequest takes it off), instead of the owned
    // pods being collected under a running deployment.
    object.metadata.finalizers = Some(vec![ICMS_REQUEST_FINALIZER.to_string()]);
    object
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, value)| !value.is_null())
                .collect(),
        ),
        other => other,
    }
}

/// An owner reference to the request's ICMSRequest, so Kubernetes removes what is left
/// of the request when the ICMSRequest goes.
pub fn owner(request: &ICMSRequest) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "nvca.nvcf.nvidia.io/v2beta1".to_string(),
        kind: "ICMSRequest".to_string(),
        name: request.metadata.name.clone()?,
        uid: request.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(false),
    })
}

fn meta(
    name: String,
    launch: &Launch,
    placement: &Placement,
    owner: &[OwnerReference],
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(placement.namespace.clone()),
        labels: Some(labels(launch, placement)),
        annotations: Some(annotations(launch, placement)),
        owner_references: (!owner.is_empty()).then(|| owner.to_vec()),
        ..ObjectMeta::default()
    }
}

/// The Secret `sr-<requestId>`: the creation message, the worker environment and the
/// inference container's environment, one key each.
pub fn secret(
    launch: &Launch,
    message: &str,
    placement: &Placement,
    owner: &[OwnerReference],
) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        MESSAGE_KEY.to_string(),
        ByteString(message.as_bytes().to_vec()),
    );
    for (key, value) in &launch.worker_env {
        if valid_secret_key(key) {
            data.insert(key.clone(), ByteString(value.as_bytes().to_vec()));
        }
    }
    for (key, value) in &launch.inference_env {
        let key = format!("{INFERENCE_KEY_PREFIX}{key}");
        if valid_secret_key(&key) {
            data.insert(key, ByteString(value.as_bytes().to_vec()));
        }
    }
    Secret {
        metadata: meta(
            request_name(&launch.request.request_id),
            launch,
            placement,
            owner,
        ),
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

fn valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The values nvca adds to every container's environment, as plain pod env (NVIDIA's
/// translator sets the same keys in the pod spec).
fn request_env(launch: &Launch) -> Vec<EnvVar> {
    let request = &launch.request;
    let gpu_count = launch.gpu_count.to_string();
    [
        ("INSTANCE_TYPE", request.instance_type.as_str()),
        ("INSTANCE_TYPE_NAME", launch.instance_type_name.as_str()),
        ("INSTANCE_TYPE_VALUE", request.instance_type.as_str()),
        ("ICMS_ENVIRONMENT", launch.icms_environment.as_str()),
        ("CLOUD_PROVIDER", launch.cloud_provider.as_str()),
        ("NVCF_CLOUD_PROVIDER", launch.cloud_provider.as_str()),
        ("GPU_NAME", request.gpu_name.as_str()),
        ("GPU_COUNT", gpu_count.as_str()),
        ("NVCF_REQUEST_ID", request.request_id.as_str()),
    ]
    .into_iter()
    .map(|(name, value)| plain(name, value))
    .collect()
}

fn empty_dir(name: &str, memory: bool) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(UTILS_HEALTH_PORT),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

/// Pod `<index>-sr-<requestId>`, one instance of the function.
pub fn pod(
    launch: &Launch,
    instance_id: &str,
    placement: &Placement,
    owner: &[OwnerReference],
) -> Pod {
    let request = &launch.request;
    let name = request_name(&request.request_id);
    let mut instance_env = request_env(launch);
    instance_env.extend([
        plain("INSTANCE_ID", instance_id),
        plain("NVCF_INSTANCE_ID", instance_id),
    ]);
    let mut worker_env: Vec<EnvVar> = launch
        .worker_env
        .keys()
        .filter(|key| valid_secret_key(key))
        .map(|key| from_secret(key, &name, key))
        .collect();
    worker_env.extend(instance_env.clone());
    let mut inference_env: Vec<EnvVar> = launch
        .inference_env
        .keys()
        .filter(|key| valid_secret_key(&format!("{INFERENCE_KEY_PREFIX}{key}")))
        .map(|key| from_secret(key, &name, &format!("{INFERENCE_KEY_PREFIX}{key}")))
        .collect();
    inference_env.extend(instance_env);
    let gpus = BTreeMap::from([(
        GPU_RESOURCE.to_string(),
        Quantity(launch.gpu_count.to_string()),
    )]);
    let infra_security = SecurityContext {
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            drop: Some(vec!["NET_RAW".to_string()]),
            add: None,
        }),
        ..SecurityContext::default()
    };
    let inference = Container {
        name: INFERENCE_CONTAINER.to_string(),
        image: Some(launch.inference_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: (!launch.inference_args.is_empty()).then(|| launch.inference_args.clone()),
        env: Some(inference_env),
        ports: Some(vec![ContainerPort {
            name: Some(INFERENCE_CONTAINER.to_string()),
            container_port: launch.inference_port,
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(gpus.clone()),
            limits: Some(gpus),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: Some(vec!["NET_BIND_SERVICE".to_string()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("model-data", "/config/models", false),
            mount("inference-data", "/var/inf/inferenceData", false),
            mount("instance-data", "/var/run/nvcf", true),
            mount("dshm", "/dev/shm", false),
        ]),
        ..Container::default()
    };
    let utils = Container {
        name: UTILS_CONTAINER.to_string(),
        image: Some(launch.utils_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(worker_env.clone()),
        security_context: Some(infra_security.clone()),
        startup_probe: Some(http_probe("/v1/health/live")),
        liveness_probe: Some(http_probe("/v1/health/live")),
        readiness_probe: Some(http_probe("/v1/health/ready")),
        volume_mounts: Some(vec![
            mount("config-data", "/config", false),
            mount("inference-data", "/var/inf/inferenceData", false),
            mount("instance-data", "/var/run/nvcf", false),
        ]),
        ..Container::default()
    };
    let init = launch.init_image.as_ref().map(|image| Container {
        name: INIT_CONTAINER.to_string(),
        image: Some(image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(worker_env),
        security_context: Some(infra_security),
        volume_mounts: Some(vec![
            mount("model-data", "/config/models", false),
            mount("config-data", "/config", false),
            mount("instance-data", "/var/run/nvcf", false),
        ]),
        ..Container::default()
    });
    let mut labels = labels(launch, placement);
    if placement.kai_scheduler {
        labels.insert(KAI_QUEUE_LABEL.to_string(), KAI_DEFAULT_QUEUE.to_string());
    }
    Pod {
        metadata: ObjectMeta {
            labels: Some(labels),
            ..meta(instance_id.to_string(), launch, placement, owner)
        },
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(GRACE_SECONDS),
            restart_policy: Some("Always".to_string()),
            scheduler_name: placement.kai_scheduler.then(|| KAI_SCHEDULER.to_string()),
            image_pull_secrets: (!placement.image_pull_secrets.is_empty()).then(|| {
                placement
                    .image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            tolerations: Some(vec![Toleration {
                key: Some(GPU_RESOURCE.to_string()),
                operator: Some("Exists".to_string()),
                effect: Some("NoSchedule".to_string()),
                ..Toleration::default()
            }]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: INSTANCE_TYPE_LABEL.to_string(),
                                operator: "In".to_string(),
                                values: Some(vec![request.instance_type.clone()]),
                            }]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            init_containers: init.map(|init| vec![init]),
            containers: vec![inference, utils],
            volumes: Some(vec![
                empty_dir("model-data", false),
                empty_dir("config-data", false),
                empty_dir("inference-data", false),
                empty_dir("instance-data", false),
                empty_dir("dshm", true),
            ]),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::launch::tests::sample;

    fn placement() -> Placement {
        Placement {
            namespace: "nvcf-backend".to_string(),
            cluster_name: "ncp-local".to_string(),
            region: "us-west-1".to_string(),
            kai_scheduler: true,
            gxcache: false,
            image_pull_secrets: vec!["ngc-pull".to_string()],
        }
    }

    #[test]
    fn a_pod_has_nvidias_name_labels_containers_gpus_and_affinity() {
        let launch = sample();
        let pod = pod(&launch, "1-sr-r1", &placement(), &[]);
        assert_eq!(pod.metadata.name.as_deref(), Some("1-sr-r1"));
        let labels = pod.metadata.labels.clone().unwrap();
        for (key, value) in [
            ("icms-request-id", "r1"),
            ("nca-id", "nca-nca-1-nca"),
            ("NCA_ID", "nca-nca-1-nca"),
            ("function-id", "f1"),
            ("FUNCTION_VERSION_ID", "v1"),
            ("gpu-name", "H100"),
            ("nvcf.nvidia.io/message-batch-id", "b1"),
            ("kai.scheduler/queue", "default-queue"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
        let annotations = pod.metadata.annotations.clone().unwrap();
        assert_eq!(annotations["instance-count"], "2");
        assert_eq!(annotations["icms-cluster-group"], "nvcf-default");
        assert_eq!(annotations["nvcf.nvidia.io/backend"], "ncp-local");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("kai-scheduler"));
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["inference", "utils"]);
        assert_eq!(spec.init_containers.unwrap()[0].name, "init");
        let inference = &spec.containers[0];
        assert_eq!(
            inference
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()["nvidia.com/gpu"],
            Quantity("2".to_string())
        );
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        let requirement = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(requirement.key, "nvca.nvcf.nvidia.io/instance-type");
        assert_eq!(
            requirement.values.as_deref(),
            Some(&["ON-PREM.GPU.H100".to_string()][..])
        );
        assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "ngc-pull");
        let token = spec.containers[1]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|env| env.name == "NVCF_WORKER_TOKEN")
            .unwrap();
        assert!(
            token.value.is_none(),
            "secrets are referenced, never inlined"
        );
        assert_eq!(
            token
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "sr-r1"
        );
    }

    #[test]
    fn without_kai_the_default_scheduler_places_the_pod() {
        let placement = Placement {
            kai_scheduler: false,
            ..placement()
        };
        let pod = pod(&sample(), "0-sr-r1", &placement, &[]);
        assert!(pod.spec.unwrap().scheduler_name.is_none());
        assert!(!pod.metadata.labels.unwrap().contains_key(KAI_QUEUE_LABEL));
    }

    #[test]
    fn the_icms_request_names_the_request_and_leaves_the_launch_environment_out() {
        let request = icms_request(&sample(), &placement());
        assert_eq!(request.metadata.name.as_deref(), Some("sr-r1"));
        assert_eq!(request.spec.request_id, "r1");
        assert_eq!(request.spec.action, "RequestICMSInstances");
        assert_eq!(
            request.metadata.finalizers.as_deref(),
            Some(&["nvca.finalizers.nvidia.io".to_string()][..])
        );
        let text = serde_json::to_string(&request).unwrap();
        assert!(!text.contains("s3cr"), "{text}");
        let secret = secret(&sample(), "{}", &placement(), &[]);
        let data = secret.data.unwrap();
        assert!(data.contains_key(MESSAGE_KEY));
        assert_eq!(data["NVCF_WORKER_TOKEN"].0, b"s3cr=t");
    }
}
