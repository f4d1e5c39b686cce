//! Step `AgentConfig`: ConfigMap `agent-config` in `nvca-system`, key `config.yaml`, the
//! agent's configuration ([`crate::kube::agent_config::AgentConfigFile`]) built from the
//! NVCFBackend as NVIDIA's `newAgentConfig` builds it.

use std::collections::BTreeMap;

use serde_json::json;

use k8s_openapi::api::core::v1::ConfigMap;

use super::deployment::TOKEN_PATH;
use super::webhook_certs::{KEY_CERT, KEY_KEY};
use super::{AGENT_PORT, BackendConfig, WEBHOOK_PORT};
use crate::kube::agent_config::{
    AgentConfigFile, AgentSection, CONFIGMAP, ClusterSection, KEY, WebhookSection,
};

/// Where the webhook container finds its serving certificate (NVIDIA's `SrvCertsMountDir`).
pub const SERVER_CERTS_DIR: &str = "/certs/server";
/// The agent's admin endpoint, loopback only.
pub const AGENT_ADMIN_ADDR: &str = "127.0.0.1:8001";

/// The agent's configuration for `config`, not in maintenance.
pub fn file(config: &BackendConfig) -> AgentConfigFile {
    AgentConfigFile {
        cluster: ClusterSection {
            nca_id: config.nca_id.clone(),
            id: config.cluster_id.clone(),
            name: config.cluster_name.clone(),
            group_id: config.cluster_group_id.clone(),
            group_name: config.cluster_group_name.clone(),
            region: config.region.clone(),
            cloud_provider: config.cloud_provider.clone(),
            attributes: config.attributes.clone(),
            ..ClusterSection::default()
        },
        agent: AgentSection {
            log_level: config.settings.log_level.clone(),
            feature_flags: config.feature_flags.clone(),
            maintenance_mode: None,
            icms_url: config.icms_url.clone(),
            icms_host_header_override: config.icms_host_override.clone(),
            nats_url: config.nats_url.clone(),
            nats_host_override: config.nats_host_override.clone(),
            svc_address: format!(":{AGENT_PORT}"),
            admin_addr: AGENT_ADMIN_ADDR.to_string(),
            system_namespace: config.system_namespace.clone(),
            requests_namespace: config.requests_namespace.clone(),
            other: serde_json::Map::from_iter([
                (
                    "operatorVersion".to_string(),
                    json!(env!("CARGO_PKG_VERSION")),
                ),
                // NVIDIA's agent refuses to start without them ("namespace labels are
                // required"); its operator writes its app labels (`newAgentConfig`).
                ("namespaceLabels".to_string(), json!(config.app_labels())),
            ]),
        },
        webhook: WebhookSection {
            svc_address: format!(":{WEBHOOK_PORT}"),
            tls_cert_file: format!("{SERVER_CERTS_DIR}/{KEY_CERT}"),
            tls_key_file: format!("{SERVER_CERTS_DIR}/{KEY_KEY}"),
            ..WebhookSection::default()
        },
        // Where NVIDIA's agent reads its token from (`authz`, `nvcaagent_selfmanaged.go`).
        other: serde_json::Map::from_iter([(
            "authz".to_string(),
            json!({
                "clusterIssuedTokenFilePath": TOKEN_PATH,
                "clusterIssuedTokenSource": "psat",
            }),
        )]),
    }
}

/// ConfigMap `agent-config` holding `file` as YAML.
pub fn configmap(
    config: &BackendConfig,
    file: &AgentConfigFile,
) -> Result<ConfigMap, serde_yaml::Error> {
    Ok(ConfigMap {
        metadata: config.system_meta(CONFIGMAP),
        data: Some(BTreeMap::from([(KEY.to_string(), file.to_yaml()?)])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    #[test]
    fn the_agent_reads_back_what_the_operator_writes() {
        let config = config();
        let configmap = configmap(&config, &file(&config)).unwrap();
        assert_eq!(configmap.metadata.name.as_deref(), Some("agent-config"));
        assert_eq!(configmap.metadata.namespace.as_deref(), Some("nvca-system"));
        let text = &configmap.data.unwrap()["config.yaml"];
        let read = AgentConfigFile::parse(text).unwrap();
        assert_eq!(read.cluster.id, "c-1");
        assert_eq!(read.cluster.nca_id, "nca-1");
        assert_eq!(read.agent.icms_url, "http://sis.sis.svc.cluster.local:8080");
        assert_eq!(
            read.agent.nats_url,
            "nats://nats.nats-system.svc.cluster.local:4222"
        );
        assert_eq!(
            read.agent.feature_flags,
            ["DynamicGPUDiscovery", "SelfHosted", "KAIScheduler"]
        );
        assert_eq!(read.agent.maintenance_mode, None);
        assert_eq!(
            read.other["authz"]["clusterIssuedTokenFilePath"],
            "/var/run/secrets/tokens/token"
        );
        assert_eq!(
            read.agent.other["operatorVersion"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            read.agent.other["namespaceLabels"],
            json!({
                "app.kubernetes.io/instance": "nvca",
                "app.kubernetes.io/managed-by": "nvca-operator",
                "app.kubernetes.io/name": "nvca",
            })
        );
        assert!(
            text.contains("icmsurl:") && text.contains("ncaid:"),
            "{text}"
        );
        assert_eq!(read.webhook.tls_cert_file, "/certs/server/tls.crt");
    }
}
