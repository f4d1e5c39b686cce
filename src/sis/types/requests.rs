//! Requests and instances (`/v1/sirs/...`, `/v1/si/clusters/{id}/instances`).

use super::*;

/// `PUT /v1/sirs/{requestId}` (`SpotInstanceRequestStatusUpdateRequest`). NVCA sends
/// `{instanceCount, messageBatchId, status: "pending-fulfillment"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckRequest {
    pub status: RequestStatusCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<CapacityType>,
}

/// `healthInfo` of an instance update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log: Option<String>,
    /// `k8s`, `utils`, `init`, `shared_storage` or `task_container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_source: Option<String>,
}

/// `POST /v1/sirs/{requestId}/{instanceId}` (`SpotInstanceStatusUpdateRequest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatusUpdate {
    pub status: InstanceStatus,
    pub instance_state: InstanceState,
    pub request_state: RequestState,
    /// A legacy name: `RequestSpotInstances`, `RequestSpotInstancesForTask` or
    /// `TerminateInstances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RequestAction>,
    /// NVCA's detailed state (e.g. `image-pull-issues`) when `instanceState` is coarser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_cause: Option<String>,
    #[serde(default)]
    pub health_info: HealthInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_batch_id: Option<String>,
    /// `[hostIP, podIP]`, only with low-latency streaming.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ips: Vec<String>,
}

/// One active instance of `GET /v1/si/clusters/{clusterId}/instances` (`InstanceInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub instance_id: String,
    pub request_id: String,
    /// `starting`, `running` or `shutting-down`.
    pub instance_state: String,
}

/// The answer of the periodic instance list (`GetActiveInstanceInfoResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList {
    #[serde(default)]
    pub instances: Option<Vec<InstanceInfo>>,
}
