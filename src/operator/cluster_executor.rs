//! The cluster machine's effects against the world: SIS for the registration itself,
//! Kubernetes for ConfigMap `nvca-cluster-registration`.
//!
//! Guarantees, each effect being idempotent by construction:
//! - `LookUpCluster` lists the account's clusters and matches the name;
//! - `RegisterCluster` creates; SIS's "already exists" becomes the `AlreadyExists` event,
//!   so the machine looks the cluster up instead of failing;
//! - `WriteRegistration` and `ClearRegistration` are server-side applies of the two data
//!   keys only, with field manager `nvca-operator`: the chart's labels and its
//!   `helm.sh/resource-policy: keep` annotation are never owned, so never touched;
//! - `DeregisterCluster` deletes; SIS's 404 counts as done.
//!
//! Failures worth waiting out (SIS or the API server down, a timeout, a conflict, a token
//! file not rendered yet) are [`EffectError::Transient`]; the rest are
//! [`EffectError::Permanent`], with a message naming the endpoint or object and the fix.
//! A token SIS still refuses after the client re-read the file is permanent here: waiting
//! does not mend it, and the next bootstrap run reads the file again.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{FIELD_MANAGER, REGISTRATION_CONFIGMAP};
use crate::driver::{EffectError, Executor};
use crate::machines::cluster::{ClusterIds, ClusterMachine, ClusterSpec, Effect, Event};
use crate::sis::types::{CloudProvider, ClusterCreationRequest};
use crate::sis::{Deleted, SisClient, SisError};

/// The keys of `nvca-cluster-registration` (`N/pkg/operator/reconcile/nvcaagent_selfmanaged.go`).
pub const KEY_CLUSTER_ID: &str = "clusterId";
pub const KEY_CLUSTER_GROUP_ID: &str = "clusterGroupId";

/// Which side of the world an effect failed on, for the bootstrap's final message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    Sis,
    Kubernetes,
}

/// The fields of a cluster creation that the machine's spec does not carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreationExtras {
    pub description: Option<String>,
    pub attributes: Vec<String>,
}

/// Runs cluster effects against one SIS and one namespace's ConfigMaps.
pub struct ClusterExecutor {
    sis: SisClient,
    configmaps: Api<ConfigMap>,
    namespace: String,
    extras: CreationExtras,
    last_failure: Mutex<Option<(Edge, String)>>,
    written: Mutex<Option<ClusterIds>>,
}

impl ClusterExecutor {
    /// `namespace` is where `nvca-cluster-registration` lives (the operator's own).
    pub fn new(
        sis: SisClient,
        client: kube::Client,
        namespace: &str,
        extras: CreationExtras,
    ) -> Self {
        ClusterExecutor {
            sis,
            configmaps: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            extras,
            last_failure: Mutex::new(None),
            written: Mutex::new(None),
        }
    }

    /// The edge and message of the last failed effect, if any.
    pub fn last_failure(&self) -> Option<(Edge, String)> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The IDs this executor last wrote into `nvca-cluster-registration`, if any.
    pub fn written(&self) -> Option<ClusterIds> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, edge: Edge, error: EffectError) -> EffectError {
        let message = match &error {
            EffectError::Transient(m) | EffectError::Permanent(m) => m.clone(),
        };
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some((edge, message));
        error
    }

    fn creation(&self, spec: &ClusterSpec) -> Result<ClusterCreationRequest, EffectError> {
        let provider = CloudProvider::from_wire(&spec.cloud_provider).ok_or_else(|| {
            EffectError::Permanent(format!(
                "cloudProvider {:?} is not one SIS accepts; fix cluster-dto.yaml in ConfigMap nvcfbackend-self-managed",
                spec.cloud_provider
            ))
        })?;
        Ok(ClusterCreationRequest {
            cluster_name: spec.cluster_name.clone(),
            cluster_group_name: spec.group_name.clone(),
            cluster_description: self.extras.description.clone(),
            nca_id: spec.nca_id.clone(),
            cloud_provider: Some(provider),
            region: spec.region.clone(),
            nvca_version: spec.nvca_version.clone(),
            capabilities: spec.capabilities.clone(),
            attributes: self.extras.attributes.clone(),
            ..ClusterCreationRequest::default()
        })
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

    async fn run(&self, effect: &Effect) -> Result<Event, (Edge, EffectError)> {
        let sis = |error: SisError| (Edge::Sis, sis_error(self.sis.base_url(), &error));
        let kube = |error: EffectError| (Edge::Kubernetes, error);
        Ok(match effect {
            Effect::LookUpCluster { key } => {
                match self
                    .sis
                    .find_cluster_by_name(&key.nca_id, &key.cluster_name)
                    .await
                    .map_err(sis)?
                {
                    Some(cluster) => Event::LookupFound {
                        key: key.clone(),
                        ids: ClusterIds {
                            // SIS always sends the group of a listed cluster; an absent one
                            // would fail the agent later, so say so now.
                            cluster_group_id: cluster.cluster_group_id.ok_or_else(|| {
                                (
                                    Edge::Sis,
                                    EffectError::Permanent(format!(
                                        "SIS at {} lists cluster {} without a clusterGroupId; ask the NVCF operators to check the cluster's group",
                                        self.sis.base_url(),
                                        cluster.cluster_id
                                    )),
                                )
                            })?,
                            cluster_id: cluster.cluster_id,
                        },
                    },
                    None => Event::LookupMissing { key: key.clone() },
                }
            }
            Effect::RegisterCluster { spec } => {
                let request = self.creation(spec).map_err(|error| (Edge::Sis, error))?;
                match self.sis.create_cluster(&spec.nca_id, &request).await {
                    Ok(ids) => Event::Registered {
                        key: spec.key(),
                        ids: ClusterIds {
                            cluster_id: ids.cluster_id,
                            cluster_group_id: ids.cluster_group_id,
                        },
                    },
                    Err(SisError::AlreadyExists { .. }) => Event::AlreadyExists { key: spec.key() },
                    Err(error) => return Err(sis(error)),
                }
            }
            Effect::WriteRegistration { ids } => {
                self.apply_ids(&ids.cluster_id, &ids.cluster_group_id)
                    .await
                    .map_err(kube)?;
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(ids.clone());
                Event::RegistrationWritten
            }
            Effect::ClearRegistration => {
                // Empty values, as the chart renders them before any registration; NVIDIA's
                // operator ignores empty IDs.
                self.apply_ids("", "").await.map_err(kube)?;
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Event::RegistrationCleared
            }
            Effect::DeregisterCluster { nca_id, cluster_id } => {
                match self
                    .sis
                    .delete_cluster(nca_id, cluster_id)
                    .await
                    .map_err(sis)?
                {
                    Deleted::Deleted | Deleted::AlreadyGone => Event::Deregistered,
                }
            }
        })
    }
}

impl Executor<ClusterMachine> for ClusterExecutor {
    async fn execute(&self, name: &str, id: &str, effect: &Effect) -> Result<Event, EffectError> {
        tracing::debug!(cluster = name, effect = id, "running cluster effect");
        self.run(effect)
            .await
            .map_err(|(edge, error)| self.note(edge, error))
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

/// A SIS failure as the driver sees it, with the endpoint and the fix in the message.
pub fn sis_error(base_url: &str, error: &SisError) -> EffectError {
    let message = format!("SIS at {base_url}: {error}");
    match error {
        SisError::Unauthorized { .. } => EffectError::Permanent(message),
        SisError::NotFound { .. } => EffectError::Permanent(format!(
            "{message}; check icmsConfig.icmsServiceURL (Helm value selfManaged.icmsServiceURL) points at SIS"
        )),
        SisError::Rejected { .. } | SisError::PreconditionFailed { .. } => {
            EffectError::Permanent(format!(
                "{message}; fix cluster-dto.yaml through the chart values (clusterName, ncaID, selfManaged.region, selfManaged.featureGateValues) and run the bootstrap again"
            ))
        }
        error if error.is_transient() => EffectError::Transient(message),
        _ => EffectError::Permanent(message),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sis::Endpoint;

    #[test]
    fn sis_failures_split_into_wait_and_give_up_with_the_fix() {
        let url = "http://127.0.0.1:1";
        let down = SisError::Connect {
            endpoint: Endpoint::ListClusters,
            base_url: url.into(),
            reason: "refused".into(),
            attempts: 2,
        };
        assert!(matches!(sis_error(url, &down), EffectError::Transient(m) if m.contains(url)));
        let refused = SisError::Unauthorized {
            endpoint: Endpoint::CreateCluster,
            message: "expired".into(),
            token: "vault secrets file /x (kv.tokens.icms)".into(),
        };
        assert!(matches!(sis_error(url, &refused), EffectError::Permanent(m) if m.contains("/x")));
        let bad_region = SisError::Rejected {
            endpoint: Endpoint::CreateCluster,
            status: 400,
            message: "The provided mars region is not one of the supported regions".into(),
        };
        assert!(
            matches!(sis_error(url, &bad_region), EffectError::Permanent(m) if m.contains("selfManaged.region") && m.contains("POST /v1/accounts"))
        );
    }
}
