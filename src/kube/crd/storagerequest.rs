//! `StorageRequest` (`nvca.nvcf.nvidia.io`, namespaced): model cache and shared storage.
//! Served as `v1` (stored) and `v2beta1`, like NVIDIA's
//! (`pkg/operator/reconcile/manifests/nvcf.nvidia.io_storagerequests_crd.yaml`).
//! nvca reads it (uninstall, force cleanup); caching comes later.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::open_schema_for;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nvca.nvcf.nvidia.io",
    version = "v1",
    kind = "StorageRequest",
    plural = "storagerequests",
    namespaced,
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
pub struct StorageRequestSpec {
    /// `modelcache`, `sharedstorage` or `internalpersistentstorage`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub storage_type: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

open_schema_for!(StorageRequest);

/// The CRD with both versions NVIDIA serves: `v1` stored, `v2beta1` served (its v2beta1
/// has no printer columns).
pub fn storage_request_crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = StorageRequest::crd();
    let mut served = crd.spec.versions[0].clone();
    served.name = "v2beta1".to_string();
    served.storage = false;
    served.additional_printer_columns = None;
    crd.spec.versions.push(served);
    crd
}
