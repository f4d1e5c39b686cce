//! The pod of one instance: its containers (init, inference, utils, the secrets agent),
//! their environment, volumes, probes and security, as NVIDIA's translator builds them.

use super::*;

/// What the translator adds to the worker environment (`translate_container.go`): these
/// are plain values in the pod and win over keys of the same name from the message.
pub(super) fn worker_additions(launch: &Launch) -> BTreeMap<&'static str, String> {
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
pub(super) fn worker_env(launch: &Launch, instance_id: &str, extra: Vec<EnvVar>) -> Vec<EnvVar> {
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
pub(super) fn inference_env(launch: &Launch) -> Vec<EnvVar> {
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
pub(super) const WORKLOAD_FIELDS: [(&str, &str); 9] = [
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
pub(super) fn set_env(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    match env.iter_mut().find(|var| var.name == name) {
        Some(var) => *var = plain(name, value),
        None => env.push(plain(name, value)),
    }
}

/// A Go `time.Duration` as its `String()` writes it (`2h0m0s`, `1m30s`, `500ms`): the
/// utils container parses `INFERENCE_READY_TIMEOUT` that way.
pub(super) fn go_duration(duration: Duration) -> String {
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

pub(super) fn empty_dir(name: &str, memory: bool) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(super) fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

pub(super) fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
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

pub(super) fn from_field(name: &str, path: &str) -> EnvVar {
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
pub(super) fn utils_probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
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

pub(super) fn capabilities(drop: &[&str], add: &[&str]) -> SecurityContext {
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
pub(super) const MODEL_DIR: &str = "/config/models";
pub(super) const RESOURCE_DIR: &str = "/config/resources";
pub(super) const CONFIG_DIR: &str = "/config/shared";
pub(super) const INFERENCE_DIR: &str = "/var/inf";
pub(super) const INFO_DIR: &str = "/var/run/nvcf/info";
/// The secrets agent's volumes (`common.EssSecretsDir`, `EssConfigDir`).
pub(super) const SECRETS_DIR: &str = "/var/secrets";
pub(super) const SECRETS_AGENT_DIR: &str = "/config/ess-agent";

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
pub(super) fn secrets_agent(image: &str, launch: &Launch, init: bool) -> Container {
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
