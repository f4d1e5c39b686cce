//! The simulator's memory: clusters, functions, deployments, requests and the instances
//! clusters reported, and the bearer tokens it issued. Serialisable, so `--state-file` can
//! keep it across restarts (written by rename after every change).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A function as NVCF knows it; defined beside what its options add.
pub use super::launch::FunctionRecord;
use crate::sis::types::*;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimState {
    pub clusters: BTreeMap<String, ClusterRecord>,
    pub functions: BTreeMap<String, FunctionRecord>,
    pub deployments: BTreeMap<String, DeploymentRecord>,
    pub requests: BTreeMap<String, RequestRecord>,
    pub tokens: BTreeMap<String, TokenRecord>,
}

/// A cluster and everything it reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub cluster_id: String,
    pub cluster_group_id: String,
    pub nca_id: String,
    pub creation: ClusterCreationRequest,
    /// The last registration body.
    pub registration: Option<RegistrationRequest>,
    pub registrations: u32,
    /// The last heartbeat body, as received.
    pub last_heartbeat: Option<serde_json::Value>,
    pub heartbeats: u32,
    /// What the next heartbeats are answered.
    pub heartbeat_answer: HeartbeatAction,
    pub jwks: Option<String>,
    pub oidc_issuer: Option<String>,
}

impl ClusterRecord {
    pub fn dynamic_gpu_discovery(&self) -> bool {
        self.creation
            .capabilities
            .iter()
            .any(|c| c == "DynamicGPUDiscovery")
    }

    /// The cluster as `GET /v1/accounts/{ncaId}/clusters` shows it.
    pub fn view(&self) -> serde_json::Value {
        let c = &self.creation;
        serde_json::json!({
            "clusterId": self.cluster_id,
            "clusterGroupId": self.cluster_group_id,
            "clusterName": c.cluster_name,
            "clusterGroupName": c.cluster_group_name,
            "clusterDescription": c.cluster_description,
            "ncaId": self.nca_id,
            "authorizedNCAIds": [],
            "cloudProvider": c.cloud_provider,
            "region": c.region,
            "capabilities": c.capabilities,
            "attributes": c.attributes,
            "customAttributes": [],
            "nvcaVersion": c.nvca_version,
            "status": self.registration.as_ref().map(|r| r.status.as_str()).unwrap_or("NOT_READY"),
            "clusterSource": c.cluster_source.clone().unwrap_or_else(|| "ngc-managed".into()),
            "k8sVersion": self.registration.as_ref().map(|r| r.k8s_version.clone()),
            "gpus": self.registration.as_ref().map(|r| r.gpus.clone()).unwrap_or_default(),
            "gpuUsage": self.last_heartbeat.as_ref().and_then(|h| h.get("gpuUsage").cloned()),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub deployment_id: String,
    pub function_id: String,
    pub function_version_id: String,
    pub cluster_id: String,
    pub gpu: String,
    pub instance_type: String,
    pub instance_type_name: String,
    pub gpu_count: u32,
    /// Instances asked for.
    pub target: u32,
    pub request_ids: Vec<String>,
    pub undeployed: bool,
}

/// One instance request (a "SIR"), as SIS tracks it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub request_id: String,
    pub deployment_id: Option<String>,
    pub cluster_id: String,
    pub nca_id: String,
    pub action: RequestAction,
    pub gpu: String,
    pub instance_type: String,
    pub instance_count: u32,
    pub state: RequestState,
    pub status_code: RequestStatusCode,
    pub batches: Vec<BatchRecord>,
    pub instances: BTreeMap<String, InstanceRecord>,
    /// The creation message as published.
    pub message: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecord {
    pub message_batch_id: String,
    /// Set by an acknowledgement.
    pub acked_instances: Option<u32>,
    pub status: Option<RequestStatusCode>,
}

/// The last report of one instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub instance_state: InstanceState,
    pub status: InstanceStatus,
    pub request_state: RequestState,
    pub action: Option<RequestAction>,
    pub termination_cause: Option<String>,
    pub system_failure: Option<String>,
    pub health_info: HealthInfo,
    /// The last `instanceIps` sent (`[hostIP, podIP]`), empty when none.
    #[serde(default)]
    pub instance_ips: Vec<String>,
    pub updates: u32,
    /// Every `instanceState` reported, in order (tests check what SIS heard, and when).
    #[serde(default)]
    pub history: Vec<InstanceState>,
}

#[derive(Default, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub authorities: Vec<String>,
    /// When set, agent calls must name this cluster (SIS checks the token's client
    /// against the path's cluster ID).
    pub cluster_id: Option<String>,
    pub revoked: bool,
    /// A verified agent PSAT (never stored): its `iss`, which the register, heartbeat,
    /// credentials and JWKS endpoints compare with the cluster's registered issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psat_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub psat: bool,
}

impl SimState {
    pub fn load(path: &Path) -> std::io::Result<SimState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("state file {} does not parse: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SimState::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)
    }

    /// The active instances of a cluster (`starting`, `running`, `shutting-down`).
    pub fn active_instances(&self, cluster_id: &str) -> Vec<InstanceInfo> {
        let mut out = Vec::new();
        for request in self.requests.values() {
            if request.cluster_id != cluster_id {
                continue;
            }
            for (instance_id, instance) in &request.instances {
                if instance.instance_state != InstanceState::Terminated {
                    out.push(InstanceInfo {
                        instance_id: instance_id.clone(),
                        request_id: request.request_id.clone(),
                        instance_state: instance.instance_state.as_str().to_string(),
                    });
                }
            }
        }
        out
    }
}

/// A random version-4 UUID, as SIS uses for every ID.
pub fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_v4_shape() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(id, uuid_v4());
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = SimState::default();
        state.tokens.insert(
            "t".into(),
            TokenRecord {
                authorities: vec!["nvca-cluster".into()],
                cluster_id: None,
                revoked: false,
                ..TokenRecord::default()
            },
        );
        state.save(&path).unwrap();
        let loaded = SimState::load(&path).unwrap();
        assert_eq!(loaded.tokens.len(), 1);
        assert!(
            SimState::load(&dir.path().join("absent"))
                .unwrap()
                .tokens
                .is_empty()
        );
    }
}
