//! The NVCFBackend the chart asks for: its spec derived from ConfigMap
//! `nvcfbackend-self-managed` and the registration's IDs, written by server-side apply at
//! start and whenever either ConfigMap (or the agent-config merge) changes.

use super::*;

/// Why the NVCFBackend cannot be built from the chart's ConfigMaps (reported, retried).
#[derive(Debug, Error)]
pub enum SpecError {
    #[error(
        "ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP} not found: install the chart with ngcConfig.clusterSource=self-managed in namespace {namespace}, or pass the chart's namespace as --system-namespace"
    )]
    DtoMissing { namespace: String },
    #[error(
        "ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP} has no key {CLUSTER_DTO_KEY}: the chart renders it only with ngcConfig.clusterSource=self-managed"
    )]
    KeyMissing { namespace: String },
    #[error("ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP} key {CLUSTER_DTO_KEY} {reason}")]
    Dto { namespace: String, reason: String },
    #[error(
        "cluster name {0:?} cannot name an NVCFBackend: use lowercase letters, digits and '-' (Helm value clusterName)"
    )]
    Name(String),
}

/// The parts of `cluster-dto.yaml` the NVCFBackend needs beyond [`ClusterDto`].
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct DtoExtras {
    agent: DtoAgent,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DtoAgent {
    #[serde(rename = "natsURL")]
    nats_url: Option<String>,
    #[serde(rename = "natsHostOverride")]
    nats_host_override: Option<String>,
    /// The chart's agent.tolerations (NVIDIA's self-managed mapper puts them in the spec).
    tolerations: Vec<serde_json::Value>,
}

pub use crate::kube::registration::RegisteredIds;

/// The NVCFBackend's name and the spec nvca writes, from the chart's ConfigMaps. IDs:
/// `nvca-cluster-registration` first, then `--cluster-id`, then cluster-dto.yaml.
pub fn desired_spec(
    namespace: &str,
    dto_text: &str,
    registered: &RegisteredIds,
    args: &RunArgs,
) -> Result<(String, serde_json::Value), SpecError> {
    let dto = ClusterDto::parse(dto_text).map_err(|error| SpecError::Dto {
        namespace: namespace.to_string(),
        reason: error.to_string(),
    })?;
    let extras: DtoExtras = serde_yaml::from_str(dto_text).unwrap_or_default();
    let first = |values: &[&str]| {
        values
            .iter()
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
            .unwrap_or_default()
            .to_string()
    };
    let cluster_name = first(&[&args.cluster_name, &dto.cluster_name]);
    let name = cluster_name.clone();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(SpecError::Name(name));
    }
    let cluster_id = first(&[
        &registered.cluster_id,
        &args.cluster_id,
        dto.cluster_id.as_deref().unwrap_or_default(),
    ]);
    let cluster_group_id = first(&[
        &registered.cluster_group_id,
        dto.cluster_group_id.as_deref().unwrap_or_default(),
    ]);
    let nca_id = first(&[&dto.nca_id, &args.nca_id]);
    let mut icms = json!({"icmsServiceURL": dto.icms_service_url});
    if let Some(host) = &dto.icms_host_override {
        icms["icmsServiceHostHeaderOverride"] = json!(host);
    }
    let mut agent = serde_json::Map::new();
    if let Some(url) = extras.agent.nats_url.filter(|u| !u.trim().is_empty()) {
        agent.insert("natsURL".to_string(), json!(url));
    }
    if let Some(host) = extras
        .agent
        .nats_host_override
        .filter(|h| !h.trim().is_empty())
    {
        agent.insert("natsHostOverride".to_string(), json!(host));
    }
    if !extras.agent.tolerations.is_empty() {
        agent.insert("tolerations".to_string(), json!(extras.agent.tolerations));
    }
    let mut cluster = json!({
        "clusterName": cluster_name,
        "clusterGroupName": dto.cluster_group_name,
        "cloudProvider": dto.cloud_provider.as_str(),
        "region": dto.region,
        "gpuDiscovery": {"dynamic": {}},
        "attributes": dto.attributes,
    });
    if !cluster_id.is_empty() {
        cluster["clusterID"] = json!(cluster_id);
    }
    if !cluster_group_id.is_empty() {
        cluster["clusterGroupID"] = json!(cluster_group_id);
    }
    let spec = json!({
        "version": dto.nvca_version,
        "accountConfig": {"ncaID": nca_id},
        "clusterConfig": cluster,
        "featureGate": {"values": dto.capabilities},
        "icmsConfig": icms,
        "agentConfig": agent,
        "clusterSource": "self-hosted",
    });
    Ok((name, spec))
}

/// Build the NVCFBackend from the ConfigMaps now, and again whenever one of them changes.
pub(super) async fn sync_backend_spec(context: Arc<Context>) {
    let namespace = context.args.system_namespace.clone();
    let configmaps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
    let mut synced: Option<(String, String)> = None;
    let mut events = watcher(configmaps.clone(), watcher::Config::default()).boxed();
    let mut retry = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(WatchEvent::Apply(cm) | WatchEvent::InitApply(cm) | WatchEvent::Delete(cm)))
                    if matches!(cm.name_any().as_str(), CLUSTER_DTO_CONFIGMAP | REGISTRATION_CONFIGMAP) => {}
                Some(Ok(WatchEvent::InitDone)) => {}
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the chart's ConfigMaps; retrying");
                    continue;
                }
                None => return,
            },
            _ = retry.tick() => {}
        }
        let versions = match (
            configmaps.get_opt(CLUSTER_DTO_CONFIGMAP).await,
            configmaps.get_opt(REGISTRATION_CONFIGMAP).await,
        ) {
            (Ok(dto), Ok(registration)) => (
                dto.as_ref()
                    .map(|c| c.resource_version().unwrap_or_default())
                    .unwrap_or_default(),
                registration
                    .as_ref()
                    .map(|c| c.resource_version().unwrap_or_default())
                    .unwrap_or_default(),
            ),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "reading the chart's ConfigMaps; retrying");
                continue;
            }
        };
        if synced.as_ref() == Some(&versions) {
            continue;
        }
        match write_backend(&context, &configmaps).await {
            Ok(()) => synced = Some(versions),
            Err(message) => {
                context.metrics.error("spec");
                tracing::error!("NVCFBackend not written: {message}")
            }
        }
    }
}

/// The chart's `agent-config-merge` changed (or went): `agent-config` is checked against
/// what the operator would now write, and applied again when it differs, as any drift.
pub(super) async fn follow_agent_config_merge(context: Arc<Context>) {
    let namespace = context.args.system_namespace.clone();
    let configmaps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
    let merge = agent_config::MERGE_CONFIGMAP;
    let config = watcher::Config::default().fields(&format!("metadata.name={merge}"));
    let what = format!("ConfigMap {namespace}/{merge}");
    let mut events = watcher(configmaps, config).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Apply(_) | WatchEvent::Delete(_)) => {
                modified(
                    &context,
                    ProvisionStep::AgentConfig,
                    "ConfigMap",
                    agent_config::CONFIGMAP,
                    &what,
                )
                .await
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "watching {what}; retrying"),
        }
    }
}

pub(super) async fn write_backend(
    context: &Context,
    configmaps: &Api<ConfigMap>,
) -> Result<(), String> {
    let namespace = &context.args.system_namespace;
    let dto = configmaps
        .get_opt(CLUSTER_DTO_CONFIGMAP)
        .await
        .map_err(|error| format!("reading ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP}: {error}"))?
        .ok_or_else(|| {
            SpecError::DtoMissing {
                namespace: namespace.clone(),
            }
            .to_string()
        })?;
    let text = dto
        .data
        .as_ref()
        .and_then(|data| data.get(CLUSTER_DTO_KEY))
        .ok_or_else(|| {
            SpecError::KeyMissing {
                namespace: namespace.clone(),
            }
            .to_string()
        })?;
    let registration = configmaps
        .get_opt(REGISTRATION_CONFIGMAP)
        .await
        .map_err(|error| {
            format!("reading ConfigMap {namespace}/{REGISTRATION_CONFIGMAP}: {error}")
        })?;
    let registered = RegisteredIds::of(registration.as_ref());
    let (name, spec) =
        desired_spec(namespace, text, &registered, &context.args).map_err(|e| e.to_string())?;
    let backends: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
    if let Some(existing) = backends
        .get_opt(&name)
        .await
        .map_err(|error| format!("reading NVCFBackend {namespace}/{name}: {error}"))?
        && existing.metadata.deletion_timestamp.is_some()
    {
        tracing::info!(backend = %name, "the NVCFBackend is being deleted; its spec is left alone");
        return Ok(());
    }
    // An uninstall this store carries out or finished is not undone by writing the spec
    // again: a create here would bring back the NVCFBackend the user deleted (an
    // operator restarted between the deletion and `helm uninstall`). A new install starts
    // with a new operator, which forgets released machines at start.
    let key = format!("{namespace}/{name}");
    if context.driver.summary(&key).is_some_and(|summary| {
        matches!(
            BackendState::of(&summary.state),
            Some(BackendState::Releasing | BackendState::Released)
        )
    }) {
        tracing::info!(backend = %name, "the NVCFBackend was uninstalled by this operator; it is not written again");
        return Ok(());
    }
    if registered.cluster_id.is_empty() && context.args.cluster_id.is_empty() {
        tracing::warn!(
            "ConfigMap {namespace}/{REGISTRATION_CONFIGMAP} holds no clusterId yet: the agent cannot be provisioned until the bootstrap registers the cluster (kubectl exec -n {namespace} deploy/nvca-operator -c nvca-operator -- /usr/bin/nvca-self-managed bootstrap --system-namespace {namespace})"
        );
    }
    let object = json!({
        "apiVersion": "nvcf.nvidia.io/v1",
        "kind": "NVCFBackend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    backends
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|error| format!("applying NVCFBackend {namespace}/{name}: {error}"))?;
    tracing::info!(backend = %name, "NVCFBackend written from {CLUSTER_DTO_CONFIGMAP} and {REGISTRATION_CONFIGMAP}");
    Ok(())
}
