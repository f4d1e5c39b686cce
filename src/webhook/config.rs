//! The server's settings: the agent's `config.yaml` (ConfigMap `agent-config`, the file
//! NVIDIA's `webhook-server --config` also reads), with flags that override it.
//!
//! | setting | config key | flag | default |
//! |---|---|---|---|
//! | listen address | `webhook.svcAddress` | `--listen` | `127.0.0.1:8443` (NVIDIA's `setDefaults`); `:8443` means every interface, IPv6 and IPv4 |
//! | certificate | `webhook.tlsCertFile` | `--tls-cert-file` | required |
//! | key | `webhook.tlsKeyFile` | `--tls-key-file` | required |
//! | feature flags | `agent.featureFlags` | | |
//! | cluster attributes | `cluster.attributes` | | |
//! | utils container limits | `agent.utilsResources` | | `cpu: 4`, `memory: 4Gi`, filled in per resource |
//! | DCGM metrics annotations | `webhook.dcgmAnnotations` | | `prometheus.io/port: "9400"` added when missing |
//! | Kata RuntimeClasses | env `NVCA_KATA_RUNTIME_CLASS`, `…_GPU`, `…_NON_GPU` | | `kata-qemu-nvidia-gpu`, `kata-qemu` |

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::WebhookArgs;
use super::cert_secret::CertSecret;
use super::certs::CertFiles;
use super::enforcement::{DcgmMetrics, KataClasses};
use super::error::WebhookError;
use super::features::Features;
use super::nvca_mutating::{ResourceList, default_utils_resources};
use crate::kube::agent_config::AgentConfigFile;

/// NVIDIA's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub listen: String,
    pub cert_files: CertFiles,
    pub features: Features,
    pub utils_resources: ResourceList,
    pub dcgm: DcgmMetrics,
    pub kata_classes: KataClasses,
    pub reload_interval: Duration,
    /// `webhook.tlsSecretName`: copy the certificate from this Secret into the files.
    pub cert_secret: Option<CertSecret>,
}

impl Settings {
    /// Read the configuration file and apply the flags.
    pub fn load(args: &WebhookArgs) -> Result<Settings, WebhookError> {
        let config_error = |reason: String| WebhookError::Config {
            path: args.config.clone(),
            reason,
        };
        let text =
            std::fs::read_to_string(&args.config).map_err(|e| config_error(e.to_string()))?;
        let file = AgentConfigFile::parse(&text).map_err(|e| config_error(e.to_string()))?;
        Settings::from_file(&file, args).map_err(|error| match error {
            WebhookError::Config { reason, .. } => config_error(reason),
            other => other,
        })
    }

    fn from_file(file: &AgentConfigFile, args: &WebhookArgs) -> Result<Settings, WebhookError> {
        let listen = args
            .listen
            .clone()
            .unwrap_or_else(|| listen_address(&file.webhook.svc_address));
        let path = |flag: &Option<PathBuf>, configured: &str| {
            flag.clone()
                .or_else(|| (!configured.is_empty()).then(|| PathBuf::from(configured)))
        };
        let cert = path(&args.tls_cert_file, &file.webhook.tls_cert_file);
        let key = path(&args.tls_key_file, &file.webhook.tls_key_file);
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(WebhookError::NoCertificate);
        };
        Ok(Settings {
            listen,
            cert_files: CertFiles { cert, key },
            features: Features::parse(&file.agent.feature_flags, &file.cluster.attributes)?,
            utils_resources: utils_resources(file)?,
            dcgm: dcgm_metrics(file)?,
            kata_classes: KataClasses::from_env(|name| std::env::var(name).ok()),
            reload_interval: args.reload_interval.into(),
            cert_secret: cert_secret(file, std::env::var("POD_NAMESPACE").ok()),
        })
    }
}

/// `webhook.tlsSecretName`, in the pod's namespace (the agent's system namespace when
/// run outside a pod).
fn cert_secret(file: &AgentConfigFile, pod_namespace: Option<String>) -> Option<CertSecret> {
    let name = file.webhook.other.get("tlsSecretName")?.as_str()?.trim();
    if name.is_empty() {
        return None;
    }
    let namespace = pod_namespace
        .filter(|ns| !ns.trim().is_empty())
        .or_else(|| {
            (!file.agent.system_namespace.is_empty()).then(|| file.agent.system_namespace.clone())
        })
        .unwrap_or_else(|| crate::kube::resources::SYSTEM_NAMESPACE.to_string());
    Some(CertSecret {
        namespace,
        name: name.to_string(),
    })
}

/// The configured address, NVIDIA's default when empty.
fn listen_address(configured: &str) -> String {
    match configured.trim() {
        "" => DEFAULT_LISTEN.to_string(),
        address => address.to_string(),
    }
}

/// `webhook.dcgmAnnotations`.
fn dcgm_metrics(file: &AgentConfigFile) -> Result<DcgmMetrics, WebhookError> {
    let invalid = |reason: String| WebhookError::Config {
        path: PathBuf::new(),
        reason,
    };
    let annotations = match file.webhook.other.get("dcgmAnnotations") {
        None | Some(serde_json::Value::Null) => Default::default(),
        Some(value) => serde_json::from_value(value.clone()).map_err(|error| {
            invalid(format!(
                "webhook.dcgmAnnotations must map names to strings: {error}"
            ))
        })?,
    };
    DcgmMetrics::from_annotations(annotations).map_err(invalid)
}

/// `agent.utilsResources` over NVIDIA's defaults.
fn utils_resources(file: &AgentConfigFile) -> Result<ResourceList, WebhookError> {
    let mut resources = default_utils_resources();
    let Some(configured) = file.agent.other.get("utilsResources") else {
        return Ok(resources);
    };
    let invalid = |reason: String| WebhookError::Config {
        path: PathBuf::new(),
        reason: format!("agent.utilsResources {reason}"),
    };
    let map = configured
        .as_object()
        .ok_or_else(|| invalid("must map resource names to quantities".to_string()))?;
    for (name, value) in map {
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(number) => number.to_string(),
            _ => return Err(invalid(format!("{name}: {value} is not a quantity"))),
        };
        crate::gpu::quantity::Quantity::parse(&text)
            .map_err(|error| invalid(format!("{name}: {text:?} is not a quantity: {error}")))?;
        resources.insert(name.clone(), Quantity(text));
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }

    fn args(flags: &[&str]) -> WebhookArgs {
        let mut argv = vec!["webhook-server"];
        argv.extend_from_slice(flags);
        Cli::parse_from(argv).args
    }

    #[test]
    fn the_operators_config_gives_nvidias_address_and_the_mounted_certificate() {
        let config = crate::kube::resources::testing::config();
        let file = crate::kube::resources::agent_config::file(&config);
        let settings = Settings::from_file(&file, &args(&[])).unwrap();
        assert_eq!(settings.listen, ":8443");
        assert_eq!(
            settings.cert_files.cert,
            PathBuf::from("/certs/server/tls.crt")
        );
        assert_eq!(
            settings.cert_files.key,
            PathBuf::from("/certs/server/tls.key")
        );
        assert_eq!(settings.utils_resources, default_utils_resources());
        assert_eq!(settings.dcgm, DcgmMetrics::default());
        assert!(settings.features.uniform_instance_labels);

        let overridden = Settings::from_file(
            &file,
            &args(&[
                "--listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                "/x.crt",
                "--tls-key-file",
                "/x.key",
            ]),
        )
        .unwrap();
        assert_eq!(overridden.listen, "127.0.0.1:0");
        assert_eq!(overridden.cert_files.cert, PathBuf::from("/x.crt"));
    }

    #[test]
    fn utils_resources_fill_in_the_defaults_and_bad_values_name_the_key() {
        let file = AgentConfigFile::parse(
            "webhook:\n  tlsCertFile: /c\n  tlsKeyFile: /k\nagent:\n  utilsResources:\n    cpu: 2\n    ephemeral-storage: 10Gi\n",
        )
        .unwrap();
        let settings = Settings::from_file(&file, &args(&[])).unwrap();
        assert_eq!(settings.listen, DEFAULT_LISTEN);
        let resources: Vec<(&str, &str)> = settings
            .utils_resources
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str()))
            .collect();
        assert_eq!(
            resources,
            [
                ("cpu", "2"),
                ("ephemeral-storage", "10Gi"),
                ("memory", "4Gi")
            ]
        );

        let bad = AgentConfigFile::parse(
            "webhook:\n  tlsCertFile: /c\n  tlsKeyFile: /k\nagent:\n  utilsResources:\n    cpu: lots\n",
        )
        .unwrap();
        let error = Settings::from_file(&bad, &args(&[])).unwrap_err();
        assert!(
            error.to_string().contains("agent.utilsResources cpu"),
            "{error}"
        );
    }

    #[test]
    fn no_certificate_is_refused_with_the_keys_to_set() {
        let error = Settings::from_file(&AgentConfigFile::default(), &args(&[])).unwrap_err();
        assert!(error.to_string().contains("webhook.tlsCertFile"), "{error}");
    }
}
