//! Where a registered cluster's IDs go: the one piece the cluster executor leaves to the
//! command that drives it.
//!
//! - `nvca-operator bootstrap` (and `nvca-self-managed bootstrap`) writes ConfigMap
//!   `nvca-cluster-registration`, which NVIDIA's operator reads ([`ConfigMapSink`]);
//! - `nvca-self-managed register` writes the register-values file of NVIDIA's
//!   `nvcf-cli cluster register` (`super::register_values::RegisterValuesFile`).
//!
//! A sink's `write` and `clear` are run as the machine's `WriteRegistration` and
//! `ClearRegistration` effects: each must be idempotent, and report failures worth waiting
//! out as [`EffectError::Transient`] and the rest as [`EffectError::Permanent`], with a
//! message naming the object and the fix.

use std::future::Future;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{FIELD_MANAGER, REGISTRATION_CONFIGMAP};
use crate::driver::EffectError;
use crate::machines::cluster::ClusterIds;

/// The keys of `nvca-cluster-registration` (`N/pkg/operator/reconcile/nvcaagent_selfmanaged.go`).
pub const KEY_CLUSTER_ID: &str = "clusterId";
pub const KEY_CLUSTER_GROUP_ID: &str = "clusterGroupId";

/// Where the IDs of a registered cluster are kept for whoever installs the agent.
pub trait RegistrationSink: Send + Sync + 'static {
    /// The object written, for messages: "ConfigMap ns/nvca-cluster-registration".
    fn describe(&self) -> String;

    /// Record `ids`; writing the same IDs again changes nothing.
    fn write(&self, ids: &ClusterIds) -> impl Future<Output = Result<(), EffectError>> + Send;

    /// Record that no cluster is registered any more.
    fn clear(&self) -> impl Future<Output = Result<(), EffectError>> + Send;
}

/// ConfigMap `nvca-cluster-registration` of one namespace, written by server-side apply
/// of the two data keys only, with field manager `nvca-operator`: the chart's labels and
/// its `helm.sh/resource-policy: keep` annotation are never owned, so never touched.
pub struct ConfigMapSink {
    configmaps: Api<ConfigMap>,
    namespace: String,
}

impl ConfigMapSink {
    /// `namespace` is where `nvca-cluster-registration` lives (the operator's own).
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        ConfigMapSink {
            configmaps: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    async fn apply_ids(&self, cluster_id: &str, group_id: &str) -> Result<(), EffectError> {
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": REGISTRATION_CONFIGMAP, "namespace": self.namespace },
            "data": { KEY_CLUSTER_ID: cluster_id, KEY_CLUSTER_GROUP_ID: group_id },
        });
        // Forced: the chart renders the keys empty under Helm's own field manager; the
        // IDs are ours to set.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.configmaps
            .patch(REGISTRATION_CONFIGMAP, &params, &Patch::Apply(&body))
            .await
            .map(drop)
            .map_err(|error| {
                kube_error(
                    &format!(
                        "writing ConfigMap {}/{REGISTRATION_CONFIGMAP}",
                        self.namespace
                    ),
                    &self.namespace,
                    error,
                )
            })
    }
}

impl RegistrationSink for ConfigMapSink {
    fn describe(&self) -> String {
        format!("ConfigMap {}/{REGISTRATION_CONFIGMAP}", self.namespace)
    }

    async fn write(&self, ids: &ClusterIds) -> Result<(), EffectError> {
        self.apply_ids(&ids.cluster_id, &ids.cluster_group_id).await
    }

    /// Empty values, as the chart renders them before any registration; NVIDIA's
    /// operator ignores empty IDs.
    async fn clear(&self) -> Result<(), EffectError> {
        self.apply_ids("", "").await
    }
}

/// What is in `nvca-cluster-registration` now: `None` when it does not exist or either
/// key is missing or empty (NVIDIA's operator ignores empty IDs too).
pub async fn read_registration(
    configmaps: &Api<ConfigMap>,
) -> Result<Option<ClusterIds>, kube::Error> {
    let Some(map) = configmaps.get_opt(REGISTRATION_CONFIGMAP).await? else {
        return Ok(None);
    };
    let data = map.data.unwrap_or_default();
    let value = |key: &str| {
        data.get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Ok(match (value(KEY_CLUSTER_ID), value(KEY_CLUSTER_GROUP_ID)) {
        (Some(cluster_id), Some(cluster_group_id)) => Some(ClusterIds {
            cluster_id,
            cluster_group_id,
        }),
        _ => None,
    })
}

/// A Kubernetes failure as the driver sees it.
pub fn kube_error(what: &str, namespace: &str, error: kube::Error) -> EffectError {
    match &error {
        kube::Error::Api(status) => {
            let detail = format!(
                "{what}: Kubernetes answered {} ({})",
                status.code, status.message
            );
            match status.code {
                401 | 403 => EffectError::Permanent(format!(
                    "{detail}; grant the operator's ServiceAccount get, create and patch on configmaps in namespace {namespace} (the chart's Role does)"
                )),
                404 => EffectError::Permanent(format!(
                    "{detail}; namespace {namespace} must exist: install the chart there, or pass --system-namespace"
                )),
                409 | 429 | 500.. => EffectError::Transient(detail),
                _ => EffectError::Permanent(detail),
            }
        }
        _ => EffectError::Transient(format!(
            "{what}: {error}; check that the Kubernetes API server is reachable"
        )),
    }
}
