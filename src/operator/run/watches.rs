//! The watches that feed the backend machines: the NVCFBackends themselves, the
//! ICMSRequests a draining backend waits for (with a periodic recount), and the agent's
//! `/healthz`.

use super::*;

pub(super) fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<WatchEvent<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::watcher(api, config).default_backoff()
}

pub(super) fn key_of(backend: &NVCFBackend) -> String {
    format!(
        "{}/{}",
        backend.namespace().unwrap_or_default(),
        backend.name_any()
    )
}

/// The agent's requests namespace of `backend` (`nvcf-backend` unless its spec names one).
pub(super) fn requests_namespace(backend: &NVCFBackend) -> String {
    backend
        .spec
        .fields
        .cluster_config
        .as_ref()
        .map(|c| c.requests_namespace.clone())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| REQUESTS_NAMESPACE.to_string())
}

/// The names of the ICMSRequests that remain in the requests namespace (the function
/// deployments still running), as NVIDIA's `CountICMSRequests` counts them.
pub(super) async fn remaining_deployments(
    client: &Client,
    backend: &NVCFBackend,
) -> Result<Vec<String>, kube::Error> {
    let all: Api<ICMSRequest> = Api::namespaced(client.clone(), &requests_namespace(backend));
    match all.list(&ListParams::default()).await {
        Ok(list) => Ok(list.iter().map(|r| r.name_any()).collect()),
        Err(error) if not_found(&error) => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// NVCFBackends: the spec's generation and the deletion, to the machines.
pub(super) async fn watch_backends(context: Arc<Context>) {
    let api: Api<NVCFBackend> =
        Api::namespaced(context.client.clone(), &context.args.system_namespace);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let backend = match event {
            Ok(WatchEvent::Apply(backend) | WatchEvent::InitApply(backend)) => backend,
            Ok(_) => continue,
            Err(error) => {
                context.metrics.error("kubernetes");
                tracing::warn!(%error, "watching NVCFBackends; retrying");
                continue;
            }
        };
        if let Err(error) = observe_backend(&context, &backend).await {
            tracing::error!(backend = %key_of(&backend), %error, "cannot hand the NVCFBackend to its machine");
        }
    }
}

pub(super) async fn observe_backend(
    context: &Context,
    backend: &NVCFBackend,
) -> Result<(), String> {
    let key = key_of(backend);
    let namespace = backend.namespace().unwrap_or_default();
    let name = backend.name_any();
    let driver = &context.driver;
    driver
        .ensure(&key, || BackendMachine::new(&namespace, &name))
        .await
        .map_err(|e| e.to_string())?;
    let Some(summary) = driver.summary(&key) else {
        return Ok(());
    };
    if summary.is_final {
        if backend.metadata.deletion_timestamp.is_none() {
            tracing::warn!(backend = %key, "this NVCFBackend was released and created again; restart the operator to provision it");
        }
        return Ok(());
    }
    let event = if backend.metadata.deletion_timestamp.is_some() {
        if BackendState::CleanupFailed.is(&summary.state) {
            let mut nudged = context
                .nudged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let recent = nudged
                .get(&key)
                .is_some_and(|at| at.elapsed() < CLEANUP_RETRY);
            if recent {
                return Ok(());
            }
            nudged.insert(key.clone(), Instant::now());
        } else if matches!(
            BackendState::of(&summary.state),
            Some(BackendState::CleaningUp | BackendState::Releasing | BackendState::Draining)
        ) {
            // Already deleting; the drain recount and effect outcomes drive it.
            return Ok(());
        }
        let remaining = remaining_deployments(&context.client, backend)
            .await
            .map_err(|e| format!("listing ICMSRequests: {e}"))?;
        Event::DeletionObserved { remaining }
    } else {
        let generation = backend
            .metadata
            .generation
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(0);
        Event::SpecChanged { generation }
    };
    driver.send(&key, event).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// ICMSRequests: a draining backend learns at once that the last one went.
pub(super) async fn watch_icms_requests(context: Arc<Context>) {
    let api: Api<ICMSRequest> = Api::all(context.client.clone());
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Delete(_) | WatchEvent::InitDone) => recount(&context).await,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "watching ICMSRequests; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

pub(super) async fn recount_drains(context: Arc<Context>) {
    let mut tick = tokio::time::interval(DRAIN_RECOUNT);
    loop {
        tick.tick().await;
        recount(&context).await;
        // A machine parked in cleanup_failed retries when the deletion is seen again.
        for key in context.driver.names() {
            let Some(summary) = context.driver.summary(&key) else {
                continue;
            };
            if BackendState::CleanupFailed.is(&summary.state)
                && let Some((namespace, name)) = key.split_once('/')
            {
                let api: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
                if let Ok(Some(backend)) = api.get_opt(name).await {
                    let _ = observe_backend(&context, &backend).await;
                }
            }
        }
    }
}

pub(super) async fn recount(context: &Context) {
    let draining: Vec<String> = context
        .driver
        .names()
        .into_iter()
        .filter(|key| {
            context
                .driver
                .summary(key)
                .is_some_and(|s| BackendState::Draining.is(&s.state))
        })
        .collect();
    if draining.is_empty() {
        return;
    }
    for key in draining {
        let Some((namespace, name)) = key.split_once('/') else {
            continue;
        };
        let api: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
        let Ok(Some(backend)) = api.get_opt(name).await else {
            continue;
        };
        let remaining = match remaining_deployments(&context.client, &backend).await {
            Ok(remaining) => remaining,
            Err(error) => {
                tracing::warn!(%error, "cannot count ICMSRequests");
                continue;
            }
        };
        let event = Event::DeploymentsObserved { remaining };
        if let Err(error) = context.driver.send(&key, event).await {
            tracing::warn!(backend = %key, %error, "cannot tell the machine what remains");
        }
    }
}

/// The agent's `/healthz`, every interval, to every live machine.
pub(super) async fn poll_health(context: Arc<Context>) {
    let http = crate::tls::http_client();
    let mut tick = tokio::time::interval(context.args.agent_health_interval);
    loop {
        tick.tick().await;
        let live: Vec<String> = context
            .driver
            .names()
            .into_iter()
            .filter(|key| {
                context.driver.summary(key).is_some_and(|s| {
                    matches!(
                        BackendState::of(&s.state),
                        Some(
                            BackendState::Pending
                                | BackendState::Provisioning
                                | BackendState::Ready
                        )
                    )
                })
            })
            .collect();
        if live.is_empty() {
            continue;
        }
        let report = health::read(&http, &context.args.agent_health_url).await;
        if report.status == crate::machines::backend::AgentStatus::Unknown {
            context.metrics.error("agent_health");
        }
        for key in live {
            if let Err(error) = context
                .driver
                .send(&key, Event::AgentObserved(report.clone()))
                .await
            {
                tracing::warn!(backend = %key, %error, "cannot hand the agent's health to the machine");
            }
        }
    }
}
