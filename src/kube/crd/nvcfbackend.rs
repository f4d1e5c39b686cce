//! `NVCFBackend` (`nvcf.nvidia.io/v1`, namespaced): one per cluster, in the operator's
//! namespace. Field names as NVIDIA's `pkg/apis/nvcf/v1/nvcfbackend_types.go`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::open_schema_for;

/// The spec: NVIDIA's spec fields inline, and `overrides` merged over them.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nvcf.nvidia.io",
    version = "v1",
    kind = "NVCFBackend",
    plural = "nvcfbackends",
    namespaced,
    status = "NVCFBackendStatus",
    schema = "manual",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Age of this resource"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Current version of the backend"
    ),
    printcolumn(
        name = "Health",
        type_ = "string",
        json_path = ".status.agentStatus",
        description = "Health status of the backend"
    )
)]
pub struct NVCFBackendSpec {
    #[serde(flatten)]
    pub fields: BackendSpecFields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BackendSpecFields>,
}

open_schema_for!(NVCFBackend);

/// NVIDIA's `NVCFBackendSpecT`: the fields nvca uses, and the rest kept as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpecFields {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvca_image_config: Option<ImageConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_config: Option<AccountConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_config: Option<ClusterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_gate: Option<FeatureGate>,
    #[serde(
        default,
        rename = "icmsConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub icms_config: Option<IcmsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
    /// `ngc-managed`, `helm-managed` or `self-hosted` (NVIDIA parses `self-managed` as the latter).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_source: String,
    /// Everything else NVIDIA's operator may have written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub pull_policy: String,
    #[serde(default)]
    pub pull_secret_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountConfig {
    #[serde(default, rename = "ncaID")]
    pub nca_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    #[serde(
        default,
        rename = "clusterID",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_id: String,
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub cluster_group_name: String,
    #[serde(
        default,
        rename = "clusterGroupID",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_group_id: String,
    #[serde(default)]
    pub cloud_provider: String,
    #[serde(default)]
    pub region: String,
    /// `{dynamic: {}}` or `{static: {...}}`, kept as NVIDIA writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_discovery: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requests_namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureGate {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IcmsConfig {
    #[serde(default, rename = "icmsServiceURL")]
    pub icms_service_url: String,
    #[serde(
        default,
        rename = "icmsServiceHostHeaderOverride",
        skip_serializing_if = "String::is_empty"
    )]
    pub icms_service_host_header_override: String,
    #[serde(default, rename = "tokenURL")]
    pub token_url: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    #[serde(default, rename = "natsURL", skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_host_override: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector_value: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_image_pull_secret: bool,
    /// `[{name}]`, as `corev1.LocalObjectReference`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_image_pull_secrets: Vec<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub override_environment_vars: BTreeMap<String, String>,
    /// The agent pod's tolerations (`corev1.Toleration`), kept as written so that a bad
    /// one is named, not a reason the whole NVCFBackend cannot be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Status as NVIDIA's operator writes it, plus nvca's conditions beside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NVCFBackendStatus {
    /// The applied spec's version (NVIDIA copies the whole applied spec here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The agent's `/healthz` status, verbatim: lowercase `healthy` or `unhealthy`, or
    /// `Unknown` when the agent cannot be reached.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_status: String,
    /// Absent, `{}` or `null` (how server-side apply stores an empty map): no GPUs.
    #[serde(
        default,
        rename = "gpuUsage",
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub gpu_usage: BTreeMap<String, GpuResource>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kubernetes_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_agent_status: Option<Time>,
    /// nvca's addition: one condition per step of the backend machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// nvca's addition: the generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// GPUs of one type: NVIDIA writes `available` beside the two it stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuResource {
    #[serde(default)]
    pub available: u64,
    #[serde(default)]
    pub capacity: u64,
    #[serde(default)]
    pub allocated: u64,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NVCFBackend the way NVIDIA's operator writes one, with fields nvca does not name.
    const NVIDIAS: &str = r#"{
        "apiVersion": "nvcf.nvidia.io/v1", "kind": "NVCFBackend",
        "metadata": {"name": "nvcf-default", "namespace": "nvca-operator",
                     "finalizers": ["nvca-operator.finalizers.nvidia.io"]},
        "spec": {
            "version": "3.0.4",
            "nvcaImageConfig": {"repository": "nvcr.io/nvidia/nvcf-byoc/nvca", "tag": "3.0.4", "pullPolicy": "IfNotPresent", "pullSecretName": ""},
            "accountConfig": {"ncaID": "nca-1"},
            "clusterConfig": {"clusterID": "c-1", "clusterName": "nvcf-default", "clusterGroupName": "nvcf-default",
                              "clusterGroupID": "g-1", "cloudProvider": "NCP", "region": "us-west-1",
                              "gpuDiscovery": {"dynamic": {}}, "nvsnap": {"integrationEnabled": false}},
            "featureGate": {"values": ["DynamicGPUDiscovery", "SelfHosted"], "otelConfig": {"exporter": "none"}},
            "icmsConfig": {"icmsServiceURL": "http://sis:8080", "tokenURL": ""},
            "webhookConfig": {"listenPort": 8443},
            "clusterSource": "self-hosted",
            "overrides": {"featureGate": {"values": ["KAIScheduler"]}}
        },
        "status": {"version": "3.0.4", "agentStatus": "healthy",
                   "gpuUsage": {"H100": {"available": 6, "capacity": 8, "allocated": 2}},
                   "kubernetesVersion": "v1.37.2", "lastUpdated": "2026-11-25T10:00:00Z",
                   "lastUpdatedAgentStatus": null, "clusterConfig": {"clusterName": "nvcf-default"}}
    }"#;

    #[test]
    fn reads_an_object_written_by_nvidias_operator() {
        let backend: NVCFBackend = serde_json::from_str(NVIDIAS).unwrap();
        let cluster = backend.spec.fields.cluster_config.as_ref().unwrap();
        assert_eq!(
            (
                cluster.cluster_id.as_str(),
                cluster.cluster_group_id.as_str()
            ),
            ("c-1", "g-1")
        );
        assert_eq!(
            backend.spec.fields.account_config.as_ref().unwrap().nca_id,
            "nca-1"
        );
        assert_eq!(
            backend
                .spec
                .overrides
                .as_ref()
                .unwrap()
                .feature_gate
                .as_ref()
                .unwrap()
                .values,
            vec!["KAIScheduler"]
        );
        let status = backend.status.as_ref().unwrap();
        assert_eq!(status.agent_status, "healthy");
        assert_eq!(
            status.gpu_usage["H100"],
            GpuResource {
                available: 6,
                capacity: 8,
                allocated: 2
            }
        );
    }

    #[test]
    fn writing_it_back_keeps_every_field_nvca_does_not_name() {
        let original: Value = serde_json::from_str(NVIDIAS).unwrap();
        let backend: NVCFBackend = serde_json::from_str(NVIDIAS).unwrap();
        let written = serde_json::to_value(&backend).unwrap();
        assert_eq!(
            written["spec"]["webhookConfig"],
            original["spec"]["webhookConfig"]
        );
        assert_eq!(
            written["spec"]["clusterConfig"]["nvsnap"],
            original["spec"]["clusterConfig"]["nvsnap"]
        );
        assert_eq!(
            written["spec"]["featureGate"],
            original["spec"]["featureGate"]
        );
        assert_eq!(
            written["status"]["clusterConfig"],
            original["status"]["clusterConfig"]
        );
        assert_eq!(written["spec"], original["spec"]);
    }

    #[test]
    fn a_status_whose_gpu_usage_server_side_apply_stored_as_null_reads_as_none() {
        let status: NVCFBackendStatus =
            serde_json::from_value(serde_json::json!({"agentStatus": "Unknown", "gpuUsage": null}))
                .unwrap();
        assert!(status.gpu_usage.is_empty());
        assert_eq!(status.agent_status, "Unknown");
    }
}
