//! Agent endpoints (`/v1/nvca/clusters/{clusterId}/...`).

use super::*;

/// One GPU model in a registration (`GpuRequestSchema`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// Required, e.g. `H100`.
    pub name: String,
    /// SIS reads a missing capacity as 0 (a plain Java `int`): NVIDIA's agent omits it
    /// when it is 0, as it is under dynamic discovery.
    #[serde(default)]
    pub capacity: u32,
    /// Required, non-empty.
    pub instance_types: Vec<InstanceType>,
}

/// One instance type of a GPU (`InstanceTypeRequestSchema`, plus NVCA's extra fields,
/// which the server ignores).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    /// Required, e.g. `NCP.GPU.H100_1x`.
    pub name: String,
    /// Required, e.g. `NCP.GPU.H100`.
    pub value: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<String>,
    /// SIS's default is 1 (`int gpuCount = 1` in `InstanceTypeRequestSchema`).
    #[serde(default = "one")]
    pub gpu_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<NodeType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable_capacity: Option<u32>,
}

/// `PUT /v1/nvca/clusters/{clusterId}/register` (`NvcaRegistrationRequest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRequest {
    pub status: ClusterStatus,
    /// Required, non-blank, e.g. `v1.37.2`.
    pub k8s_version: String,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    #[serde(default)]
    pub allow_cluster_targeting: bool,
    /// NVCA always sends `true`.
    #[serde(default)]
    pub allow_task_cluster_creation_queues: bool,
    #[serde(default)]
    pub nvca_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
}

/// The answer to a registration (`NvcaRegistrationResponse`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResponse {
    pub cluster_id: Option<String>,
    pub cluster_group_id: Option<String>,
    /// Empty (`{}`) for self-managed clusters: the agent then derives its queues.
    #[serde(default)]
    pub credentials: Option<QueueCredentials>,
}

/// `GET /v1/nvca/clusters/{clusterId}/credentials` (`NvcaAccessCreds`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_queue: Option<BTreeMap<String, QueueInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_creation_queue: Option<BTreeMap<String, QueueInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_creation_queue_for_tasks: Option<BTreeMap<String, QueueInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_queue: Option<QueueInfo>,
}

impl QueueCredentials {
    /// True when SIS named no queue at all: the self-managed (NATS) answer.
    pub fn is_empty(&self) -> bool {
        self.creation_queue.as_ref().is_none_or(|m| m.is_empty())
            && self
                .cluster_creation_queue
                .as_ref()
                .is_none_or(|m| m.is_empty())
            && self
                .cluster_creation_queue_for_tasks
                .as_ref()
                .is_none_or(|m| m.is_empty())
            && self.termination_queue.is_none()
    }
}

/// One queue (`AwsQueueAccessInfo`). In NATS mode `url` is the stream name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    pub url: Option<String>,
    pub queue_type: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub expires_at: Option<String>,
}

/// GPU counts of one GPU model in a heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub available: i64,
    pub capacity: i64,
    pub allocated: i64,
}

/// `POST /v1/nvca/clusters/{clusterId}/heartbeat` (NVCA's `HealthStatusRequest`; the
/// server's `NvcaClusterHeartbeatRequest` requires `status` and `gpuUsage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    pub status: HealthStatus,
    /// `""`, `IN_PROGRESS`, `FAILED` or `SUCCESS`.
    #[serde(default)]
    pub upgrade_status: String,
    pub gpu_usage: BTreeMap<String, GpuUsage>,
    /// NVCA spells it `clusterOwnerNcaID`; the server's field is `clusterOwnerNcaId`, so
    /// the server never sees NVCA's value. We keep NVCA's spelling (drop-in).
    #[serde(rename = "clusterOwnerNcaID", default)]
    pub cluster_owner_nca_id: String,
    #[serde(default)]
    pub nvca_agent_version: String,
    #[serde(default)]
    pub nvca_operator_version: String,
    #[serde(default)]
    pub cluster_name: String,
    /// `None`, `CordonOnly` or `CordonAndDrain`; not in the server's DTO (ignored there).
    #[serde(default)]
    pub maintenance_mode: String,
}

/// The answer to a heartbeat (`NvcaClusterHeartbeatResponse`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub action: Option<HeartbeatAction>,
}

/// `PUT /v1/nvca/clusters/{clusterId}/jwks` (`UpdateJwksRequest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwksUpdate {
    /// Required: the JWKS document as a JSON string.
    pub jwks: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
}
