//! What the agent runs with: config.yaml ([`AgentConfigFile`], the operator's ConfigMap
//! `agent-config`) read into [`AgentSettings`], with the command line's overrides.
//!
//! Keys are NVIDIA's where its agent has them (`N/../lib/pkg/types/nvca/config/types.go`),
//! matched whatever their case, with NVIDIA's `NVCA_*` environment overrides
//! ([`AgentConfigFile::parse_with_env`]): `cluster.*`, `agent.icmsurl`, `agent.NATSURL`,
//! `agent.featureFlags` (resolved over NVIDIA's defaults, `+X`/`-X`:
//! [`crate::kube::feature_flags`]), `agent.maintenanceMode`, `agent.heartbeatInterval`
//! (5m), `agent.credRenewInterval` (45m), `agent.skipSelfDestruct`,
//! `agent.kubernetesVersionOverride`, `agent.operatorVersion`, `agent.staticGPUCapacity`
//! (non-zero turns dynamic discovery off, as in NVIDIA's),
//! `authz.clusterIssuedTokenFilePath`, `authz.selfManagedVaultSecretsJSONPath`. Keys
//! nvca adds: `agent.adminAddr`,
//! `agent.registrationDiffInterval` (60s, NVIDIA's `syncICMSRegistrationInterval`),
//! `agent.jwksInterval` (30m), `agent.inventoryQuiet` / `agent.inventoryMaxDelay` (2s /
//! 10s, the node-change debouncer). Durations are humantime (`90s`, `5m`, `1h30m`), which
//! also reads Go's `5m0s`.
//!
//! Pure: no file or network access; [`AgentSettings::from_file`] takes the parsed file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::maintenance::{self, MaintenanceMode};
use crate::kube::agent_config::AgentConfigFile;
use crate::kube::feature_flags::Flags;
use crate::machines::failure::Timeouts;
use crate::sis::token::{DEFAULT_VAULT_SECRETS_PATH, TokenSource};

/// Namespaces when config.yaml names none (NVIDIA's defaults).
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "nvca-system";
pub const DEFAULT_REQUESTS_NAMESPACE: &str = "nvcf-backend";

/// NVIDIA's defaults (`AgentTimeConfig.Complete`, `bart_setup_prod.go`, `jwks_updater.go`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_CRED_RENEW_INTERVAL: Duration = Duration::from_secs(45 * 60);
pub const DEFAULT_REGISTRATION_DIFF_INTERVAL: Duration =
    crate::gpu::registration::REGISTRATION_DIFF_INTERVAL;
pub const DEFAULT_JWKS_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Feature flags as config.yaml lists them (`agent.featureFlags`), resolved over NVIDIA's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureFlags {
    listed: Vec<String>,
    resolved: Flags,
}

impl FeatureFlags {
    pub const DYNAMIC_GPU_DISCOVERY: &'static str = "DynamicGPUDiscovery";
    pub const SELF_HOSTED: &'static str = "SelfHosted";
    pub const KAI_SCHEDULER: &'static str = "KAIScheduler";
    pub const MULTI_NODE_WORKLOADS: &'static str = "MultiNodeWorkloads";

    pub fn new(flags: impl IntoIterator<Item = String>) -> Self {
        let listed: Vec<String> = flags.into_iter().map(|f| f.trim().to_string()).collect();
        let resolved = Flags::resolve(&listed);
        FeatureFlags { listed, resolved }
    }

    /// On: listed so, or on by NVIDIA's default and not turned off.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.resolved.is_on(name)
    }

    /// As config.yaml lists them.
    pub fn as_slice(&self) -> &[String] {
        &self.listed
    }

    /// Names NVIDIA's registry does not know (ignored, as NVIDIA's agent ignores them).
    pub fn unknown(&self) -> &[String] {
        &self.resolved.unknown
    }
}

/// Who the cluster is (config.yaml `cluster`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub id: String,
    pub name: String,
    pub nca_id: String,
    pub group_id: String,
    pub group_name: String,
    pub region: String,
    pub cloud_provider: String,
}

/// Where the SIS bearer token comes from, in NVIDIA's order of precedence
/// (`N/internal/auth/tokenfetcher.go` `NewTokenFetcher`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFile {
    /// The projected ServiceAccount token (PSAT, audience `nvcf-icms:<clusterId>`): the
    /// file is the JWT. Also the NATS identity, and the JWKS is pushed.
    Projected(PathBuf),
    /// The vault agent's `secrets.json`, token at `kv.tokens.icms` (the `SelfHosted`
    /// flag without a PSAT path).
    VaultSecrets(PathBuf),
}

impl TokenFile {
    pub fn source(&self) -> TokenSource {
        match self {
            TokenFile::Projected(path) => TokenSource::projected(path),
            TokenFile::VaultSecrets(path) => TokenSource::vault_secrets(path),
        }
    }
}

/// How often the agent does what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    pub heartbeat: Duration,
    pub cred_renew: Duration,
    pub registration_diff: Duration,
    pub jwks: Duration,
    /// Publish the inventory this long after the last node change…
    pub inventory_quiet: Duration,
    /// …and never later than this after the first unpublished one.
    pub inventory_max_delay: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            heartbeat: DEFAULT_HEARTBEAT_INTERVAL,
            cred_renew: DEFAULT_CRED_RENEW_INTERVAL,
            registration_diff: DEFAULT_REGISTRATION_DIFF_INTERVAL,
            jwks: DEFAULT_JWKS_INTERVAL,
            inventory_quiet: crate::gpu::debounce::DEFAULT_QUIET,
            inventory_max_delay: crate::gpu::debounce::DEFAULT_MAX_DELAY,
        }
    }
}

/// Everything the agent needs from its configuration, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    pub cluster: ClusterIdentity,
    pub icms_url: String,
    pub icms_host_override: Option<String>,
    pub nats_url: String,
    pub nats_host_override: Option<String>,
    pub features: FeatureFlags,
    pub maintenance: MaintenanceMode,
    /// What in the configuration was off, each with its fix (logged, not fatal).
    pub warnings: Vec<String>,
    pub token: TokenFile,
    pub system_namespace: String,
    pub requests_namespace: String,
    pub intervals: Intervals,
    /// `agent.skipSelfDestruct`: a `SELF_DESTRUCT` answer is logged and ignored.
    pub skip_self_destruct: bool,
    /// `agent.kubernetesVersionOverride`: registered instead of the API server's version.
    pub kubernetes_version_override: Option<String>,
    /// `agent.operatorVersion`, sent in heartbeats.
    pub operator_version: String,
    /// `agent.gpuManualInstanceConfigB64` (nvca): the manual GPU configuration when
    /// `DynamicGPUDiscovery` is off; otherwise ConfigMap `nvca-config` key `gpus`.
    pub manual_gpus_b64: Option<String>,
    /// `agent.staticGPUCapacity`: non-zero turns dynamic GPU discovery off (NVIDIA's
    /// `configureAndCheckCLI`).
    pub static_gpu_capacity: u64,
    /// NVIDIA's workload timeouts (`workload.maxRunningTimeout` …, `N/pkg/nvca/cli.go`
    /// into `k8sutil.TimeConfig`), for function deployments.
    pub timeouts: Timeouts,
    /// `workload.functionEnvOverrides`, keys in capitals (NVIDIA's encoder writes them in
    /// lower case; its `NormalizeEnvOverrides` puts them back).
    pub function_env_overrides: BTreeMap<String, String>,
    /// `workload.tolerations`: given to every function pod (NVIDIA's
    /// `TranslateConfig.Tolerations`).
    pub workload_tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// `agent.svcAddress` (`:8000`).
    pub svc_address: String,
    /// `agent.adminAddr` (`127.0.0.1:8001`).
    pub admin_address: String,
    /// `agent.logLevel` (`info` when empty).
    pub log_level: String,
}

/// Why the configuration cannot be used. Each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the agent's config {path}: {reason}; pass the mounted agent-config file to --config"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "{path} is not the agent's config.yaml ({reason}); the operator renders it into ConfigMap agent-config"
    )]
    NotYaml { path: PathBuf, reason: String },
    #[error("{key} is empty in the agent's config; {fix}")]
    Missing {
        key: &'static str,
        fix: &'static str,
    },
    #[error(
        "{key} {value:?} is not a duration ({reason}); write it like \"90s\", \"5m\" or \"1h30m\""
    )]
    Duration {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{key} must be true or false, not {value}")]
    NotBool { key: String, value: String },
    #[error("{key} {reason}; fix it in the agent's config (agentConfig in the chart's values)")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::Unreadable { .. } => "config_unreadable",
            ConfigError::NotYaml { .. } => "config_not_yaml",
            ConfigError::Missing { .. } => "config_missing",
            ConfigError::Duration { .. } => "config_duration",
            ConfigError::NotBool { .. } => "config_bool",
            ConfigError::Invalid { .. } => "config_invalid",
        }
    }
}

/// What the command line overrides (each `None` leaves config.yaml's value).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub token_file: Option<PathBuf>,
    pub vault_secrets_file: Option<PathBuf>,
    pub heartbeat_interval: Option<Duration>,
    pub cred_renew_interval: Option<Duration>,
    pub registration_diff_interval: Option<Duration>,
    pub jwks_interval: Option<Duration>,
    pub inventory_quiet: Option<Duration>,
    pub inventory_max_delay: Option<Duration>,
    pub skip_self_destruct: bool,
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn present(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

fn duration(key: &str, value: Option<&Value>) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = text(value) else {
        return Ok(None);
    };
    humantime::parse_duration(&raw)
        .map(Some)
        .map_err(|error| ConfigError::Duration {
            key: key.to_string(),
            value: raw,
            reason: error.to_string(),
        })
}

fn boolean(key: &str, value: Option<&Value>) -> Result<bool, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
        Some(other) => Err(ConfigError::NotBool {
            key: key.to_string(),
            value: other.to_string(),
        }),
    }
}

impl AgentSettings {
    /// Settings from the parsed config.yaml and the command line.
    pub fn from_file(
        file: &AgentConfigFile,
        overrides: &Overrides,
    ) -> Result<AgentSettings, ConfigError> {
        let agent = &file.agent;
        let extra = |key: &str| agent.other.get(key);
        let authz = file.other.get("authz");
        let authz_key = |key: &str| authz.and_then(|section| section.get(key));

        let cluster = ClusterIdentity {
            id: file.cluster.id.trim().to_string(),
            name: file.cluster.name.trim().to_string(),
            nca_id: file.cluster.nca_id.trim().to_string(),
            group_id: file.cluster.group_id.trim().to_string(),
            group_name: file.cluster.group_name.trim().to_string(),
            region: file.cluster.region.trim().to_string(),
            cloud_provider: present(&file.cluster.cloud_provider)
                .unwrap_or_else(|| "ON-PREM".to_string()),
        };
        if cluster.id.is_empty() {
            return Err(ConfigError::Missing {
                key: "cluster.id",
                fix: "the cluster is not registered yet: run the bootstrap (it writes ConfigMap nvca-cluster-registration, which the operator copies here)",
            });
        }
        let icms_url = agent.icms_url.trim().to_string();
        if icms_url.is_empty() {
            return Err(ConfigError::Missing {
                key: "agent.icmsurl",
                fix: "set selfManaged.icmsServiceURL in the chart's values (or NVCA_AGENT_ICMSURL)",
            });
        }

        let features = FeatureFlags::new(agent.feature_flags.iter().cloned());
        let mut resolved =
            maintenance::resolve(features.as_slice(), agent.maintenance_mode.as_deref());
        let unread = crate::kube::agent_config::unread_keys(file);
        if !unread.is_empty() {
            resolved.warnings.push(format!(
                "config.yaml keys nvca does not support yet, ignored: {}",
                unread.join(", ")
            ));
        }
        if !features.unknown().is_empty() {
            resolved.warnings.push(format!(
                "agent.featureFlags names flags NVIDIA's agent does not know, ignored: {}",
                features.unknown().join(", ")
            ));
        }

        let psat = overrides
            .token_file
            .clone()
            .or_else(|| text(authz_key("clusterIssuedTokenFilePath")).map(PathBuf::from));
        let token = match (psat, &overrides.vault_secrets_file) {
            (_, Some(vault)) => TokenFile::VaultSecrets(vault.clone()),
            (Some(path), None) => TokenFile::Projected(path),
            (None, None) if features.is_enabled(FeatureFlags::SELF_HOSTED) => {
                TokenFile::VaultSecrets(
                    text(authz_key("selfManagedVaultSecretsJSONPath"))
                        .map(PathBuf::from)
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_VAULT_SECRETS_PATH)),
                )
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    key: "authz.clusterIssuedTokenFilePath",
                    fix: "name the projected token file (authz.clusterIssuedTokenFilePath, or --token-file), or enable the SelfHosted feature flag to read the vault agent's secrets.json",
                });
            }
        };

        let defaults = Intervals::default();
        let pick = |flag: Option<Duration>, key: &str, default: Duration| {
            Ok::<Duration, ConfigError>(match flag {
                Some(value) => value,
                None => duration(&format!("agent.{key}"), extra(key))?.unwrap_or(default),
            })
        };
        let intervals = Intervals {
            heartbeat: pick(
                overrides.heartbeat_interval,
                "heartbeatInterval",
                defaults.heartbeat,
            )?,
            cred_renew: pick(
                overrides.cred_renew_interval,
                "credRenewInterval",
                defaults.cred_renew,
            )?,
            registration_diff: pick(
                overrides.registration_diff_interval,
                "registrationDiffInterval",
                defaults.registration_diff,
            )?,
            jwks: pick(overrides.jwks_interval, "jwksInterval", defaults.jwks)?,
            inventory_quiet: pick(
                overrides.inventory_quiet,
                "inventoryQuiet",
                defaults.inventory_quiet,
            )?,
            inventory_max_delay: pick(
                overrides.inventory_max_delay,
                "inventoryMaxDelay",
                defaults.inventory_max_delay,
            )?,
        };

        let workload = file.other.get("workload");
        let workload_key = |key: &str| workload.and_then(|section| section.get(key));
        let limit = |key: &str, default: Duration| {
            Ok::<Duration, ConfigError>(
                duration(&format!("workload.{key}"), workload_key(key))?.unwrap_or(default),
            )
        };
        let nvidias = Timeouts::default();
        let timeouts = Timeouts {
            pending: limit("maxRunningTimeout", nvidias.pending)?,
            image_pull: limit("maxImagePullErrorThreshold", nvidias.image_pull)?,
            scheduling: limit("podScheduledThreshold", nvidias.scheduling)?,
            restart_loop: limit(
                "podLaunchThresholdSecondsOnFailedRestarts",
                nvidias.restart_loop,
            )?,
            init_stuck: limit("podLaunchThresholdMinutesOnInitFailure", nvidias.init_stuck)?,
            startup: limit("workerStartupTimeout", nvidias.startup)?,
            degradation: limit("workerDegradationTimeout", nvidias.degradation)?,
            ..nvidias
        };
        let function_env_overrides = match workload_key("functionEnvOverrides") {
            Some(Value::Object(map)) => map
                .iter()
                .filter_map(|(name, value)| Some((name.to_uppercase(), text(Some(value))?)))
                .collect(),
            _ => BTreeMap::new(),
        };

        let workload_tolerations = match workload_key("tolerations") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => {
                serde_json::from_value(value.clone()).map_err(|error| ConfigError::Invalid {
                    key: "workload.tolerations".to_string(),
                    reason: format!("is not a list of Kubernetes tolerations ({error})"),
                })?
            }
        };

        Ok(AgentSettings {
            timeouts,
            function_env_overrides,
            workload_tolerations,
            cluster,
            icms_url,
            icms_host_override: agent.icms_host_header_override.as_deref().and_then(present),
            nats_url: agent.nats_url.trim().to_string(),
            nats_host_override: agent.nats_host_override.as_deref().and_then(present),
            maintenance: resolved.mode,
            warnings: resolved.warnings,
            features,
            token,
            system_namespace: present(&agent.system_namespace)
                .unwrap_or_else(|| DEFAULT_SYSTEM_NAMESPACE.to_string()),
            requests_namespace: present(&agent.requests_namespace)
                .unwrap_or_else(|| DEFAULT_REQUESTS_NAMESPACE.to_string()),
            intervals,
            skip_self_destruct: overrides.skip_self_destruct
                || boolean("agent.skipSelfDestruct", extra("skipSelfDestruct"))?,
            kubernetes_version_override: text(extra("kubernetesVersionOverride")),
            operator_version: text(extra("operatorVersion")).unwrap_or_default(),
            manual_gpus_b64: text(extra("gpuManualInstanceConfigB64")),
            static_gpu_capacity: text(extra("staticGPUCapacity"))
                .and_then(|count| count.parse().ok())
                .unwrap_or(0),
            svc_address: present(&agent.svc_address).unwrap_or_else(|| ":8000".to_string()),
            admin_address: present(&agent.admin_addr)
                .unwrap_or_else(|| "127.0.0.1:8001".to_string()),
            log_level: present(&agent.log_level).unwrap_or_else(|| "info".to_string()),
        })
    }

    /// Settings from the file at `path`.
    pub fn read(path: &std::path::Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        let env = |name: &str| std::env::var(name).ok();
        let file =
            AgentConfigFile::parse_with_env(&text, &env).map_err(|error| ConfigError::NotYaml {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        AgentSettings::from_file(&file, overrides)
    }

    /// `DynamicGPUDiscovery` (on by NVIDIA's default), unless the file gives the GPUs:
    /// `agent.staticGPUCapacity` (NVIDIA's rule) or nvca's `gpuManualInstanceConfigB64`.
    pub fn dynamic_gpu_discovery(&self) -> bool {
        self.features
            .is_enabled(FeatureFlags::DYNAMIC_GPU_DISCOVERY)
            && self.static_gpu_capacity == 0
            && self.manual_gpus_b64.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
cluster:
  id: c-1
  name: ncp-local
  ncaid: nca-1
  groupID: g-1
  region: us-west-1
  cloudProvider: ON-PREM
agent:
  icmsurl: http://127.0.0.1:9000/
  NATSURL: nats://127.0.0.1:4222
  featureFlags: [DynamicGPUDiscovery, SelfHosted, KAIScheduler]
  heartbeatInterval: 5m0s
  registrationDiffInterval: 2s
  skipSelfDestruct: true
authz:
  clusterIssuedTokenFilePath: /var/run/secrets/tokens/token
  clusterIssuedTokenSource: psat
";

    fn parse(text: &str) -> AgentConfigFile {
        AgentConfigFile::parse(text).unwrap()
    }

    #[test]
    fn reads_what_the_operator_writes_with_nvidias_defaults() {
        let settings = AgentSettings::from_file(&parse(FILE), &Overrides::default()).unwrap();
        assert_eq!(settings.cluster.id, "c-1");
        assert_eq!(
            settings.token,
            TokenFile::Projected("/var/run/secrets/tokens/token".into())
        );
        assert_eq!(settings.intervals.heartbeat, Duration::from_secs(300));
        assert_eq!(settings.intervals.registration_diff, Duration::from_secs(2));
        assert_eq!(settings.intervals.cred_renew, DEFAULT_CRED_RENEW_INTERVAL);
        assert_eq!(settings.intervals.jwks, DEFAULT_JWKS_INTERVAL);
        assert!(settings.skip_self_destruct);
        assert!(settings.dynamic_gpu_discovery());
        assert!(settings.features.is_enabled("KAIScheduler"));
        assert_eq!(settings.maintenance, MaintenanceMode::None);
        assert_eq!(settings.system_namespace, "nvca-system");
        assert_eq!(settings.requests_namespace, "nvcf-backend");
    }

    #[test]
    fn the_command_line_wins_and_nvidias_authz_keys_are_read() {
        let mut file = parse(FILE);
        file.other.insert(
            "authz".into(),
            serde_json::json!({"clusterIssuedTokenFilePath": "/psat/token"}),
        );
        let settings = AgentSettings::from_file(&file, &Overrides::default()).unwrap();
        assert_eq!(settings.token, TokenFile::Projected("/psat/token".into()));

        let overrides = Overrides {
            token_file: Some("/tmp/token".into()),
            heartbeat_interval: Some(Duration::from_secs(1)),
            ..Overrides::default()
        };
        let settings = AgentSettings::from_file(&file, &overrides).unwrap();
        assert_eq!(settings.token, TokenFile::Projected("/tmp/token".into()));
        assert_eq!(settings.intervals.heartbeat, Duration::from_secs(1));
    }

    #[test]
    fn self_hosted_without_a_token_path_reads_the_vault_file() {
        let mut file = parse(FILE);
        file.other.remove("authz");
        let settings = AgentSettings::from_file(&file, &Overrides::default()).unwrap();
        assert_eq!(
            settings.token,
            TokenFile::VaultSecrets(DEFAULT_VAULT_SECRETS_PATH.into())
        );
        file.agent.feature_flags = vec!["DynamicGPUDiscovery".into()];
        let error = AgentSettings::from_file(&file, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("SelfHosted"), "{error}");
    }

    #[test]
    fn errors_name_the_key() {
        let mut file = parse(FILE);
        file.agent
            .other
            .insert("credRenewInterval".into(), "soon".into());
        let error = AgentSettings::from_file(&file, &Overrides::default()).unwrap_err();
        assert_eq!(error.category(), "config_duration");
        assert!(
            error.to_string().contains("agent.credRenewInterval"),
            "{error}"
        );

        let mut file = parse(FILE);
        file.cluster.id.clear();
        let error = AgentSettings::from_file(&file, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("cluster.id"), "{error}");
    }

    /// A file as NVIDIA's operator writes it (self-hosted; spellings of its encoder:
    /// lower-cased capitals, Go durations, only the gated flags listed).
    const NVIDIAS: &str = "\
agent:
  adminAddr: 127.0.0.1:8001
  computeBackend: k8s
  featureFlags:
  - -LowLatencyStreaming
  - KAIScheduler
  - SelfHosted
  helmReValServiceURL: http://reval.nvcf.svc.cluster.local:8080
  icmsurl: http://sis:8080
  logLevel: info
  namespaceLabels:
    app.kubernetes.io/managed-by: nvca-operator
  NATSURL: nats://nats:4222
  operatorVersion: 2.50.0
  requestsNamespace: nvcf-backend
  svcAddress: :8000
  systemNamespace: nvca-system
authz:
  clusterIssuedTokenFilePath: /var/run/secrets/tokens/token
  clusterIssuedTokenSource: psat
cluster:
  cloudProvider: ON-PREM
  groupID: g-1
  groupName: nvcf-default
  id: c-1
  name: ncp-local
  ncaid: nca-1
  region: us-west-1
environment: prod
workload:
  workerDegradationTimeout: 1h30m0s
";

    #[test]
    fn a_file_as_nvidias_operator_writes_it_starts_the_agent() {
        let settings = AgentSettings::from_file(&parse(NVIDIAS), &Overrides::default()).unwrap();
        assert_eq!(settings.icms_url, "http://sis:8080");
        assert_eq!(settings.cluster.nca_id, "nca-1");
        assert_eq!(settings.cluster.group_id, "g-1");
        assert_eq!(
            settings.token,
            TokenFile::Projected("/var/run/secrets/tokens/token".into())
        );
        assert_eq!(settings.operator_version, "2.50.0");
        // Not listed: on by NVIDIA's defaults; listed off: off.
        assert!(settings.dynamic_gpu_discovery());
        assert!(settings.features.is_enabled("MultiNodeWorkloads"));
        assert!(!settings.features.is_enabled("LowLatencyStreaming"));
        assert!(settings.features.is_enabled("KAIScheduler"));
        // What nvca does not support yet is named, once.
        assert_eq!(settings.warnings.len(), 1, "{:?}", settings.warnings);
        for key in [
            "agent.computeBackend",
            "agent.helmReValServiceURL",
            "environment",
        ] {
            assert!(
                settings.warnings[0].contains(key),
                "{key}: {:?}",
                settings.warnings
            );
        }
        // Known: they label the namespaces of Helm functions, which are refused per request.
        assert!(!settings.warnings[0].contains("namespaceLabels"));
    }

    #[test]
    fn workload_timeouts_and_env_overrides_are_nvidias() {
        let text = format!(
            "{FILE}workload:\n  workerDegradationTimeout: 1h30m0s\n  podScheduledThreshold: 90s\n  functionEnvOverrides:\n    init_container: mirror/init:1\n"
        );
        let settings = AgentSettings::from_file(&parse(&text), &Overrides::default()).unwrap();
        assert_eq!(settings.timeouts.degradation, Duration::from_secs(90 * 60));
        assert_eq!(settings.timeouts.scheduling, Duration::from_secs(90));
        assert_eq!(settings.timeouts.image_pull, Timeouts::default().image_pull);
        assert_eq!(
            settings.function_env_overrides,
            BTreeMap::from([("INIT_CONTAINER".to_string(), "mirror/init:1".to_string())])
        );
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
        let error = AgentSettings::from_file(
            &parse(&format!("{FILE}workload:\n  maxRunningTimeout: soon\n")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("workload.maxRunningTimeout"),
            "{error}"
        );
    }

    #[test]
    fn static_gpu_capacity_turns_dynamic_discovery_off() {
        let mut file = parse(FILE);
        file.agent
            .other
            .insert("staticGPUCapacity".into(), serde_json::json!(8));
        let settings = AgentSettings::from_file(&file, &Overrides::default()).unwrap();
        assert_eq!(settings.static_gpu_capacity, 8);
        assert!(!settings.dynamic_gpu_discovery());
    }

    #[test]
    fn a_drain_patch_sets_the_mode() {
        let mut file = parse(FILE);
        file.set_maintenance(maintenance::DRAIN_FLAG);
        let settings = AgentSettings::from_file(&file, &Overrides::default()).unwrap();
        assert_eq!(settings.maintenance, MaintenanceMode::CordonAndDrain);
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    }
}
