//! What a creation message asks nvca to run, read the way NVIDIA's translator reads it
//! (`src/libraries/go/lib/pkg/icms-translate/translate/function/translate_container.go`,
//! `common/translator.go`, `common/env.go` of github.com/NVIDIA/nvcf). Pure.
//!
//! The worker environment (`launchSpecification.environment`, base64 of a `KEY=VALUE`
//! file) names the images and may hold secrets (`NVCF_WORKER_TOKEN`, registry
//! credentials), so it only ever lives in the request's Secret; the store keeps the
//! secret-free [`FunctionRequest`].

use std::collections::BTreeMap;

use base64::Engine;

use super::pull_secrets::{self, PullSecret};
use crate::machines::function::FunctionRequest;
use crate::machines::instance::WorkloadKind;
use crate::sis::queue::{CreationRequest, Workload, non_empty};

/// `INFERENCE_CONTAINER`: the function's image (NVIDIA's `ContainerFunctionImageEnv`).
pub const INFERENCE_IMAGE: &str = "INFERENCE_CONTAINER";
/// `UTILS_CONTAINER`: the worker utilities sidecar's image.
pub const UTILS_IMAGE: &str = "UTILS_CONTAINER";
/// `INIT_CONTAINER`: the worker init container's image.
pub const INIT_IMAGE: &str = "INIT_CONTAINER";
/// `NICLLS_CONTAINER`: the utils image of a streaming function (NVIDIA's
/// `NICLLSUtilsImageEnv`).
pub const STREAMING_UTILS_IMAGE: &str = "NICLLS_CONTAINER";
/// `INFERENCE_CONTAINER_ARGS`: the inference container's arguments, shell-split.
pub const INFERENCE_ARGS: &str = "INFERENCE_CONTAINER_ARGS";
/// `INFERENCE_CONTAINER_ENV`: base64 JSON list of `{"key", "value"}`: the inference
/// container's own env.
pub const INFERENCE_ENV: &str = "INFERENCE_CONTAINER_ENV";
/// `SECRETS_ASSERTION_TOKEN`: the function has secrets; the secrets agent (ESS) fetches
/// them with this token (`common/ess.go`).
pub const SECRETS_TOKEN: &str = "SECRETS_ASSERTION_TOKEN";
/// `ESS_AGENT_CONTAINER`: the secrets agent's image.
pub const SECRETS_AGENT_IMAGE: &str = "ESS_AGENT_CONTAINER";
/// `FUNCTION_NAME`: shown as annotation `function-name`.
pub const FUNCTION_NAME: &str = "FUNCTION_NAME";

/// The container function to run, decoded from one creation message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub request: FunctionRequest,
    pub function_type: String,
    pub function_name: Option<String>,
    /// `instanceTypeName` (`…_1x`) and `instanceTypeValue` (the node label value).
    pub instance_type_name: String,
    /// `instanceTypeValue` (else the instance type): the node label value pods require.
    pub instance_type_value: String,
    /// The message's own `instanceType`, NVIDIA's legacy `INSTANCE_TYPE`.
    pub legacy_instance_type: Option<String>,
    pub gpu_count: u32,
    pub cluster_group: Option<String>,
    pub icms_environment: String,
    pub cloud_provider: String,
    pub deployment_id: Option<String>,
    pub gpu_specification_id: Option<String>,
    /// The decoded worker environment: what the init and utils containers get.
    pub worker_env: BTreeMap<String, String>,
    /// The inference container's own environment (`INFERENCE_CONTAINER_ENV`).
    pub inference_env: BTreeMap<String, String>,
    pub inference_args: Vec<String>,
    pub inference_image: String,
    pub init_image: String,
    /// `UTILS_CONTAINER`, or `NICLLS_CONTAINER` for a streaming function.
    pub utils_image: String,
    /// A `STREAMING` function: its utils container gets the low-latency streaming env.
    pub streaming: bool,
    /// `ESS_AGENT_CONTAINER`, when the function has secrets (`SECRETS_ASSERTION_TOKEN`):
    /// the pod gets the secrets agent and its init container.
    pub secrets_agent: Option<String>,
    /// The request's image pull Secrets (`CONTAINER_REGISTRIES_CREDENTIALS`,
    /// `SIDECAR_REGISTRY_CREDENTIAL`).
    pub pull_secrets: Vec<PullSecret>,
}

/// A message nvca reads but will not run, with the reason SIS and the Event are given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub request: FunctionRequest,
    pub reason: String,
}

/// The secret-free part of a creation message: what the function machine keeps.
pub fn function_request(creation: &CreationRequest) -> FunctionRequest {
    let (function_id, function_version_id, kind) = match &creation.workload {
        Workload::Function {
            function_id,
            function_version_id,
            ..
        } => (
            function_id.clone(),
            function_version_id.clone(),
            WorkloadKind::Function,
        ),
        Workload::Task { task_id, .. } => (task_id.clone(), String::new(), WorkloadKind::Task),
    };
    FunctionRequest {
        request_id: creation.request_id.clone(),
        function_id,
        function_version_id,
        nca_id: creation.nca_id.clone().unwrap_or_default(),
        message_batch_id: creation.message_batch_id.clone().unwrap_or_default(),
        instance_type: creation.instance_type.clone(),
        gpu_name: creation.gpu.clone(),
        instance_count: creation.instance_count,
        kind,
    }
}

/// GPUs one request needs: `instanceCount × requestedGPUCount` (a missing count is 1),
/// as NVIDIA's capacity gate counts them (`queue_manager.go` `doCreationMessage`).
pub fn gpus_requested(creation: &CreationRequest) -> u64 {
    let per_instance = gpu_count(creation).max(1);
    u64::from(creation.instance_count) * u64::from(per_instance)
}

fn gpu_count(creation: &CreationRequest) -> u32 {
    creation
        .message
        .requested_gpu_count
        .or_else(|| {
            spec_value(creation, "requestedGPUCount")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        })
        .unwrap_or(1)
}

fn spec_value<'a>(creation: &'a CreationRequest, key: &str) -> Option<&'a serde_json::Value> {
    creation
        .message
        .launch_specification
        .as_ref()
        .and_then(|spec| spec.get(key))
}

fn spec_text(creation: &CreationRequest, key: &str) -> Option<String> {
    spec_value(creation, key)
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Decide what to do with a creation message: a container function is launched; a
/// task or a Helm function is refused for now (they come in a later issue), as is a
/// container function whose environment does not say what to run. `overrides` is
/// `workload.functionEnvOverrides`, laid over the worker environment.
pub fn read(
    creation: &CreationRequest,
    overrides: &BTreeMap<String, String>,
) -> Result<Launch, Box<Refusal>> {
    let request = function_request(creation);
    let refuse = |reason: String| {
        Box::new(Refusal {
            request: request.clone(),
            reason,
        })
    };
    let function_type = match &creation.workload {
        Workload::Task { task_type, .. } => {
            let helm = matches!(task_type.as_deref(), Some("HELM" | "HELMCHART"))
                || spec_value(creation, "helmChart").is_some_and(|chart| !chart.is_null());
            let what = if helm {
                "Helm tasks"
            } else {
                "container tasks"
            };
            return Err(refuse(format!(
                "nvca does not run {what} yet; run this task on a cluster with NVIDIA's agent"
            )));
        }
        Workload::Function { function_type, .. } => {
            function_type.clone().unwrap_or_else(|| "DEFAULT".into())
        }
    };
    if spec_value(creation, "helmChart").is_some_and(|chart| !chart.is_null()) {
        return Err(refuse(
            "nvca does not deploy Helm functions (MiniService) yet; deploy this function on a \
             cluster with NVIDIA's agent"
                .to_string(),
        ));
    }
    // NVCF's older messages carried ready-made objects instead of an environment; NVIDIA's
    // agent still applies them, nvca does not.
    if spec_text(creation, "environment").is_none() && creation.message.launch_artifacts.is_some() {
        return Err(refuse(
            "nvca does not run legacy launchArtifacts (pod, Secret and ConfigMap specs in the \
             message); NVCF sends a launch specification with an environment instead — \
             redeploy the function, or run it on a cluster with NVIDIA's agent"
                .to_string(),
        ));
    }
    let mut worker_env = match spec_text(creation, "environment") {
        Some(encoded) => decode_env_file(&encoded)
            .map_err(|reason| refuse(format!("launchSpecification.environment {reason}")))?,
        None => BTreeMap::new(),
    };
    for (key, value) in overrides {
        worker_env.insert(key.clone(), value.clone());
    }
    let inference_image = worker_env
        .get(INFERENCE_IMAGE)
        .cloned()
        .or_else(|| spec_text(creation, "containerImage"))
        .filter(|image| !image.trim().is_empty())
        .ok_or_else(|| {
            refuse(format!(
                "no inference container: the launch environment has no {INFERENCE_IMAGE} and \
                 the launch specification no containerImage"
            ))
        })?;
    // Shapes nvca does not build yet are refused by name, never run as a plain container.
    if function_type == "LLM" {
        return Err(refuse(
            "nvca does not run LLM functions yet (NVIDIA's llm-worker and \
             llm-credential-manager sidecars); deploy this function on a cluster with \
             NVIDIA's agent"
                .to_string(),
        ));
    }
    if spec_value(creation, "telemetries").is_some_and(|value| !value.is_null()) {
        return Err(refuse(
            "nvca does not run functions with telemetry endpoints (BYOO: the \
             byoo-otel-collector sidecar) yet; deploy this function without telemetries or \
             on a cluster with NVIDIA's agent"
                .to_string(),
        ));
    }
    let streaming = function_type == "STREAMING";
    let utils_key = if streaming {
        STREAMING_UTILS_IMAGE
    } else {
        UTILS_IMAGE
    };
    let image = |key: &str, what: &str| {
        worker_env
            .get(key)
            .cloned()
            .filter(|image| !image.trim().is_empty())
            .ok_or_else(|| {
                refuse(format!(
                    "no {what} container: the launch environment has no {key}; set it in \
                     workload.functionEnvOverrides"
                ))
            })
    };
    let utils_image = image(utils_key, "utils")?;
    // NVIDIA's pod always has the init container (without an image Kubernetes refuses
    // the pod): refuse here, naming the key, rather than fail at the API server.
    let init_image = image(INIT_IMAGE, "init")?;
    let has_secrets = worker_env.get(SECRETS_TOKEN).is_some_and(|t| !t.is_empty());
    let secrets_agent = if has_secrets {
        Some(image(SECRETS_AGENT_IMAGE, "secrets agent (ESS)")?)
    } else {
        None
    };
    let inference_env = match worker_env.get(INFERENCE_ENV) {
        Some(encoded) => decode_env_json(encoded)
            .map_err(|reason| refuse(format!("{INFERENCE_ENV} {reason}")))?,
        None => BTreeMap::new(),
    };
    let inference_args = match worker_env.get(INFERENCE_ARGS) {
        Some(args) => {
            split_args(args).map_err(|reason| refuse(format!("{INFERENCE_ARGS} {reason}")))?
        }
        None => Vec::new(),
    };
    let base = super::objects::request_name(&request.request_id);
    let pull_secrets =
        pull_secrets::pull_secrets(&base, &inference_image, &worker_env).map_err(refuse)?;
    let message = &creation.message;
    let instance_type_name = message
        .instance_type_name
        .clone()
        .or_else(|| spec_text(creation, "instanceTypeName"))
        .unwrap_or_default();
    let instance_type_value = message
        .instance_type_value
        .clone()
        .filter(|value| !value.is_empty())
        .or_else(|| spec_text(creation, "instanceTypeValue"))
        .unwrap_or_else(|| request.instance_type.clone());
    Ok(Launch {
        function_type,
        function_name: worker_env.get(FUNCTION_NAME).cloned(),
        instance_type_name,
        instance_type_value,
        legacy_instance_type: message.instance_type.clone().filter(|t| !t.is_empty()),
        gpu_count: gpu_count(creation).max(1),
        cluster_group: message.cluster_group.clone(),
        icms_environment: spec_text(creation, "icmsEnvironment").unwrap_or_default(),
        cloud_provider: spec_text(creation, "cloudProvider").unwrap_or_default(),
        deployment_id: non_empty(&message.deployment_id)
            .or_else(|| spec_text(creation, "deploymentId")),
        gpu_specification_id: non_empty(&message.gpu_specification_id)
            .or_else(|| spec_text(creation, "gpuSpecificationId")),
        worker_env,
        inference_env,
        inference_args,
        inference_image,
        init_image,
        utils_image,
        streaming,
        secrets_agent,
        pull_secrets,
        request,
    })
}

/// A base64 `KEY=VALUE` file as NVIDIA's `EnvDecoderText` reads it: blank lines skipped,
/// the value after the first `=` (none: empty), unquoted when it is a quoted string
/// (`ATTACHED_GPU_COUNT="1"` is `1`).
fn decode_env_file(encoded: &str) -> Result<BTreeMap<String, String>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|error| format!("is not base64 ({error})"))?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once('=') {
            Some((key, value)) => (key.to_string(), unquote(value)),
            None => (line.to_string(), String::new()),
        })
        .collect())
}

/// Go's `strconv.Unquote` for the forms an environment file uses: a double-quoted string
/// with escapes, or a back-quoted raw one; anything else is the value as written.
fn unquote(value: &str) -> String {
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('"') {
        serde_json::from_str(value).unwrap_or_else(|_| value.to_string())
    } else if quoted('`') && !value[1..value.len() - 1].contains('`') {
        value[1..value.len() - 1].to_string()
    } else {
        value.to_string()
    }
}

/// One `INFERENCE_CONTAINER_ENV` entry (NVIDIA's `KeyValue`).
#[derive(serde::Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

/// `INFERENCE_CONTAINER_ENV`: base64 of a JSON list of `{"key", "value"}` (NVIDIA's
/// `EnvDecoderJSON`); a later entry wins.
fn decode_env_json(encoded: &str) -> Result<BTreeMap<String, String>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|error| format!("is not base64 ({error})"))?;
    let entries: Vec<KeyValue> = serde_json::from_slice(&bytes)
        .map_err(|error| format!("is not a JSON list of {{\"key\", \"value\"}} ({error})"))?;
    Ok(entries
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect())
}

/// Split arguments as a POSIX shell would, for quotes and backslashes (NVIDIA uses
/// `shlex.Split`).
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => match chars.next() {
                Some(next) => current.push(next),
                None => return Err("ends with a backslash".to_string()),
            },
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
        if quote.is_some() || !current.is_empty() {
            in_word = true;
        }
    }
    if quote.is_some() {
        return Err("has an unclosed quote".to_string());
    }
    if in_word {
        args.push(current);
    }
    Ok(args)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sis::types::CreationMessage;

    fn env_b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    pub(crate) fn creation(spec: serde_json::Value) -> CreationRequest {
        let message: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "r1", "action": "RequestSpotInstances", "ncaId": "nca-1",
            "messageBatchId": "b1", "clusterGroup": "nvcf-default",
            "functionDetails": {"functionId": "f1", "functionVersionId": "v1", "functionType": "DEFAULT"},
            "instanceType": "ON-PREM.GPU.H100", "instanceTypeName": "ON-PREM.GPU.H100_2x",
            "instanceCount": 2, "requestedGPUCount": 2,
            "launchSpecification": spec,
        }))
        .unwrap();
        CreationRequest::from_message(message).unwrap()
    }

    /// A two-instance H100 container function with a worker token in its environment.
    pub(crate) fn sample() -> Launch {
        let spec = serde_json::json!({
            "environment": env_b64(
                "INFERENCE_CONTAINER=nvcr.io/f/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n\
                 INIT_CONTAINER=nvcr.io/i:3\nNVCF_WORKER_TOKEN=s3cr=t\n"
            ),
            "icmsEnvironment": "prod", "cloudProvider": "ON-PREM",
        });
        read(&creation(spec), &BTreeMap::new()).expect("a container function")
    }

    #[test]
    fn a_container_function_reads_its_images_and_env_from_the_launch_environment() {
        let inference_env = env_b64(
            r#"[{"key":"MODEL","value":"llama"},{"key":"THREADS","value":"4"},{"key":"MODEL","value":"mistral"}]"#,
        );
        let spec = serde_json::json!({
            "environment": env_b64(&format!(
                "INFERENCE_CONTAINER=nvcr.io/f/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n\
                 INIT_CONTAINER=nvcr.io/i:3\nINFERENCE_PORT=\"9000\"\nNVCF_WORKER_TOKEN=s3cr=t\n\
                 FUNCTION_NAME=echo\nINFERENCE_CONTAINER_ARGS=--a 'b c' \"d\\\"e\"\n\
                 \nINFERENCE_CONTAINER_ENV={inference_env}\nBARE\nRAW=`x\\n`\n"
            )),
            "icmsEnvironment": "prod", "cloudProvider": "ON-PREM", "deploymentId": "d1",
        });
        let overrides = BTreeMap::from([(UTILS_IMAGE.to_string(), "local/utils:9".to_string())]);
        let launch = read(&creation(spec), &overrides).unwrap();
        assert_eq!(launch.inference_image, "nvcr.io/f/app:1");
        assert_eq!(launch.utils_image, "local/utils:9", "overrides win");
        assert_eq!(launch.init_image, "nvcr.io/i:3");
        assert_eq!(
            launch.worker_env["INFERENCE_PORT"], "9000",
            "quotes are taken off"
        );
        assert_eq!(launch.worker_env["NVCF_WORKER_TOKEN"], "s3cr=t");
        assert_eq!(launch.worker_env["BARE"], "", "a line without = is a key");
        assert_eq!(launch.worker_env["RAW"], "x\\n", "back quotes keep escapes");
        assert_eq!(launch.inference_args, ["--a", "b c", "d\"e"]);
        assert_eq!(launch.inference_env["THREADS"], "4");
        assert_eq!(
            launch.inference_env["MODEL"], "mistral",
            "the later entry wins"
        );
        assert_eq!(launch.gpu_count, 2);
        assert_eq!(launch.instance_type_name, "ON-PREM.GPU.H100_2x");
        assert_eq!(launch.instance_type_value, "ON-PREM.GPU.H100");
        assert_eq!(
            launch.legacy_instance_type.as_deref(),
            Some("ON-PREM.GPU.H100")
        );
        assert_eq!(launch.function_name.as_deref(), Some("echo"));
        assert_eq!(launch.deployment_id.as_deref(), Some("d1"));
        assert_eq!(launch.request.instance_count, 2);
        assert_eq!(launch.request.function_version_id, "v1");
        assert!(!launch.streaming && launch.pull_secrets.is_empty());
        assert_eq!(gpus_requested(&creation(serde_json::json!({}))), 4);
    }

    #[test]
    fn a_streaming_function_takes_its_utils_image_from_nicllls_container() {
        let mut message = creation(serde_json::json!({
            "environment": env_b64(
                "INFERENCE_CONTAINER=nvcr.io/f/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n\
                 INIT_CONTAINER=nvcr.io/i:3\nNICLLS_CONTAINER=nvcr.io/lls:4\n"
            ),
        }));
        if let Workload::Function { function_type, .. } = &mut message.workload {
            *function_type = Some("STREAMING".to_string());
        }
        let launch = read(&message, &BTreeMap::new()).unwrap();
        assert!(launch.streaming);
        assert_eq!(launch.utils_image, "nvcr.io/lls:4");
    }

    fn fixture(name: &str) -> CreationRequest {
        let path = format!(
            "{}/fixtures/functions/messages/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let message: CreationMessage = serde_json::from_str(&text).unwrap();
        CreationRequest::from_message(message).unwrap()
    }

    /// Every shape NVCF sends, from fixtures of our own: run with NVIDIA's pod shape, or
    /// refused naming why — never a plain container by mistake.
    #[test]
    fn fixture_shapes_run_or_are_refused_by_name() {
        use crate::functions::objects::{Placement, pod};
        let ran = |name: &str| {
            let launch = read(&fixture(name), &BTreeMap::new())
                .unwrap_or_else(|refusal| panic!("{name}: {}", refusal.reason));
            let spec = pod(&launch, "0-sr-x", &Placement::default(), &[])
                .spec
                .unwrap();
            let names = |list: &[k8s_openapi::api::core::v1::Container]| {
                list.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
            };
            let pulls: Vec<String> = spec
                .image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect();
            (
                launch,
                names(&spec.init_containers.unwrap_or_default()),
                names(&spec.containers),
                pulls,
            )
        };
        let (launch, inits, containers, pulls) = ran("container.json");
        assert_eq!(
            (inits, containers),
            (
                vec!["init".to_string()],
                vec!["inference".to_string(), "utils".to_string()]
            )
        );
        assert_eq!(
            launch.inference_args,
            ["--port", "8000", "--name", "echo fixture"]
        );
        assert_eq!(launch.inference_env["MODEL"], "echo");
        assert!(pulls.is_empty());

        let (_, _, _, pulls) = ran("private-registry.json");
        assert_eq!(
            pulls,
            [
                "workload-sr-fixture-registry-regcred-0",
                "worker-sr-fixture-registry-regcred-0"
            ]
        );
        let (launch, _, _, _) = ran("streaming.json");
        assert!(launch.streaming);
        assert_eq!(launch.utils_image, "workers.example.com/nvcf/lls:0.1");
        let (_, inits, containers, _) = ran("secrets.json");
        assert_eq!(inits, ["init", "ess-init"]);
        assert_eq!(containers, ["ess", "inference", "utils"]);

        for (name, words) in [
            ("llm.json", "LLM functions"),
            ("telemetry.json", "telemetry"),
            ("helm.json", "Helm functions"),
            ("task.json", "container tasks"),
        ] {
            let refusal = read(&fixture(name), &BTreeMap::new()).unwrap_err();
            assert!(refusal.reason.contains(words), "{name}: {}", refusal.reason);
        }
    }

    #[test]
    fn legacy_artifacts_and_helm_tasks_are_refused_by_their_names() {
        let message: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "r2", "action": "RequestSpotInstances",
            "functionDetails": {"functionId": "f", "functionVersionId": "v"},
            "instanceType": "ON-PREM.GPU.H100", "instanceCount": 1,
            "launchArtifacts": [{"artifactType": "POD_SPEC", "artifactSpec": "e30="}],
        }))
        .unwrap();
        let refusal = read(
            &CreationRequest::from_message(message).unwrap(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            refusal.reason.contains("launchArtifacts"),
            "{}",
            refusal.reason
        );
        let task: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "t2", "action": "RequestSpotInstancesForTask",
            "taskDetails": {"taskId": "task-2", "taskType": "HELMCHART"},
            "instanceType": "ON-PREM.GPU.H100", "instanceCount": 1
        }))
        .unwrap();
        let refusal = read(
            &CreationRequest::from_message(task).unwrap(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(refusal.reason.contains("Helm tasks"), "{}", refusal.reason);
    }

    #[test]
    fn a_function_without_an_init_image_is_refused_naming_the_key() {
        let spec = serde_json::json!({
            "environment": env_b64("INFERENCE_CONTAINER=nvcr.io/f/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n"),
        });
        let refusal = read(&creation(spec), &BTreeMap::new()).unwrap_err();
        assert!(
            refusal.reason.contains("INIT_CONTAINER"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn registry_credentials_become_the_requests_pull_secrets() {
        let workload = env_b64(
            r#"{"k8sSecrets":[{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}]}"#,
        );
        let spec = serde_json::json!({
            "environment": env_b64(&format!(
                "INFERENCE_CONTAINER=registry.example.com/team/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n\
                 INIT_CONTAINER=nvcr.io/i:3\nCONTAINER_REGISTRIES_CREDENTIALS={workload}\n"
            )),
        });
        let launch = read(&creation(spec), &BTreeMap::new()).unwrap();
        let names: Vec<_> = launch
            .pull_secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["workload-sr-r1-regcred-0"]);
        let garbled = serde_json::json!({
            "environment": env_b64(
                "INFERENCE_CONTAINER=nvcr.io/f/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n\
                 INIT_CONTAINER=nvcr.io/i:3\nCONTAINER_REGISTRIES_CREDENTIALS=e30K-not\n"
            ),
        });
        let refusal = read(&creation(garbled), &BTreeMap::new()).unwrap_err();
        assert!(
            refusal.reason.contains("CONTAINER_REGISTRIES_CREDENTIALS"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn helm_functions_tasks_and_functions_without_an_image_are_refused_with_a_reason() {
        let helm = read(
            &creation(serde_json::json!({"helmChart": "https://h/charts/x-1.tgz"})),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(helm.reason.contains("Helm functions"), "{}", helm.reason);
        let bare = read(&creation(serde_json::json!({})), &BTreeMap::new()).unwrap_err();
        assert!(
            bare.reason.contains("INFERENCE_CONTAINER"),
            "{}",
            bare.reason
        );
        let garbled = read(
            &creation(serde_json::json!({"environment": "%%%"})),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(garbled.reason.contains("not base64"), "{}", garbled.reason);

        let task: CreationMessage = serde_json::from_value(serde_json::json!({
            "requestId": "t1", "action": "RequestSpotInstancesForTask",
            "taskDetails": {"taskId": "task-1", "taskType": "CONTAINER"},
            "instanceType": "ON-PREM.GPU.H100", "instanceCount": 1
        }))
        .unwrap();
        let refusal = read(
            &CreationRequest::from_message(task).unwrap(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            refusal.reason.contains("container tasks"),
            "{}",
            refusal.reason
        );
        assert_eq!(refusal.request.kind, WorkloadKind::Task);
    }
}
