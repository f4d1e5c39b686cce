//! The agent's configuration file: key `config.yaml` of ConfigMap `agent-config` in
//! `nvca-system`, mounted at `/var/run/nvca/config.yaml`. The operator writes it; the
//! agent (`nvca-agent run --config …`) reads it. This type is the contract between them.
//!
//! The sections and the spellings that matter to tooling are NVIDIA's (`cluster`, `agent`,
//! `webhook`; `agent.icmsURL`, `agent.NATSURL`, `agent.featureFlags`,
//! `agent.maintenanceMode`, from `N/pkg/operator/reconcile/nvcaagent_reconcile.go`
//! `newAgentConfig` and `N/pkg/operator/cleanup/cleanup.go`), so NVIDIA's drain patch and
//! a human reading the ConfigMap find the same keys. Keys nvca does not know are kept
//! (`other`), so a merged-in `agent-config-merge` survives a read-modify-write.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The name of the ConfigMap and of its key.
pub const CONFIGMAP: &str = "agent-config";
pub const KEY: &str = "config.yaml";
/// Where the agent's Deployment mounts the ConfigMap, and the file the agent reads.
pub const MOUNT_DIR: &str = "/var/run/nvca";
pub const PATH: &str = "/var/run/nvca/config.yaml";
/// The feature flag NVIDIA's clean-up adds to drain the agent.
pub const DRAIN_FLAG: &str = "CordonAndDrainMaintenance";
/// The feature flag that stops new work and keeps running workloads.
pub const CORDON_FLAG: &str = "CordonMaintenance";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfigFile {
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub webhook: WebhookSection,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Who the cluster is at SIS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSection {
    #[serde(rename = "ncaID", default)]
    pub nca_id: String,
    /// The cluster ID SIS gave at registration.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "groupID", default)]
    pub group_id: String,
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub cloud_provider: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// How the agent runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSection {
    #[serde(default)]
    pub log_level: String,
    /// Feature flags, e.g. `DynamicGPUDiscovery`, `KAIScheduler`, and during a drain
    /// `CordonAndDrainMaintenance`.
    #[serde(default)]
    pub feature_flags: Vec<String>,
    /// `CordonMaintenance` or `CordonAndDrainMaintenance`; absent when not in maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_mode: Option<String>,
    /// SIS (ICMS) base URL.
    #[serde(rename = "icmsURL", default)]
    pub icms_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icms_host_header_override: Option<String>,
    #[serde(rename = "NATSURL", default)]
    pub nats_url: String,
    #[serde(
        rename = "NATSHostOverride",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub nats_host_override: Option<String>,
    /// The token SIS accepts: the projected ServiceAccount token with audience
    /// `nvcf-icms:<clusterID>`.
    #[serde(default)]
    pub token_file: String,
    /// `:8000`: health, version and metrics.
    #[serde(default)]
    pub svc_address: String,
    /// Loopback admin endpoint (machine snapshot for `nvca-state`).
    #[serde(default)]
    pub admin_addr: String,
    #[serde(default)]
    pub system_namespace: String,
    /// Where function workloads run.
    #[serde(default)]
    pub requests_namespace: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The admission webhook server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSection {
    /// `:8443`.
    #[serde(default)]
    pub svc_address: String,
    #[serde(default)]
    pub tls_cert_file: String,
    #[serde(default)]
    pub tls_key_file: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl AgentConfigFile {
    pub fn parse(text: &str) -> Result<AgentConfigFile, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// Put the agent into the maintenance of feature flag `flag`, as NVIDIA's drain does
    /// (`N/pkg/operator/cleanup/cleanup.go` `PatchNVCAMaintenanceMode`): the flag added
    /// once, and `agent.maintenanceMode` set to the mode's own name
    /// (`N/pkg/types/types.go`: `CordonOnly`, `CordonAndDrain`), which NVIDIA's agent
    /// requires there.
    pub fn set_maintenance(&mut self, flag: &str) {
        let mode = match flag {
            DRAIN_FLAG => "CordonAndDrain",
            CORDON_FLAG => "CordonOnly",
            other => other,
        };
        self.agent.maintenance_mode = Some(mode.to_string());
        if !self.agent.feature_flags.iter().any(|f| f == flag) {
            self.agent.feature_flags.push(flag.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_keys_it_does_not_name() {
        let text = "cluster:\n  id: c-1\n  validationPolicy:\n    name: Unrestricted\n\
                    agent:\n  icmsURL: http://sis:8080\n  NATSURL: nats://nats:4222\n  featureFlags: [KAIScheduler]\n\
                    environment: production\n";
        let mut file = AgentConfigFile::parse(text).unwrap();
        assert_eq!(file.agent.nats_url, "nats://nats:4222");
        file.set_maintenance(DRAIN_FLAG);
        file.set_maintenance(DRAIN_FLAG);
        let again = AgentConfigFile::parse(&file.to_yaml().unwrap()).unwrap();
        assert_eq!(again, file);
        assert_eq!(
            again.agent.feature_flags,
            ["KAIScheduler", "CordonAndDrainMaintenance"]
        );
        assert_eq!(
            again.agent.maintenance_mode.as_deref(),
            Some("CordonAndDrain")
        );
        assert_eq!(
            again.cluster.other["validationPolicy"]["name"],
            "Unrestricted"
        );
        assert_eq!(again.other["environment"], "production");
        let yaml = file.to_yaml().unwrap();
        assert!(
            yaml.contains("NATSURL:") && yaml.contains("icmsURL:"),
            "{yaml}"
        );
    }
}
