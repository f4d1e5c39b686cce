//! `NvSnapFunctionState` (`nvsnap.nvcf.nvidia.io/v1alpha1`, cluster-scoped, short name
//! `cfs`): one function version's checkpoint cache on this cluster. NVIDIA's operator
//! applies the CRD at start beside the others
//! (`pkg/operator/reconcile/manifests/nvsnap.nvcf.nvidia.io_nvsnapfunctionstates_crd.yaml`);
//! nvca applies it so NVIDIA's components find it, and reads no object of it yet.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::open_schema_for;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nvsnap.nvcf.nvidia.io",
    version = "v1alpha1",
    kind = "NvSnapFunctionState",
    plural = "nvsnapfunctionstates",
    shortname = "cfs",
    status = "Value",
    schema = "manual",
    printcolumn(
        name = "Function",
        type_ = "string",
        json_path = ".spec.functionVersionID",
        description = "NGC function-version UUID"
    ),
    printcolumn(
        name = "Cache",
        type_ = "string",
        json_path = ".status.localCacheState",
        description = "Per-cluster cache readiness (Cold | Fetching | Warm | Failed)"
    ),
    printcolumn(
        name = "Hash",
        type_ = "string",
        json_path = ".status.checkpointHash",
        description = "Content-addressed checkpoint hash (first 12 chars displayed)"
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attemptCount",
        description = "Cumulative checkpoint attempts"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct NvSnapFunctionStateSpec {
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

open_schema_for!(NvSnapFunctionState);
