//! Step `AgentDeployment`: Deployment `nvca` in `nvca-system`, NVIDIA's
//! `setupNVCADeployment` with the self-managed extras of `applySelfManagedNVCADeployment`
//! (`N/pkg/operator/reconcile/nvcaagent_reconcile.go`, `nvcaagent_selfmanaged.go`).
//!
//! Two containers: `agent` (port `http` 8000; startup probe `/version`, liveness `/livez`,
//! readiness `/healthz`, NVIDIA's thresholds) and `webhook` (port `webhook-https` 8443).
//! The agent authenticates to SIS with a projected ServiceAccount token, audience
//! `nvcf-icms:<clusterID>`, at `/var/run/secrets/tokens/token`. Every container runs as
//! user 1000, non-root, without privilege escalation or capabilities, with a read-only
//! root file system; the pod uses the runtime's default seccomp profile.
//!
//! Differences from NVIDIA's, on purpose: the webhook container mounts the two TLS Secrets
//! directly (NVIDIA mounts emptyDirs its server fills); no `ngc-service-api-key` volume
//! (unused in self-managed mode); an emptyDir for the agent's store.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ProjectedVolumeSource, SeccompProfile, SecretVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::webhook_certs::{CA_SECRET, SERVER_SECRET};
use super::{AGENT_PORT, AGENT_PORT_NAME, BackendConfig, NVCA, WEBHOOK_PORT, WEBHOOK_PORT_NAME};
use crate::kube::agent_config::{CONFIGMAP, MOUNT_DIR, PATH};

pub const AGENT_CONTAINER: &str = "agent";
pub const WEBHOOK_CONTAINER: &str = "webhook";
/// The agent's binary in nvca's image.
pub const AGENT_BINARY: &str = "/usr/bin/nvca";
/// The webhook's, likewise (`N/pkg/operator/reconcile/nvcaagent_reconcile.go`
/// `setupNVCADeployment`): either operator runs either image.
pub const WEBHOOK_BINARY: &str = "/usr/bin/webhook-server";
/// Where the SIS token is projected, and its file.
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_PATH: &str = crate::sis::token::DEFAULT_PROJECTED_TOKEN_PATH;
pub const TOKEN_VOLUME: &str = "nvca-token";
pub const TOKEN_SECONDS: i64 = 3600;
pub const REGISTRATION_VOLUME: &str = "nvca-self-managed-registration";
pub const REGISTRATION_DIR: &str = "/var/run/secrets/nvca-self-managed-registration";
pub const STORE_VOLUME: &str = "nvca-store";
pub const STORE_DIR: &str = "/var/lib/nvca/agent";
pub const RUN_AS: i64 = 1000;
/// NVIDIA's vault agent annotations and the values it gives them.
pub const VAULT_CONFIGMAP: &str = "nvca-vault-agent";
pub const VAULT_SECRETS_PATH: &str = "/home/nvca/vault-agent/secrets";

/// The audience SIS verifies the agent's token against.
pub fn token_audience(config: &BackendConfig) -> String {
    format!("nvcf-icms:{}", config.cluster_id)
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

fn probe(path: &str, failures: i32, initial: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(AGENT_PORT),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        failure_threshold: Some(failures),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        success_threshold: Some(1),
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Pod-template annotation: a digest of the config.yaml the operator renders for the
/// agent. A changed configuration (a feature gate from `helm upgrade`, new IDs) rolls the
/// agent's pod, so the agent starts on it; NVIDIA's operator restarts the agent at every
/// reconcile instead (`nvca-operator.nvcf.nvidia.io/restartedAt`). The drain's
/// maintenance patch sets it to the digest of the patched file, so the agent restarts
/// into maintenance: NVIDIA's agent reads its config only at start, and NVIDIA's drain
/// restarts it too (`triggerNVCARollout`).
pub const CONFIG_DIGEST_ANNOTATION: &str = "nvca.nvcf.nvidia.io/config-digest";

/// The hex SHA-256 of the agent's config.yaml as the operator renders it.
pub fn config_digest(config: &BackendConfig) -> String {
    // A configuration that cannot be rendered fails the AgentConfig step, which runs
    // before this one; the digest of nothing is then never applied.
    let text = super::agent_config::rendered(config)
        .and_then(|file| file.to_yaml())
        .unwrap_or_default();
    digest(&text)
}

/// The hex SHA-256 of a config.yaml, for [`CONFIG_DIGEST_ANNOTATION`].
pub fn digest(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// NVIDIA's vault agent injection annotations for the agent's pod.
pub fn vault_annotations() -> BTreeMap<String, String> {
    [
        ("vault.hashicorp.com/agent-inject", "true"),
        ("vault.hashicorp.com/agent-init-first", "true"),
        ("vault.hashicorp.com/agent-inject-status", "update"),
        ("vault.hashicorp.com/agent-configmap", VAULT_CONFIGMAP),
        ("vault.hashicorp.com/secret-volume-path", VAULT_SECRETS_PATH),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn deployment(config: &BackendConfig) -> Deployment {
    let agent = Container {
        name: AGENT_CONTAINER.to_string(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some([AGENT_BINARY, "--config", PATH].map(String::from).to_vec()),
        ports: Some(vec![ContainerPort {
            name: Some(AGENT_PORT_NAME.to_string()),
            container_port: AGENT_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/version", 30, 1, 1)),
        liveness_probe: Some(probe("/livez", 30, 5, 5)),
        readiness_probe: Some(probe("/healthz", 3, 5, 5)),
        security_context: Some(container_security()),
        // NVIDIA's `overrideEnvironmentVars`: the only environment the agent gets.
        env: (!config.agent_env.is_empty()).then(|| {
            config
                .agent_env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                })
                .collect()
        }),
        volume_mounts: Some(vec![
            mount(CONFIGMAP, MOUNT_DIR, true),
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
            mount(STORE_VOLUME, STORE_DIR, false),
            mount(REGISTRATION_VOLUME, REGISTRATION_DIR, true),
        ]),
        ..Container::default()
    };
    let webhook = Container {
        name: WEBHOOK_CONTAINER.to_string(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(
            [WEBHOOK_BINARY, "--config", PATH]
                .map(String::from)
                .to_vec(),
        ),
        env: Some(vec![EnvVar {
            name: "POD_NAMESPACE".to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".to_string(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(WEBHOOK_PORT_NAME.to_string()),
            container_port: WEBHOOK_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount("webhook-server-certs", "/certs/server", true),
            mount("webhook-ca-certs", "/certs/ca", true),
            mount(CONFIGMAP, MOUNT_DIR, true),
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: CONFIGMAP.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: CONFIGMAP.to_string(),
                default_mode: Some(0o644),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume("webhook-server-certs", SERVER_SECRET),
        secret_volume("webhook-ca-certs", CA_SECRET),
        Volume {
            name: TOKEN_VOLUME.to_string(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(token_audience(config)),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "token".to_string(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir(STORE_VOLUME),
        empty_dir(REGISTRATION_VOLUME),
    ];
    let node_selector = config
        .settings
        .node_selector
        .as_ref()
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .map(|(key, value)| BTreeMap::from([(key.clone(), value.clone())]));
    let mut annotations = if config.settings.vault {
        vault_annotations()
    } else {
        BTreeMap::new()
    };
    annotations.insert(CONFIG_DIGEST_ANNOTATION.to_string(), config_digest(config));
    Deployment {
        metadata: config.system_meta(NVCA),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(config.app_labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(config.app_labels()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NVCA.to_string()),
                    automount_service_account_token: Some(true),
                    containers: vec![agent, webhook],
                    volumes: Some(volumes),
                    node_selector,
                    tolerations: (!config.agent_tolerations.is_empty())
                        .then(|| config.agent_tolerations.clone()),
                    priority_class_name: config.settings.priority_class_name.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment.spec.template.spec.as_ref().unwrap()
    }

    #[test]
    fn two_containers_with_nvidias_names_ports_and_probes() {
        let deployment = deployment(&config());
        assert_eq!(deployment.metadata.name.as_deref(), Some("nvca"));
        assert_eq!(
            deployment.metadata.namespace.as_deref(),
            Some("nvca-system")
        );
        let spec = &deployment.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap(),
            &config().app_labels()
        );
        let pod = pod(&deployment);
        assert_eq!(pod.service_account_name.as_deref(), Some("nvca"));
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["agent", "webhook"]);
        let agent = &pod.containers[0];
        assert_eq!(
            agent.args.as_deref().unwrap(),
            ["/usr/bin/nvca", "--config", "/var/run/nvca/config.yaml"]
        );
        assert_eq!(
            agent.image.as_deref(),
            Some("nvcr.io/nvidia/nvcf-byoc/nvca:2.52.1")
        );
        let port = &agent.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("http"), 8000)
        );
        let path = |probe: &Option<Probe>| {
            probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&agent.startup_probe), "/version");
        assert_eq!(path(&agent.liveness_probe), "/livez");
        assert_eq!(path(&agent.readiness_probe), "/healthz");
        let webhook = &pod.containers[1];
        let port = &webhook.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("webhook-https"), 8443)
        );
    }

    #[test]
    fn the_agent_gets_a_projected_token_for_sis_and_runs_unprivileged() {
        let deployment = deployment(&config());
        let pod = pod(&deployment);
        let token = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "nvca-token")
            .unwrap();
        let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(projection.audience.as_deref(), Some("nvcf-icms:c-1"));
        assert_eq!(projection.expiration_seconds, Some(3600));
        assert_eq!(projection.path, "token");
        let agent = &pod.containers[0];
        let mounted = agent
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "nvca-token")
            .unwrap();
        assert_eq!(mounted.mount_path, "/var/run/secrets/tokens");
        assert!(
            agent
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "nvca-self-managed-registration"
                    && m.mount_path == "/var/run/secrets/nvca-self-managed-registration")
        );
        for container in &pod.containers {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(security.run_as_user, Some(1000));
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(
                security
                    .capabilities
                    .as_ref()
                    .unwrap()
                    .drop
                    .as_deref()
                    .unwrap(),
                ["ALL"]
            );
        }
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod_security.run_as_non_root, Some(true));
    }

    #[test]
    fn a_changed_configuration_rolls_the_agent_and_the_same_one_does_not() {
        let digest = |config: &BackendConfig| {
            deployment(config)
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_DIGEST_ANNOTATION]
                .clone()
        };
        let mut config = config();
        let first = digest(&config);
        assert_eq!(first.len(), 64, "hex SHA-256: {first}");
        assert_eq!(
            digest(&config),
            first,
            "the same configuration, the same pod"
        );
        config.feature_flags.push("KAIScheduler".into());
        assert_ne!(
            digest(&config),
            first,
            "a new feature gate must roll the agent"
        );
    }

    #[test]
    fn vault_annotations_node_selector_and_priority_follow_the_settings() {
        let mut config = config();
        let annotations = deployment(&config)
            .spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert_eq!(annotations["vault.hashicorp.com/agent-inject"], "true");
        assert_eq!(
            annotations["vault.hashicorp.com/agent-configmap"],
            "nvca-vault-agent"
        );
        assert_eq!(
            annotations["vault.hashicorp.com/secret-volume-path"],
            "/home/nvca/vault-agent/secrets"
        );
        config.settings.vault = false;
        config.settings.node_selector =
            Some(("node.kubernetes.io/instance-type".into(), "cpu".into()));
        config.settings.priority_class_name = Some("system-cluster-critical".into());
        let deployment = deployment(&config);
        let annotations = deployment
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [CONFIG_DIGEST_ANNOTATION],
            "without vault only the config digest is left"
        );
        let pod = pod(&deployment);
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["node.kubernetes.io/instance-type"],
            "cpu"
        );
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-cluster-critical")
        );
    }
}
