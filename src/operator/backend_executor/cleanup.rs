//! Clean-up in NVIDIA's order: cordon and drain the agent, wait for the ICMSRequests to
//! go, delete what was provisioned, the namespaces last.

use super::*;

impl BackendExecutor {
    pub(super) async fn set_maintenance(&self, key: &str, mode: &str) -> Result<(), EffectError> {
        let (system, _) = self.namespaces_of(key).await?;
        let configmaps = self.namespaced::<ConfigMap>(&system);
        let Some(current) = configmaps
            .get_opt(agent_config::CONFIGMAP)
            .await
            .map_err(|error| classify("reading ConfigMap agent-config", error))?
        else {
            tracing::info!(namespace = %system, "no agent-config: no agent to drain");
            return Ok(());
        };
        let text = current
            .data
            .as_ref()
            .and_then(|data| data.get(agent_config::KEY))
            .cloned()
            .unwrap_or_default();
        let mut file = AgentConfigFile::parse(&text).map_err(|error| {
            EffectError::Permanent(format!(
                "ConfigMap {system}/agent-config key config.yaml is not the agent's config ({error}); \
                 delete the ConfigMap to let the operator write it again"
            ))
        })?;
        file.set_maintenance(mode);
        let yaml = file.to_yaml().map_err(|error| {
            EffectError::Permanent(format!("cannot write the agent's config.yaml: {error}"))
        })?;
        let digest = deployment::digest(&yaml);
        let patch = ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(agent_config::CONFIGMAP.to_string()),
                namespace: Some(system.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(agent_config::KEY.to_string(), yaml)])),
            ..ConfigMap::default()
        };
        self.apply(&configmaps, &patch).await?;
        // The agent reads its config at start (NVIDIA's does only then): roll its pod, as
        // NVIDIA's drain does (`cleanup.go` `triggerNVCARollout`).
        let roll = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            deployment::CONFIG_DIGEST_ANNOTATION: digest,
        }}}}});
        match self
            .namespaced::<Deployment>(&system)
            .patch(NVCA, &PatchParams::default(), &Patch::Merge(&roll))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(classify(
                &format!("rolling Deployment {system}/{NVCA} into maintenance"),
                error,
            )),
        }
    }

    pub(super) async fn cleanup(&self, key: &str, step: CleanupStep) -> Result<(), EffectError> {
        let (system, requests) = self.namespaces_of(key).await?;
        match step {
            CleanupStep::IcmsRequests => self.icms_requests(&requests).await,
            CleanupStep::WorkloadNamespaces => {
                let all = self
                    .cluster_api::<Namespace>()
                    .list(&ListParams::default().labels(LABEL_WORKLOAD_INSTANCE_TYPE))
                    .await
                    .map_err(|error| classify("listing workload namespaces", error))?;
                let names: Vec<String> = all
                    .iter()
                    .map(|ns| ns.name_any())
                    .filter(|name| *name != requests && *name != system)
                    .collect();
                self.delete_namespaces(&names).await
            }
            CleanupStep::SystemNamespace => {
                self.delete_namespaces(&[system, MODELCACHE_INIT_NAMESPACE.to_string()])
                    .await
            }
            CleanupStep::RequestsNamespace => self.delete_namespaces(&[requests]).await,
            CleanupStep::WebhookConfigurations => {
                delete(
                    &self.cluster_api::<ValidatingWebhookConfiguration>(),
                    NVCA,
                    "ValidatingWebhookConfiguration nvca",
                )
                .await?;
                delete(
                    &self.cluster_api::<MutatingWebhookConfiguration>(),
                    NVCA,
                    "MutatingWebhookConfiguration nvca",
                )
                .await
            }
            CleanupStep::ClusterRbac => {
                delete(
                    &self.cluster_api::<ClusterRoleBinding>(),
                    NVCA,
                    "ClusterRoleBinding nvca",
                )
                .await?;
                delete(&self.cluster_api::<ClusterRole>(), NVCA, "ClusterRole nvca").await
            }
            CleanupStep::MirroredSecrets => {
                let all: Api<Secret> = Api::all(self.client.clone());
                let copies = all
                    .list(&ListParams::default().labels(&pull_secrets::copies_selector()))
                    .await
                    .map_err(|error| classify("listing pull-secret copies", error))?;
                for copy in copies {
                    let namespace = copy.namespace().unwrap_or_default();
                    let name = copy.name_any();
                    delete(
                        &self.namespaced::<Secret>(&namespace),
                        &name,
                        &describe::<Secret>(Some(&namespace), &name),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Strip the finalizers of every ICMSRequest in the requests namespace and delete it;
    /// done when none is left.
    pub(super) async fn icms_requests(&self, requests: &str) -> Result<(), EffectError> {
        let all: Api<ICMSRequest> = Api::namespaced(self.client.clone(), requests);
        let list = match all.list(&ListParams::default()).await {
            Ok(list) => list,
            // No ICMSRequest CRD: nothing to delete.
            Err(error) if not_found(&error) => return Ok(()),
            Err(error) => return Err(classify("listing ICMSRequests", error)),
        };
        for request in &list {
            let namespace = request.namespace().unwrap_or_default();
            let name = request.name_any();
            let api: Api<ICMSRequest> = Api::namespaced(self.client.clone(), &namespace);
            let what = format!("ICMSRequest {namespace}/{name}");
            if !request.finalizers().is_empty() {
                let strip = json!({"metadata": {"finalizers": null}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
                    .await
                {
                    Ok(_) => {}
                    Err(error) if not_found(&error) => continue,
                    Err(error) => {
                        return Err(classify(
                            &format!("removing the finalizers of {what}"),
                            error,
                        ));
                    }
                }
            }
            delete(&api, &name, &what).await?;
        }
        let left = all
            .list(&ListParams::default())
            .await
            .map_err(|error| classify("listing ICMSRequests", error))?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(EffectError::Transient(format!(
                "{} ICMSRequest(s) still being deleted",
                left.items.len()
            )))
        }
    }

    /// Delete `names` and wait, up to [`NAMESPACE_WAIT`], until all are gone.
    pub(super) async fn delete_namespaces(&self, names: &[String]) -> Result<(), EffectError> {
        let api = self.cluster_api::<Namespace>();
        for name in names {
            delete(&api, name, &format!("namespace {name}")).await?;
        }
        let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
        loop {
            let mut left = Vec::new();
            for name in names {
                let present = api
                    .get_opt(name)
                    .await
                    .map_err(|error| classify(&format!("reading namespace {name}"), error))?;
                if present.is_some() {
                    left.push(name.clone());
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EffectError::Transient(format!(
                    "namespace(s) {} still Terminating; Kubernetes is deleting their contents. If one stays \
                     Terminating, `kubectl get namespace <name> -o yaml` shows what blocks it, and \
                     `nvca-state force-cleanup` finalizes it",
                    left.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
