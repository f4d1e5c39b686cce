//! ConfigMap `nvca-cluster-registration` in the operator's namespace: the registered
//! cluster's two IDs, written by the bootstrap, read by the operator (NVIDIA's
//! `N/pkg/operator/reconcile/nvcaagent_selfmanaged.go`), its bootstrap watch and doctor.
//! The chart renders it with empty values and keeps it across `helm uninstall`; empty IDs
//! mean "not registered", as NVIDIA's operator reads them.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::{Value, json};

pub const CONFIGMAP: &str = "nvca-cluster-registration";
pub const KEY_CLUSTER_ID: &str = "clusterId";
pub const KEY_CLUSTER_GROUP_ID: &str = "clusterGroupId";

/// The IDs the ConfigMap holds; each empty when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisteredIds {
    pub cluster_id: String,
    pub cluster_group_id: String,
}

impl RegisteredIds {
    /// What `configmap` holds, trimmed; empty for what is missing.
    pub fn of(configmap: Option<&ConfigMap>) -> RegisteredIds {
        let data = configmap.and_then(|cm| cm.data.as_ref());
        let id = |key: &str| {
            data.and_then(|data| data.get(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        RegisteredIds {
            cluster_id: id(KEY_CLUSTER_ID),
            cluster_group_id: id(KEY_CLUSTER_GROUP_ID),
        }
    }

    /// Both IDs, or `None` when either is empty.
    pub fn complete(self) -> Option<RegisteredIds> {
        (!self.cluster_id.is_empty() && !self.cluster_group_id.is_empty()).then_some(self)
    }
}

/// The complete IDs in the ConfigMap now; `None` when it does not exist or either is empty.
pub async fn read(configmaps: &Api<ConfigMap>) -> Result<Option<RegisteredIds>, kube::Error> {
    Ok(RegisteredIds::of(configmaps.get_opt(CONFIGMAP).await?.as_ref()).complete())
}

/// The server-side apply body that sets the two IDs (and owns nothing else).
pub fn apply_body(namespace: &str, ids: &RegisteredIds) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": CONFIGMAP, "namespace": namespace },
        "data": { KEY_CLUSTER_ID: ids.cluster_id, KEY_CLUSTER_GROUP_ID: ids.cluster_group_id },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn configmap(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn ids_are_complete_only_when_both_are_there() {
        assert_eq!(RegisteredIds::of(None).complete(), None);
        let half = configmap(&[(KEY_CLUSTER_ID, "c-1"), (KEY_CLUSTER_GROUP_ID, " ")]);
        assert_eq!(RegisteredIds::of(Some(&half)).cluster_id, "c-1");
        assert_eq!(RegisteredIds::of(Some(&half)).complete(), None);
        let both = configmap(&[(KEY_CLUSTER_ID, "c-1\n"), (KEY_CLUSTER_GROUP_ID, "g-1")]);
        assert_eq!(
            RegisteredIds::of(Some(&both)).complete(),
            Some(RegisteredIds {
                cluster_id: "c-1".into(),
                cluster_group_id: "g-1".into()
            })
        );
    }
}
