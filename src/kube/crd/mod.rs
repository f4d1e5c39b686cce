//! The custom resources nvca reads and writes, with NVIDIA's group, version, kind,
//! plural, scope, short names, printer columns and status subresource.
//!
//! NVIDIA's CRDs use an open schema (`spec` and `status` are objects that keep unknown
//! fields), and so do ours: a cluster moving from NVIDIA's NVCA keeps its objects, and
//! the typed structs below name only the fields nvca uses. Each type keeps the fields it
//! does not name in `other`, so a read-modify-write never drops what NVIDIA wrote.
//! Source: `src/compute-plane-services/nvca/deployments/nvca-operator/templates/crds/`
//! and `pkg/operator/reconcile/{crd_reconcile.go,manifests/}` of github.com/NVIDIA/nvcf.

// kube's `printcolumn(...)` attributes repeat the same keys by design.
#![allow(clippy::duplicated_attributes)]

mod icmsrequest;
mod miniservice;
mod nvcfbackend;
mod nvsnapfunctionstate;
mod storagerequest;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use icmsrequest::{ICMSRequest, ICMSRequestSpec, ICMSRequestStatus, InstanceStatus};
pub use miniservice::{MiniService, MiniServiceSpec};
pub use nvcfbackend::{
    AccountConfig, AgentConfig, BackendSpecFields, ClusterConfig, FeatureGate, GpuResource,
    IcmsConfig, ImageConfig, NVCFBackend, NVCFBackendSpec, NVCFBackendStatus,
};
pub use nvsnapfunctionstate::{NvSnapFunctionState, NvSnapFunctionStateSpec};
pub use storagerequest::{StorageRequest, StorageRequestSpec, storage_request_crd};

/// The finalizer NVIDIA's operator puts on an NVCFBackend (`pkg/operator/types/types.go`).
pub const BACKEND_FINALIZER: &str = "nvca-operator.finalizers.nvidia.io";
/// The finalizer on ICMSRequests (`pkg/nvca/backendk8scache.go`).
pub const ICMS_REQUEST_FINALIZER: &str = "nvca.finalizers.nvidia.io";
/// The finalizer on MiniServices (`internal/miniservice/reconcile.go`).
pub const MINISERVICE_FINALIZER: &str = "nvca.nvcf.nvidia.io/miniservice-finalizer";
/// The finalizer on StorageRequests (`pkg/storage/reconcile.go`).
pub const STORAGE_REQUEST_FINALIZER: &str = "nvca.nvcf.nvidia.io/storage-request-finalizer";

/// Every CRD, in the order `nvca-operator crds` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        NVCFBackend::crd(),
        ICMSRequest::crd(),
        MiniService::crd(),
        storage_request_crd(),
        NvSnapFunctionState::crd(),
    ]
}

/// The CRDs the operator applies at start, as NVIDIA's does (`setupCRDs`): all but
/// NVCFBackend, which the chart ships.
pub fn operator_applied() -> Vec<CustomResourceDefinition> {
    all()
        .into_iter()
        .filter(|crd| crd.spec.names.kind != "NVCFBackend")
        .collect()
}

/// The CRD the operator-applied ones are owned by: deleting it (the guide's last
/// uninstall step) takes them with it.
pub const NVCFBACKEND_CRD: &str = "nvcfbackends.nvcf.nvidia.io";

/// All CRDs as one multi-document YAML stream, as the chart ships it.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

/// The schema NVIDIA's CRDs serve: an object whose `spec` and `status` keep any field.
fn open_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
            "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
        }
    })
}

/// Give a generated custom resource type the open schema (kube's `schema = "manual"`).
macro_rules! open_schema_for {
    ($kind:ty) => {
        impl schemars::JsonSchema for $kind {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($kind).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                super::open_schema()
            }
        }
    };
}
use open_schema_for;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scopes_and_versions_are_nvidias() {
        let found: Vec<(String, String, String, Vec<String>)> = all()
            .iter()
            .map(|crd| {
                let versions = crd
                    .spec
                    .versions
                    .iter()
                    .map(|version| version.name.clone())
                    .collect();
                (
                    crd.metadata.name.clone().unwrap_or_default(),
                    crd.spec.names.kind.clone(),
                    crd.spec.scope.clone(),
                    versions,
                )
            })
            .collect();
        let expected = [
            (
                "nvcfbackends.nvcf.nvidia.io",
                "NVCFBackend",
                "Namespaced",
                vec!["v1"],
            ),
            (
                "icmsrequests.nvca.nvcf.nvidia.io",
                "ICMSRequest",
                "Namespaced",
                vec!["v2beta1"],
            ),
            (
                "miniservices.nvca.nvcf.nvidia.io",
                "MiniService",
                "Cluster",
                vec!["v1alpha1"],
            ),
            (
                "storagerequests.nvca.nvcf.nvidia.io",
                "StorageRequest",
                "Namespaced",
                vec!["v1", "v2beta1"],
            ),
            (
                "nvsnapfunctionstates.nvsnap.nvcf.nvidia.io",
                "NvSnapFunctionState",
                "Cluster",
                vec!["v1alpha1"],
            ),
        ];
        let expected: Vec<(String, String, String, Vec<String>)> = expected
            .into_iter()
            .map(|(name, kind, scope, versions)| {
                (
                    name.into(),
                    kind.into(),
                    scope.into(),
                    versions.into_iter().map(String::from).collect(),
                )
            })
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn every_version_serves_an_open_schema_with_a_status_subresource() {
        for crd in all() {
            for version in &crd.spec.versions {
                let schema = serde_json::to_value(&version.schema).unwrap();
                let properties = &schema["openAPIV3Schema"]["properties"];
                assert_eq!(
                    properties["spec"]["x-kubernetes-preserve-unknown-fields"], true,
                    "{}",
                    version.name
                );
                assert_eq!(
                    properties["status"]["x-kubernetes-preserve-unknown-fields"], true,
                    "{}",
                    version.name
                );
                assert!(
                    version
                        .subresources
                        .as_ref()
                        .and_then(|sub| sub.status.as_ref())
                        .is_some()
                );
            }
        }
    }

    #[test]
    fn printer_columns_and_short_names_match_nvidias() {
        let crds = all();
        let columns = |index: usize| -> Vec<(String, String)> {
            crds[index].spec.versions[0]
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|column| (column.name.clone(), column.json_path.clone()))
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(name, path)| (name.to_string(), path.to_string()))
                .collect()
        };
        assert_eq!(
            columns(0),
            pairs(&[
                ("Age", ".metadata.creationTimestamp"),
                ("Version", ".status.version"),
                ("Health", ".status.agentStatus")
            ])
        );
        assert_eq!(
            columns(1),
            pairs(&[
                ("action", ".spec.action"),
                ("status", ".status.requestStatus"),
                ("nca_id", ".spec.ncaId"),
                ("Age", ".metadata.creationTimestamp"),
                ("function_version_id", ".spec.functionVersionId"),
            ])
        );
        assert_eq!(
            columns(2),
            pairs(&[
                ("Age", ".metadata.creationTimestamp"),
                ("Phase", ".status.phase")
            ])
        );
        assert_eq!(crds[1].spec.names.short_names, Some(vec!["ir".to_string()]));
    }
}
