//! The cluster machine's effects against the world: SIS for the registration itself, a
//! [`RegistrationSink`] for where the IDs go (ConfigMap `nvca-cluster-registration` for
//! the bootstrap, the register-values file for `nvca-self-managed register`).
//!
//! Guarantees, each effect being idempotent by construction:
//! - `LookUpCluster` lists the account's clusters and matches the name. When the executor
//!   carries a [`TrustRoot`] (only `register` gives it one) and the cluster is found, it
//!   then refreshes the cluster's trust root at SIS (`PUT /v1/nvca/clusters/{id}/jwks`), as
//!   NVIDIA's `cluster register --ignore-existing` does: SIS's create never touches a
//!   cluster that already exists;
//! - `RegisterCluster` creates, with the trust root's `jwks` and `oidcIssuer` when there
//!   is one; SIS's "already exists" becomes the `AlreadyExists` event, so the machine looks
//!   the cluster up instead of failing;
//! - `WriteRegistration` and `ClearRegistration` are the sink's `write` and `clear`;
//! - `DeregisterCluster` deletes; SIS's 404 counts as done.
//!
//! Failures worth waiting out (SIS or the API server down, a timeout, a conflict, a token
//! file not rendered yet) are [`EffectError::Transient`]; the rest are
//! [`EffectError::Permanent`], with a message naming the endpoint or object and the fix
//! (the fix in the words of the command's inputs: [`Fixes`]). A token SIS still refuses
//! after the client re-read the file is permanent here: waiting does not mend it, and the
//! next run reads the file again.

use std::sync::Mutex;

use super::registration_sink::{ConfigMapSink, RegistrationSink};
use crate::driver::{EffectError, Executor};
use crate::machines::cluster::{ClusterIds, ClusterMachine, ClusterSpec, Effect, Event};
use crate::sis::types::{CloudProvider, ClusterCreationRequest, JwksUpdate};
use crate::sis::{Deleted, SisClient, SisError};

pub use super::registration_sink::{kube_error, read_registration};

/// Which side of the world an effect failed on, for the command's final message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    Sis,
    /// The [`RegistrationSink`]: the ConfigMap, or the register-values file.
    Sink,
}

/// The GPU cluster's identity provider as SIS records it, so SIS can validate the
/// agent's projected service-account tokens (PSAT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRoot {
    /// The issuer (`iss`) of the cluster's service-account tokens.
    pub oidc_issuer: String,
    /// The issuer's JWKS document, as JSON text.
    pub jwks: String,
}

/// What SIS's refusal of a JWKS update (`PUT /v1/nvca/clusters/{id}/jwks`) means, when
/// its own message does not say: a 404 with an empty body is SIS with
/// `icms.nvca.oidcClusterIdentityEnabled` off (`NvcaController.java`), a 409 is the same
/// signing keys registered for another cluster (`ClusterOidcIdentityService.java`).
pub fn jwks_refusal_hint(error: &SisError) -> Option<&'static str> {
    match error {
        SisError::NotFound { message, .. } if message == "empty body" => Some(
            "SIS answers 404 to JWKS updates when its OIDC cluster identity (icms.nvca.oidcClusterIdentityEnabled) is off; ask the control plane's operators to turn it on",
        ),
        SisError::Conflict { .. } => Some(
            "each cluster needs its own service-account signing keys, and these are registered for the cluster SIS names: register this GPU cluster under that cluster's name, or give it signing keys of its own",
        ),
        _ => None,
    }
}

/// The fields of a cluster creation that the machine's spec does not carry. They are not
/// persisted: each run of a command supplies them afresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreationExtras {
    pub description: Option<String>,
    pub attributes: Vec<String>,
    /// Sent with the creation, and pushed to a cluster found by look-up.
    pub trust_root: Option<TrustRoot>,
}

/// How a command's user fixes what SIS refuses: the inputs differ per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixes {
    /// Said when SIS answers 404: where the SIS URL comes from.
    pub sis_url: &'static str,
    /// Said when SIS rejects a request (400, 412): which inputs to change, how to re-run.
    pub request: &'static str,
    /// Said when SIS refuses the token (401, 403); empty for nothing beyond SIS's words.
    pub token: &'static str,
}

impl Fixes {
    /// The bootstrap's inputs: the chart's values, rendered into `cluster-dto.yaml`.
    pub const CHART: Fixes = Fixes {
        sis_url: "check icmsConfig.icmsServiceURL (Helm value selfManaged.icmsServiceURL) points at SIS",
        request: "fix cluster-dto.yaml through the chart values (clusterName, ncaID, selfManaged.region, selfManaged.featureGateValues) and run the bootstrap again",
        token: "",
    };
}

/// Runs cluster effects against one SIS and one [`RegistrationSink`].
pub struct ClusterExecutor<S: RegistrationSink = ConfigMapSink> {
    sis: SisClient,
    sink: S,
    extras: CreationExtras,
    fixes: Fixes,
    last_failure: Mutex<Option<(Edge, String)>>,
    written: Mutex<Option<ClusterIds>>,
}

impl ClusterExecutor<ConfigMapSink> {
    /// The bootstrap's executor: the IDs go to `nvca-cluster-registration` in `namespace`
    /// (the operator's own).
    pub fn new(
        sis: SisClient,
        client: kube::Client,
        namespace: &str,
        extras: CreationExtras,
    ) -> Self {
        Self::with_sink(sis, ConfigMapSink::new(client, namespace), extras)
    }
}

impl<S: RegistrationSink> ClusterExecutor<S> {
    /// An executor writing the IDs to `sink`; SIS's refusals are explained in the chart's
    /// terms until [`ClusterExecutor::with_fixes`] says otherwise.
    pub fn with_sink(sis: SisClient, sink: S, extras: CreationExtras) -> Self {
        ClusterExecutor {
            sis,
            sink,
            extras,
            fixes: Fixes::CHART,
            last_failure: Mutex::new(None),
            written: Mutex::new(None),
        }
    }

    /// Explain SIS's refusals in terms of other inputs (e.g. command-line flags).
    pub fn with_fixes(mut self, fixes: Fixes) -> Self {
        self.fixes = fixes;
        self
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The edge and message of the last failed effect, if any.
    pub fn last_failure(&self) -> Option<(Edge, String)> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The IDs this executor last wrote to its sink, if any.
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
        let trust = self.extras.trust_root.as_ref();
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
            jwks: trust.map(|t| t.jwks.clone()),
            oidc_issuer: trust.map(|t| t.oidc_issuer.clone()),
            ..ClusterCreationRequest::default()
        })
    }

    /// `error` with the fix; with a trust root also what SIS's JWKS refusals mean.
    fn sis_error(&self, error: &SisError) -> EffectError {
        let judged = sis_error_with(self.sis.base_url(), error, &self.fixes);
        let hint = match (&self.extras.trust_root, jwks_refusal_hint(error)) {
            (Some(_), Some(hint)) => hint,
            _ => return judged,
        };
        match judged {
            EffectError::Transient(m) => EffectError::Transient(format!("{m}; {hint}")),
            EffectError::Permanent(m) => EffectError::Permanent(format!("{m}; {hint}")),
        }
    }

    /// Replace the trust root SIS holds for `cluster_id` with ours, if we carry one.
    async fn refresh_trust_root(&self, cluster_id: &str) -> Result<(), EffectError> {
        let Some(trust) = &self.extras.trust_root else {
            return Ok(());
        };
        let update = JwksUpdate {
            jwks: trust.jwks.clone(),
            oidc_issuer: Some(trust.oidc_issuer.clone()),
        };
        self.sis
            .push_jwks(cluster_id, &update)
            .await
            .map_err(|error| {
                let what = format!("refreshing the JWKS of existing cluster {cluster_id}");
                match self.sis_error(&error) {
                    EffectError::Transient(m) => EffectError::Transient(format!("{what}: {m}")),
                    EffectError::Permanent(m) => EffectError::Permanent(format!("{what}: {m}")),
                }
            })?;
        tracing::info!(cluster_id, issuer = %trust.oidc_issuer, "refreshed the JWKS of the existing cluster at SIS");
        Ok(())
    }

    async fn run(&self, effect: &Effect) -> Result<Event, (Edge, EffectError)> {
        let sis = |error: SisError| (Edge::Sis, self.sis_error(&error));
        let sink = |error: EffectError| (Edge::Sink, error);
        Ok(match effect {
            Effect::LookUpCluster { key } => {
                match self
                    .sis
                    .find_cluster_by_name(&key.nca_id, &key.cluster_name)
                    .await
                    .map_err(sis)?
                {
                    Some(cluster) => {
                        // SIS always sends the group of a listed cluster; an absent one
                        // would fail the agent later, so say so now.
                        let cluster_group_id = cluster.cluster_group_id.ok_or_else(|| {
                            (
                                Edge::Sis,
                                EffectError::Permanent(format!(
                                    "SIS at {} lists cluster {} without a clusterGroupId; ask the NVCF operators to check the cluster's group",
                                    self.sis.base_url(),
                                    cluster.cluster_id
                                )),
                            )
                        })?;
                        self.refresh_trust_root(&cluster.cluster_id)
                            .await
                            .map_err(|error| (Edge::Sis, error))?;
                        Event::LookupFound {
                            key: key.clone(),
                            ids: ClusterIds {
                                cluster_group_id,
                                cluster_id: cluster.cluster_id,
                            },
                        }
                    }
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
                self.sink.write(ids).await.map_err(sink)?;
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(ids.clone());
                Event::RegistrationWritten
            }
            Effect::ClearRegistration => {
                self.sink.clear().await.map_err(sink)?;
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

impl<S: RegistrationSink> Executor<ClusterMachine> for ClusterExecutor<S> {
    async fn execute(&self, name: &str, id: &str, effect: &Effect) -> Result<Event, EffectError> {
        tracing::debug!(cluster = name, effect = id, "running cluster effect");
        self.run(effect)
            .await
            .map_err(|(edge, error)| self.note(edge, error))
    }
}

/// A SIS failure as the driver sees it, with the endpoint and the bootstrap's fix in the
/// message.
pub fn sis_error(base_url: &str, error: &SisError) -> EffectError {
    sis_error_with(base_url, error, &Fixes::CHART)
}

/// A SIS failure as the driver sees it, with the endpoint and the fix in `fixes`' terms.
pub fn sis_error_with(base_url: &str, error: &SisError, fixes: &Fixes) -> EffectError {
    let message = format!("SIS at {base_url}: {error}");
    match error {
        SisError::Unauthorized { .. } | SisError::Forbidden { .. } if !fixes.token.is_empty() => {
            EffectError::Permanent(format!("{message}; {}", fixes.token))
        }
        SisError::Unauthorized { .. } => EffectError::Permanent(message),
        SisError::NotFound { .. } => {
            EffectError::Permanent(format!("{message}; {}", fixes.sis_url))
        }
        SisError::Rejected { .. } | SisError::PreconditionFailed { .. } => {
            EffectError::Permanent(format!("{message}; {}", fixes.request))
        }
        error if error.is_transient() => EffectError::Transient(message),
        _ => EffectError::Permanent(message),
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
