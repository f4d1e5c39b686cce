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

mod pod;

use pod::*;
pub use pod::{pod, pull_secret};

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
