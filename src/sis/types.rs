//! The JSON that crosses the wire between nvca and SIS (NVIDIA's ICMS), and the NATS
//! messages SIS publishes. docs/sis-api.md lists each field with the NVCF source it comes
//! from; the names here are NVIDIA's, spelt exactly as on the wire.
//!
//! Enums carry only the values the server accepts (Java enums in
//! `instance-cluster-management/.../inbound/rest/model/`); `ALL` lists them in the
//! server's order so the simulator can name them in its errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, java = $java:literal, { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value the server accepts, in its declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The Java enum's simple name, for error messages that mirror the server's.
            pub const JAVA_NAME: &'static str = $java;

            /// The value as it is written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses a wire value; `None` when the server would reject it.
            pub fn from_wire(value: &str) -> Option<Self> {
                match value { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// `status` of a register call (`ClusterStatusEnum`). NVCA sends `READY`, `CORDON` or
    /// `CORDON_AND_DRAIN` depending on its maintenance mode.
    ClusterStatus, java = "ClusterStatusEnum", {
        Ready = "READY", Paused = "PAUSED", Failed = "FAILED", Abandoned = "ABANDONED",
        NotReady = "NOT_READY", Unhealthy = "UNHEALTHY", Deleted = "DELETED",
        Cordon = "CORDON", CordonAndDrain = "CORDON_AND_DRAIN",
    }
);

wire_enum!(
    /// `cloudProvider` of a cluster (`ClusterProviderEnum`); self-managed clusters use `ON-PREM`.
    CloudProvider, java = "ClusterProviderEnum", {
        OnPrem = "ON-PREM", DgxCloud = "DGX-CLOUD", Aws = "AWS", Oci = "OCI", Azure = "AZURE",
        Gdn = "GDN", Gfn = "GFN", Gcp = "GCP", Ncp = "NCP",
    }
);

wire_enum!(
    /// `status` of a heartbeat (`CloudHealthStatus`).
    HealthStatus, java = "CloudHealthStatus", { Healthy = "healthy", Unhealthy = "unhealthy" }
);

wire_enum!(
    /// SIS's answer to a heartbeat (`NvcaHeartbeatActionResponse`).
    HeartbeatAction, java = "NvcaHeartbeatActionResponse", {
        SelfDestruct = "SELF_DESTRUCT", Accepted = "ACCEPTED",
    }
);

wire_enum!(
    /// `nodeType` of an instance type (`NodeTypeEnum`); absent means `SINGLE`.
    NodeType, java = "NodeTypeEnum", { Single = "SINGLE", Multi = "MULTI" }
);

wire_enum!(
    /// `instanceState` of an instance status update (`SpotInstanceInternalState`). The
    /// server accepts only these four; NVCA's finer states travel in `terminationCause`.
    InstanceState, java = "SpotInstanceInternalState", {
        Starting = "starting", Running = "running", Terminated = "terminated",
        ShuttingDown = "shutting-down",
    }
);

wire_enum!(
    /// `requestState` of an instance status update (`SpotInstanceRequestState`).
    RequestState, java = "SpotInstanceRequestState", {
        Open = "open", Active = "active", Closed = "closed", Canceled = "canceled",
        Failed = "failed",
    }
);

wire_enum!(
    /// `status` of an instance status update (`SpotInstanceStatus`).
    InstanceStatus, java = "SpotInstanceStatus", {
        Fulfilled = "fulfilled",
        TerminatedNoCapacity = "instance-terminated-no-capacity",
        TerminatedByUser = "instance-terminated-by-user",
        TerminatedByService = "instance-terminated-by-service",
        TerminatedCloudOffline = "instance-terminated-cloud-offline",
        TerminatedLifetimeExpired = "instance-terminated-lifetime-expired",
    }
);

impl InstanceStatus {
    /// The three statuses the server treats as "instance terminated", whatever the
    /// request's state (`InstanceUpdateService.isInstanceTerminated`).
    pub fn is_termination(self) -> bool {
        matches!(
            self,
            InstanceStatus::TerminatedNoCapacity
                | InstanceStatus::TerminatedByUser
                | InstanceStatus::TerminatedByService
        )
    }
}

wire_enum!(
    /// `action` of an instance status update and of queue messages
    /// (`SpotInstanceRequestAction`). NVCA reports the legacy names
    /// (`RequestSpotInstances`, `RequestSpotInstancesForTask`, `TerminateInstances`).
    RequestAction, java = "SpotInstanceRequestAction", {
        CancelSpotInstanceRequests = "CancelSpotInstanceRequests",
        DescribeInstances = "DescribeInstances",
        DescribeSpotInstanceRequests = "DescribeSpotInstanceRequests",
        RequestSpotInstances = "RequestSpotInstances",
        RequestSpotInstancesForTask = "RequestSpotInstancesForTask",
        TerminateInstances = "TerminateInstances",
        TerminateSpotInstanceRequest = "TerminateSpotInstanceRequest",
        CancelInstanceRequests = "CancelInstanceRequests",
        DescribeInstanceRequests = "DescribeInstanceRequests",
        RequestInstances = "RequestInstances",
        RequestInstancesForTask = "RequestInstancesForTask",
        TerminateInstanceRequest = "TerminateInstanceRequest",
    }
);

impl RequestAction {
    /// The legacy name NVCA puts on the wire for this action.
    pub fn to_legacy(self) -> RequestAction {
        match self {
            RequestAction::RequestInstances => RequestAction::RequestSpotInstances,
            RequestAction::RequestInstancesForTask => RequestAction::RequestSpotInstancesForTask,
            other => other,
        }
    }

    /// Whether the action asks for instances (function or task), the only actions the
    /// server accepts on a `fulfilled` instance update.
    pub fn requests_instances(self) -> bool {
        matches!(
            self,
            RequestAction::RequestSpotInstances
                | RequestAction::RequestSpotInstancesForTask
                | RequestAction::RequestInstances
                | RequestAction::RequestInstancesForTask
        )
    }

    /// Whether the action asks for task instances.
    pub fn is_task(self) -> bool {
        matches!(
            self,
            RequestAction::RequestSpotInstancesForTask | RequestAction::RequestInstancesForTask
        )
    }
}

wire_enum!(
    /// `status` of a request acknowledgement (`SpotRequestStatusCode`). The server accepts
    /// any of these in the JSON but acts only on `pending-fulfillment`, `schedule-expired`
    /// and `cannot-fulfill`.
    RequestStatusCode, java = "SpotRequestStatusCode", {
        PendingEvaluation = "pending-evaluation", BadParameters = "bad-parameters",
        CapacityNotAvailable = "capacity-not-available", NotScheduledYet = "not-scheduled-yet",
        ConstraintNotFulfillable = "constraint-not-fulfillable",
        CanceledBeforeFulfillment = "canceled-before-fulfillment", SystemError = "system-error",
        PendingFulfillment = "pending-fulfillment", Fulfilled = "fulfilled",
        InstanceTerminatedNoCapacity = "instance-terminated-no-capacity",
        InstanceTerminatedByUser = "instance-terminated-by-user",
        InstanceTerminatedByService = "instance-terminated-by-service",
        ScheduleExpired = "schedule-expired",
        RequestTerminatedByUser = "request-terminated-by-user",
        CannotFulfill = "cannot-fulfill",
        RequestTerminatedByService = "request-terminated-by-service",
    }
);

wire_enum!(
    /// `capacityType` of acks and instance updates (`CapacityType`); absent means `SPOT`.
    CapacityType, java = "CapacityType", {
        Spot = "SPOT", Reserved = "RESERVED", ReservedBackup = "RESERVED_BACKUP",
    }
);

/// The error body of every SIS error answer (`CustomErrorResponse`): `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Cluster management (`/v1/accounts/{ncaId}/clusters`)
// ---------------------------------------------------------------------------------------

/// `POST /v1/accounts/{ncaId}/clusters` (`ClusterCreationRequest`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCreationRequest {
    /// Required; an RFC 1123 label, at most 32 characters, unique in the account.
    pub cluster_name: String,
    /// Required; at most 32 characters. The NVCF CLI sets it equal to `clusterName`.
    pub cluster_group_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_description: Option<String>,
    /// Required; must equal the account in the path.
    pub nca_id: String,
    /// Required.
    pub cloud_provider: Option<CloudProvider>,
    /// Required; one of SIS's regions (`ClusterRegion`).
    pub region: String,
    /// Required.
    pub nvca_version: String,
    /// `DynamicGPUDiscovery` means the agent reports GPUs and `gpus` must be absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
    /// `ngc-managed` (the default) or `helm-managed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
}

/// The answer to a cluster creation (`ClusterCreationResponse`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIds {
    pub cluster_id: String,
    pub cluster_group_id: String,
}

/// One entry of `GET /v1/accounts/{ncaId}/clusters` (`GetClusterResponse`, the fields
/// nvca reads; others are ignored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cluster_id: String,
    pub cluster_group_id: Option<String>,
    pub cluster_name: String,
    pub cluster_group_name: Option<String>,
    pub cluster_description: Option<String>,
    pub nca_id: Option<String>,
    pub cloud_provider: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    pub nvca_version: Option<String>,
    pub status: Option<String>,
    pub cluster_source: Option<String>,
    pub k8s_version: Option<String>,
    pub gpu_usage: Option<BTreeMap<String, GpuUsage>>,
}

// ---------------------------------------------------------------------------------------
// Agent endpoints (`/v1/nvca/clusters/{clusterId}/...`)
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Requests and instances (`/v1/sirs/...`, `/v1/si/clusters/{id}/instances`)
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Queue messages (published by SIS on JetStream)
// ---------------------------------------------------------------------------------------

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

/// SIS's default GPU count of an instance type.
fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVIDIA's agent leaves `capacity` out when it is 0 (`omitempty`); SIS reads 0, and a
    /// missing `gpuCount` reads as 1. Found by running NVIDIA's agent against sis-sim.
    #[test]
    fn a_gpu_without_capacity_or_gpu_count_reads_as_sis_does() {
        let gpu: Gpu = serde_json::from_value(serde_json::json!({
            "name": "H100",
            "instanceTypes": [{"name": "ON-PREM.GPU.H100_1x", "value": "ON-PREM.GPU.H100_1x"}]
        }))
        .expect("SIS accepts this body");
        assert_eq!(gpu.capacity, 0);
        assert_eq!(gpu.instance_types[0].gpu_count, 1);
    }

    #[test]
    fn every_enum_value_round_trips_through_its_wire_name() {
        for value in InstanceState::ALL {
            assert_eq!(InstanceState::from_wire(value.as_str()), Some(*value));
            let json = serde_json::to_string(value).unwrap();
            assert_eq!(json, format!("\"{}\"", value.as_str()));
        }
        assert_eq!(RequestAction::ALL.len(), 12);
        assert_eq!(RequestStatusCode::ALL.len(), 16);
        assert_eq!(
            ClusterStatus::from_wire("ready"),
            None,
            "the server is case-sensitive"
        );
    }

    #[test]
    fn new_action_names_map_to_the_legacy_ones_nvca_reports() {
        assert_eq!(
            RequestAction::RequestInstances.to_legacy(),
            RequestAction::RequestSpotInstances
        );
        assert_eq!(
            RequestAction::RequestInstancesForTask.to_legacy(),
            RequestAction::RequestSpotInstancesForTask
        );
        assert_eq!(
            RequestAction::TerminateInstances.to_legacy(),
            RequestAction::TerminateInstances
        );
    }

    #[test]
    fn heartbeat_owner_field_keeps_nvcas_spelling() {
        let request = HeartbeatRequest {
            status: HealthStatus::Healthy,
            upgrade_status: String::new(),
            gpu_usage: BTreeMap::new(),
            cluster_owner_nca_id: "nca".into(),
            nvca_agent_version: String::new(),
            nvca_operator_version: String::new(),
            cluster_name: String::new(),
            maintenance_mode: "None".into(),
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["clusterOwnerNcaID"], "nca");
        assert_eq!(json["gpuUsage"], serde_json::json!({}));
    }

    #[test]
    fn empty_credentials_are_recognised_as_the_self_managed_answer() {
        let creds: QueueCredentials = serde_json::from_str("{}").unwrap();
        assert!(creds.is_empty());
        let creds: QueueCredentials =
            serde_json::from_str(r#"{"terminationQueue":{"url":"TerminateNvcaStream"}}"#).unwrap();
        assert!(!creds.is_empty());
    }
}
