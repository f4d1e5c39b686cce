//! Step `AgentConfig`: ConfigMap `agent-config` in `nvca-system`, key `config.yaml`, the
//! agent's configuration ([`crate::kube::agent_config::AgentConfigFile`]) built from the
//! NVCFBackend as NVIDIA's `newAgentConfig` builds it.

use std::collections::BTreeMap;

use serde_json::json;

use k8s_openapi::api::core::v1::ConfigMap;

use super::webhook_certs::{KEY_CERT, KEY_KEY};
use super::{AGENT_PORT, BackendConfig, WEBHOOK_PORT};
use crate::kube::agent_config::{
    AgentConfigFile, AgentSection, CONFIGMAP, ClusterSection, KEY, MERGE_CONFIGMAP, WebhookSection,
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
        other: top_level(config),
    }
}

/// `authz`: where NVIDIA's agent reads its token from (`nvcaagent_selfmanaged.go`);
/// `workload`: the chart's env overrides, when there are any (NVIDIA's `newAgentConfig`).
fn top_level(config: &BackendConfig) -> serde_json::Map<String, serde_json::Value> {
    let mut other = serde_json::Map::from_iter([(
        "authz".to_string(),
        json!({
            "clusterIssuedTokenFilePath": crate::sis::token::DEFAULT_PROJECTED_TOKEN_PATH,
            "clusterIssuedTokenSource": "psat",
        }),
    )]);
    let mut workload = serde_json::Map::new();
    for (key, overrides) in [
        (
            "functionEnvOverrides",
            &config.settings.function_env_overrides,
        ),
        ("taskEnvOverrides", &config.settings.task_env_overrides),
    ] {
        if !overrides.is_empty() {
            workload.insert(key.to_string(), json!(overrides));
        }
    }
    if !workload.is_empty() {
        other.insert("workload".to_string(), workload.into());
    }
    other
}

/// What the agent reads: [`file`] with the chart's `agent-config-merge` laid over it
/// (NVIDIA's `EncodeConfig(cfg, mergeCfg)`).
pub fn rendered(config: &BackendConfig) -> Result<AgentConfigFile, serde_yaml::Error> {
    file(config).merged(&config.agent_config_merge)
}

/// Why `agent-config` cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The chart's merge does not fit the agent's config: worth retrying, since a
    /// `helm upgrade` fixes it.
    #[error(
        "ConfigMap {namespace}/{MERGE_CONFIGMAP} key {KEY} cannot be laid over the agent's config ({reason}); fix agentConfig.mergeConfig in the chart's values and run helm upgrade"
    )]
    Merge { namespace: String, reason: String },
    /// The config itself does not encode; no retry changes that.
    #[error("cannot write the agent's config.yaml: {0}")]
    Encode(String),
}

/// ConfigMap `agent-config` of [`rendered`].
pub fn rendered_configmap(config: &BackendConfig) -> Result<ConfigMap, RenderError> {
    let file = rendered(config).map_err(|error| RenderError::Merge {
        namespace: config.settings.operator_namespace.clone(),
        reason: error.to_string(),
    })?;
    configmap(config, &file).map_err(|error| RenderError::Encode(error.to_string()))
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
            [
                "DynamicGPUDiscovery",
                "GXCache",
                "KAIScheduler",
                "SelfHosted"
            ]
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
        assert!(!read.other.contains_key("workload"), "{text}");
    }

    #[test]
    fn the_charts_merge_config_is_laid_over_and_rolls_the_agent() {
        let plain = config();
        let mut merged = config();
        merged.agent_config_merge =
            "cluster:\n  validationPolicy:\n    name: Unrestricted\n".to_string();
        let configmap = rendered_configmap(&merged).unwrap();
        let read = AgentConfigFile::parse(&configmap.data.unwrap()["config.yaml"]).unwrap();
        assert_eq!(
            read.cluster.other["validationPolicy"]["name"],
            "Unrestricted"
        );
        assert_eq!(read.cluster.id, "c-1");
        // The agent's pod carries the digest of what it reads: a new merge restarts it.
        assert_ne!(
            super::super::deployment::config_digest(&plain),
            super::super::deployment::config_digest(&merged)
        );
        merged.agent_config_merge = "cluster: [".to_string();
        let Err(error @ RenderError::Merge { .. }) = rendered_configmap(&merged) else {
            panic!("a merge that is not YAML must be retried, naming the value");
        };
        let message = error.to_string();
        assert!(
            message.contains("agent-config-merge") && message.contains("agentConfig.mergeConfig"),
            "{message}"
        );
    }

    #[test]
    fn the_charts_env_overrides_reach_the_agent_as_nvidias_workload_keys() {
        let mut config = config();
        config.settings.function_env_overrides =
            BTreeMap::from([("BYOO_OTEL_COLLECTOR_CONTAINER".into(), "r/c:1".into())]);
        config.settings.task_env_overrides = BTreeMap::from([("A".into(), "b".into())]);
        let configmap = configmap(&config, &file(&config)).unwrap();
        let read = AgentConfigFile::parse(&configmap.data.unwrap()["config.yaml"]).unwrap();
        assert_eq!(
            read.other["workload"],
            json!({
                "functionEnvOverrides": {"BYOO_OTEL_COLLECTOR_CONTAINER": "r/c:1"},
                "taskEnvOverrides": {"A": "b"},
            })
        );
    }
}
