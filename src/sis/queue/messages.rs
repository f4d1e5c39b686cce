//! What a delivery holds once checked: creation and termination requests read as NVCA
//! reads them, and the deliveries that could not be read.

use super::QueueStream;
use super::acker::{Acker, Position};
use crate::sis::types::{CreationMessage, RequestAction, TerminationMessage};

/// One delivered message whose body parsed.
#[derive(Clone, Debug)]
pub struct Received<T> {
    pub body: T,
    pub subject: String,
    pub position: Position,
    pub acker: Acker,
}

impl<T> Received<T> {
    /// NVCA's receipt handle: `<subject>:<stream sequence>`.
    pub fn receipt_handle(&self) -> String {
        format!("{}:{}", self.subject, self.position.stream_sequence)
    }
}

/// What was done with a message that did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// First delivery: given back to the queue.
    Requeued,
    /// Delivered before and still unreadable: terminated, never redelivered.
    Terminated,
}

/// A message that could not be read, as reported.
#[derive(Clone, Debug)]
pub struct RejectedMessage {
    pub stream: QueueStream,
    pub subject: String,
    pub position: Option<Position>,
    pub reason: String,
    /// The first 120 characters of the payload.
    pub excerpt: String,
    pub action: Rejection,
}

/// What one pull brought.
#[derive(Debug)]
pub struct Fetched<T> {
    pub messages: Vec<Received<T>>,
    pub rejected: Vec<RejectedMessage>,
}

/// A creation message, checked: what a function machine needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct CreationRequest {
    pub request_id: String,
    pub message_batch_id: Option<String>,
    pub nca_id: Option<String>,
    /// As sent (e.g. `RequestSpotInstances`).
    pub action: RequestAction,
    pub workload: Workload,
    pub gpu: String,
    pub instance_type: String,
    pub instance_count: u32,
    /// The whole message, for the launch specification.
    pub message: CreationMessage,
}

/// What a creation message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    Function {
        function_id: String,
        function_version_id: String,
        function_type: Option<String>,
    },
    Task {
        task_id: String,
        task_type: Option<String>,
    },
}

/// A termination message, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminationRequest {
    pub request_id: String,
    pub nca_id: Option<String>,
    pub instance_ids: Vec<String>,
    pub availability_zone: Option<String>,
}

/// A creation message's action as NVIDIA's agent reads it (`T/common/types.go`
/// `MessageAction.Normalize`): SIS's names, the translator's own `RequestICMSInstances`
/// and `RequestICMSInstancesForTask`, and the legacy `RequestSp…Instances[ForTask]`
/// spellings, each as the legacy name nvca reports.
pub(super) fn creation_action(name: &str) -> Option<RequestAction> {
    if let Some(action) = RequestAction::from_wire(name).filter(|a| a.requests_instances()) {
        return Some(action);
    }
    let for_task = name.ends_with("ForTask");
    let legacy =
        name.len() >= 20 && name.starts_with("RequestSp") && name.find("Instances") == Some(11);
    (legacy || matches!(name, "RequestICMSInstances" | "RequestICMSInstancesForTask")).then_some(
        if for_task {
            RequestAction::RequestSpotInstancesForTask
        } else {
            RequestAction::RequestSpotInstances
        },
    )
}

pub(crate) fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.trim().is_empty()).cloned()
}

fn spec_str(message: &CreationMessage, key: &str) -> Option<String> {
    message
        .launch_specification
        .as_ref()
        .and_then(|spec| spec.get(key))
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl CreationRequest {
    /// Checks a creation message the way NVCA reads it (`T/translate.go`): the action
    /// (legacy or new name), function or task details (top-level function IDs accepted),
    /// the GPU (`gpuType`, then the launch specification, then the third part of the
    /// instance type) and the instance count.
    pub fn from_message(message: CreationMessage) -> Result<Self, String> {
        let request_id = non_empty(&message.request_id).ok_or("requestId is missing")?;
        let action_name = non_empty(&message.action).ok_or("action is missing")?;
        let action = creation_action(&action_name)
            .ok_or_else(|| format!("action {action_name:?} does not ask for instances"))?;
        let details = message.function_details.clone().unwrap_or_default();
        let function_id = non_empty(&details.function_id).or(non_empty(&message.function_id));
        let version_id =
            non_empty(&details.function_version_id).or(non_empty(&message.function_version_id));
        let task_id = message
            .task_details
            .as_ref()
            .and_then(|t| non_empty(&t.task_id));
        let workload = match (function_id, version_id, task_id) {
            (_, _, Some(task_id)) => Workload::Task {
                task_id,
                task_type: message
                    .task_details
                    .as_ref()
                    .and_then(|t| t.task_type.clone()),
            },
            (Some(function_id), Some(function_version_id), None) => Workload::Function {
                function_id,
                function_version_id,
                function_type: details.function_type.clone(),
            },
            (Some(_), None, None) => return Err("functionVersionId is missing".into()),
            _ => return Err("neither functionDetails nor taskDetails is present".into()),
        };
        if action.is_task() != matches!(workload, Workload::Task { .. }) {
            return Err(format!(
                "action {action_name} does not match the workload (function or task details)"
            ));
        }
        let instance_type = non_empty(&message.instance_type)
            .or_else(|| spec_str(&message, "instanceType"))
            .or_else(|| non_empty(&message.instance_type_value))
            .or_else(|| spec_str(&message, "instanceTypeValue"))
            .ok_or("instanceType is missing")?;
        // NVIDIA's `DecodeCreationQueueMessage`: a function with a launch specification
        // runs on its `gpuName` (the top-level `gpuType` is overwritten); a task's
        // `gpuType` is the top level's, else the launch specification's. Either way the
        // third part of the instance type when none is named.
        let named = match (&workload, &message.launch_specification) {
            (Workload::Function { .. }, Some(_)) => spec_str(&message, "gpuName"),
            _ => non_empty(&message.gpu_type).or_else(|| spec_str(&message, "gpuType")),
        };
        let gpu = named
            .or_else(|| instance_type.split('.').nth(2).map(str::to_string))
            .ok_or("gpuType is missing and instanceType has no GPU part")?;
        let instance_count = message
            .instance_count
            .or_else(|| {
                message
                    .launch_specification
                    .as_ref()
                    .and_then(|s| s.get("instanceCount"))
                    .and_then(|v| v.as_u64())
                    .map(|v| v as u32)
            })
            .filter(|count| *count > 0)
            .ok_or("instanceCount is missing or zero")?;
        Ok(CreationRequest {
            request_id,
            message_batch_id: non_empty(&message.message_batch_id),
            nca_id: non_empty(&message.nca_id),
            action,
            workload,
            gpu,
            instance_type,
            instance_count,
            message,
        })
    }
}

impl TerminationRequest {
    pub fn from_message(message: TerminationMessage) -> Result<Self, String> {
        let request_id = non_empty(&message.request_id).ok_or("requestId is missing")?;
        match message.action.as_deref() {
            Some("TerminateInstances") => {}
            other => return Err(format!("action {other:?} is not TerminateInstances")),
        }
        Ok(TerminationRequest {
            request_id,
            nca_id: non_empty(&message.nca_id),
            instance_ids: message.instance_ids,
            availability_zone: non_empty(&message.availability_zone),
        })
    }
}
