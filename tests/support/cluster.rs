//! The cluster the tests register at sis-sim: self-hosted on-prem, with NVIDIA's dynamic
//! GPU discovery, named after the test.

use nvca::sis::types::{CloudProvider, ClusterCreationRequest};

/// A creation request for cluster (and cluster group) `name` of account `nca`.
pub fn on_prem_cluster(name: &str, nca: &str, region: &str) -> ClusterCreationRequest {
    ClusterCreationRequest {
        cluster_name: name.to_string(),
        cluster_group_name: name.to_string(),
        nca_id: nca.to_string(),
        cloud_provider: Some(CloudProvider::OnPrem),
        region: region.to_string(),
        nvca_version: "0.0.0".to_string(),
        capabilities: vec!["DynamicGPUDiscovery".to_string()],
        ..ClusterCreationRequest::default()
    }
}
