//! The feature flags and cluster attributes the webhooks obey, read from the agent's
//! configuration (`agent.featureFlags`, `cluster.attributes`) with NVIDIA's spellings,
//! defaults and parsing rules (`N/pkg/featureflag/featureflag.go` `parseFlags`,
//! `attribute.go` `parseAttributes`; `N` = `src/compute-plane-services/nvca`):
//!
//! - flags are resolved by [`crate::kube::feature_flags`]: `Name` or `+Name` (on) or
//!   `-Name` (off), the last word wins, unknown names are ignored;
//! - an attribute is `Name` (on) or `Name=value`, on unless `value` parses as a false
//!   boolean (`0`, `f`, `F`, `false`, `FALSE`, `False`); unknown names are ignored;
//! - `DynamoOperatorSupport` turns `AllowWorkloadKubernetesAPIAccess` on;
//! - `HostIsolation` and `AccountIsolation` together are refused at start.

use std::collections::BTreeMap;

use super::error::WebhookError;
use crate::kube::feature_flags::Flags;

/// Workload labels that say what a Kubernetes object belongs to
/// (`N/pkg/types/common_labels.go`).
pub const FUNCTION_ID_UPPER_LABEL: &str = "FUNCTION_ID";
pub const TASK_ID_UPPER_LABEL: &str = "TASK_ID";

/// Helm functions and tasks run in namespaces named `sr-…`
/// (`N/internal/util/k8sutil/namespace.go` `IsMiniServiceNamespaceName`).
pub fn is_helm_namespace(namespace: &str) -> bool {
    namespace.starts_with("sr-")
}

/// What the webhooks need to know about the cluster's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// `UniformInstanceLabels` (default on): rewrite `node.kubernetes.io/instance-type`
    /// selectors to `nvca.nvcf.nvidia.io/instance-type`.
    pub uniform_instance_labels: bool,
    /// `AllowWorkloadKubernetesAPIAccess` (default off): leave workload pods their
    /// ServiceAccount token.
    pub allow_workload_api_access: bool,
    /// `EnforceHelmFunctionResourceLimits`.
    pub enforce_helm_function_limits: bool,
    /// `EnforceHelmTaskResourceLimits`.
    pub enforce_helm_task_limits: bool,
    /// `EnforceContainerFunctionResourceLimits`.
    pub enforce_container_function_limits: bool,
    /// `EnforceContainerTaskResourceLimits`.
    pub enforce_container_task_limits: bool,
    /// `HelmInternalPersistentStorage` (default off).
    pub helm_internal_persistent_storage: bool,
    /// Attribute `KataRuntimeIsolation`.
    pub kata_runtime_isolation: bool,
    /// Attribute `HostIsolation`: per-function/task tenant tolerations and anti-affinity.
    pub host_isolation: bool,
    /// Attribute `AccountIsolation`: per-account (NCA ID) tolerations and anti-affinity.
    pub account_isolation: bool,
    /// Attribute `TimeSlicingGPUEnabled`: GPUs are asked for as `nvidia.com/gpu.shared`.
    pub time_slicing_gpu: bool,
    /// Attribute `PassthroughGPUEnabled`: GPUs are asked for as `nvidia.com/pgpu`.
    pub passthrough_gpu: bool,
}

impl Default for Features {
    /// NVIDIA's defaults.
    fn default() -> Self {
        Features {
            uniform_instance_labels: true,
            allow_workload_api_access: false,
            enforce_helm_function_limits: false,
            enforce_helm_task_limits: false,
            enforce_container_function_limits: false,
            enforce_container_task_limits: false,
            helm_internal_persistent_storage: false,
            kata_runtime_isolation: false,
            host_isolation: false,
            account_isolation: false,
            time_slicing_gpu: false,
            passthrough_gpu: false,
        }
    }
}

impl Features {
    /// The features from `agent.featureFlags` and `cluster.attributes`.
    pub fn parse(flags: &[String], attributes: &[String]) -> Result<Features, WebhookError> {
        let flags = Flags::resolve(flags);
        let mut features = Features {
            uniform_instance_labels: flags.is_on("UniformInstanceLabels"),
            allow_workload_api_access: flags.is_on("AllowWorkloadKubernetesAPIAccess"),
            enforce_helm_function_limits: flags.is_on("EnforceHelmFunctionResourceLimits"),
            enforce_helm_task_limits: flags.is_on("EnforceHelmTaskResourceLimits"),
            enforce_container_function_limits: flags
                .is_on("EnforceContainerFunctionResourceLimits"),
            enforce_container_task_limits: flags.is_on("EnforceContainerTaskResourceLimits"),
            helm_internal_persistent_storage: flags.is_on("HelmInternalPersistentStorage"),
            ..Features::default()
        };
        for entry in attributes.iter().flat_map(|entry| entry.split(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let parts: Vec<&str> = entry.split('=').collect();
            let (name, on) = match parts.as_slice() {
                [name] => (*name, true),
                [name, value] => (*name, !is_go_false(value)),
                _ => continue,
            };
            match name {
                "KataRuntimeIsolation" => features.kata_runtime_isolation = on,
                "HostIsolation" => features.host_isolation = on,
                "AccountIsolation" => features.account_isolation = on,
                "TimeSlicingGPUEnabled" => features.time_slicing_gpu = on,
                "PassthroughGPUEnabled" => features.passthrough_gpu = on,
                _ => {}
            }
        }
        if features.host_isolation && features.account_isolation {
            return Err(WebhookError::Features(
                "cluster attributes HostIsolation and AccountIsolation are mutually exclusive: \
                 remove one from cluster.attributes"
                    .to_string(),
            ));
        }
        Ok(features)
    }

    /// Whether any of the four `Enforce*ResourceLimits` flags is on.
    pub fn enforces_any_limits(&self) -> bool {
        self.enforce_helm_function_limits
            || self.enforce_helm_task_limits
            || self.enforce_container_function_limits
            || self.enforce_container_task_limits
    }
}

impl Features {
    /// NVIDIA's `shouldEnforceResourceLimits` (`N/pkg/webhook/nvca_mutating_webhook.go`):
    /// Kata isolation in helm namespaces, or the `Enforce*ResourceLimits` flag for the
    /// object's kind of workload (its `FUNCTION_ID` or `TASK_ID` label) and namespace.
    pub fn enforces_limits_on(&self, labels: &BTreeMap<String, String>, namespace: &str) -> bool {
        let has = |key: &str| labels.get(key).is_some_and(|value| !value.is_empty());
        let (task, function) = (has(TASK_ID_UPPER_LABEL), has(FUNCTION_ID_UPPER_LABEL));
        if is_helm_namespace(namespace) {
            self.kata_runtime_isolation
                || (task && self.enforce_helm_task_limits)
                || (function && self.enforce_helm_function_limits)
        } else {
            (task && self.enforce_container_task_limits)
                || (function && self.enforce_container_function_limits)
        }
    }
}

/// Go's `strconv.ParseBool` false spellings.
fn is_go_false(value: &str) -> bool {
    matches!(value, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_attributes_parse_as_nvidias() {
        type Case = (
            &'static [&'static str],
            &'static [&'static str],
            fn(&Features) -> bool,
        );
        let cases: &[Case] = &[
            (&[], &[], |f| *f == Features::default()),
            (&["-UniformInstanceLabels"], &[], |f| {
                !f.uniform_instance_labels
            }),
            (&["+AllowWorkloadKubernetesAPIAccess"], &[], |f| {
                f.allow_workload_api_access
            }),
            (&["DynamoOperatorSupport"], &[], |f| {
                f.allow_workload_api_access
            }),
            (
                &["EnforceHelmFunctionResourceLimits, EnforceContainerTaskResourceLimits"],
                &[],
                |f| {
                    f.enforce_helm_function_limits
                        && f.enforce_container_task_limits
                        && !f.enforce_helm_task_limits
                        && f.enforces_any_limits()
                },
            ),
            (&["NoSuchFlag", ""], &[], |f| *f == Features::default()),
            (&[], &["KataRuntimeIsolation"], |f| f.kata_runtime_isolation),
            (&[], &["HostIsolation=true"], |f| f.host_isolation),
            (&[], &["HostIsolation=False"], |f| !f.host_isolation),
            (&[], &["AccountIsolation=anything"], |f| f.account_isolation),
            (&[], &["AccountIsolation=a=b"], |f| !f.account_isolation),
            (
                &[],
                &["TimeSlicingGPUEnabled", "PassthroughGPUEnabled=1"],
                |f| f.time_slicing_gpu && f.passthrough_gpu,
            ),
        ];
        for (flags, attributes, check) in cases {
            let features = Features::parse(&strings(flags), &strings(attributes)).unwrap();
            assert!(check(&features), "{flags:?} {attributes:?}: {features:?}");
        }
    }

    #[test]
    fn limits_are_enforced_by_namespace_and_workload_kind() {
        let on = |flag: &str| Features::parse(&[flag.to_string()], &[]).unwrap();
        let kata = Features::parse(&[], &["KataRuntimeIsolation".to_string()]).unwrap();
        let labels =
            |key: &str, value: &str| BTreeMap::from([(key.to_string(), value.to_string())]);
        let function = labels("FUNCTION_ID", "f1");
        let task = labels("TASK_ID", "t1");
        let cases = [
            (Features::default(), &function, "sr-abc", false),
            (
                on("EnforceHelmFunctionResourceLimits"),
                &function,
                "sr-abc",
                true,
            ),
            (
                on("EnforceHelmFunctionResourceLimits"),
                &function,
                "nvcf-backend",
                false,
            ),
            (
                on("EnforceHelmFunctionResourceLimits"),
                &task,
                "sr-abc",
                false,
            ),
            (on("EnforceHelmTaskResourceLimits"), &task, "sr-abc", true),
            (
                on("EnforceContainerFunctionResourceLimits"),
                &function,
                "nvcf-backend",
                true,
            ),
            (
                on("EnforceContainerFunctionResourceLimits"),
                &function,
                "sr-abc",
                false,
            ),
            (
                on("EnforceContainerTaskResourceLimits"),
                &task,
                "nvcf-backend",
                true,
            ),
            (
                on("EnforceContainerTaskResourceLimits"),
                &labels("TASK_ID", ""),
                "nvcf-backend",
                false,
            ),
            (kata.clone(), &BTreeMap::new(), "sr-abc", true),
            (kata, &BTreeMap::new(), "nvcf-backend", false),
        ];
        for (features, labels, namespace, expected) in cases {
            assert_eq!(
                features.enforces_limits_on(labels, namespace),
                expected,
                "{features:?} {labels:?} {namespace}"
            );
        }
    }

    #[test]
    fn host_and_account_isolation_together_are_refused_with_the_fix() {
        let error =
            Features::parse(&[], &strings(&["HostIsolation", "AccountIsolation"])).unwrap_err();
        assert_eq!(error.category(), "features");
        assert!(error.to_string().contains("remove one"), "{error}");
    }
}
