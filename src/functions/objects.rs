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
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, Pod, PodSpec, Probe, ResourceRequirements, Secret, SecretKeySelector,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::launch::Launch;
use super::pull_secrets::PullSecret;
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
#[derive(Clone, Debug, PartialEq)]
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
    /// `workload.tolerations`: added to every pod before NVIDIA's GPU toleration.
    pub tolerations: Vec<Toleration>,
    /// Requests of the utils and init containers (NVIDIA's `agent.UtilsResources`,
    /// default 4 CPUs and 4 GiB).
    pub utils_resources: BTreeMap<String, Quantity>,
    /// `EnforceContainerFunctionResourceLimits`: the same as limits too.
    pub enforce_resource_limits: bool,
    /// `workload.workerStartupTimeout`, told to the utils container as
    /// `INFERENCE_READY_TIMEOUT`.
    pub inference_ready_timeout: Duration,
    /// Where a streaming function's utils container finds the stream broker.
    pub streaming: Streaming,
    /// `LowLatencyStreaming` (on by default): status updates carry the pod's
    /// `instanceIps`.
    pub instance_ips: bool,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            namespace: String::new(),
            cluster_name: String::new(),
            region: String::new(),
            kai_scheduler: false,
            gxcache: false,
            tolerations: Vec::new(),
            utils_resources: BTreeMap::from([
                ("cpu".to_string(), Quantity("4".to_string())),
                ("memory".to_string(), Quantity("4Gi".to_string())),
            ]),
            enforce_resource_limits: false,
            inference_ready_timeout: Duration::from_secs(2 * 3600),
            streaming: Streaming::default(),
            instance_ips: true,
        }
    }
}

/// The low-latency streaming settings of a `STREAMING` function's utils container
/// (`function/lls.go`: the agent's `NVCF_SBS_ZONE_DNS` and `NVCF_LLS_INTERFACE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streaming {
    pub zone_dns: String,
    pub interface: String,
}

impl Default for Streaming {
    fn default() -> Self {
        Streaming {
            zone_dns: "http://nvcf-sbs.nvcf-backend.svc.cluster.local:8000".to_string(),
            interface: "ALL".to_string(),
        }
    }
}

impl Streaming {
    /// `ZONE_DNS`, `STREAMING_INTERFACE` and the node's address (`getLLSEnvSet`).
    fn env(&self) -> Vec<EnvVar> {
        vec![
            from_field("NVCF_WORKER_NODE_IP", "status.hostIP"),
            plain("ZONE_DNS", &self.zone_dns),
            plain("STREAMING_INTERFACE", &self.interface),
        ]
    }
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
            launch.instance_type_value.clone(),
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
            launch.instance_type_value.clone(),
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
        "instanceTypeValue": launch.instance_type_value,
        "requestedGPUCount": launch.gpu_count,
        "gpuType": request.gpu_name,
        "deploymentId": launch.deployment_id,
        "gpuSpecificationId": launch.gpu_specification_id,
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

/// What the translator adds to the worker environment (`translate_container.go`): these
/// are plain values in the pod and win over keys of the same name from the message.
fn worker_additions(launch: &Launch) -> BTreeMap<&'static str, String> {
    let request = &launch.request;
    let mut added = BTreeMap::from([
        ("ICMS_ENVIRONMENT", launch.icms_environment.clone()),
        ("CLOUD_PROVIDER", launch.cloud_provider.clone()),
        ("NVCF_CLOUD_PROVIDER", launch.cloud_provider.clone()),
        ("GPU_NAME", request.gpu_name.clone()),
        ("ATTACHED_GPU_COUNT", launch.gpu_count.to_string()),
    ]);
    if let Some(legacy) = &launch.legacy_instance_type {
        added.insert("INSTANCE_TYPE", legacy.clone());
    }
    if !launch.instance_type_name.is_empty() && !launch.instance_type_value.is_empty() {
        added.insert("INSTANCE_TYPE_NAME", launch.instance_type_name.clone());
        added.insert("INSTANCE_TYPE_VALUE", launch.instance_type_value.clone());
    }
    added
}

/// The environment of the init and utils containers, sorted by name as NVIDIA's
/// `SortEnvs` leaves it: the worker environment (each value read from the request's
/// Secret), what the translator adds, `INSTANCE_ID`, and `extra` (plain values that do
/// a key of the message replaces, e.g. the streaming sidecar's).
fn worker_env(launch: &Launch, instance_id: &str, extra: Vec<EnvVar>) -> Vec<EnvVar> {
    let secret = request_name(&launch.request.request_id);
    let mut env: BTreeMap<String, EnvVar> = extra
        .into_iter()
        .map(|var| (var.name.clone(), var))
        .collect();
    for key in launch.worker_env.keys().filter(|key| valid_secret_key(key)) {
        env.insert(key.clone(), from_secret(key, &secret, key));
    }
    for (name, value) in worker_additions(launch) {
        env.insert(name.to_string(), plain(name, &value));
    }
    env.insert("INSTANCE_ID".to_string(), plain("INSTANCE_ID", instance_id));
    env.into_values().collect()
}

/// The inference container's environment: its own (`INFERENCE_CONTAINER_ENV`, from the
/// Secret) with the workload values NVIDIA reads from the pod's metadata laid over it
/// (`common.MakeWorkloadEnvVars`), sorted by name.
fn inference_env(launch: &Launch) -> Vec<EnvVar> {
    let secret = request_name(&launch.request.request_id);
    let mut env: BTreeMap<String, EnvVar> = launch
        .inference_env
        .keys()
        .map(|key| (key, format!("{INFERENCE_KEY_PREFIX}{key}")))
        .filter(|(_, secret_key)| valid_secret_key(secret_key))
        .map(|(key, secret_key)| (key.clone(), from_secret(key, &secret, &secret_key)))
        .collect();
    for (name, path) in WORKLOAD_FIELDS {
        env.insert(name.to_string(), from_field(name, path));
    }
    env.into_values().collect()
}

/// NVIDIA's workload environment of a function, each read from the pod's own labels and
/// annotations (`common/env.go` `MakeWorkloadEnvVars`, `FunctionCreationAction`).
const WORKLOAD_FIELDS: [(&str, &str); 9] = [
    (
        "NVCF_REGION",
        "metadata.annotations['nvcf.nvidia.io/region']",
    ),
    (
        "NVCF_INSTANCETYPE",
        "metadata.annotations['nvcf.nvidia.io/instance-type-name']",
    ),
    (
        "NVCF_INSTANCETYPE_VALUE",
        "metadata.annotations['nvcf.nvidia.io/instance-type-value']",
    ),
    (
        "NVCF_BACKEND",
        "metadata.annotations['nvcf.nvidia.io/backend']",
    ),
    (
        "NVCF_ENV",
        "metadata.annotations['nvcf.nvidia.io/environment']",
    ),
    ("NVCF_NCA_ID", "metadata.annotations['nca-id']"),
    ("NVCF_FUNCTION_ID", "metadata.labels['function-id']"),
    (
        "NVCF_FUNCTION_VERSION_ID",
        "metadata.labels['function-version-id']",
    ),
    (
        "NVCF_FUNCTION_NAME",
        "metadata.annotations['function-name']",
    ),
];

/// Set `name` to `value`: in place where the container has it, else at the end
/// (NVIDIA's `setEnvInPod` and `AddEnvsToContainer` after translation).
fn set_env(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    match env.iter_mut().find(|var| var.name == name) {
        Some(var) => *var = plain(name, value),
        None => env.push(plain(name, value)),
    }
}

/// A Go `time.Duration` as its `String()` writes it (`2h0m0s`, `1m30s`, `500ms`): the
/// utils container parses `INFERENCE_READY_TIMEOUT` that way.
fn go_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if total == 0 {
        return match nanos {
            0 => "0s".to_string(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let seconds = match nanos {
        0 => format!("{}s", total % 60),
        n => {
            let fraction = format!("{n:09}");
            format!("{}.{}s", total % 60, fraction.trim_end_matches('0'))
        }
    };
    match (total / 3600, total / 60 % 60) {
        (0, 0) => seconds,
        (0, minutes) => format!("{minutes}m{seconds}"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
    }
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

fn from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The utils sidecar's probes (`common.MutateUtilsProbes`): start-up every second for a
/// minute, then readiness and liveness every 10 s, two failures.
fn utils_probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(UTILS_HEALTH_PORT),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(0),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        timeout_seconds: Some(timeout),
        ..Probe::default()
    }
}

fn capabilities(drop: &[&str], add: &[&str]) -> SecurityContext {
    let names = |list: &[&str]| {
        (!list.is_empty()).then(|| list.iter().map(|name| name.to_string()).collect())
    };
    SecurityContext {
        capabilities: Some(Capabilities {
            drop: names(drop),
            add: names(add),
        }),
        ..SecurityContext::default()
    }
}

/// The volumes of a function pod and where each container mounts them
/// (`translate_container.go`; paths from `cache.ModelDirPath`, `ResourceDirPath`,
/// `function.ConfigDirPath`, `InferenceDirPath`, `common.NVCFInfoDir`).
const MODEL_DIR: &str = "/config/models";
const RESOURCE_DIR: &str = "/config/resources";
const CONFIG_DIR: &str = "/config/shared";
const INFERENCE_DIR: &str = "/var/inf";
const INFO_DIR: &str = "/var/run/nvcf/info";
/// The secrets agent's volumes (`common.EssSecretsDir`, `EssConfigDir`).
const SECRETS_DIR: &str = "/var/secrets";
const SECRETS_AGENT_DIR: &str = "/config/ess-agent";

/// A pull Secret of the request (`workload-…-regcred-<i>`, `worker-…-regcred-0`).
pub fn pull_secret(
    pull: &PullSecret,
    launch: &Launch,
    placement: &Placement,
    owner: &[OwnerReference],
) -> Secret {
    Secret {
        metadata: meta(pull.name.clone(), launch, placement, owner),
        type_: Some("kubernetes.io/dockerconfigjson".to_string()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(pull.docker_config.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The function secrets agent (ESS, `common/ess.go`): `ess-init` fetches the secrets
/// before the workload starts, `ess` keeps them fresh; both write under `/var/secrets`,
/// which the inference and utils containers read.
fn secrets_agent(image: &str, launch: &Launch, init: bool) -> Container {
    let request = &launch.request;
    let resources = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    Container {
        name: if init { "ess-init" } else { "ess" }.to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec![format!("-config={SECRETS_AGENT_DIR}/config.hcl")]),
        env: Some(vec![
            plain("ESS_AGENT_INIT", if init { "true" } else { "false" }),
            plain("SECRET_DEST", &format!("{SECRETS_DIR}/secrets.json")),
            plain(
                "SECRET_PATH",
                &format!(
                    "functions/{}/versions/{}",
                    request.function_id, request.function_version_id
                ),
            ),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(resources("125m", "64Mi")),
            limits: Some(resources("250m", "128Mi")),
            ..ResourceRequirements::default()
        }),
        security_context: Some(capabilities(&["NET_RAW"], &[])),
        volume_mounts: Some(vec![
            mount("secret-data", SECRETS_DIR, false),
            mount("ess-data", SECRETS_AGENT_DIR, false),
        ]),
        ..Container::default()
    }
}

/// Pod `<index>-sr-<requestId>`, one instance of the function, as NVIDIA's translator and
/// agent make it (`translate_container.go`, then `applyFunctionCreationMessage` and
/// `CreatePodArtifactInstances`).
pub fn pod(
    launch: &Launch,
    instance_id: &str,
    placement: &Placement,
    owner: &[OwnerReference],
) -> Pod {
    let gpus = BTreeMap::from([(
        GPU_RESOURCE.to_string(),
        Quantity(launch.gpu_count.to_string()),
    )]);
    let infra_resources = ResourceRequirements {
        requests: Some(placement.utils_resources.clone()),
        limits: placement
            .enforce_resource_limits
            .then(|| placement.utils_resources.clone()),
        ..ResourceRequirements::default()
    };
    let mut inference_env = inference_env(launch);
    let streaming_env = if launch.streaming {
        placement.streaming.env()
    } else {
        Vec::new()
    };
    let mut utils_env = worker_env(launch, instance_id, streaming_env);
    let mut init_env = worker_env(launch, instance_id, Vec::new());
    set_env(
        &mut utils_env,
        "INFERENCE_READY_TIMEOUT",
        &go_duration(placement.inference_ready_timeout),
    );
    for env in [&mut inference_env, &mut utils_env, &mut init_env] {
        set_env(env, "INSTANCE_ID", instance_id);
        set_env(env, "NVCF_INSTANCE_ID", instance_id);
    }
    let mut inference_mounts = vec![
        mount("model-data", MODEL_DIR, false),
        mount("model-data", RESOURCE_DIR, false),
        mount("inference-data", INFERENCE_DIR, false),
        mount("instance-data", INFO_DIR, true),
        mount("dshm", "/dev/shm", false),
    ];
    let mut utils_mounts = vec![
        mount("config-data", CONFIG_DIR, false),
        mount("inference-data", INFERENCE_DIR, false),
        mount("instance-data", INFO_DIR, false),
    ];
    let mut init_mounts = vec![
        mount("model-data", MODEL_DIR, false),
        mount("model-data", RESOURCE_DIR, false),
        mount("config-data", CONFIG_DIR, false),
        mount("instance-data", INFO_DIR, false),
    ];
    let mut volumes = vec![
        empty_dir("model-data", false),
        empty_dir("config-data", false),
        empty_dir("inference-data", false),
        empty_dir("instance-data", false),
        empty_dir("dshm", true),
    ];
    if launch.secrets_agent.is_some() {
        inference_mounts.push(mount("secret-data", SECRETS_DIR, true));
        utils_mounts.push(mount("secret-data", SECRETS_DIR, true));
        utils_mounts.push(mount("ess-data", SECRETS_AGENT_DIR, false));
        init_mounts.push(mount("ess-data", SECRETS_AGENT_DIR, false));
        volumes.push(empty_dir("secret-data", false));
        volumes.push(empty_dir("ess-data", false));
    }
    let inference = Container {
        name: INFERENCE_CONTAINER.to_string(),
        image: Some(launch.inference_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: (!launch.inference_args.is_empty()).then(|| launch.inference_args.clone()),
        env: Some(inference_env),
        resources: Some(ResourceRequirements {
            requests: Some(gpus.clone()),
            limits: Some(gpus),
            ..ResourceRequirements::default()
        }),
        security_context: Some(capabilities(&["ALL"], &["NET_BIND_SERVICE"])),
        volume_mounts: Some(inference_mounts),
        ..Container::default()
    };
    let utils = Container {
        name: UTILS_CONTAINER.to_string(),
        image: Some(launch.utils_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(utils_env),
        resources: Some(infra_resources.clone()),
        security_context: Some(capabilities(&["NET_RAW"], &[])),
        startup_probe: Some(utils_probe("/v1/health/live", 1, 60, 1)),
        readiness_probe: Some(utils_probe("/v1/health/ready", 10, 2, 6)),
        liveness_probe: Some(utils_probe("/v1/health/live", 10, 2, 1)),
        volume_mounts: Some(utils_mounts),
        ..Container::default()
    };
    let init = Container {
        name: INIT_CONTAINER.to_string(),
        image: Some(launch.init_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(init_env),
        resources: Some(infra_resources),
        security_context: Some(capabilities(&["NET_RAW"], &[])),
        volume_mounts: Some(init_mounts),
        ..Container::default()
    };
    // NVIDIA's order: the secrets agent before the inference container, its init after
    // the worker init (which writes the agent's config).
    let mut containers = Vec::new();
    let mut init_containers = vec![init];
    if let Some(image) = &launch.secrets_agent {
        containers.push(secrets_agent(image, launch, false));
        init_containers.push(secrets_agent(image, launch, true));
    }
    containers.extend([inference, utils]);
    let mut labels = labels(launch, placement);
    if placement.kai_scheduler {
        labels.insert(KAI_QUEUE_LABEL.to_string(), KAI_DEFAULT_QUEUE.to_string());
    }
    // The workload tolerations first, then NVIDIA's GPU toleration unless already there
    // (`common.MergeTolerations`, `AddNVIDIAGPUNoScheduleToleration`).
    let mut tolerations = Vec::new();
    let gpu_toleration = Toleration {
        key: Some(GPU_RESOURCE.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some("NoSchedule".to_string()),
        ..Toleration::default()
    };
    for toleration in placement.tolerations.iter().chain([&gpu_toleration]) {
        if !tolerations.contains(toleration) {
            tolerations.push(toleration.clone());
        }
    }
    let pull_secrets: Vec<_> = launch
        .pull_secrets
        .iter()
        .map(|secret| LocalObjectReference {
            name: secret.name.clone(),
        })
        .collect();
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
            image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
            tolerations: Some(tolerations),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: INSTANCE_TYPE_LABEL.to_string(),
                                operator: "In".to_string(),
                                values: Some(vec![launch.instance_type_value.clone()]),
                            }]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            init_containers: Some(init_containers),
            containers,
            volumes: Some(volumes),
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
            tolerations: vec![Toleration {
                key: Some("dedicated".to_string()),
                operator: Some("Equal".to_string()),
                value: Some("gpu".to_string()),
                effect: Some("NoSchedule".to_string()),
                ..Toleration::default()
            }],
            ..Placement::default()
        }
    }

    fn names(env: &[EnvVar]) -> Vec<&str> {
        env.iter().map(|var| var.name.as_str()).collect()
    }

    fn find<'a>(env: &'a [EnvVar], name: &str) -> &'a EnvVar {
        env.iter()
            .find(|var| var.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", names(env)))
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
            ("performance_class", "ON-PREM.GPU.H100"),
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
        let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(containers, ["inference", "utils"]);
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, "init");
        let inference = &spec.containers[0];
        let resources = inference.resources.as_ref().unwrap();
        assert_eq!(
            resources.limits.as_ref().unwrap()["nvidia.com/gpu"],
            Quantity("2".to_string())
        );
        assert_eq!(resources.requests, resources.limits);
        assert!(
            inference.ports.is_none(),
            "NVIDIA's inference container names no port"
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
        let tolerations = spec.tolerations.unwrap();
        let keys: Vec<_> = tolerations.iter().map(|t| t.key.as_deref()).collect();
        assert_eq!(keys, [Some("dedicated"), Some("nvidia.com/gpu")]);
        assert!(spec.image_pull_secrets.is_none());
        let token = find(
            spec.containers[1].env.as_ref().unwrap(),
            "NVCF_WORKER_TOKEN",
        );
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

    /// The environment, mounts, probes and resources of each container, as
    /// `translate_container.go` and `CreatePodArtifactInstances` leave them.
    #[test]
    fn each_container_gets_nvidias_environment_mounts_probes_and_resources() {
        let spec = pod(&sample(), "0-sr-r1", &placement(), &[]).spec.unwrap();
        let inference = spec.containers[0].env.clone().unwrap();
        assert_eq!(
            names(&inference),
            [
                "NVCF_BACKEND",
                "NVCF_ENV",
                "NVCF_FUNCTION_ID",
                "NVCF_FUNCTION_NAME",
                "NVCF_FUNCTION_VERSION_ID",
                "NVCF_INSTANCETYPE",
                "NVCF_INSTANCETYPE_VALUE",
                "NVCF_NCA_ID",
                "NVCF_REGION",
                "INSTANCE_ID",
                "NVCF_INSTANCE_ID",
            ]
        );
        let region = find(&inference, "NVCF_REGION").value_from.clone().unwrap();
        assert_eq!(
            region.field_ref.unwrap().field_path,
            "metadata.annotations['nvcf.nvidia.io/region']"
        );
        let utils = spec.containers[1].env.clone().unwrap();
        for (name, value) in [
            ("ATTACHED_GPU_COUNT", "2"),
            ("GPU_NAME", "H100"),
            ("ICMS_ENVIRONMENT", "prod"),
            ("NVCF_CLOUD_PROVIDER", "ON-PREM"),
            ("CLOUD_PROVIDER", "ON-PREM"),
            ("INSTANCE_TYPE", "ON-PREM.GPU.H100"),
            ("INSTANCE_TYPE_NAME", "ON-PREM.GPU.H100_2x"),
            ("INSTANCE_TYPE_VALUE", "ON-PREM.GPU.H100"),
            ("INSTANCE_ID", "0-sr-r1"),
            ("NVCF_INSTANCE_ID", "0-sr-r1"),
            ("INFERENCE_READY_TIMEOUT", "2h0m0s"),
        ] {
            assert_eq!(find(&utils, name).value.as_deref(), Some(value), "{name}");
        }
        assert!(!names(&utils).contains(&"GPU_COUNT"));
        let init = spec.init_containers.unwrap()[0].env.clone().unwrap();
        assert!(!names(&init).contains(&"INFERENCE_READY_TIMEOUT"));
        assert_eq!(
            find(&init, "ATTACHED_GPU_COUNT").value.as_deref(),
            Some("2")
        );
        let sorted = |env: &[EnvVar], tail: usize| {
            let head = names(env);
            let head = &head[..head.len() - tail];
            head.windows(2).all(|pair| pair[0] <= pair[1])
        };
        assert!(
            sorted(&utils, 2) && sorted(&init, 1),
            "sorted as SortEnvs leaves them"
        );

        let mounts = |container: &Container| -> Vec<(String, String)> {
            container
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (m.name.clone(), m.mount_path.clone()))
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            mounts(&spec.containers[0]),
            pairs(&[
                ("model-data", "/config/models"),
                ("model-data", "/config/resources"),
                ("inference-data", "/var/inf"),
                ("instance-data", "/var/run/nvcf/info"),
                ("dshm", "/dev/shm"),
            ])
        );
        assert_eq!(
            mounts(&spec.containers[1]),
            pairs(&[
                ("config-data", "/config/shared"),
                ("inference-data", "/var/inf"),
                ("instance-data", "/var/run/nvcf/info"),
            ])
        );
        let utils = &spec.containers[1];
        let startup = utils.startup_probe.clone().unwrap();
        assert_eq!(
            (startup.period_seconds, startup.failure_threshold),
            (Some(1), Some(60))
        );
        let ready = utils.readiness_probe.clone().unwrap();
        assert_eq!(
            (
                ready.period_seconds,
                ready.failure_threshold,
                ready.timeout_seconds
            ),
            (Some(10), Some(2), Some(6))
        );
        let resources = utils.resources.clone().unwrap();
        assert_eq!(
            resources.requests.unwrap()["cpu"],
            Quantity("4".to_string())
        );
        assert!(resources.limits.is_none(), "limits only when enforced");
    }

    #[test]
    fn a_streaming_pod_tells_utils_where_the_stream_broker_is() {
        let mut launch = sample();
        launch.streaming = true;
        let spec = pod(&launch, "0-sr-r1", &placement(), &[]).spec.unwrap();
        let utils = spec.containers[1].env.clone().unwrap();
        assert_eq!(
            find(&utils, "STREAMING_INTERFACE").value.as_deref(),
            Some("ALL")
        );
        assert_eq!(
            find(&utils, "ZONE_DNS").value.as_deref(),
            Some("http://nvcf-sbs.nvcf-backend.svc.cluster.local:8000")
        );
        let node = find(&utils, "NVCF_WORKER_NODE_IP")
            .value_from
            .clone()
            .unwrap();
        assert_eq!(node.field_ref.unwrap().field_path, "status.hostIP");
    }

    #[test]
    fn pull_secrets_are_dockerconfigjson_secrets_the_pod_names_in_order() {
        let mut launch = sample();
        launch.pull_secrets = vec![
            PullSecret {
                name: "workload-sr-r1-regcred-0".to_string(),
                docker_config: r#"{"auths":{"r.io":{"auth":"eDp5"}}}"#.to_string(),
            },
            PullSecret {
                name: "worker-sr-r1-regcred-0".to_string(),
                docker_config: r#"{"auths":{"nvcr.io":{"auth":"eDp5"}}}"#.to_string(),
            },
        ];
        let secret = pull_secret(&launch.pull_secrets[0], &launch, &placement(), &[]);
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        assert!(secret.data.unwrap().contains_key(".dockerconfigjson"));
        assert_eq!(secret.metadata.labels.unwrap()["icms-request-id"], "r1");
        let spec = pod(&launch, "0-sr-r1", &placement(), &[]).spec.unwrap();
        let names: Vec<_> = spec
            .image_pull_secrets
            .unwrap()
            .into_iter()
            .map(|reference| reference.name)
            .collect();
        assert_eq!(
            names,
            ["workload-sr-r1-regcred-0", "worker-sr-r1-regcred-0"]
        );
    }

    #[test]
    fn a_function_with_secrets_gets_the_secrets_agent_where_nvidia_puts_it() {
        let mut launch = sample();
        launch.secrets_agent = Some("nvcr.io/nvidia/ess-agent:1".to_string());
        let spec = pod(&launch, "0-sr-r1", &placement(), &[]).spec.unwrap();
        let containers: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(containers, ["ess", "inference", "utils"]);
        let inits: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(inits, ["init", "ess-init"]);
        let ess = &spec.containers[0];
        assert_eq!(
            ess.args.as_deref(),
            Some(&["-config=/config/ess-agent/config.hcl".to_string()][..])
        );
        let env = ess.env.clone().unwrap();
        assert_eq!(find(&env, "ESS_AGENT_INIT").value.as_deref(), Some("false"));
        assert_eq!(
            find(&env, "SECRET_PATH").value.as_deref(),
            Some("functions/f1/versions/v1")
        );
        let inference = &spec.containers[1];
        let secrets = inference
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "secret-data")
            .unwrap();
        assert_eq!(
            (secrets.mount_path.as_str(), secrets.read_only),
            ("/var/secrets", Some(true))
        );
        let volumes: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert!(
            volumes.ends_with(&["secret-data", "ess-data"]),
            "{volumes:?}"
        );
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        for (duration, text) in [
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(go_duration(duration), text);
        }
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
