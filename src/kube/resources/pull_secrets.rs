//! Step `PullSecrets`: copies of the Secrets named in the chart's `imagePullSecrets`, from
//! the operator's namespace into `nvca-system`, so the agent's pods can pull their image.
//!
//! NVIDIA's operator leaves this to its `nvca-mirror` container (`N/pkg/operator/mirror/`);
//! nvca applies the copies as a provisioning step, so the agent never starts before they
//! exist, and labels them as the mirror does, so the two agree on what is a copy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{BackendConfig, LABEL_MANAGED_BY};

/// NVIDIA's `AdditionalImagePullSecretLabelKey`.
pub const LABEL_ADDITIONAL_PULL_SECRET: &str = "nvca.nvcf.nvidia.io/additional-image-pull-secret";
/// The `managed-by` value of a copy (the mirror's).
pub const MIRROR: &str = "nvca-mirror";

/// The label selector of every copy, as clean-up deletes them.
pub fn copies_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MIRROR}")
}

/// The copy of `source` in the system namespace: same name, type and data; only the
/// copy's own labels, and the cluster's annotations.
pub fn copy(config: &BackendConfig, source: &Secret) -> Secret {
    let mut copy = mirror_copy(source, &config.system_namespace);
    copy.metadata.annotations = Some(config.annotations());
    copy
}

/// The copy `nvca-mirror run` writes into `target_namespace`: NVIDIA's mirror's
/// (`syncSecret`): name, type, data and the two labels.
pub fn mirror_copy(source: &Secret, target_namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: source.metadata.name.clone(),
            namespace: Some(target_namespace.to_string()),
            labels: Some(BTreeMap::from([
                (LABEL_ADDITIONAL_PULL_SECRET.to_string(), "true".to_string()),
                (LABEL_MANAGED_BY.to_string(), MIRROR.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::super::testing::config;
    use super::*;

    #[test]
    fn a_copy_keeps_name_type_and_data_and_carries_the_mirrors_labels() {
        let source = Secret {
            metadata: ObjectMeta {
                name: Some("regcred".to_string()),
                namespace: Some("nvca-operator".to_string()),
                labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
                resource_version: Some("12".to_string()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".to_string()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(b"{}".to_vec()),
            )])),
            ..Secret::default()
        };
        let copy = copy(&config(), &source);
        assert_eq!(copy.metadata.name.as_deref(), Some("regcred"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("nvca-system"));
        assert_eq!(copy.metadata.resource_version, None);
        assert_eq!(copy.type_, source.type_);
        assert_eq!(copy.data, source.data);
        let labels = copy.metadata.labels.unwrap();
        assert_eq!(
            labels["nvca.nvcf.nvidia.io/additional-image-pull-secret"],
            "true"
        );
        assert_eq!(labels["app.kubernetes.io/managed-by"], "nvca-mirror");
        assert!(!labels.contains_key("team"));
        assert_eq!(
            copies_selector(),
            "app.kubernetes.io/managed-by=nvca-mirror"
        );
    }
}
