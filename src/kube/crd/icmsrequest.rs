//! `ICMSRequest` (`nvca.nvcf.nvidia.io/v2beta1`, namespaced, short name `ir`): one SIS
//! request as NVIDIA's agent tracks it. nvca keeps the request's progress in its function
//! machine and writes this object as a projection of it, so `kubectl get ir -n
//! nvcf-backend` shows what it shows with NVIDIA's agent.
//! Field names as `pkg/apis/nvca/v2beta1/icmsrequest_types.go`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::open_schema_for;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nvca.nvcf.nvidia.io",
    version = "v2beta1",
    kind = "ICMSRequest",
    plural = "icmsrequests",
    shortname = "ir",
    namespaced,
    status = "ICMSRequestStatus",
    schema = "manual",
    printcolumn(
        name = "action",
        type_ = "string",
        json_path = ".spec.action",
        description = "Type of the ICMS Request"
    ),
    printcolumn(
        name = "status",
        type_ = "string",
        json_path = ".status.requestStatus",
        description = "Status of the ICMSRequest CR on the backend"
    ),
    printcolumn(
        name = "nca_id",
        type_ = "string",
        json_path = ".spec.ncaId",
        description = "NVIDIA CloudAccount ID of the ICMSRequest in NVCF"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Age of this resource"
    ),
    printcolumn(
        name = "function_version_id",
        type_ = "string",
        json_path = ".spec.functionVersionId",
        description = "FunctionVersionId of the ICMS Request in NVCF"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ICMSRequestSpec {
    #[serde(
        default,
        rename = "requestId",
        skip_serializing_if = "String::is_empty"
    )]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nca_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_batch_id: String,
    /// The normalised action, e.g. `RequestICMSInstances` or `TerminateInstances`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub function_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub function_version_id: String,
    /// The creation message as NVIDIA's agent stores it (gpuName, launch specification …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_msg_info: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_msg_info: Option<Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

open_schema_for!(ICMSRequest);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ICMSRequestStatus {
    /// `RequestPending`, `RequestInProgress`, `RequestInstancesInProgress`, `RequestCompleted`,
    /// `RequestFailed`, … (NVIDIA's `RequestStatus`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_updated: Option<Time>,
    #[serde(
        default,
        rename = "lastACKTimestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_ack_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, InstanceStatus>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reconcile_error: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `Pod`, `NGCJob` or `MiniService`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reported_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}
