//! The cluster the tests register at sis-sim: self-hosted on-prem, with NVIDIA's dynamic
//! GPU discovery, named after the test.

use nvca::sis::types::{
    CloudProvider, ClusterCreationRequest, ClusterStatus, Gpu, InstanceType, RegistrationRequest,
};

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

/// The agent's registration of one H100 node (eight GPUs, one instance type).
// Included by path into binaries that register no agent (the queue tests, the bench).
#[allow(dead_code)]
pub fn h100_registration() -> RegistrationRequest {
    RegistrationRequest {
        status: ClusterStatus::Ready,
        k8s_version: "v1.37.2".into(),
        gpus: vec![Gpu {
            name: "H100".into(),
            capacity: 8,
            instance_types: vec![InstanceType {
                name: "NCP.GPU.H100_1x".into(),
                value: "NCP.GPU.H100".into(),
                description: "one H100".into(),
                default: true,
                gpu_count: 1,
                ..Default::default()
            }],
        }],
        allow_cluster_targeting: false,
        allow_task_cluster_creation_queues: true,
        nvca_version: "0.1.0".into(),
        jwks: None,
        oidc_issuer: None,
    }
}
