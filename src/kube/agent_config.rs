//! The agent's configuration file: key `config.yaml` of ConfigMap `agent-config` in
//! `nvca-system`, mounted at `/var/run/nvca/config.yaml`. The operator writes it; the
//! agent (`nvca --config …`) reads it. This type is the contract between them.
//!
//! The sections and keys are NVIDIA's, spelled as NVIDIA's operator writes them
//! (`L/config.go` `EncodeConfig`, `L` = `src/libraries/go/lib/pkg/types/nvca/config`): a
//! Go field name in capitals is written in lower case (`agent.icmsurl`, `cluster.ncaid`),
//! a mixed one keeps its acronyms (`cluster.groupID`, `agent.staticGPUCapacity`), tagged
//! ones are verbatim (`agent.NATSURL`). NVIDIA's agent reads keys case-insensitively
//! (viper), so [`AgentConfigFile::parse`] does too: every key it knows is matched
//! whatever its case and read under NVIDIA's spelling ([`KNOWN_KEYS`]); `max_running_timeout`
//! (other separators) is no match, as in NVIDIA's. [`AgentConfigFile::parse_with_env`]
//! lays NVIDIA's `NVCA_<SECTION>_<KEY>` environment overrides over the file
//! (`L/autobind_env.go`): the drain patch of `N/pkg/operator/cleanup/cleanup.go` and a
//! human reading the ConfigMap find the same keys. Keys nvca does not know are kept
//! (`other`), so a merged-in `agent-config-merge` survives a read-modify-write.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The name of the ConfigMap and of its key.
pub const CONFIGMAP: &str = "agent-config";
pub const KEY: &str = "config.yaml";
/// The chart's `agentConfig.mergeConfig`, in the operator's namespace under [`KEY`]
/// (NVIDIA's `agentConfigMergeConfigMapName`): laid over what the operator writes.
pub const MERGE_CONFIGMAP: &str = "agent-config-merge";
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
    #[serde(rename = "ncaid", default)]
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
    /// `CordonAndDrainMaintenance`. Not written when empty, as NVIDIA's encoder omits it:
    /// NVIDIA's drain patch inserts its flag after a `featureFlags:` line and would give
    /// `featureFlags: []` a second key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_flags: Vec<String>,
    /// `CordonMaintenance` or `CordonAndDrainMaintenance`; absent when not in maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_mode: Option<String>,
    /// SIS (ICMS) base URL.
    #[serde(rename = "icmsurl", default)]
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

/// Every key nvca reads, per section, in NVIDIA's spelling (`L/types.go` through
/// `EncodeConfig`); a key of the file that matches one of them whatever its case is read
/// under this spelling.
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "cluster",
            "agent",
            "webhook",
            "authz",
            "workload",
            "environment",
        ],
    ),
    (
        "cluster",
        &[
            "id",
            "name",
            "ncaid",
            "groupID",
            "groupName",
            "region",
            "cloudProvider",
            "attributes",
            // ReVal's policy for Helm functions, which are refused per request, naming why.
            "validationPolicy",
        ],
    ),
    (
        "agent",
        &[
            "logLevel",
            "featureFlags",
            "maintenanceMode",
            "icmsurl",
            "icmsHostHeaderOverride",
            "NATSURL",
            "NATSHostOverride",
            "svcAddress",
            "adminAddr",
            "systemNamespace",
            "requestsNamespace",
            "heartbeatInterval",
            "credRenewInterval",
            "skipSelfDestruct",
            "kubernetesVersionOverride",
            "operatorVersion",
            // NVIDIA's agent labels the namespaces of Helm functions with them; nvca
            // refuses Helm functions per request, naming why.
            "namespaceLabels",
            "staticGPUCapacity",
            // nvca's own keys.
            "registrationDiffInterval",
            "jwksInterval",
            "inventoryQuiet",
            "inventoryMaxDelay",
            "gpuManualInstanceConfigB64",
        ],
    ),
    (
        "webhook",
        &["svcAddress", "tlsCertFile", "tlsKeyFile", "tlsSecretName"],
    ),
    (
        "authz",
        &[
            "clusterIssuedTokenFilePath",
            "clusterIssuedTokenSource",
            "selfManagedVaultSecretsJSONPath",
        ],
    ),
    (
        "workload",
        &[
            "maxRunningTimeout",
            "maxImagePullErrorThreshold",
            "podScheduledThreshold",
            "podLaunchThresholdSecondsOnFailedRestarts",
            "podLaunchThresholdMinutesOnInitFailure",
            "workerStartupTimeout",
            "workerDegradationTimeout",
            "functionEnvOverrides",
            "tolerations",
        ],
    ),
];

/// Keys whose value is a list; an environment override gives them comma-separated.
const LIST_KEYS: [&str; 2] = ["featureFlags", "attributes"];
/// Keys whose value is a map: no environment override (NVIDIA's agent fails on one).
const MAP_KEYS: [&str; 2] = ["functionEnvOverrides", "tolerations"];

/// NVIDIA's environment variable for `section.key`: `NVCA_`, then each name split where
/// its case changes (`L/autobind_env.go` `joinByCamelCase`), in capitals:
/// `agent.icmsurl` → `NVCA_AGENT_ICMSURL`, `agent.NATSHostOverride` →
/// `NVCA_AGENT_NATS_HOST_OVERRIDE`, `cluster.groupID` → `NVCA_CLUSTER_GROUP_ID`.
pub fn env_name(section: &str, key: &str) -> String {
    let mut name = String::from("NVCA");
    for part in [section, key].into_iter().filter(|part| !part.is_empty()) {
        let chars: Vec<char> = part.chars().collect();
        name.push('_');
        for (i, c) in chars.iter().enumerate() {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let boundary = c.is_uppercase()
                && prev.is_some_and(|p| p.is_lowercase() || (p.is_uppercase() && next_lower));
            if boundary {
                name.push('_');
            }
            name.extend(c.to_uppercase());
        }
    }
    name
}

/// Rename each key [`KNOWN_KEYS`] knows, at the top and in each section, to its spelling.
fn canonical_keys(value: &mut serde_yaml::Value) {
    let serde_yaml::Value::Mapping(top) = value else {
        return;
    };
    rename_known(top, "");
    for (section, _) in KNOWN_KEYS.iter().filter(|(section, _)| !section.is_empty()) {
        if let Some(serde_yaml::Value::Mapping(inner)) = top.get_mut(*section) {
            rename_known(inner, section);
        }
    }
}

fn rename_known(map: &mut serde_yaml::Mapping, section: &str) {
    let Some((_, known)) = KNOWN_KEYS.iter().find(|(name, _)| *name == section) else {
        return;
    };
    let entries = std::mem::take(map);
    for (key, value) in entries {
        let key = match key
            .as_str()
            .and_then(|text| known.iter().find(|k| k.eq_ignore_ascii_case(text)).copied())
        {
            Some(spelling) => serde_yaml::Value::String(spelling.to_string()),
            None => key,
        };
        map.insert(key, value);
    }
}

/// Lay each set `NVCA_*` variable over its key (an empty one counts as unset, as in
/// NVIDIA's viper); lists are comma-separated.
fn apply_env(value: &mut serde_yaml::Value, env: &dyn Fn(&str) -> Option<String>) {
    if !value.is_mapping() {
        *value = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
    }
    let serde_yaml::Value::Mapping(top) = value else {
        return;
    };
    for (section, keys) in KNOWN_KEYS.iter().filter(|(section, _)| !section.is_empty()) {
        for key in keys.iter().filter(|key| !MAP_KEYS.contains(key)) {
            let Some(set) = env(&env_name(section, key)).filter(|set| !set.is_empty()) else {
                continue;
            };
            let new = if LIST_KEYS.contains(key) {
                serde_yaml::Value::Sequence(
                    set.split(',')
                        .map(|item| serde_yaml::Value::String(item.trim().to_string()))
                        .collect(),
                )
            } else {
                serde_yaml::Value::String(set)
            };
            let inner = top
                .entry(serde_yaml::Value::String(section.to_string()))
                .or_insert_with(|| serde_yaml::Value::Mapping(serde_yaml::Mapping::new()));
            if let serde_yaml::Value::Mapping(inner) = inner {
                inner.insert(serde_yaml::Value::String(key.to_string()), new);
            }
        }
    }
}

/// Keys of the file nvca does not read, as `section.key` (never their values, which may
/// hold secrets): named once at start so nothing NVIDIA's operator writes is dropped
/// without a word. The `webhook` section is the webhook's, read by `webhook-server`.
pub fn unread_keys(file: &AgentConfigFile) -> Vec<String> {
    let known = |section: &str, key: &str| {
        KNOWN_KEYS
            .iter()
            .any(|(name, keys)| *name == section && keys.contains(&key))
    };
    let mut unread = Vec::new();
    for (section, map) in [
        ("cluster", &file.cluster.other),
        ("agent", &file.agent.other),
    ] {
        unread.extend(
            map.keys()
                .filter(|key| !known(section, key))
                .map(|key| format!("{section}.{key}")),
        );
    }
    for (key, value) in &file.other {
        match (key.as_str(), value) {
            (section @ ("authz" | "workload"), Value::Object(inner)) => unread.extend(
                inner
                    .keys()
                    .filter(|inner| !known(section, inner))
                    .map(|inner| format!("{section}.{inner}")),
            ),
            (section, Value::Object(inner)) => {
                unread.extend(inner.keys().map(|inner| format!("{section}.{inner}")))
            }
            (key, _) => unread.push(key.to_string()),
        }
    }
    unread
}

impl AgentConfigFile {
    /// The file, its keys matched as NVIDIA's agent matches them.
    pub fn parse(text: &str) -> Result<AgentConfigFile, serde_yaml::Error> {
        Self::parse_with_env(text, &|_| None)
    }

    /// The same, with NVIDIA's `NVCA_*` environment overrides looked up by `env`.
    pub fn parse_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AgentConfigFile, serde_yaml::Error> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text)?;
        canonical_keys(&mut value);
        apply_env(&mut value, env);
        serde_yaml::from_value(value)
    }

    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// This file with `extra` (the chart's `agentConfig.mergeConfig`, ConfigMap
    /// `agent-config-merge`) laid over it as NVIDIA's `EncodeConfig` merges: mappings
    /// merged key by key at every depth, anything else in `extra` replacing what is
    /// here (a JSON merge patch, so a `null` removes a key); keys matched as the agent
    /// matches them.
    pub fn merged(&self, extra: &str) -> Result<AgentConfigFile, serde_yaml::Error> {
        let mut extra: serde_yaml::Value = serde_yaml::from_str(extra)?;
        if extra.is_null() {
            return Ok(self.clone());
        }
        canonical_keys(&mut extra);
        let extra: serde_json::Value = serde_yaml::from_value(extra)?;
        let mut base: serde_json::Value = serde_yaml::from_value(serde_yaml::to_value(self)?)?;
        json_patch::merge(&mut base, &extra);
        serde_yaml::from_value(serde_yaml::to_value(base)?)
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
    fn a_merge_config_is_laid_over_key_by_key_in_the_agents_spelling() {
        let file = AgentConfigFile::parse(
            "cluster:\n  id: c-1\nagent:\n  icmsurl: http://sis:8080\n  featureFlags: [A, B]\n\
             workload:\n  functionEnvOverrides:\n    X: \"1\"\n",
        )
        .unwrap();
        // NVIDIA's stack merges its validation policy; keys in any case; lists replace.
        let merged = file
            .merged(
                "cluster:\n  validationPolicy:\n    name: Unrestricted\n\
                 agent:\n  ICMSURL: http://other:8080\n  featureFlags: [C]\n\
                 workload:\n  functionEnvOverrides:\n    Y: \"2\"\n",
            )
            .unwrap();
        assert_eq!(merged.cluster.id, "c-1");
        assert_eq!(
            merged.cluster.other["validationPolicy"]["name"],
            "Unrestricted"
        );
        assert_eq!(merged.agent.icms_url, "http://other:8080");
        assert_eq!(merged.agent.feature_flags, ["C"]);
        assert_eq!(
            merged.other["workload"]["functionEnvOverrides"],
            serde_json::json!({"X": "1", "Y": "2"})
        );
        assert_eq!(file.merged("").unwrap(), file);
        assert!(file.merged("agent: [").is_err());
    }

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
            yaml.contains("NATSURL:") && yaml.contains("icmsurl:"),
            "{yaml}"
        );
    }

    #[test]
    fn keys_are_matched_whatever_their_case_as_nvidias_agent_does() {
        let text = "CLUSTER:\n  NCAID: nca-1\n  GroupId: g-1\nagent:\n  icmsURL: http://sis\n  ICMSURL_EXTRA: kept\n  natsurl: nats://n\n  max_running_timeout: 5m\n";
        let file = AgentConfigFile::parse(text).unwrap();
        assert_eq!(file.cluster.nca_id, "nca-1");
        assert_eq!(file.cluster.group_id, "g-1");
        assert_eq!(file.agent.icms_url, "http://sis");
        assert_eq!(file.agent.nats_url, "nats://n");
        assert_eq!(file.agent.other["ICMSURL_EXTRA"], "kept");
        assert_eq!(file.agent.other["max_running_timeout"], "5m");
    }

    #[test]
    fn keys_nvca_does_not_read_are_named_without_their_values() {
        let text = "cluster:\n  id: c\n  validationPolicy: {name: x}\n  dnsSuffix: d\nagent:\n  icmsurl: u\n  computeBackend: k8s\n  heartbeatInterval: 5m\nauthz:\n  clusterIssuedTokenFilePath: /t\n  tokenURL: https://secret\nworkload:\n  workerDegradationTimeout: 1h\n  namespaceStuckTimeout: 5m\nenvironment: prod\n";
        let file = AgentConfigFile::parse(text).unwrap();
        let unread = unread_keys(&file);
        assert_eq!(
            unread,
            [
                "cluster.dnsSuffix",
                "agent.computeBackend",
                "authz.tokenURL",
                "environment",
                "workload.namespaceStuckTimeout"
            ]
        );
    }

    #[test]
    fn nvidias_environment_names_and_overrides() {
        for (section, key, name) in [
            ("agent", "icmsurl", "NVCA_AGENT_ICMSURL"),
            ("agent", "NATSURL", "NVCA_AGENT_NATSURL"),
            ("agent", "NATSHostOverride", "NVCA_AGENT_NATS_HOST_OVERRIDE"),
            (
                "agent",
                "icmsHostHeaderOverride",
                "NVCA_AGENT_ICMS_HOST_HEADER_OVERRIDE",
            ),
            ("agent", "featureFlags", "NVCA_AGENT_FEATURE_FLAGS"),
            (
                "agent",
                "staticGPUCapacity",
                "NVCA_AGENT_STATIC_GPU_CAPACITY",
            ),
            ("cluster", "ncaid", "NVCA_CLUSTER_NCAID"),
            ("cluster", "groupID", "NVCA_CLUSTER_GROUP_ID"),
            (
                "authz",
                "clusterIssuedTokenFilePath",
                "NVCA_AUTHZ_CLUSTER_ISSUED_TOKEN_FILE_PATH",
            ),
            (
                "authz",
                "selfManagedVaultSecretsJSONPath",
                "NVCA_AUTHZ_SELF_MANAGED_VAULT_SECRETS_JSON_PATH",
            ),
        ] {
            assert_eq!(env_name(section, key), name);
        }
        let env = |name: &str| match name {
            "NVCA_AGENT_ICMSURL" => Some("http://from-env".to_string()),
            "NVCA_AGENT_FEATURE_FLAGS" => Some("-DynamicGPUDiscovery, SelfHosted".to_string()),
            "NVCA_CLUSTER_ID" => Some(String::new()),
            _ => None,
        };
        let file = AgentConfigFile::parse_with_env(
            "cluster:\n  id: c-1\nagent:\n  icmsurl: http://file\n",
            &env,
        )
        .unwrap();
        assert_eq!(file.agent.icms_url, "http://from-env");
        assert_eq!(
            file.agent.feature_flags,
            ["-DynamicGPUDiscovery", "SelfHosted"]
        );
        assert_eq!(file.cluster.id, "c-1", "an empty variable is unset");
    }
}
