//! Step `WebhookConfigurations`: ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration `nvca`, with NVIDIA's webhook names, paths, rules,
//! selectors and failure policies (`N/pkg/operator/reconcile/miniservice_restrictions.go`,
//! `webhook_*.go`, `shared_cluster.go`, `nvcaagent_reconcile.go`). Every webhook calls
//! Service `nvca` in `nvca-system` on port 8443, trusting the CA of Secret
//! `nvca-webhook-tls-ca-certs`.
//!
//! They match only namespaces labelled `nvca.nvcf.nvidia.io/workload-instance-type`
//! (`pod_spec`: `nvcf-backend`; `miniservice`: helm functions), so nothing else in the
//! cluster waits on the agent.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::{
    BackendConfig, LABEL_WORKLOAD_INSTANCE_TYPE, NVCA, WEBHOOK_PORT, WORKLOAD_MINISERVICE,
    WORKLOAD_POD_SPEC,
};

/// The label that asks for pod enforcement (NVIDIA's `needsEnforceLabel`).
pub const NEEDS_ENFORCE: &str = "nvca.nvcf.nvidia.io/needs-enforce";
/// The shared-storage SMB server pod, which the MiniService webhook leaves alone.
pub const SMB_SERVER_POD: &str = "nvcf-smb-server";

fn client_config(config: &BackendConfig, ca_bundle: &[u8], path: &str) -> WebhookClientConfig {
    if let Some(base) = &config.settings.webhook_url {
        return WebhookClientConfig {
            ca_bundle: Some(ByteString(ca_bundle.to_vec())),
            service: None,
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
        };
    }
    WebhookClientConfig {
        ca_bundle: Some(ByteString(ca_bundle.to_vec())),
        service: Some(ServiceReference {
            name: NVCA.to_string(),
            namespace: config.system_namespace.clone(),
            path: Some(path.to_string()),
            port: Some(WEBHOOK_PORT),
        }),
        url: None,
    }
}

fn rule(group: &str, resources: &[&str], operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.to_string()]),
        api_versions: Some(vec!["v1".to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        operations: Some(operations.iter().map(|o| o.to_string()).collect()),
        scope: Some("Namespaced".to_string()),
    }
}

const CREATE_UPDATE: &[&str] = &["CREATE", "UPDATE"];

/// `workload-instance-type In [types]`, plus any further requirements.
fn workload_namespaces(types: &[&str], also: &[(&str, &str)]) -> LabelSelector {
    let mut requirements = vec![LabelSelectorRequirement {
        key: LABEL_WORKLOAD_INSTANCE_TYPE.to_string(),
        operator: "In".to_string(),
        values: Some(types.iter().map(|t| t.to_string()).collect()),
    }];
    requirements.extend(also.iter().map(|(key, value)| LabelSelectorRequirement {
        key: key.to_string(),
        operator: "In".to_string(),
        values: Some(vec![value.to_string()]),
    }));
    LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn mutating(
    config: &BackendConfig,
    ca_bundle: &[u8],
    short_name: &str,
    path: &str,
    failure: &str,
    match_policy: &str,
    namespaces: LabelSelector,
    rules: Vec<RuleWithOperations>,
) -> MutatingWebhook {
    MutatingWebhook {
        name: format!("{short_name}.nvca.nvcf.nvidia.io"),
        admission_review_versions: vec!["v1".to_string()],
        failure_policy: Some(failure.to_string()),
        side_effects: "None".to_string(),
        match_policy: Some(match_policy.to_string()),
        client_config: client_config(config, ca_bundle, path),
        namespace_selector: Some(namespaces),
        rules: Some(rules),
        ..MutatingWebhook::default()
    }
}

/// ValidatingWebhookConfiguration `nvca`: `validate-helm-charts` on `/validate`.
pub fn validating(config: &BackendConfig, ca_bundle: &[u8]) -> ValidatingWebhookConfiguration {
    let mut metadata = config.cluster_meta(NVCA);
    metadata.annotations = None;
    ValidatingWebhookConfiguration {
        metadata,
        webhooks: Some(vec![ValidatingWebhook {
            name: "validate-helm-charts.nvca.nvcf.nvidia.io".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            failure_policy: Some("Fail".to_string()),
            side_effects: "None".to_string(),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(workload_namespaces(&[WORKLOAD_MINISERVICE], &[])),
            client_config: client_config(config, ca_bundle, "/validate"),
            rules: Some(vec![
                rule("", &["pods", "services", "serviceaccounts"], CREATE_UPDATE),
                rule("apps", &["deployments", "statefulsets"], CREATE_UPDATE),
                rule(
                    "rbac.authorization.k8s.io",
                    &["roles", "rolebindings"],
                    CREATE_UPDATE,
                ),
                rule("batch", &["jobs", "cronjobs"], CREATE_UPDATE),
            ]),
            ..ValidatingWebhook::default()
        }]),
    }
}

/// MutatingWebhookConfiguration `nvca`, webhooks in NVIDIA's order.
pub fn mutating_configuration(
    config: &BackendConfig,
    ca_bundle: &[u8],
) -> MutatingWebhookConfiguration {
    let mut metadata = config.cluster_meta(NVCA);
    metadata.labels = None;
    let miniservice = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            LABEL_WORKLOAD_INSTANCE_TYPE.to_string(),
            WORKLOAD_MINISERVICE.to_string(),
        )])),
        match_expressions: None,
    };
    let skip_conditions = vec![
        MatchCondition {
            name: "exclude-smb-server-pod".to_string(),
            expression: format!(
                "request.kind.kind == 'Pod' && (!has(request.name) || request.name != '{SMB_SERVER_POD}')"
            ),
        },
        MatchCondition {
            name: "exclude-cred-init-job-pods".to_string(),
            expression: "request.kind.kind == 'Pod' && (!has(object.metadata.ownerReferences) || \
                         !object.metadata.ownerReferences.exists(o, o.kind == 'Job' && \
                         o.name == request.namespace + '-cred-init'))"
                .to_string(),
        },
    ];
    let mut create = mutating(
        config,
        ca_bundle,
        "miniservice-mutate-create",
        "/mutate-miniservice",
        "Fail",
        "Exact",
        miniservice.clone(),
        vec![rule("", &["pods"], &["CREATE"])],
    );
    create.match_conditions = Some(skip_conditions.clone());
    let mut update = mutating(
        config,
        ca_bundle,
        "miniservice-mutate-update",
        "/mutate-miniservice",
        "Ignore",
        "Exact",
        miniservice,
        vec![rule("", &["pods"], &["UPDATE"])],
    );
    update.match_conditions = Some(skip_conditions);
    let pods = || vec![rule("", &["pods"], CREATE_UPDATE)];
    let node_affinity = mutating(
        config,
        ca_bundle,
        "mutate-pod-nodeaffinity",
        "/mutate-pod-nodeaffinity",
        "Fail",
        "Equivalent",
        workload_namespaces(&[WORKLOAD_POD_SPEC, WORKLOAD_MINISERVICE], &[]),
        pods(),
    );
    let miniservice_enforcement = mutating(
        config,
        ca_bundle,
        "mutate-miniservice-pod-enforcement",
        "/mutate-pod-enforcement",
        "Fail",
        "Equivalent",
        workload_namespaces(&[WORKLOAD_MINISERVICE], &[(NEEDS_ENFORCE, "true")]),
        pods(),
    );
    let mut pod_enforcement = mutating(
        config,
        ca_bundle,
        "mutate-pod-enforcement",
        "/mutate-pod-enforcement",
        "Fail",
        "Equivalent",
        workload_namespaces(&[WORKLOAD_POD_SPEC], &[]),
        pods(),
    );
    pod_enforcement.object_selector = Some(LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NEEDS_ENFORCE.to_string(),
            operator: "In".to_string(),
            values: Some(vec!["true".to_string()]),
        }]),
        match_labels: None,
    });
    let helm_storage = mutating(
        config,
        ca_bundle,
        "mutate-helm-storage",
        "/mutate-helm-storage",
        "Fail",
        "Equivalent",
        workload_namespaces(&[WORKLOAD_MINISERVICE], &[]),
        pods(),
    );
    let persistent_storage = mutating(
        config,
        ca_bundle,
        "mutate-helm-persistent-storage",
        "/mutate-helm-persistent-storage",
        "Fail",
        "Equivalent",
        workload_namespaces(&[WORKLOAD_MINISERVICE], &[]),
        vec![
            rule("", &["persistentvolumeclaims"], CREATE_UPDATE),
            rule("apps", &["statefulsets"], CREATE_UPDATE),
        ],
    );
    let nvca = mutating(
        config,
        ca_bundle,
        "nvca-mutating-webhook",
        "/nvca-mutating-webhook",
        "Fail",
        "Equivalent",
        workload_namespaces(&[WORKLOAD_MINISERVICE, WORKLOAD_POD_SPEC], &[]),
        vec![rule(
            "",
            &[
                "configmaps",
                "pods",
                "persistentvolumeclaims",
                "secrets",
                "services",
            ],
            CREATE_UPDATE,
        )],
    );
    MutatingWebhookConfiguration {
        metadata,
        webhooks: Some(vec![
            create,
            update,
            node_affinity,
            miniservice_enforcement,
            pod_enforcement,
            helm_storage,
            persistent_storage,
            nvca,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    const CA: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn mutating_webhooks_have_nvidias_names_paths_and_policies() {
        let configuration = mutating_configuration(&config(), CA);
        assert_eq!(configuration.metadata.name.as_deref(), Some("nvca"));
        let found: Vec<(String, String, String)> = configuration
            .webhooks
            .unwrap()
            .into_iter()
            .map(|webhook| {
                let service = webhook.client_config.service.clone().unwrap();
                assert_eq!(
                    (
                        service.name.as_str(),
                        service.namespace.as_str(),
                        service.port
                    ),
                    ("nvca", "nvca-system", Some(8443))
                );
                assert_eq!(webhook.client_config.ca_bundle.as_ref().unwrap().0, CA);
                assert_eq!(webhook.admission_review_versions, ["v1"]);
                assert_eq!(webhook.side_effects, "None");
                (
                    webhook.name,
                    service.path.unwrap(),
                    webhook.failure_policy.unwrap(),
                )
            })
            .collect();
        let expected = [
            ("miniservice-mutate-create", "/mutate-miniservice", "Fail"),
            ("miniservice-mutate-update", "/mutate-miniservice", "Ignore"),
            (
                "mutate-pod-nodeaffinity",
                "/mutate-pod-nodeaffinity",
                "Fail",
            ),
            (
                "mutate-miniservice-pod-enforcement",
                "/mutate-pod-enforcement",
                "Fail",
            ),
            ("mutate-pod-enforcement", "/mutate-pod-enforcement", "Fail"),
            ("mutate-helm-storage", "/mutate-helm-storage", "Fail"),
            (
                "mutate-helm-persistent-storage",
                "/mutate-helm-persistent-storage",
                "Fail",
            ),
            ("nvca-mutating-webhook", "/nvca-mutating-webhook", "Fail"),
        ]
        .map(|(name, path, policy)| {
            (
                format!("{name}.nvca.nvcf.nvidia.io"),
                path.to_string(),
                policy.to_string(),
            )
        });
        assert_eq!(found, expected);
    }

    #[test]
    fn every_webhook_matches_only_workload_namespaces() {
        let configuration = mutating_configuration(&config(), CA);
        for webhook in configuration.webhooks.unwrap() {
            let selector = webhook.namespace_selector.unwrap();
            let keys: Vec<String> = selector
                .match_labels
                .iter()
                .flat_map(|labels| labels.keys().cloned())
                .chain(
                    selector
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(|r| r.key.clone()),
                )
                .collect();
            assert!(
                keys.contains(&"nvca.nvcf.nvidia.io/workload-instance-type".to_string()),
                "{}: {keys:?}",
                webhook.name
            );
        }
        let validating = validating(&config(), CA);
        let webhook = &validating.webhooks.unwrap()[0];
        assert_eq!(webhook.name, "validate-helm-charts.nvca.nvcf.nvidia.io");
        assert_eq!(
            webhook
                .client_config
                .service
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/validate")
        );
        let requirement = &webhook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(requirement.values.as_deref().unwrap(), ["miniservice"]);
        let resources: Vec<String> = webhook
            .rules
            .iter()
            .flatten()
            .flat_map(|rule| rule.resources.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            resources,
            [
                "pods",
                "services",
                "serviceaccounts",
                "deployments",
                "statefulsets",
                "roles",
                "rolebindings",
                "jobs",
                "cronjobs"
            ]
        );
    }
}
