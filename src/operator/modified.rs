//! Drift by modification: whether an owned object still carries what the operator
//! applies, asked of the API server itself.
//!
//! The question is a server-side apply of the object as the operator would write it,
//! dry-run and not forced, under the operator's field manager. When someone else changed
//! a field the operator set, that field now belongs to them and the apply conflicts (the
//! conflict names the field and the manager). When someone removed such a field, the
//! apply would put it back, so its result differs from the object. Either way the object
//! is drifted. Fields the operator does not set (a label someone added, status, the
//! Deployment controller's revision annotation) are not its business and never count.
//!
//! Checked: the namespaces, ConfigMaps `nvca-namespace-networkpolicies` and
//! `agent-config`, ServiceAccount, ClusterRole and ClusterRoleBinding `nvca`, Service
//! `nvca`, the webhook configurations `nvca` (with the CA bundle of the CA Secret: an
//! edited `caBundle` or `failurePolicy` is put back) and Deployment `nvca`. The webhook
//! Secrets (their keys are generated) are repaired when deleted, not when edited.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use serde::Serialize;

use super::FIELD_MANAGER;
use super::backend_executor::{BackendExecutor, classify};
use crate::driver::EffectError;
use crate::kube::agent_config;
use crate::kube::resources::{
    self, BackendConfig, NVCA, deployment, namespaces, network_policies, rbac, service, webhooks,
};

/// Whether `kind` is checked with the webhook CA bundle.
fn needs_ca_bundle(kind: &str) -> bool {
    matches!(
        kind,
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"
    )
}

/// The object the operator applies under `kind`/`name`, with where it lives; `None` for
/// objects this check does not cover. `ca_bundle` is read for the kinds that need it.
fn desired(
    config: &BackendConfig,
    kind: &str,
    name: &str,
    ca_bundle: &[u8],
) -> Result<Option<(ApiResource, Option<String>, serde_json::Value)>, EffectError> {
    fn entry<K>(
        object: &K,
        namespace: Option<&str>,
    ) -> Result<Option<(ApiResource, Option<String>, serde_json::Value)>, EffectError>
    where
        K: kube::Resource<DynamicType = ()> + Serialize,
    {
        let value = serde_json::to_value(object).map_err(|error| {
            EffectError::Permanent(format!("cannot encode {}: {error}", K::kind(&())))
        })?;
        Ok(Some((
            ApiResource::erase::<K>(&()),
            namespace.map(str::to_string),
            value,
        )))
    }
    let system = Some(config.system_namespace.as_str());
    match (kind, name) {
        ("Namespace", name) if name == config.system_namespace => {
            entry::<Namespace>(&namespaces::system_namespace(config), None)
        }
        ("Namespace", name) if name == config.requests_namespace => {
            entry::<Namespace>(&namespaces::requests_namespace(config), None)
        }
        ("ConfigMap", network_policies::CONFIGMAP) => {
            entry::<ConfigMap>(&network_policies::configmap(config), system)
        }
        ("ConfigMap", agent_config::CONFIGMAP) => entry::<ConfigMap>(
            &resources::agent_config::rendered_configmap(config)?,
            system,
        ),
        ("ServiceAccount", NVCA) => entry::<ServiceAccount>(&rbac::service_account(config), system),
        ("ClusterRole", NVCA) => entry::<ClusterRole>(&rbac::cluster_role(config), None),
        ("ClusterRoleBinding", NVCA) => {
            entry::<ClusterRoleBinding>(&rbac::cluster_role_binding(config), None)
        }
        ("Service", NVCA) => entry::<Service>(&service::service(config), system),
        ("Deployment", NVCA) => entry::<Deployment>(&deployment::deployment(config), system),
        ("ValidatingWebhookConfiguration", NVCA) => {
            entry::<ValidatingWebhookConfiguration>(&webhooks::validating(config, ca_bundle), None)
        }
        ("MutatingWebhookConfiguration", NVCA) => entry::<MutatingWebhookConfiguration>(
            &webhooks::mutating_configuration(config, ca_bundle),
            None,
        ),
        _ => Ok(None),
    }
}

/// The object without what changes on every write or belongs to the server.
fn comparable(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        for key in ["managedFields", "resourceVersion", "generation"] {
            meta.remove(key);
        }
    }
    value
}

/// How many differing paths a message names.
const NAMED_PATHS: usize = 5;

/// The paths (`.spec.replicas`) of what the operator sets (`desired`) where `a` and `b`
/// differ, at most [`NAMED_PATHS`]. Other fields (status, what controllers add) may change
/// between the two reads and are none of the operator's business.
fn differences(
    desired: &serde_json::Value,
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value::{Null, Object};
    if out.len() >= NAMED_PATHS || a == b {
        return;
    }
    match desired {
        Object(fields) => {
            for (key, wanted) in fields {
                differences(
                    wanted,
                    a.get(key).unwrap_or(&Null),
                    b.get(key).unwrap_or(&Null),
                    &format!("{path}.{key}"),
                    out,
                );
            }
        }
        _ => out.push(path.to_string()),
    }
}

impl BackendExecutor {
    /// What changed in the owned object `kind`/`name` of backend `key`, or `None` when it
    /// still carries what the operator applies (or is not checked, or is gone).
    pub async fn modified(
        &self,
        key: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<String>, EffectError> {
        let (_, config) = self.config(key).await?;
        let ca_bundle = if needs_ca_bundle(kind) {
            self.webhook_ca_bundle(&config.system_namespace).await?
        } else {
            Vec::new()
        };
        let Some((resource, namespace, object)) = desired(&config, kind, name, &ca_bundle)? else {
            return Ok(None);
        };
        let api: Api<DynamicObject> = match &namespace {
            Some(namespace) => Api::namespaced_with(self.client(), namespace, &resource),
            None => Api::all_with(self.client(), &resource),
        };
        let Some(current) = api
            .get_opt(name)
            .await
            .map_err(|error| classify(&format!("reading {kind} {name}"), error))?
        else {
            return Ok(None);
        };
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.dry_run = true;
        match api.patch(name, &params, &Patch::Apply(&object)).await {
            Ok(would_be) => {
                let encode = |object: &DynamicObject| {
                    serde_json::to_value(object)
                        .map(comparable)
                        .unwrap_or_default()
                };
                let mut paths = Vec::new();
                differences(
                    &comparable(object.clone()),
                    &encode(&current),
                    &encode(&would_be),
                    "",
                    &mut paths,
                );
                if paths.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(format!(
                        "{} no longer as the operator sets {}",
                        paths.join(", "),
                        if paths.len() == 1 { "it" } else { "them" }
                    )))
                }
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Some(status.message)),
            Err(error) => Err(classify(&format!("checking {kind} {name}"), error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_bookkeeping_is_not_a_difference() {
        let a = json!({"metadata": {"name": "nvca", "resourceVersion": "1", "generation": 1,
            "managedFields": [{"manager": "x"}]}, "spec": {"replicas": 1}});
        let b = json!({"metadata": {"name": "nvca", "resourceVersion": "2", "generation": 2},
            "spec": {"replicas": 1}});
        assert_eq!(comparable(a.clone()), comparable(b));
        let c = json!({"metadata": {"name": "nvca"}, "spec": {"replicas": 3}});
        let desired = json!({"metadata": {"name": "nvca"}, "spec": {"replicas": 1}});
        let mut paths = Vec::new();
        differences(
            &desired,
            &comparable(a.clone()),
            &comparable(c),
            "",
            &mut paths,
        );
        assert_eq!(paths, [".spec.replicas"]);
        // A status written between the two reads is not the operator's.
        let d = json!({"metadata": {"name": "nvca"}, "spec": {"replicas": 1},
            "status": {"replicas": 1}});
        let mut paths = Vec::new();
        differences(&desired, &comparable(a), &comparable(d), "", &mut paths);
        assert!(paths.is_empty(), "{paths:?}");
    }
}
