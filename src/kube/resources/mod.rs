//! Resource builders: pure functions from a [`BackendConfig`] to the Kubernetes objects
//! the operator applies for NVCA's agent, one file per provisioning step of
//! [`crate::machines::backend::ProvisionStep`], in the order of NVIDIA's
//! `setupNVCAAgentInfra` (`N/pkg/operator/reconcile/nvcaagent_reconcile.go`, where `N/` is
//! `src/compute-plane-services/nvca/` of github.com/NVIDIA/nvcf).
//!
//! Nothing here does I/O: the executor reads the NVCFBackend, builds a [`BackendConfig`]
//! with [`BackendConfig::from_backend`], calls the builder of the step and applies what it
//! returns. Names, labels, annotations and ports are NVIDIA's, so `kubectl` habits and
//! NVIDIA's own tooling find the objects where they expect them. The one exception is key
//! material: [`webhook_certs`] generates it at apply time, so keys never reach the store.

pub mod agent_config;
pub mod deployment;
pub mod namespaces;
pub mod network_policies;
pub mod pull_secrets;
pub mod rbac;
pub mod service;
pub mod webhook_certs;
pub mod webhooks;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use thiserror::Error;

use super::crd::NVCFBackend;

/// The name of the agent's ServiceAccount, ClusterRole, ClusterRoleBinding, Service,
/// Deployment and webhook configurations (NVIDIA's `NVCAModuleName`).
pub const NVCA: &str = "nvca";
/// NVIDIA's `NVCAOperatorName`: the `managed-by` value of what the operator creates.
pub const OPERATOR: &str = "nvca-operator";
/// Default system namespace (NVIDIA's `DefaultNVCASystemNamespace`).
pub const SYSTEM_NAMESPACE: &str = "nvca-system";
/// Default requests namespace, where function workloads run (`DefaultNVCARequestsNamespace`).
pub const REQUESTS_NAMESPACE: &str = "nvcf-backend";
/// The model-cache init namespace that clean-up removes with `nvca-system`.
pub const MODELCACHE_INIT_NAMESPACE: &str = "nvca-modelcache-init";

pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// NVIDIA's `WorkloadInstanceTypeLabel` (`N/pkg/types/common_labels.go`).
pub const LABEL_WORKLOAD_INSTANCE_TYPE: &str = "nvca.nvcf.nvidia.io/workload-instance-type";
/// `WorkloadInstanceTypeValuePodSpec`: container functions.
pub const WORKLOAD_POD_SPEC: &str = "pod_spec";
/// `WorkloadInstanceTypeValueMiniService`: helm functions.
pub const WORKLOAD_MINISERVICE: &str = "miniservice";
/// `ShaderCacheLabelKey`, set on the requests namespace when GXCache is on.
pub const LABEL_GXCACHE: &str = "nvca.nvcf.nvidia.io/gxcache-client-inject";
/// NVIDIA's `ClusterName` annotation (`getNBAnnotations`).
pub const ANNOTATION_CLUSTER_NAME: &str = "nvcf.nvidia.io/cluster-name";
/// NVIDIA's `ClusterGroupKey` annotation.
pub const ANNOTATION_CLUSTER_GROUP: &str = "nvcf.nvidia.io/cluster-group";

/// The agent's HTTP port (`DefaultNVCAListenPortHTTP`) and its container port name.
pub const AGENT_PORT: i32 = 8000;
pub const AGENT_PORT_NAME: &str = "http";
/// The webhook server's port (`DefaultWebhooksListenPortHTTP` = service port) and name.
pub const WEBHOOK_PORT: i32 = 8443;
pub const WEBHOOK_PORT_NAME: &str = "webhook-https";

/// Default agent image repository (NVIDIA's `--nvca-image-repo` default).
pub const DEFAULT_IMAGE_REPOSITORY: &str = "nvcr.io/nvidia/nvcf-byoc/nvca";
/// The feature flag that turns the agent's dynamic GPU discovery on.
pub const DYNAMIC_GPU_DISCOVERY: &str = "DynamicGPUDiscovery";

/// Why a [`BackendConfig`] cannot be built from an NVCFBackend. Each message names the
/// field and the fix.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "NVCFBackend {backend} has no {field}; it comes from {source_of} — set it there and the operator rebuilds the NVCFBackend"
    )]
    Missing {
        backend: String,
        field: &'static str,
        source_of: &'static str,
    },
    #[error(
        "NVCFBackend {backend} has an invalid {field}: {reason}; correct it (kubectl edit nvcfbackend) and the operator applies it"
    )]
    Invalid {
        backend: String,
        field: &'static str,
        reason: String,
    },
}

impl ConfigError {
    /// A short label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::Missing { .. } => "spec_field_missing",
            ConfigError::Invalid { .. } => "spec_field_invalid",
        }
    }
}

/// What the operator itself knows, beside the NVCFBackend: its flags and environment, as
/// NVIDIA's operator takes them from the chart (`--node-selector-key`, `--enable-gxcache`,
/// `ADDITIONAL_IMAGE_PULL_SECRETS_B64`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorSettings {
    /// The operator's namespace, where the pull secrets to copy live.
    pub operator_namespace: String,
    /// `--nvca-image-repo`, used when the NVCFBackend names no repository.
    pub image_repository: String,
    /// Secrets in the operator's namespace that the agent pods pull with (the chart's
    /// `imagePullSecrets`).
    pub image_pull_secrets: Vec<String>,
    /// `--node-selector-key` / `--node-selector-value`; used only when both are set.
    pub node_selector: Option<(String, String)>,
    /// `--priority-class-name`.
    pub priority_class_name: Option<String>,
    /// `--enable-gxcache`: label the requests namespace for GXCache injection.
    pub gxcache: bool,
    /// The cluster's internal networks, excluded from the workloads' internet egress.
    pub cluster_network_cidrs: Vec<String>,
    /// Put NVIDIA's vault agent annotations on the agent pod (the SIS token is rendered
    /// by OpenBao's injected vault agent in self-managed mode).
    pub vault: bool,
    /// The agent's log level, written into its config.
    pub log_level: String,
    /// `--webhook-url`: the admission webhooks are called at this base URL instead of
    /// through Service `nvca` (an agent run outside the cluster: development, the demo);
    /// its host joins the serving certificate's names.
    pub webhook_url: Option<String>,
    /// `--function-env-overrides-b64` / `--task-env-overrides-b64`, written into the
    /// agent's config as `workload.functionEnvOverrides` / `taskEnvOverrides`.
    pub function_env_overrides: BTreeMap<String, String>,
    pub task_env_overrides: BTreeMap<String, String>,
    /// `--agent-tolerations-b64`: the agent pod's, unless the NVCFBackend has its own.
    pub agent_tolerations: Vec<Toleration>,
    /// `--agent-override-env-vars-json-b64`; when given, it wins over the NVCFBackend's.
    pub agent_env_overrides: Option<BTreeMap<String, String>>,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            operator_namespace: OPERATOR.to_string(),
            image_repository: DEFAULT_IMAGE_REPOSITORY.to_string(),
            image_pull_secrets: Vec::new(),
            node_selector: None,
            priority_class_name: None,
            gxcache: true,
            cluster_network_cidrs: [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/12",
            ]
            .map(String::from)
            .to_vec(),
            vault: true,
            log_level: "info".to_string(),
            webhook_url: None,
            function_env_overrides: BTreeMap::new(),
            task_env_overrides: BTreeMap::new(),
            agent_tolerations: Vec::new(),
            agent_env_overrides: None,
        }
    }
}

/// Everything the builders need, in plain data: the NVCFBackend's spec (overrides merged)
/// and the operator's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    /// `<namespace>/<name>` of the NVCFBackend, for messages.
    pub backend: String,
    pub cluster_id: String,
    pub cluster_group_id: String,
    pub cluster_name: String,
    pub cluster_group_name: String,
    pub nca_id: String,
    pub region: String,
    pub cloud_provider: String,
    pub attributes: Vec<String>,
    /// The agent version: the image tag unless the NVCFBackend names one.
    pub version: String,
    pub image: String,
    pub image_pull_policy: String,
    /// The feature gates (`featureGate.values`), passed to the agent as feature flags.
    pub feature_flags: Vec<String>,
    /// SIS (ICMS) base URL.
    pub icms_url: String,
    pub icms_host_override: Option<String>,
    pub nats_url: String,
    pub nats_host_override: Option<String>,
    pub system_namespace: String,
    pub requests_namespace: String,
    /// Dynamic GPU discovery (the agent labels nodes, so it may update them).
    pub dynamic_gpu_discovery: bool,
    pub settings: OperatorSettings,
    /// The chart's `agentConfig.mergeConfig` (ConfigMap `agent-config-merge`), laid over
    /// the agent's config; empty when there is none. Read by the operator, not the spec.
    pub agent_config_merge: String,
    /// The agent pod's tolerations: `spec.agentConfig.tolerations` when it has any, else
    /// the operator's (NVIDIA's `mergeAgentConfigs`).
    pub agent_tolerations: Vec<Toleration>,
    /// Environment of the agent container over what the operator sets: the operator's
    /// when given, else `spec.agentConfig.overrideEnvironmentVars`.
    pub agent_env: BTreeMap<String, String>,
}

impl BackendConfig {
    /// Read the NVCFBackend's spec, with `spec.overrides` laid over it field by field as
    /// NVIDIA's `mergeOverrides` does for the fields nvca uses.
    pub fn from_backend(
        backend: &NVCFBackend,
        settings: &OperatorSettings,
    ) -> Result<BackendConfig, ConfigError> {
        let key = format!(
            "{}/{}",
            backend.metadata.namespace.as_deref().unwrap_or_default(),
            backend.metadata.name.as_deref().unwrap_or_default()
        );
        let base = &backend.spec.fields;
        let over = backend.spec.overrides.as_ref();
        let missing = |field: &'static str, source_of: &'static str| ConfigError::Missing {
            backend: key.clone(),
            field,
            source_of,
        };
        let pick = |get: &dyn Fn(&super::crd::BackendSpecFields) -> Option<String>| {
            over.and_then(get)
                .filter(|v| !v.is_empty())
                .or_else(|| get(base).filter(|v| !v.is_empty()))
        };
        let cluster = |f: fn(&super::crd::ClusterConfig) -> &String| {
            move |fields: &super::crd::BackendSpecFields| {
                fields.cluster_config.as_ref().map(|c| f(c).clone())
            }
        };
        let cluster_name = pick(&cluster(|c| &c.cluster_name)).ok_or_else(|| {
            missing(
                "spec.clusterConfig.clusterName",
                "clusterName of cluster-dto.yaml (Helm value clusterName)",
            )
        })?;
        let cluster_id = pick(&cluster(|c| &c.cluster_id)).ok_or_else(|| {
            missing(
                "spec.clusterConfig.clusterID",
                "ConfigMap nvca-cluster-registration (run the bootstrap: nvca-self-managed bootstrap)",
            )
        })?;
        let cluster_group_id = pick(&cluster(|c| &c.cluster_group_id)).unwrap_or_default();
        let cluster_group_name =
            pick(&cluster(|c| &c.cluster_group_name)).unwrap_or_else(|| cluster_name.clone());
        let region = pick(&cluster(|c| &c.region)).unwrap_or_default();
        let cloud_provider = pick(&cluster(|c| &c.cloud_provider)).unwrap_or_default();
        let system_namespace =
            pick(&cluster(|c| &c.system_namespace)).unwrap_or_else(|| SYSTEM_NAMESPACE.to_string());
        let requests_namespace = pick(&cluster(|c| &c.requests_namespace))
            .unwrap_or_else(|| REQUESTS_NAMESPACE.to_string());
        let attributes = over
            .and_then(|o| o.cluster_config.as_ref())
            .map(|c| c.attributes.clone())
            .filter(|a| !a.is_empty())
            .or_else(|| base.cluster_config.as_ref().map(|c| c.attributes.clone()))
            .unwrap_or_default();
        let nca_id =
            pick(&|f| f.account_config.as_ref().map(|a| a.nca_id.clone())).ok_or_else(|| {
                missing(
                    "spec.accountConfig.ncaID",
                    "ncaID of cluster-dto.yaml (Helm value ncaID)",
                )
            })?;
        let icms_url = pick(&|f| f.icms_config.as_ref().map(|i| i.icms_service_url.clone()))
            .ok_or_else(|| {
                missing(
                    "spec.icmsConfig.icmsServiceURL",
                    "Helm value selfManaged.icmsServiceURL",
                )
            })?;
        let icms_host_override = pick(&|f| {
            f.icms_config
                .as_ref()
                .map(|i| i.icms_service_host_header_override.clone())
        });
        let nats_url = pick(&|f| f.agent_config.as_ref().and_then(|a| a.nats_url.clone()))
            .ok_or_else(|| missing("spec.agentConfig.natsURL", "Helm value selfManaged.natsURL"))?;
        let nats_host_override = pick(&|f| {
            f.agent_config
                .as_ref()
                .and_then(|a| a.nats_host_override.clone())
        });
        let repository = pick(&|f| f.nvca_image_config.as_ref().map(|i| i.repository.clone()))
            .unwrap_or_else(|| settings.image_repository.clone());
        let version = pick(&|f| Some(f.version.clone()));
        let tag = pick(&|f| f.nvca_image_config.as_ref().map(|i| i.tag.clone()))
            .or_else(|| version.clone())
            .ok_or_else(|| {
                missing(
                    "spec.version",
                    "nvcaVersion of cluster-dto.yaml (Helm value selfManaged.nvcaVersion)",
                )
            })?;
        let image_pull_policy =
            pick(&|f| f.nvca_image_config.as_ref().map(|i| i.pull_policy.clone()))
                .unwrap_or_else(|| "IfNotPresent".to_string());
        let feature_flags: Vec<String> = over
            .and_then(|o| o.feature_gate.as_ref())
            .map(|g| g.values.clone())
            .filter(|v| !v.is_empty())
            .or_else(|| base.feature_gate.as_ref().map(|g| g.values.clone()))
            .unwrap_or_default();
        let feature_flags = crate::kube::feature_flags::for_agent(&feature_flags, settings.gxcache);
        let discovery = over
            .and_then(|o| o.cluster_config.as_ref())
            .and_then(|c| c.gpu_discovery.clone())
            .or_else(|| {
                base.cluster_config
                    .as_ref()
                    .and_then(|c| c.gpu_discovery.clone())
            });
        let dynamic_gpu_discovery = match discovery {
            Some(value) => value.get("static").is_none_or(|s| s.is_null()),
            None => true,
        };
        let agent_of =
            |f: &crate::kube::crd::BackendSpecFields| f.agent_config.clone().unwrap_or_default();
        let spec_tolerations = over
            .map(agent_of)
            .map(|a| a.tolerations)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| agent_of(base).tolerations);
        let agent_tolerations = if spec_tolerations.is_empty() {
            settings.agent_tolerations.clone()
        } else {
            spec_tolerations
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<Toleration>, _>>()
                .map_err(|error| ConfigError::Invalid {
                    backend: key.clone(),
                    field: "spec.agentConfig.tolerations",
                    reason: error.to_string(),
                })?
        };
        let agent_env = settings.agent_env_overrides.clone().unwrap_or_else(|| {
            over.map(agent_of)
                .map(|a| a.override_environment_vars)
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| agent_of(base).override_environment_vars)
        });
        Ok(BackendConfig {
            backend: key,
            cluster_id,
            cluster_group_id,
            cluster_name,
            cluster_group_name,
            nca_id,
            region,
            cloud_provider,
            attributes,
            version: version.unwrap_or_else(|| tag.clone()),
            image: format!("{repository}:{tag}"),
            image_pull_policy,
            feature_flags,
            icms_url,
            icms_host_override,
            nats_url,
            nats_host_override,
            system_namespace,
            requests_namespace,
            dynamic_gpu_discovery,
            settings: settings.clone(),
            agent_config_merge: String::new(),
            agent_tolerations,
            agent_env,
        })
    }

    /// NVIDIA's `getAppLabels`: on every object in `nvca-system` and the agent's pods.
    pub fn app_labels(&self) -> BTreeMap<String, String> {
        app_labels()
    }

    /// NVIDIA's `getNBAnnotations`: the cluster's name and group.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                ANNOTATION_CLUSTER_NAME.to_string(),
                self.cluster_name.clone(),
            ),
            (
                ANNOTATION_CLUSTER_GROUP.to_string(),
                self.cluster_group_name.clone(),
            ),
        ])
    }

    /// Metadata of an object named `name` in the system namespace, with NVIDIA's labels
    /// and annotations.
    pub fn system_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.system_namespace.clone()),
            labels: Some(self.app_labels()),
            annotations: Some(self.annotations()),
            ..ObjectMeta::default()
        }
    }

    /// Metadata of a cluster-scoped object named `name`.
    pub fn cluster_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(self.app_labels()),
            annotations: Some(self.annotations()),
            ..ObjectMeta::default()
        }
    }

    /// The DNS name the webhook server's certificate is for: `nvca.<system ns>.svc`.
    /// The names the webhook serving certificate holds: the Service's, and the host of
    /// `--webhook-url` when set.
    pub fn service_dns_names(&self) -> Vec<String> {
        let svc = format!("{NVCA}.{}.svc", self.system_namespace);
        let mut names = vec![svc.clone(), format!("{svc}.cluster.local")];
        if let Some(host) = self.settings.webhook_url.as_deref().and_then(url_host) {
            names.push(host);
        }
        names
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.feature_flags.iter().any(|f| f == flag)
    }
}

/// `app.kubernetes.io/{instance,name}=nvca`, `app.kubernetes.io/managed-by=nvca-operator`.
pub fn app_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_string(), NVCA.to_string()),
        (LABEL_MANAGED_BY.to_string(), OPERATOR.to_string()),
        (LABEL_NAME.to_string(), NVCA.to_string()),
    ])
}

/// The label selector string of [`app_labels`], for lists and watches.
pub fn app_selector() -> String {
    app_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The host of an `https://host[:port][/path]` URL (IPv6 in brackets unwrapped).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::kube::crd::NVCFBackendSpec;

    /// An NVCFBackend as `nvca-operator run` builds it from the chart's cluster-dto.yaml.
    pub fn backend() -> NVCFBackend {
        let spec: NVCFBackendSpec = serde_json::from_value(serde_json::json!({
            "version": "2.52.1",
            "accountConfig": {"ncaID": "nca-1"},
            "clusterConfig": {"clusterID": "c-1", "clusterName": "ncp-local", "clusterGroupName": "nvcf-default",
                              "clusterGroupID": "g-1", "cloudProvider": "NCP", "region": "us-west-1",
                              "gpuDiscovery": {"dynamic": {}}},
            "featureGate": {"values": ["DynamicGPUDiscovery", "SelfHosted", "KAIScheduler"]},
            "icmsConfig": {"icmsServiceURL": "http://sis.sis.svc.cluster.local:8080"},
            "agentConfig": {"natsURL": "nats://nats.nats-system.svc.cluster.local:4222"},
            "clusterSource": "self-hosted"
        }))
        .expect("a valid spec");
        let mut backend = NVCFBackend::new("ncp-local", spec);
        backend.metadata.namespace = Some("nvca-operator".to_string());
        backend
    }

    pub fn config() -> BackendConfig {
        let settings = OperatorSettings {
            image_pull_secrets: vec!["regcred".to_string()],
            ..OperatorSettings::default()
        };
        BackendConfig::from_backend(&backend(), &settings).expect("a complete backend")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn a_webhook_url_moves_the_webhooks_off_the_service_and_into_the_certificate() {
        assert_eq!(
            url_host("https://127.0.0.1:18443"),
            Some("127.0.0.1".into())
        );
        assert_eq!(url_host("https://[::1]:8443/x"), Some("::1".into()));
        assert_eq!(
            url_host("https://dev.example.org/"),
            Some("dev.example.org".into())
        );
        let mut config = config();
        assert_eq!(config.service_dns_names().len(), 2);
        config.settings.webhook_url = Some("https://127.0.0.1:18443/".into());
        assert_eq!(
            config.service_dns_names().last().map(String::as_str),
            Some("127.0.0.1")
        );
        let configuration = webhooks::mutating_configuration(&config, b"ca");
        for webhook in configuration.webhooks.unwrap_or_default() {
            let client = webhook.client_config;
            assert!(client.service.is_none());
            let url = client.url.expect("a URL");
            assert!(url.starts_with("https://127.0.0.1:18443/"), "{url}");
            assert!(!url.contains("18443//"), "{url}");
        }
    }

    #[test]
    fn reads_the_spec_and_fills_nvidias_defaults() {
        let config = config();
        assert_eq!(config.cluster_id, "c-1");
        assert_eq!(config.system_namespace, "nvca-system");
        assert_eq!(config.requests_namespace, "nvcf-backend");
        assert_eq!(config.image, "nvcr.io/nvidia/nvcf-byoc/nvca:2.52.1");
        assert!(config.dynamic_gpu_discovery);
        assert_eq!(
            config.annotations(),
            BTreeMap::from([
                (
                    "nvcf.nvidia.io/cluster-name".to_string(),
                    "ncp-local".to_string()
                ),
                (
                    "nvcf.nvidia.io/cluster-group".to_string(),
                    "nvcf-default".to_string()
                ),
            ])
        );
        assert_eq!(
            app_selector(),
            "app.kubernetes.io/instance=nvca,app.kubernetes.io/managed-by=nvca-operator,app.kubernetes.io/name=nvca"
        );
    }

    #[test]
    fn overrides_win_over_the_spec() {
        let mut backend = backend();
        backend.spec.overrides = Some(
            serde_json::from_value(serde_json::json!({
                "featureGate": {"values": ["KAIScheduler"]},
                "nvcaImageConfig": {"repository": "registry.local/nvca", "tag": "9.9.9"}
            }))
            .expect("overrides"),
        );
        let config = BackendConfig::from_backend(&backend, &OperatorSettings::default()).unwrap();
        // NVIDIA's operator adds GXCache (--enable-gxcache) and SelfHosted.
        assert_eq!(
            config.feature_flags,
            ["GXCache", "KAIScheduler", "SelfHosted"]
        );
        assert_eq!(config.image, "registry.local/nvca:9.9.9");
        assert_eq!(config.version, "2.52.1");
    }

    #[test]
    fn agent_tolerations_and_environment_follow_nvidias_precedence() {
        let toleration = |key: &str| Toleration {
            key: Some(key.to_string()),
            operator: Some("Exists".to_string()),
            ..Toleration::default()
        };
        let settings = OperatorSettings {
            agent_tolerations: vec![toleration("from-chart")],
            ..OperatorSettings::default()
        };
        // The NVCFBackend names none: the operator's (the chart's agent.tolerations).
        let config = BackendConfig::from_backend(&backend(), &settings).unwrap();
        assert_eq!(config.agent_tolerations, [toleration("from-chart")]);
        assert!(config.agent_env.is_empty());
        let pod = deployment::deployment(&config).spec.template.spec.unwrap();
        assert_eq!(pod.tolerations.unwrap(), [toleration("from-chart")]);

        // The NVCFBackend's win for tolerations; its environment is used while the
        // operator gives none, and the operator's wins when it does.
        let mut mine = backend();
        let agent = mine
            .spec
            .fields
            .agent_config
            .get_or_insert_with(Default::default);
        agent.tolerations = vec![serde_json::json!({"key": "from-spec", "operator": "Exists"})];
        agent.override_environment_vars = BTreeMap::from([("LOG".into(), "spec".into())]);
        let config = BackendConfig::from_backend(&mine, &settings).unwrap();
        assert_eq!(config.agent_tolerations, [toleration("from-spec")]);
        assert_eq!(config.agent_env["LOG"], "spec");
        let agent = &deployment::deployment(&config)
            .spec
            .template
            .spec
            .unwrap()
            .containers[0];
        assert_eq!(
            agent.env.as_ref().unwrap()[0].value.as_deref(),
            Some("spec")
        );
        let chart = OperatorSettings {
            agent_env_overrides: Some(BTreeMap::from([("LOG".into(), "chart".into())])),
            ..settings.clone()
        };
        assert_eq!(
            BackendConfig::from_backend(&mine, &chart)
                .unwrap()
                .agent_env["LOG"],
            "chart"
        );

        // A toleration that is not one is named with the field.
        let agent = mine
            .spec
            .fields
            .agent_config
            .get_or_insert_with(Default::default);
        agent.tolerations = vec![serde_json::json!({"tolerationSeconds": "soon"})];
        let error = BackendConfig::from_backend(&mine, &settings)
            .unwrap_err()
            .to_string();
        assert!(error.contains("spec.agentConfig.tolerations"), "{error}");
    }

    #[test]
    fn a_missing_id_names_the_configmap_and_the_fix() {
        let mut backend = backend();
        if let Some(cluster) = backend.spec.fields.cluster_config.as_mut() {
            cluster.cluster_id.clear();
        }
        let error =
            BackendConfig::from_backend(&backend, &OperatorSettings::default()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("nvca-operator/ncp-local")
                && message.contains("clusterID")
                && message.contains("nvca-cluster-registration")
                && message.contains("bootstrap"),
            "{message}"
        );
        assert_eq!(error.category(), "spec_field_missing");
    }
}
