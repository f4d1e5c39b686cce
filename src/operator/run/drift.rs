//! Drift: the objects a backend owns, watched; a deleted or modified one makes its machine
//! apply that step again, and an Event says so.

use super::*;

/// Which provisioning step an owned object belongs to; `None` for objects that are not
/// the operator's.
pub(super) fn step_of(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<ProvisionStep> {
    use ProvisionStep::*;
    let copy = labels
        .get(crate::kube::resources::LABEL_MANAGED_BY)
        .map(String::as_str)
        == Some(pull_secrets::MIRROR);
    Some(match (kind, name) {
        ("Namespace", SYSTEM_NAMESPACE) => SystemNamespace,
        ("Namespace", REQUESTS_NAMESPACE) => RequestsNamespace,
        ("Secret", webhook_certs::SERVER_SECRET | webhook_certs::CA_SECRET) => WebhookCerts,
        ("Secret", _) if copy => PullSecrets,
        ("ConfigMap", network_policies::CONFIGMAP) => NetworkPolicies,
        ("ConfigMap", agent_config::CONFIGMAP) => AgentConfig,
        ("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding", NVCA) => Rbac,
        ("Service", NVCA) => Service,
        ("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration", NVCA) => {
            WebhookConfigurations
        }
        ("Deployment", NVCA) => AgentDeployment,
        _ => {
            let _ = namespace;
            return None;
        }
    })
}

/// One watch per kind of owned object; a deletion is drift, and so is an object of a
/// fixed name found missing when the watch lists (at start, or after a broken watch):
/// deleted while no operator ran.
pub(super) fn watch_owned_objects(context: &Arc<Context>) -> Vec<tokio::task::JoinHandle<()>> {
    let system = SYSTEM_NAMESPACE;
    let client = &context.client;
    let named = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    vec![
        spawn_drift(
            context,
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            &[SYSTEM_NAMESPACE, REQUESTS_NAMESPACE],
        ),
        spawn_drift(
            context,
            Api::<Secret>::namespaced(client.clone(), system),
            watcher::Config::default(),
            &[webhook_certs::SERVER_SECRET, webhook_certs::CA_SECRET],
        ),
        spawn_drift(
            context,
            Api::<ConfigMap>::namespaced(client.clone(), system),
            watcher::Config::default(),
            &[network_policies::CONFIGMAP, agent_config::CONFIGMAP],
        ),
        spawn_drift(
            context,
            Api::<ServiceAccount>::namespaced(client.clone(), system),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<ClusterRole>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<ClusterRoleBinding>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<Service>::namespaced(client.clone(), system),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<Deployment>::namespaced(client.clone(), system),
            named(NVCA),
            &[NVCA],
        ),
    ]
}

pub(super) fn spawn_drift<K>(
    context: &Arc<Context>,
    api: Api<K>,
    config: watcher::Config,
    expected: &'static [&'static str],
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let context = Arc::clone(context);
    tokio::spawn(async move {
        let kind = K::kind(&()).to_string();
        let namespace = api.namespace().map(str::to_string);
        let mut events = watcher(api, config).boxed();
        let mut listed: Vec<String> = Vec::new();
        while let Some(event) = events.next().await {
            let (object, deleted) = match event {
                Ok(WatchEvent::Delete(object)) => (object, true),
                Ok(WatchEvent::Apply(object)) => (object, false),
                Ok(WatchEvent::Init) => {
                    listed.clear();
                    continue;
                }
                // Checked like a change: after an operator upgrade (or a watch that
                // lost events), what this build would write differently is applied
                // again, as NVIDIA's operator re-applies everything at each resync.
                Ok(WatchEvent::InitApply(object)) => {
                    listed.push(object.name_any());
                    (object, false)
                }
                Ok(WatchEvent::InitDone) => {
                    for name in expected
                        .iter()
                        .filter(|name| !listed.iter().any(|l| l == *name))
                    {
                        let what = match &namespace {
                            Some(namespace) => format!("{kind} {namespace}/{name}"),
                            None => format!("{kind} {name}"),
                        };
                        if let Some(step) =
                            step_of(&kind, namespace.as_deref(), name, &BTreeMap::new())
                        {
                            drift(&context, step, &what, None).await;
                        }
                    }
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%kind, %error, "watching owned objects; retrying");
                    continue;
                }
            };
            let name = object.name_any();
            let namespace = object.namespace();
            let Some(step) = step_of(&kind, namespace.as_deref(), &name, object.labels()) else {
                continue;
            };
            let what = match &namespace {
                Some(namespace) => format!("{kind} {namespace}/{name}"),
                None => format!("{kind} {name}"),
            };
            if deleted {
                drift(&context, step, &what, None).await;
            } else {
                modified(&context, step, &kind, &name, &what).await;
            }
        }
    })
}

/// A changed owned object of a ready backend: drift when it no longer carries what the
/// operator applies (see `modified.rs`).
pub(super) async fn modified(
    context: &Context,
    step: ProvisionStep,
    kind: &str,
    name: &str,
    what: &str,
) {
    for key in context.driver.names() {
        let ready = context
            .driver
            .summary(&key)
            .is_some_and(|summary| BackendState::Ready.is(&summary.state));
        if !ready {
            continue;
        }
        match context.executor.modified(&key, kind, name).await {
            Ok(Some(change)) => drift(context, step, what, Some(&change)).await,
            Ok(None) => {}
            Err(error) => {
                context.metrics.error("kubernetes");
                tracing::debug!(object = %what, ?error, "cannot check an owned object for drift");
            }
        }
    }
}

/// Tell every live machine that `what` drifted (deleted, or modified as `change` says),
/// and say so in an Event.
pub(super) async fn drift(
    context: &Context,
    step: ProvisionStep,
    what: &str,
    change: Option<&str>,
) {
    // Events of one reason and action merge into one with a count: the action says
    // which kind of drift, so a modification is not hidden under an earlier deletion.
    let (how, action) = match change {
        None => ("was deleted".to_string(), "Recreate"),
        Some(change) => (format!("was modified ({change})"), "Reapply"),
    };
    for key in context.driver.names() {
        let Some(summary) = context.driver.summary(&key) else {
            continue;
        };
        if !matches!(
            BackendState::of(&summary.state),
            Some(BackendState::Ready | BackendState::Provisioning)
        ) {
            continue;
        }
        tracing::info!(backend = %key, object = %what, "owned object {how}: applying again");
        if let Err(error) = context.driver.send(&key, Event::DriftDetected(step)).await {
            tracing::warn!(backend = %key, %error, "cannot report drift");
            continue;
        }
        if let Some((namespace, name)) = key.split_once('/') {
            let api: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
            if let Ok(Some(backend)) = api.get_opt(name).await {
                context
                    .executor
                    .event(
                        &backend.object_ref(&()),
                        true,
                        "DriftDetected",
                        &format!("{action}{}", <&str>::from(step)),
                        format!(
                            "{what} {how}; the operator applies step {} again",
                            <&str>::from(step)
                        ),
                    )
                    .await;
            }
        }
    }
}
