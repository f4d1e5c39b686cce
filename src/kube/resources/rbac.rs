//! Step `Rbac`: ServiceAccount, ClusterRole and ClusterRoleBinding `nvca`, NVIDIA's
//! `setupNVCARBAC` (`N/pkg/operator/reconcile/nvcaagent_reconcile.go`).
//!
//! The ClusterRole is NVIDIA's list, narrowed where nvca's agent does not need a right
//! (docs/operator.md lists each): no `impersonate` of ServiceAccounts (helm functions
//! are not supported yet), no `nvsnap.nvcf.nvidia.io` (NvSnap is not implemented), no
//! `run.ai` `kartas`. Conditional rules stay conditional as in NVIDIA's: node writes only
//! with dynamic GPU discovery (the agent labels nodes), DRA and ComputeDomains only with
//! the cluster attribute `NVLinkOptimized=true`.

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};

use super::{BackendConfig, NVCA};

const READ: &[&str] = &["get", "list", "watch"];
const CRUD: &[&str] = &[
    "get", "list", "watch", "create", "update", "delete", "patch",
];
const CRUD_COLLECTION: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "delete",
    "deletecollection",
    "patch",
];
/// The cluster attribute that turns on the DRA rules (NVIDIA's `AttrNVLinkOptimized`).
pub const NVLINK_OPTIMIZED: &str = "NVLinkOptimized=true";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

fn named(mut rule: PolicyRule, names: &[&str]) -> PolicyRule {
    rule.resource_names = Some(names.iter().map(|n| n.to_string()).collect());
    rule
}

/// ServiceAccount `nvca` in `nvca-system`: no automounted token on the account (the pod
/// asks for one), the copied pull secrets.
pub fn service_account(config: &BackendConfig) -> ServiceAccount {
    let secrets: Vec<LocalObjectReference> = config
        .settings
        .image_pull_secrets
        .iter()
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    ServiceAccount {
        metadata: config.system_meta(NVCA),
        automount_service_account_token: Some(false),
        image_pull_secrets: (!secrets.is_empty()).then_some(secrets),
        ..ServiceAccount::default()
    }
}

/// The agent's rules.
pub fn rules(config: &BackendConfig) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule("", &["secrets", "configmaps"], CRUD),
        rule("", &["persistentvolumes"], CRUD_COLLECTION),
        rule("nvca.nvcf.nvidia.io", &["icmsrequests"], CRUD),
        rule(
            "nvca.nvcf.nvidia.io",
            &["icmsrequests/status"],
            &["get", "update", "patch"],
        ),
        rule(
            "nvca.nvcf.nvidia.io",
            &["storagerequests", "storagerequests/status"],
            CRUD,
        ),
        rule(
            "storage.k8s.io",
            &["storageclasses", "volumeattachments"],
            CRUD_COLLECTION,
        ),
        rule("storage.k8s.io", &["csidrivers"], READ),
        named(
            rule(
                "security.openshift.io",
                &["securitycontextconstraints"],
                &["use"],
            ),
            &["nonroot"],
        ),
        named(
            rule(
                "admissionregistration.k8s.io",
                &[
                    "mutatingwebhookconfigurations",
                    "validatingwebhookconfigurations",
                ],
                READ,
            ),
            &[NVCA],
        ),
    ];
    if config.dynamic_gpu_discovery {
        rules.push(rule(
            "",
            &["nodes"],
            &["get", "list", "watch", "update", "patch"],
        ));
    } else {
        rules.push(rule("", &["nodes"], READ));
    }
    rules.extend([
        rule(
            "",
            &[
                "serviceaccounts",
                "namespaces",
                "pods",
                "pods/log",
                "pods/status",
                "events",
                "services",
                "persistentvolumes",
                "persistentvolumes/status",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "resourcequotas",
            ],
            CRUD,
        ),
        rule("batch", &["jobs", "cronjobs"], CRUD),
        rule(
            "apps",
            &["replicasets", "deployments", "statefulsets"],
            CRUD,
        ),
        rule("networking.k8s.io", &["networkpolicies"], CRUD_COLLECTION),
        rule("node.k8s.io", &["runtimeclasses"], READ),
        rule(
            "rbac.authorization.k8s.io",
            &["roles", "rolebindings"],
            CRUD,
        ),
        rule("coordination.k8s.io", &["leases"], CRUD),
        rule("scheduling.run.ai", &["queues"], READ),
        rule(
            "nvca.nvcf.nvidia.io",
            &["miniservices", "miniservices/status"],
            CRUD,
        ),
    ]);
    if config.attributes.iter().any(|a| a == NVLINK_OPTIMIZED) {
        rules.extend([
            rule("resource.nvidia.com", &["computedomains"], CRUD_COLLECTION),
            rule(
                "resource.k8s.io",
                &["resourceclaims", "resourceclaimtemplates"],
                CRUD_COLLECTION,
            ),
            rule(
                "resource.k8s.io",
                &["deviceclasses", "resourceslices"],
                READ,
            ),
            rule("apps", &["daemonsets"], READ),
        ]);
    }
    rules
}

/// ClusterRole `nvca`.
pub fn cluster_role(config: &BackendConfig) -> ClusterRole {
    ClusterRole {
        metadata: config.cluster_meta(NVCA),
        rules: Some(rules(config)),
        ..ClusterRole::default()
    }
}

/// ClusterRoleBinding `nvca`: ClusterRole `nvca` to ServiceAccount `nvca-system/nvca`.
pub fn cluster_role_binding(config: &BackendConfig) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: config.cluster_meta(NVCA),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: NVCA.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: NVCA.to_string(),
            namespace: Some(config.system_namespace.clone()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::testing::config;
    use super::*;

    /// NVIDIA's rules for a dynamic-discovery Kubernetes backend with every attribute,
    /// as (group, resource, verb) triples.
    fn nvidias() -> BTreeSet<(String, String, String)> {
        let list: &[(&str, &[&str], &[&str])] = &[
            ("", &["secrets", "configmaps"], CRUD),
            ("", &["persistentvolumes"], CRUD_COLLECTION),
            ("nvca.nvcf.nvidia.io", &["icmsrequests"], CRUD),
            (
                "nvca.nvcf.nvidia.io",
                &["icmsrequests/status"],
                &["get", "update", "patch"],
            ),
            (
                "nvca.nvcf.nvidia.io",
                &["storagerequests", "storagerequests/status"],
                CRUD,
            ),
            (
                "storage.k8s.io",
                &["storageclasses", "volumeattachments"],
                CRUD_COLLECTION,
            ),
            ("storage.k8s.io", &["csidrivers"], READ),
            (
                "security.openshift.io",
                &["securitycontextconstraints"],
                &["use"],
            ),
            (
                "admissionregistration.k8s.io",
                &[
                    "mutatingwebhookconfigurations",
                    "validatingwebhookconfigurations",
                ],
                READ,
            ),
            (
                "nvsnap.nvcf.nvidia.io",
                &["nvsnapfunctionstates", "nvsnapfunctionstates/status"],
                CRUD,
            ),
            ("", &["nodes"], &["get", "list", "watch", "update", "patch"]),
            (
                "",
                &[
                    "serviceaccounts",
                    "namespaces",
                    "pods",
                    "pods/log",
                    "pods/status",
                    "events",
                    "services",
                    "persistentvolumes",
                    "persistentvolumes/status",
                    "persistentvolumeclaims",
                    "persistentvolumeclaims/status",
                    "resourcequotas",
                ],
                CRUD,
            ),
            ("", &["serviceaccounts"], &["impersonate"]),
            ("batch", &["jobs", "cronjobs"], CRUD),
            (
                "apps",
                &["replicasets", "deployments", "statefulsets"],
                CRUD,
            ),
            ("networking.k8s.io", &["networkpolicies"], CRUD_COLLECTION),
            ("node.k8s.io", &["runtimeclasses"], READ),
            (
                "rbac.authorization.k8s.io",
                &["roles", "rolebindings"],
                CRUD,
            ),
            ("coordination.k8s.io", &["leases"], CRUD),
            ("scheduling.run.ai", &["queues"], READ),
            (
                "nvca.nvcf.nvidia.io",
                &["miniservices", "miniservices/status"],
                CRUD,
            ),
            ("run.ai", &["kartas"], READ),
            ("resource.nvidia.com", &["computedomains"], CRUD_COLLECTION),
            (
                "resource.k8s.io",
                &["resourceclaims", "resourceclaimtemplates"],
                CRUD_COLLECTION,
            ),
            (
                "resource.k8s.io",
                &["deviceclasses", "resourceslices"],
                READ,
            ),
            ("apps", &["daemonsets"], READ),
        ];
        triples(list.iter().map(|(g, r, v)| rule(g, r, v)))
    }

    fn triples(rules: impl IntoIterator<Item = PolicyRule>) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for rule in rules {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        out.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_cluster_role_grants_no_more_than_nvidias() {
        let mut config = config();
        config.attributes.push(NVLINK_OPTIMIZED.to_string());
        let ours = triples(rules(&config));
        let nvidias = nvidias();
        let extra: Vec<_> = ours.difference(&nvidias).collect();
        assert!(extra.is_empty(), "beyond NVIDIA's list: {extra:?}");
        let narrowed: Vec<_> = nvidias.difference(&ours).cloned().collect();
        assert!(narrowed.iter().any(|(_, _, verb)| verb == "impersonate"));
        assert!(
            narrowed
                .iter()
                .all(|(group, resource, verb)| verb == "impersonate"
                    || group == "nvsnap.nvcf.nvidia.io"
                    || resource == "kartas"),
            "{narrowed:?}"
        );
    }

    #[test]
    fn conditional_rules_follow_discovery_and_attributes() {
        let mut config = config();
        let ours = triples(rules(&config));
        assert!(ours.contains(&("".into(), "nodes".into(), "patch".into())));
        assert!(!ours.iter().any(|(group, _, _)| group == "resource.k8s.io"));
        config.dynamic_gpu_discovery = false;
        let ours = triples(rules(&config));
        assert!(!ours.contains(&("".into(), "nodes".into(), "patch".into())));
        assert!(ours.contains(&("".into(), "nodes".into(), "list".into())));
        let webhooks = rules(&config)
            .into_iter()
            .find(|rule| {
                rule.api_groups.as_deref() == Some(&["admissionregistration.k8s.io".to_string()])
            })
            .unwrap();
        assert_eq!(
            webhooks.resource_names.as_deref(),
            Some(&["nvca".to_string()][..])
        );
    }

    #[test]
    fn names_and_binding_are_nvidias() {
        let config = config();
        let account = service_account(&config);
        assert_eq!(account.metadata.name.as_deref(), Some("nvca"));
        assert_eq!(account.metadata.namespace.as_deref(), Some("nvca-system"));
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(account.image_pull_secrets.unwrap()[0].name, "regcred");
        let role = cluster_role(&config);
        assert_eq!(role.metadata.name.as_deref(), Some("nvca"));
        assert_eq!(
            role.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
            "nvca-operator"
        );
        let binding = cluster_role_binding(&config);
        assert_eq!(binding.role_ref.name, "nvca");
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", "nvca", Some("nvca-system"))
        );
    }
}
