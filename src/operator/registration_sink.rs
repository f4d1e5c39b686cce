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

use super::{FIELD_MANAGER, REGISTRATION_CONFIGMAP};
use crate::driver::EffectError;
use crate::kube::registration::{self, RegisteredIds};
use crate::kube::write_failure::{Fixes, Moment, judge};
use crate::machines::cluster::ClusterIds;

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
        let ids = RegisteredIds {
            cluster_id: cluster_id.to_string(),
            cluster_group_id: group_id.to_string(),
        };
        let body = registration::apply_body(&self.namespace, &ids);
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

/// What is in `nvca-cluster-registration` now, as the machine's IDs: `None` when it does
/// not exist or either key is missing or empty.
pub async fn read_registration(
    configmaps: &Api<ConfigMap>,
) -> Result<Option<ClusterIds>, kube::Error> {
    Ok(registration::read(configmaps).await?.map(|ids| ClusterIds {
        cluster_id: ids.cluster_id,
        cluster_group_id: ids.cluster_group_id,
    }))
}

/// A failure writing the registration: a person waits on the bootstrap, so an answer that
/// holds for every attempt is reported at once, with its fix.
pub fn kube_error(what: &str, namespace: &str, error: kube::Error) -> EffectError {
    let forbidden = format!(
        "grant the operator's ServiceAccount get, create and patch on configmaps in namespace {namespace} (the chart's Role does)"
    );
    let fixes = Fixes {
        forbidden: &forbidden,
        missing_namespace: "install the chart there, or pass --system-namespace",
    };
    let failure = judge(what, &error, Moment::BeforeOwnership, fixes);
    EffectError::judged(failure.is_permanent(), failure.into_reason())
}
