//! The last resort of NVIDIA's guide ("Handling Stuck Resources", its force-cleanup
//! script), for when the ordered uninstall (deleting the NVCFBackend) cannot finish:
//! `nvca-state force-cleanup` and the chart's pre-delete hook (`nvca-operator-cleanup`,
//! after its drain timeout) both carry it out.
//!
//! In order: delete the agent's webhook configurations `nvca` (with their server gone
//! they would refuse the pod patches below); force-delete the pods of `nvcf-backend`
//! (grace period 0, finalizers stripped); strip the finalizers of every NVCFBackend, ICMSRequest, MiniService and
//! StorageRequest; delete the NVCFBackends and MiniServices; delete NVCA's namespaces
//! (`nvca-system`, `nvcf-backend`, `nvca-modelcache-init` and workload namespaces
//! labelled `nvca.nvcf.nvidia.io/workload-instance-type`); wait `--wait` for them to go;
//! finalize those still Terminating (their finalizers removed, then the namespace
//! `finalize` subresource with an empty `spec.finalizers`); then delete ClusterRoleBinding
//! and ClusterRole `nvca`, as the operator's own clean-up does last.
//!
//! `plan` reads and changes nothing; `act` carries a plan out. Everything it does is
//! idempotent: a second run finds less (or nothing) and says so. The operator's own
//! namespace is left: Helm owns it, and the guide deletes it after `helm uninstall`. The
//! CRDs are left too (NVIDIA's script deletes them; the guide's uninstall has them as a
//! step of their own, since that removes every such object cluster-wide).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use thiserror::Error;

use crate::kube::crd::{ICMSRequest, MiniService, NVCFBackend, StorageRequest};
use crate::kube::not_found::not_found;
use crate::kube::resources::{
    LABEL_WORKLOAD_INSTANCE_TYPE, MODELCACHE_INIT_NAMESPACE, NVCA, REQUESTS_NAMESPACE,
    SYSTEM_NAMESPACE,
};

#[derive(Debug, Error)]
pub enum ForceCleanupError {
    #[error("{0}")]
    Kubernetes(String),
    #[error(
        "{doing}: {reason}; check that the account running this may do it (cluster-admin for `nvca-state force-cleanup`, ClusterRole <release>-pre-delete-cleanup for the chart's hook), then run again"
    )]
    Api { doing: String, reason: String },
}

impl ForceCleanupError {
    pub fn category(&self) -> &'static str {
        match self {
            ForceCleanupError::Kubernetes(_) => "kubernetes",
            ForceCleanupError::Api { .. } => "api",
        }
    }
}

fn api_error(doing: String) -> impl FnOnce(kube::Error) -> ForceCleanupError {
    move |error| ForceCleanupError::Api {
        doing,
        reason: error.to_string(),
    }
}

/// One custom object found with finalizers, or to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub finalizers: Vec<String>,
}

impl Found {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// One of NVCA's namespaces as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundNamespace {
    pub name: String,
    pub terminating: bool,
    /// `metadata.finalizers` and `spec.finalizers`.
    pub finalizers: Vec<String>,
}

/// What a run would do, from what exists now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub pods: Vec<String>,
    /// Custom objects of NVCA's four kinds (all of them: finalizers stripped, and
    /// NVCFBackends and MiniServices deleted).
    pub objects: Vec<Found>,
    pub namespaces: Vec<FoundNamespace>,
    /// Kinds of the agent's cluster-scoped objects named `nvca` that exist.
    pub globals: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.objects.is_empty()
            && self.namespaces.is_empty()
            && self.globals.is_empty()
    }

    /// The plan as people read it.
    pub fn render(&self, wait: Duration) -> String {
        let mut out = String::new();
        if self.is_empty() {
            out.push_str(
                "Nothing to clean up: no NVCA pods, custom objects, namespaces or cluster-scoped objects `nvca` are left.\n",
            );
            return out;
        }
        out.push_str("Force cleanup plan:\n");
        let webhooks = |kind: &String| kind.ends_with("WebhookConfiguration");
        for kind in self.globals.iter().filter(|kind| webhooks(kind)) {
            let _ = writeln!(out, "  delete {kind} {NVCA}");
        }
        if !self.pods.is_empty() {
            let _ = writeln!(
                out,
                "  force-delete {} pod(s) in {REQUESTS_NAMESPACE}: {}",
                self.pods.len(),
                self.pods.join(", ")
            );
        }
        for object in &self.objects {
            if !object.finalizers.is_empty() {
                let _ = writeln!(
                    out,
                    "  remove finalizers [{}] from {}",
                    object.finalizers.join(", "),
                    object.describe()
                );
            }
            if deleted_explicitly(object.kind) {
                let _ = writeln!(out, "  delete {}", object.describe());
            }
        }
        for namespace in &self.namespaces {
            let state = if namespace.terminating {
                "Terminating"
            } else {
                "Active"
            };
            let _ = writeln!(
                out,
                "  delete namespace {} ({state}, finalizers [{}]); finalize it if it is still there after {}",
                namespace.name,
                namespace.finalizers.join(", "),
                humantime::format_duration(wait)
            );
        }
        for kind in self.globals.iter().filter(|kind| !webhooks(kind)) {
            let _ = writeln!(out, "  delete {kind} {NVCA}");
        }
        out
    }
}

/// The agent's webhook configurations, named `nvca`: removed first. With the webhook
/// server gone they refuse (`failurePolicy: Fail`) the very pod patches a clean-up makes.
fn webhook_resources() -> [ApiResource; 2] {
    [
        ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
        ApiResource::erase::<MutatingWebhookConfiguration>(&()),
    ]
}

/// The agent's ClusterRoleBinding and ClusterRole, named `nvca`: removed last, as the
/// operator's clean-up does.
fn rbac_resources() -> [ApiResource; 2] {
    [
        ApiResource::erase::<ClusterRoleBinding>(&()),
        ApiResource::erase::<ClusterRole>(&()),
    ]
}

/// The agent's cluster-scoped objects, all named `nvca`, in the order they are removed.
fn global_resources() -> impl Iterator<Item = ApiResource> {
    webhook_resources().into_iter().chain(rbac_resources())
}

/// Delete those of `resources` the plan found; one line each.
async fn delete_globals(
    client: &Client,
    plan: &Plan,
    resources: [ApiResource; 2],
) -> Result<Vec<String>, ForceCleanupError> {
    let mut done = Vec::new();
    for resource in resources
        .into_iter()
        .filter(|resource| plan.globals.contains(&resource.kind))
    {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let doing = format!("deleting {} {NVCA}", resource.kind);
        if gone(api.delete(NVCA, &DeleteParams::background()).await).map_err(api_error(doing))? {
            done.push(format!("deleted {} {NVCA}", resource.kind));
        }
    }
    Ok(done)
}

/// NVCFBackends and MiniServices are deleted one by one; the others go with their
/// namespace.
fn deleted_explicitly(kind: &str) -> bool {
    matches!(kind, "NVCFBackend" | "MiniService")
}

/// Read what exists.
pub async fn plan(client: &Client) -> Result<Plan, ForceCleanupError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), REQUESTS_NAMESPACE);
    let pods = match pods.list(&ListParams::default()).await {
        Ok(list) => list.iter().map(|p| p.name_any()).collect(),
        Err(error) if not_found(&error) => Vec::new(),
        Err(error) => {
            return Err(api_error(format!("listing pods in {REQUESTS_NAMESPACE}"))(
                error,
            ));
        }
    };
    let mut objects = Vec::new();
    objects.extend(custom::<NVCFBackend>(client).await?);
    objects.extend(custom::<ICMSRequest>(client).await?);
    objects.extend(custom::<MiniService>(client).await?);
    objects.extend(custom::<StorageRequest>(client).await?);
    // Only objects there is something to do about.
    objects.retain(|o| !o.finalizers.is_empty() || deleted_explicitly(o.kind));

    let all: Api<Namespace> = Api::all(client.clone());
    let listed = all
        .list(&ListParams::default())
        .await
        .map_err(api_error("listing namespaces".to_string()))?;
    let fixed = [
        SYSTEM_NAMESPACE,
        REQUESTS_NAMESPACE,
        MODELCACHE_INIT_NAMESPACE,
    ];
    let namespaces = listed
        .iter()
        .filter(|ns| {
            fixed.contains(&ns.name_any().as_str())
                || ns.labels().contains_key(LABEL_WORKLOAD_INSTANCE_TYPE)
        })
        .map(found_namespace)
        .collect();
    let mut globals = Vec::new();
    for resource in global_resources() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let doing = format!("reading {} {NVCA}", resource.kind);
        if api.get_opt(NVCA).await.map_err(api_error(doing))?.is_some() {
            globals.push(resource.kind);
        }
    }
    Ok(Plan {
        pods,
        objects,
        namespaces,
        globals,
    })
}

fn found_namespace(ns: &Namespace) -> FoundNamespace {
    let mut finalizers = ns.finalizers().to_vec();
    finalizers.extend(
        ns.spec
            .as_ref()
            .and_then(|spec| spec.finalizers.clone())
            .unwrap_or_default(),
    );
    FoundNamespace {
        name: ns.name_any(),
        terminating: ns.metadata.deletion_timestamp.is_some(),
        finalizers,
    }
}

/// Every object of kind `K` in the cluster; none when its CRD is not installed.
async fn custom<K>(client: &Client) -> Result<Vec<Found>, ForceCleanupError>
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let kind = kind_name::<K>();
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .iter()
            .map(|object| Found {
                kind,
                namespace: object.namespace(),
                name: object.name_any(),
                finalizers: object.finalizers().to_vec(),
            })
            .collect()),
        Err(error) if not_found(&error) => Ok(Vec::new()),
        Err(error) => Err(api_error(format!("listing {kind}s"))(error)),
    }
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    // The four kinds are fixed; a static name keeps `Found` cheap to compare.
    match K::kind(&()).as_ref() {
        "NVCFBackend" => "NVCFBackend",
        "ICMSRequest" => "ICMSRequest",
        "MiniService" => "MiniService",
        _ => "StorageRequest",
    }
}

fn dynamic_api(client: &Client, found: &Found) -> Api<DynamicObject> {
    let resource = match found.kind {
        "NVCFBackend" => ApiResource::erase::<NVCFBackend>(&()),
        "ICMSRequest" => ApiResource::erase::<ICMSRequest>(&()),
        "MiniService" => ApiResource::erase::<MiniService>(&()),
        _ => ApiResource::erase::<StorageRequest>(&()),
    };
    match &found.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// 404 is done: someone (or Kubernetes) got there first.
fn gone<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(error) if not_found(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

/// The merge patch that removes every finalizer of an object.
fn no_finalizers() -> serde_json::Value {
    json!({"metadata": {"finalizers": null}})
}

/// Carry out `plan`; one line per thing done.
pub async fn act(
    client: &Client,
    plan: &Plan,
    wait: Duration,
) -> Result<Vec<String>, ForceCleanupError> {
    let mut done = delete_globals(client, plan, webhook_resources()).await?;
    let strip = no_finalizers();
    let strip = Patch::Merge(&strip);
    let params = PatchParams::default();

    let pods: Api<Pod> = Api::namespaced(client.clone(), REQUESTS_NAMESPACE);
    for name in &plan.pods {
        let doing = format!("force-deleting pod {REQUESTS_NAMESPACE}/{name}");
        gone(pods.patch(name, &params, &strip).await).map_err(api_error(doing.clone()))?;
        let deleted = gone(
            pods.delete(name, &DeleteParams::default().grace_period(0))
                .await,
        )
        .map_err(api_error(doing))?;
        if deleted {
            done.push(format!("force-deleted pod {REQUESTS_NAMESPACE}/{name}"));
        }
    }

    for object in &plan.objects {
        let api = dynamic_api(client, object);
        if !object.finalizers.is_empty() {
            let doing = format!("removing the finalizers of {}", object.describe());
            if gone(api.patch(&object.name, &params, &strip).await).map_err(api_error(doing))? {
                done.push(format!(
                    "removed finalizers [{}] from {}",
                    object.finalizers.join(", "),
                    object.describe()
                ));
            }
        }
        if deleted_explicitly(object.kind) {
            let doing = format!("deleting {}", object.describe());
            if gone(api.delete(&object.name, &DeleteParams::background()).await)
                .map_err(api_error(doing))?
            {
                done.push(format!("deleted {}", object.describe()));
            }
        }
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in plan.namespaces.iter().filter(|ns| !ns.terminating) {
        let doing = format!("deleting namespace {}", namespace.name);
        if gone(
            namespaces
                .delete(&namespace.name, &DeleteParams::background())
                .await,
        )
        .map_err(api_error(doing))?
        {
            done.push(format!("deleted namespace {}", namespace.name));
        }
    }
    let names: Vec<String> = plan.namespaces.iter().map(|ns| ns.name.clone()).collect();
    let left = wait_gone(&namespaces, &names, wait).await?;
    for namespace in left {
        finalize(&namespaces, &namespace).await?;
        done.push(format!(
            "finalized namespace {} (was Terminating for longer than {}; finalizers [{}] removed)",
            namespace.name,
            humantime::format_duration(wait),
            namespace.finalizers.join(", ")
        ));
    }
    let left = wait_gone(&namespaces, &names, Duration::from_secs(10)).await?;
    for namespace in left {
        done.push(format!(
            "namespace {} is still there ({}): run force-cleanup again, or see `kubectl get namespace {} -o yaml` for what holds it",
            namespace.name,
            if namespace.terminating {
                "Terminating"
            } else {
                "Active"
            },
            namespace.name
        ));
    }
    done.extend(delete_globals(client, plan, rbac_resources()).await?);
    if done.is_empty() {
        done.push("nothing needed doing: it was already done".to_string());
    }
    Ok(done)
}

/// Wait up to `wait` for the namespaces to go; those still there, as they are now.
async fn wait_gone(
    namespaces: &Api<Namespace>,
    names: &[String],
    wait: Duration,
) -> Result<Vec<FoundNamespace>, ForceCleanupError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut left = Vec::new();
        for name in names {
            let current = namespaces
                .get_opt(name)
                .await
                .map_err(api_error(format!("reading namespace {name}")))?;
            if let Some(ns) = current {
                left.push(found_namespace(&ns));
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Remove a namespace's own finalizers, then empty `spec.finalizers` through the
/// `finalize` subresource, which is what lets Kubernetes remove it.
async fn finalize(
    namespaces: &Api<Namespace>,
    namespace: &FoundNamespace,
) -> Result<(), ForceCleanupError> {
    let name = &namespace.name;
    let doing = format!("finalizing namespace {name}");
    let strip = no_finalizers();
    gone(
        namespaces
            .patch(name, &PatchParams::default(), &Patch::Merge(&strip))
            .await,
    )
    .map_err(api_error(doing.clone()))?;
    let Some(mut current) = namespaces
        .get_opt(name)
        .await
        .map_err(api_error(doing.clone()))?
    else {
        return Ok(());
    };
    current.spec.get_or_insert_with(Default::default).finalizers = Some(Vec::new());
    current.metadata.managed_fields = None;
    gone(
        namespaces
            .replace_subresource("finalize", name, &PostParams::default(), &current)
            .await,
    )
    .map_err(api_error(doing))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            pods: vec!["0-sr-1".to_string()],
            objects: vec![
                Found {
                    kind: "NVCFBackend",
                    namespace: Some("nvca-operator".to_string()),
                    name: "ncp-local".to_string(),
                    finalizers: vec!["nvca-operator.finalizers.nvidia.io".to_string()],
                },
                Found {
                    kind: "ICMSRequest",
                    namespace: Some("nvcf-backend".to_string()),
                    name: "sr-1".to_string(),
                    finalizers: vec!["x".to_string()],
                },
            ],
            namespaces: vec![FoundNamespace {
                name: "nvcf-backend".to_string(),
                terminating: true,
                finalizers: vec!["kubernetes".to_string()],
            }],
            globals: vec!["MutatingWebhookConfiguration".to_string()],
        }
    }

    #[test]
    fn the_plan_names_every_action_and_changes_nothing_by_itself() {
        let text = plan().render(Duration::from_secs(30));
        for expected in [
            "force-delete 1 pod(s) in nvcf-backend: 0-sr-1",
            "remove finalizers [nvca-operator.finalizers.nvidia.io] from NVCFBackend nvca-operator/ncp-local",
            "delete NVCFBackend nvca-operator/ncp-local",
            "remove finalizers [x] from ICMSRequest nvcf-backend/sr-1",
            "delete namespace nvcf-backend (Terminating, finalizers [kubernetes]); finalize it if it is still there after 30s",
            "delete MutatingWebhookConfiguration nvca",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
        assert!(!text.contains("delete ICMSRequest"), "{text}");
        assert!(
            Plan::default()
                .render(Duration::ZERO)
                .contains("Nothing to clean up")
        );
    }
}
