//! Steps `SystemNamespace` and `RequestsNamespace`: NVIDIA's `setupSystemNamespace` and
//! `setupRequestsNamespace` (`N/pkg/operator/reconcile/nvcaagent_reconcile.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Namespace, ResourceQuota, ResourceQuotaSpec, ScopeSelector, ScopedResourceSelectorRequirement,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    BackendConfig, LABEL_GXCACHE, LABEL_MANAGED_BY, LABEL_WORKLOAD_INSTANCE_TYPE, NVCA,
    WORKLOAD_POD_SPEC,
};

/// The priority classes the system namespace's quota admits (NVIDIA's `PriorityClassOptions`).
pub const PRIORITY_CLASSES: [&str; 2] = ["system-node-critical", "system-cluster-critical"];

/// Namespace `nvca-system` with NVIDIA's app labels and cluster annotations.
pub fn system_namespace(config: &BackendConfig) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(config.system_namespace.clone()),
            labels: Some(config.app_labels()),
            annotations: Some(config.annotations()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// ResourceQuota `nvca-system` in `nvca-system`: scoped to the system priority classes,
/// so the agent may use them there (Kubernetes admits critical priority classes only in
/// namespaces with such a quota).
pub fn system_quota(config: &BackendConfig) -> ResourceQuota {
    ResourceQuota {
        metadata: config.system_meta(&config.system_namespace),
        spec: Some(ResourceQuotaSpec {
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                    operator: "In".to_string(),
                    scope_name: "PriorityClass".to_string(),
                    values: Some(PRIORITY_CLASSES.map(String::from).to_vec()),
                }]),
            }),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// Namespace `nvcf-backend`: managed by the agent (`managed-by=nvca`), marked as the
/// namespace of container functions (`workload-instance-type=pod_spec`), and for
/// GXCache injection when it is on.
pub fn requests_namespace(config: &BackendConfig) -> Namespace {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), NVCA.to_string()),
        (
            LABEL_WORKLOAD_INSTANCE_TYPE.to_string(),
            WORKLOAD_POD_SPEC.to_string(),
        ),
    ]);
    if config.settings.gxcache {
        labels.insert(LABEL_GXCACHE.to_string(), "true".to_string());
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(config.requests_namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The requests namespace's `default` ServiceAccount without an automounted token:
/// function pods get no API credentials unless they ask.
pub fn requests_default_service_account(config: &BackendConfig) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".to_string()),
            namespace: Some(config.requests_namespace.clone()),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    #[test]
    fn the_system_namespace_carries_nvidias_labels_and_annotations() {
        let namespace = system_namespace(&config());
        assert_eq!(namespace.metadata.name.as_deref(), Some("nvca-system"));
        let labels = namespace.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "nvca");
        assert_eq!(labels["app.kubernetes.io/name"], "nvca");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "nvca-operator");
        let annotations = namespace.metadata.annotations.unwrap();
        assert_eq!(annotations["nvcf.nvidia.io/cluster-name"], "ncp-local");
        assert_eq!(annotations["nvcf.nvidia.io/cluster-group"], "nvcf-default");

        let quota = system_quota(&config());
        assert_eq!(quota.metadata.name.as_deref(), Some("nvca-system"));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("nvca-system"));
        let scope = &quota
            .spec
            .unwrap()
            .scope_selector
            .unwrap()
            .match_expressions
            .unwrap()[0];
        assert_eq!(
            (scope.scope_name.as_str(), scope.operator.as_str()),
            ("PriorityClass", "In")
        );
        assert_eq!(
            scope.values.as_deref().unwrap(),
            ["system-node-critical", "system-cluster-critical"]
        );
    }

    #[test]
    fn the_requests_namespace_is_the_agents_pod_spec_namespace() {
        let namespace = requests_namespace(&config());
        assert_eq!(namespace.metadata.name.as_deref(), Some("nvcf-backend"));
        let labels = namespace.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "nvca");
        assert_eq!(
            labels["nvca.nvcf.nvidia.io/workload-instance-type"],
            "pod_spec"
        );
        assert_eq!(labels["nvca.nvcf.nvidia.io/gxcache-client-inject"], "true");

        let mut without = config();
        without.settings.gxcache = false;
        let labels = requests_namespace(&without).metadata.labels.unwrap();
        assert!(!labels.contains_key("nvca.nvcf.nvidia.io/gxcache-client-inject"));

        let account = requests_default_service_account(&config());
        assert_eq!(account.metadata.namespace.as_deref(), Some("nvcf-backend"));
        assert_eq!(account.automount_service_account_token, Some(false));
    }
}
