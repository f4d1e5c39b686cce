//! The backend machine's effects against Kubernetes ([`BackendExecutor`]).
//!
//! Guarantees, each effect being run again after any crash:
//! - every object is applied with server-side apply, field manager `nvca-operator`,
//!   forced: applying twice is applying once, and a field someone else changed is taken
//!   back;
//! - every delete treats 404 as done; a namespace answers `StepCleaned` only once it is
//!   gone (while it is Terminating the effect fails as transient and is retried);
//! - finalizers are added and removed with the object's `resourceVersion`, so a
//!   concurrent writer makes the effect retry instead of losing an update;
//! - webhook keys are generated only when the Secrets are missing or do not belong
//!   together, and never leave this process except into the Secrets.
//!
//! Assumes the operator's own RBAC holds every right it grants to ClusterRole `nvca`
//! (Kubernetes refuses to let anyone grant rights they lack).
//!
//! Errors: 400/422 (an object Kubernetes will never accept as built) and an NVCFBackend
//! whose spec lacks a field are permanent: the machine parks in `failed` with the reason
//! until the spec changes. Everything else (conflicts, 5xx, timeouts, 403s that a Helm
//! upgrade fixes, missing source Secrets, Terminating namespaces) is transient and backs
//! off.
//!
//! Layout: this file holds the executor, its shared helpers and the dispatch of effects;
//! [`provision`] the provisioning steps, [`cleanup`] the clean-up steps; the status it
//! writes is projected by `super::backend_status`.

use crate::kube::not_found::not_found;
use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, ObjectReference, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::FIELD_MANAGER;
use super::backend_status;
use crate::driver::{EffectError, Executor};
use crate::kube::agent_config::{self, AgentConfigFile};
use crate::kube::crd::{ICMSRequest, NVCFBackend};
use crate::kube::resources::{
    self, BackendConfig, LABEL_WORKLOAD_INSTANCE_TYPE, MODELCACHE_INIT_NAMESPACE, NVCA,
    OperatorSettings, REQUESTS_NAMESPACE, SYSTEM_NAMESPACE, deployment, namespaces,
    network_policies, pull_secrets, rbac, service, webhook_certs, webhooks,
};
use crate::kube::write_failure::{Fixes, Moment, judge};
use crate::machines::backend::{
    BackendMachine, CleanupStep, Effect, Event, FINALIZER, ProvisionStep, StatusProjection,
};

/// How long a clean-up step waits for a namespace to go before it answers transient and
/// lets the driver retry.
const NAMESPACE_WAIT: Duration = Duration::from_secs(20);
/// The annotation that pairs the two webhook Secrets: both carry the same value, so a
/// crash between writing one and the other is noticed and both are generated again.
pub const CERT_PAIR_ANNOTATION: &str = "nvca.nvcf.nvidia.io/webhook-cert-pair";

mod cleanup;
mod provision;

/// Runs [`Effect`]s of backend machines against the cluster. Machine names are
/// `<namespace>/<name>` of the NVCFBackend.
pub struct BackendExecutor {
    client: Client,
    settings: OperatorSettings,
    recorder: Recorder,
}

impl BackendExecutor {
    pub fn new(client: Client, settings: OperatorSettings) -> Arc<BackendExecutor> {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(BackendExecutor {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
        })
    }

    /// Publish an Event about `backend`; failures are logged only (Events are best effort).
    /// Events with the same reason and `action` are one Event with a count (kube's
    /// recorder), so `action` names the step.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%error, reason, "cannot publish an Event");
        }
    }

    pub(super) fn client(&self) -> Client {
        self.client.clone()
    }

    fn backends(&self, namespace: &str) -> Api<NVCFBackend> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn backend(&self, key: &str) -> Result<Option<NVCFBackend>, EffectError> {
        let (namespace, name) = split_key(key)?;
        self.backends(namespace)
            .get_opt(name)
            .await
            .map_err(|error| classify(&format!("reading NVCFBackend {key}"), error))
    }

    /// The NVCFBackend and the config built from it; a missing backend or an incomplete
    /// spec is permanent.
    pub(super) async fn config(
        &self,
        key: &str,
    ) -> Result<(NVCFBackend, BackendConfig), EffectError> {
        let backend = self.backend(key).await?.ok_or_else(|| {
            EffectError::Permanent(format!(
                "NVCFBackend {key} does not exist any more; nothing to provision"
            ))
        })?;
        let mut config = BackendConfig::from_backend(&backend, &self.settings)
            .map_err(|error| EffectError::Permanent(error.to_string()))?;
        config.agent_config_merge = self.agent_config_merge().await?;
        Ok((backend, config))
    }

    /// The chart's `agent-config-merge` (NVIDIA's `getRawAgentConfigToMerge`): its
    /// `config.yaml`, empty when there is none.
    async fn agent_config_merge(&self) -> Result<String, EffectError> {
        let namespace = &self.settings.operator_namespace;
        let merge = agent_config::MERGE_CONFIGMAP;
        Ok(self
            .namespaced::<ConfigMap>(namespace)
            .get_opt(merge)
            .await
            .map_err(|error| classify(&format!("reading ConfigMap {namespace}/{merge}"), error))?
            .and_then(|cm| cm.data)
            .and_then(|mut data| data.remove(agent_config::KEY))
            .unwrap_or_default())
    }

    /// The namespaces the backend uses, even when its spec is incomplete (clean-up must
    /// work on any NVCFBackend).
    async fn namespaces_of(&self, key: &str) -> Result<(String, String), EffectError> {
        let backend = self.backend(key).await?;
        let cluster = backend
            .as_ref()
            .and_then(|b| b.spec.fields.cluster_config.clone())
            .unwrap_or_default();
        let or = |value: String, default: &str| {
            if value.is_empty() {
                default.to_string()
            } else {
                value
            }
        };
        Ok((
            or(cluster.system_namespace, SYSTEM_NAMESPACE),
            or(cluster.requests_namespace, REQUESTS_NAMESPACE),
        ))
    }

    async fn apply<K>(&self, api: &Api<K>, object: &K) -> Result<(), EffectError>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let what = describe::<K>(object.meta().namespace.as_deref(), &name);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|error| classify(&format!("applying {what}"), error))?;
        tracing::debug!(object = %what, "applied");
        Ok(())
    }

    fn cluster_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::ClusterResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }

    fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn add_finalizer(&self, key: &str) -> Result<(), EffectError> {
        let Some(backend) = self.backend(key).await? else {
            return Err(EffectError::Permanent(format!(
                "NVCFBackend {key} does not exist any more"
            )));
        };
        if backend.metadata.deletion_timestamp.is_some()
            || backend.finalizers().iter().any(|f| f == FINALIZER)
        {
            // Kubernetes refuses new finalizers on an object being deleted; the deletion
            // is seen by the watch and takes over.
            return Ok(());
        }
        let mut finalizers = backend.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        self.patch_finalizers(key, &backend, finalizers).await
    }

    async fn remove_finalizer(&self, key: &str) -> Result<(), EffectError> {
        let Some(backend) = self.backend(key).await? else {
            return Ok(());
        };
        if !backend.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let finalizers: Vec<String> = backend
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        self.patch_finalizers(key, &backend, finalizers).await?;
        // The status cannot tell this step any more: the object goes with its finalizer.
        self.event(
            &backend.object_ref(&()),
            false,
            "Released",
            "RemoveFinalizer",
            format!("clean-up complete; removed finalizer {FINALIZER}"),
        )
        .await;
        Ok(())
    }

    async fn patch_finalizers(
        &self,
        key: &str,
        backend: &NVCFBackend,
        finalizers: Vec<String>,
    ) -> Result<(), EffectError> {
        let (namespace, name) = split_key(key)?;
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": backend.resource_version(),
        }});
        match self
            .backends(namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(classify(
                &format!("updating the finalizers of NVCFBackend {key}"),
                error,
            )),
        }
    }

    /// Apply the projected status (server-side apply of the status nvca owns) and publish
    /// the Events the change deserves ([`super::backend_status`]).
    async fn project_status(
        &self,
        key: &str,
        projection: &StatusProjection,
    ) -> Result<(), EffectError> {
        let Some(backend) = self.backend(key).await? else {
            return Ok(());
        };
        let (namespace, name) = split_key(key)?;
        let version = BackendConfig::from_backend(&backend, &self.settings)
            .map(|config| config.version)
            .unwrap_or_else(|_| backend.spec.fields.version.clone());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let projected =
            backend_status::project(&backend, projection, &self.settings, &version, now);
        let body = json!({
            "apiVersion": NVCFBackend::api_version(&()),
            "kind": NVCFBackend::kind(&()),
            "metadata": {"name": name, "namespace": namespace},
            "status": projected.status,
        });
        self.backends(namespace)
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|error| {
                classify(&format!("writing the status of NVCFBackend {key}"), error)
            })?;
        let reference = backend.object_ref(&());
        for event in projected.events {
            self.event(
                &reference,
                event.warning,
                &event.reason,
                &event.action,
                event.note,
            )
            .await;
        }
        Ok(())
    }
}

impl Executor<BackendMachine> for BackendExecutor {
    async fn execute(&self, name: &str, id: &str, effect: &Effect) -> Result<Event, EffectError> {
        tracing::debug!(backend = name, effect = id, "running");
        match effect {
            Effect::AddFinalizer => {
                self.add_finalizer(name).await?;
                Ok(Event::FinalizerAdded)
            }
            Effect::Provision(step) => {
                self.provision(name, *step).await?;
                Ok(Event::StepApplied(*step))
            }
            Effect::ProjectStatus(projection) => {
                self.project_status(name, projection).await?;
                Ok(Event::StatusProjected)
            }
            Effect::SetMaintenance(mode) => {
                self.set_maintenance(name, <&str>::from(mode)).await?;
                Ok(Event::MaintenanceSet)
            }
            Effect::Cleanup(step) => {
                self.cleanup(name, *step).await?;
                Ok(Event::StepCleaned(*step))
            }
            Effect::RemoveFinalizer => {
                self.remove_finalizer(name).await?;
                Ok(Event::FinalizerRemoved)
            }
        }
    }
}

/// `<namespace>/<name>` of a backend machine.
pub fn split_key(key: &str) -> Result<(&str, &str), EffectError> {
    key.split_once('/')
        .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty())
        .ok_or_else(|| {
            EffectError::Permanent(format!(
                "backend machine key {key:?} is not <namespace>/<name>; remove the record with nvca-state"
            ))
        })
}

async fn delete<K>(api: &Api<K>, name: &str, what: &str) -> Result<(), EffectError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if not_found(&error) => Ok(()),
        Err(error) => Err(classify(&format!("deleting {what}"), error)),
    }
}

fn describe<K: Resource>(namespace: Option<&str>, name: &str) -> String
where
    <K as Resource>::DynamicType: Default,
{
    let dynamic = Default::default();
    let kind = K::kind(&dynamic).to_string();
    match namespace {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// A failure of a running machine's call: transient unless Kubernetes says the request
/// can never succeed as built.
pub(super) fn classify(doing: &str, error: kube::Error) -> EffectError {
    let fixes = Fixes {
        forbidden: "give the operator's ServiceAccount this right (the chart's ClusterRole)",
        missing_namespace: "the operator creates the namespaces it provisions into; see its log",
    };
    let failure = judge(doing, &error, Moment::Owned, fixes);
    EffectError::judged(failure.is_permanent(), failure.into_reason())
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// A merge that does not fit is retried (a `helm upgrade` fixes it); the rest is permanent.
impl From<resources::agent_config::RenderError> for EffectError {
    fn from(error: resources::agent_config::RenderError) -> Self {
        match error {
            resources::agent_config::RenderError::Merge { .. } => {
                EffectError::Transient(error.to_string())
            }
            resources::agent_config::RenderError::Encode(_) => {
                EffectError::Permanent(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_namespace_and_name() {
        assert_eq!(
            split_key("nvca-operator/ncp-local").unwrap(),
            ("nvca-operator", "ncp-local")
        );
        for bad in ["ncp-local", "/x", "x/"] {
            match split_key(bad) {
                Err(EffectError::Permanent(message)) => assert!(message.contains("nvca-state")),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_unacceptable_objects_are_permanent() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".to_string(),
                ..kube::core::Status::default()
            }))
        };
        assert!(matches!(classify("x", api(422)), EffectError::Permanent(_)));
        assert!(matches!(classify("x", api(400)), EffectError::Permanent(_)));
        for code in [403, 404, 409, 429, 500, 503] {
            assert!(
                matches!(classify("x", api(code)), EffectError::Transient(_)),
                "{code}"
            );
        }
        match classify("applying Deployment nvca-system/nvca", api(403)) {
            EffectError::Transient(message) => {
                assert!(
                    message.contains("Deployment nvca-system/nvca")
                        && message.contains("ClusterRole")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        let text = "é".repeat(800);
        let cut = truncate(text, 1001);
        assert!(cut.len() <= 1001 && cut.chars().all(|c| c == 'é'));
    }
}
