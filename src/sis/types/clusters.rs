//! Cluster management (`/v1/accounts/{ncaId}/clusters`).

use super::*;

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
