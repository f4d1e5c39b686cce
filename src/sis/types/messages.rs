//! Queue messages (published by SIS on JetStream).

use super::*;

/// `functionDetails` of a function creation message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDetails {
    pub function_id: Option<String>,
    pub function_version_id: Option<String>,
    /// `DEFAULT` or `STREAMING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_type: Option<String>,
}

/// `taskDetails` of a task creation message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetails {
    pub task_id: Option<String>,
    /// `CONTAINER` or `HELM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
}

/// A creation message as SIS publishes it (`ByocSqsMessageModel`), every field optional so
/// a message is always read; [`crate::sis::queue::CreationRequest`] is the checked form.
/// `launchSpecification` is kept whole: the function machine reads what it needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationMessage {
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub nca_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    pub action: Option<String>,
    pub message_batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_details: Option<FunctionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_details: Option<TaskDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_specification: Option<serde_json::Map<String, serde_json::Value>>,
    // Deprecated top-level copies, still sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "requestedGPUCount"
    )]
    pub requested_gpu_count: Option<u32>,
    /// The deployment and GPU specification (NVIDIA's `CreationQueueMessageMetadata`),
    /// labelled on every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_specification_id: Option<String>,
    /// NVCF's older ready-made objects (`launchArtifacts`), which nvca refuses by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_artifacts: Option<serde_json::Value>,
}

/// A termination message as SIS publishes it (`ByocTerminatePodMessageModel`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminationMessage {
    pub request_id: Option<String>,
    pub nca_id: Option<String>,
    /// `TerminateInstances`.
    pub action: Option<String>,
    #[serde(default)]
    pub instance_ids: Vec<String>,
    /// The cluster's name.
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<BTreeMap<String, String>>,
    /// Sent by older publishers and read by NVCA; SIS's current model has neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_version_id: Option<String>,
}
