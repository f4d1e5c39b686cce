//! `MiniService` (`nvca.nvcf.nvidia.io/v1alpha1`, cluster-scoped): one Helm function's
//! workload. nvca reads it (uninstall, force cleanup); Helm functions come later.
//! Field names as `pkg/apis/nvca/v1alpha1/miniservice_types.go`.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::open_schema_for;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nvca.nvcf.nvidia.io",
    version = "v1alpha1",
    kind = "MiniService",
    plural = "miniservices",
    status = "Value",
    schema = "manual",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Age of this resource"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Storage phase"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MiniServiceSpec {
    /// The workload namespace, `sr-<requestId>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub icms_request_name: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

open_schema_for!(MiniService);
