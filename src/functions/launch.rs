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

use crate::machines::function::FunctionRequest;
use crate::machines::instance::WorkloadKind;
use crate::sis::queue::{CreationRequest, Workload};

/// `INFERENCE_CONTAINER`: the function's image (NVIDIA's `ContainerFunctionImageEnv`).
pub const INFERENCE_IMAGE: &str = "INFERENCE_CONTAINER";
/// `UTILS_CONTAINER`: the worker utilities sidecar's image.
pub const UTILS_IMAGE: &str = "UTILS_CONTAINER";
/// `INIT_CONTAINER`: the worker init container's image.
pub const INIT_IMAGE: &str = "INIT_CONTAINER";
/// `INFERENCE_PORT`: where the inference container listens.
pub const INFERENCE_PORT: &str = "INFERENCE_PORT";
/// `INFERENCE_CONTAINER_ARGS`: the inference container's arguments, shell-split.
pub const INFERENCE_ARGS: &str = "INFERENCE_CONTAINER_ARGS";
/// `INFERENCE_CONTAINER_ENV`: base64 JSON object of the inference container's own env.
pub const INFERENCE_ENV: &str = "INFERENCE_CONTAINER_ENV";
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
    pub init_image: Option<String>,
    pub utils_image: String,
    pub inference_port: i32,
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
            let what = if task_type.as_deref() == Some("HELM") {
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
    let utils_image = worker_env
        .get(UTILS_IMAGE)
        .cloned()
        .filter(|image| !image.trim().is_empty())
        .ok_or_else(|| {
            refuse(format!(
                "no utils container: the launch environment has no {UTILS_IMAGE}; set it in \
                 workload.functionEnvOverrides"
            ))
        })?;
    let init_image = worker_env
        .get(INIT_IMAGE)
        .cloned()
        .filter(|image| !image.trim().is_empty());
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
    let inference_port = worker_env
        .get(INFERENCE_PORT)
        .and_then(|port| port.trim().parse::<i32>().ok())
        .filter(|port| (1..=65535).contains(port))
        .unwrap_or(8000);
    let instance_type_name = creation
        .message
        .instance_type_name
        .clone()
        .or_else(|| spec_text(creation, "instanceTypeName"))
        .unwrap_or_default();
    Ok(Launch {
        function_type,
        function_name: worker_env.get(FUNCTION_NAME).cloned(),
        instance_type_name,
        gpu_count: gpu_count(creation).max(1),
        cluster_group: creation.message.cluster_group.clone(),
        icms_environment: spec_text(creation, "icmsEnvironment").unwrap_or_default(),
        cloud_provider: spec_text(creation, "cloudProvider").unwrap_or_default(),
        deployment_id: spec_text(creation, "deploymentId"),
        gpu_specification_id: spec_text(creation, "gpuSpecificationId"),
        worker_env,
        inference_env,
        inference_args,
        inference_image,
        init_image,
        utils_image,
        inference_port,
        request,
    })
}

/// A base64 `KEY=VALUE` file: one pair per line, blank lines and `#` comments skipped,
/// the value taken as written after the first `=`.
fn decode_env_file(encoded: &str) -> Result<BTreeMap<String, String>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|error| format!("is not base64 ({error})"))?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    let mut env = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not KEY=VALUE", number + 1))?;
        env.insert(key.trim().to_string(), value.to_string());
    }
    Ok(env)
}

/// A base64 JSON object of strings.
fn decode_env_json(encoded: &str) -> Result<BTreeMap<String, String>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|error| format!("is not base64 ({error})"))?;
    let object: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|error| format!("is not a JSON object ({error})"))?;
    Ok(object
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => (key, text),
            other => (key, other.to_string()),
        })
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
    fn a_container_function_reads_its_images_ports_and_env_from_the_launch_environment() {
        let inference_env = env_b64(r#"{"MODEL":"llama","THREADS":4}"#);
        let spec = serde_json::json!({
            "environment": env_b64(&format!(
                "# NVCF\nINFERENCE_CONTAINER=nvcr.io/f/app:1\nUTILS_CONTAINER=nvcr.io/u:2\n\
                 INIT_CONTAINER=nvcr.io/i:3\nINFERENCE_PORT=9000\nNVCF_WORKER_TOKEN=s3cr=t\n\
                 FUNCTION_NAME=echo\nINFERENCE_CONTAINER_ARGS=--a 'b c' \"d\\\"e\"\n\
                 INFERENCE_CONTAINER_ENV={inference_env}\n"
            )),
            "icmsEnvironment": "prod", "cloudProvider": "ON-PREM", "deploymentId": "d1",
        });
        let overrides = BTreeMap::from([(UTILS_IMAGE.to_string(), "local/utils:9".to_string())]);
        let launch = read(&creation(spec), &overrides).unwrap();
        assert_eq!(launch.inference_image, "nvcr.io/f/app:1");
        assert_eq!(launch.utils_image, "local/utils:9", "overrides win");
        assert_eq!(launch.init_image.as_deref(), Some("nvcr.io/i:3"));
        assert_eq!(launch.inference_port, 9000);
        assert_eq!(launch.worker_env["NVCF_WORKER_TOKEN"], "s3cr=t");
        assert_eq!(launch.inference_args, ["--a", "b c", "d\"e"]);
        assert_eq!(launch.inference_env["THREADS"], "4");
        assert_eq!(launch.gpu_count, 2);
        assert_eq!(launch.instance_type_name, "ON-PREM.GPU.H100_2x");
        assert_eq!(launch.function_name.as_deref(), Some("echo"));
        assert_eq!(launch.request.instance_count, 2);
        assert_eq!(launch.request.function_version_id, "v1");
        assert_eq!(gpus_requested(&creation(serde_json::json!({}))), 4);
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
