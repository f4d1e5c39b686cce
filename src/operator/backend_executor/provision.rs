//! Provisioning, step by step in NVIDIA's order: the objects of each step applied with
//! server-side apply, the agent's Deployment last, the copied pull secrets and the webhook
//! certificates.

use super::*;

impl BackendExecutor {
    /// Apply Deployment `nvca`; one the apply cannot merge into is replaced. NVIDIA's
    /// operator's has volumes of the same names and other kinds (an emptyDir where this
    /// mounts a projected token), so adopting an NVIDIA install is answered 422 (more
    /// than one volume type): that Deployment is deleted and this one created, as
    /// NVIDIA's operator recreates its own when it cannot update it (`reconcile_helpers.go`).
    pub(super) async fn apply_deployment(
        &self,
        system: &str,
        deployment: &Deployment,
    ) -> Result<(), EffectError> {
        let api = self.namespaced::<Deployment>(system);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(NVCA, &params, &Patch::Apply(deployment)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::warn!(namespace = %system, reason = %status.message,
                    "Deployment nvca cannot take what this operator applies (written by another operator?): replacing it");
                match api.delete(NVCA, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(error) if not_found(&error) => {}
                    Err(error) => {
                        return Err(classify(
                            &format!("replacing Deployment {system}/{NVCA}"),
                            error,
                        ));
                    }
                }
                self.apply(&api, deployment).await
            }
            Err(error) => Err(classify(
                &format!("applying Deployment {system}/{NVCA}"),
                error,
            )),
        }
    }

    /// Refuse to fill a namespace that is being deleted (a drift repair right after
    /// someone deleted `nvca-system`): wait until it is gone, then create it anew.
    pub(super) async fn not_terminating(&self, namespace: &str) -> Result<(), EffectError> {
        let current = self
            .cluster_api::<Namespace>()
            .get_opt(namespace)
            .await
            .map_err(|error| classify(&format!("reading namespace {namespace}"), error))?;
        if current.is_some_and(|ns| ns.metadata.deletion_timestamp.is_some()) {
            return Err(EffectError::Transient(format!(
                "namespace {namespace} is Terminating; it is created again once Kubernetes has removed it"
            )));
        }
        Ok(())
    }

    pub(super) async fn provision(
        &self,
        key: &str,
        step: ProvisionStep,
    ) -> Result<(), EffectError> {
        let (_, config) = self.config(key).await?;
        let system = config.system_namespace.clone();
        match step {
            ProvisionStep::SystemNamespace => {
                self.not_terminating(&system).await?;
                self.apply(&self.cluster_api(), &namespaces::system_namespace(&config))
                    .await?;
                self.apply(
                    &self.namespaced::<ResourceQuota>(&system),
                    &namespaces::system_quota(&config),
                )
                .await
            }
            ProvisionStep::RequestsNamespace => {
                self.not_terminating(&config.requests_namespace).await?;
                self.apply(
                    &self.cluster_api(),
                    &namespaces::requests_namespace(&config),
                )
                .await?;
                self.apply(
                    &self.namespaced::<ServiceAccount>(&config.requests_namespace),
                    &namespaces::requests_default_service_account(&config),
                )
                .await
            }
            ProvisionStep::PullSecrets => self.pull_secrets(&config).await,
            ProvisionStep::WebhookCerts => self.webhook_certs(&config).await,
            ProvisionStep::NetworkPolicies => {
                self.apply(
                    &self.namespaced::<ConfigMap>(&system),
                    &network_policies::configmap(&config),
                )
                .await
            }
            ProvisionStep::Rbac => {
                self.apply(
                    &self.namespaced::<ServiceAccount>(&system),
                    &rbac::service_account(&config),
                )
                .await?;
                self.apply(&self.cluster_api(), &rbac::cluster_role(&config))
                    .await?;
                self.apply(&self.cluster_api(), &rbac::cluster_role_binding(&config))
                    .await
            }
            ProvisionStep::Service => {
                self.apply(
                    &self.namespaced::<Service>(&system),
                    &service::service(&config),
                )
                .await
            }
            ProvisionStep::WebhookConfigurations => {
                let bundle = self.webhook_ca_bundle(&system).await?;
                self.apply(
                    &self.cluster_api::<ValidatingWebhookConfiguration>(),
                    &webhooks::validating(&config, &bundle),
                )
                .await?;
                self.apply(
                    &self.cluster_api::<MutatingWebhookConfiguration>(),
                    &webhooks::mutating_configuration(&config, &bundle),
                )
                .await
            }
            ProvisionStep::AgentConfig => {
                let configmap = resources::agent_config::rendered_configmap(&config)?;
                self.apply(&self.namespaced::<ConfigMap>(&system), &configmap)
                    .await
            }
            ProvisionStep::AgentDeployment => {
                self.apply_deployment(&system, &deployment::deployment(&config))
                    .await
            }
        }
    }

    /// Copy each Secret named in `imagePullSecrets` into the system namespace, and delete
    /// copies of Secrets no longer named.
    pub(super) async fn pull_secrets(&self, config: &BackendConfig) -> Result<(), EffectError> {
        let source_ns = &config.settings.operator_namespace;
        let sources = self.namespaced::<Secret>(source_ns);
        let targets = self.namespaced::<Secret>(&config.system_namespace);
        for name in &config.settings.image_pull_secrets {
            let source = sources
                .get_opt(name)
                .await
                .map_err(|error| classify(&format!("reading Secret {source_ns}/{name}"), error))?
                .ok_or_else(|| {
                    EffectError::Transient(format!(
                        "Secret {source_ns}/{name}, named in imagePullSecrets, does not exist: create it \
                         (kubectl create secret docker-registry {name} -n {source_ns} …) or remove it from imagePullSecrets"
                    ))
                })?;
            self.apply(&targets, &pull_secrets::copy(config, &source))
                .await?;
        }
        let copies = targets
            .list(&ListParams::default().labels(&pull_secrets::copies_selector()))
            .await
            .map_err(|error| classify("listing pull-secret copies", error))?;
        for copy in copies {
            let name = copy.name_any();
            if !config.settings.image_pull_secrets.contains(&name) {
                delete(
                    &targets,
                    &name,
                    &describe::<Secret>(Some(&config.system_namespace), &name),
                )
                .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn webhook_certs(&self, config: &BackendConfig) -> Result<(), EffectError> {
        let secrets = self.namespaced::<Secret>(&config.system_namespace);
        let read = |name: &'static str| {
            let secrets = secrets.clone();
            async move {
                secrets
                    .get_opt(name)
                    .await
                    .map_err(|error| classify(&format!("reading Secret {name}"), error))
            }
        };
        let server = read(webhook_certs::SERVER_SECRET).await?;
        let ca = read(webhook_certs::CA_SECRET).await?;
        let pair = |secret: &Option<Secret>| {
            secret
                .as_ref()
                .and_then(|s| s.annotations().get(CERT_PAIR_ANNOTATION).cloned())
        };
        let paired = pair(&server).is_some() && pair(&server) == pair(&ca);
        if paired && webhook_certs::usable(server.as_ref(), ca.as_ref()) {
            return Ok(());
        }
        tracing::info!(namespace = %config.system_namespace, "generating the webhook CA and serving certificate");
        let cert = webhook_certs::generate(config, std::time::SystemTime::now())
            .map_err(|error| EffectError::Transient(error.to_string()))?;
        let id = format!("{:016x}", rand::random::<u64>());
        let mut server = webhook_certs::server_secret(config, &cert);
        let mut ca = webhook_certs::ca_secret(config, &cert);
        for secret in [&mut server, &mut ca] {
            secret
                .annotations_mut()
                .insert(CERT_PAIR_ANNOTATION.to_string(), id.clone());
        }
        self.apply(&secrets, &ca).await?;
        self.apply(&secrets, &server).await
    }

    /// The CA certificate the webhook configurations carry, from the CA Secret.
    pub(in crate::operator) async fn webhook_ca_bundle(
        &self,
        system: &str,
    ) -> Result<Vec<u8>, EffectError> {
        let ca = self
            .namespaced::<Secret>(system)
            .get_opt(webhook_certs::CA_SECRET)
            .await
            .map_err(|error| classify("reading the webhook CA Secret", error))?;
        ca.as_ref().and_then(webhook_certs::ca_bundle).ok_or_else(|| {
            EffectError::Transient(format!(
                "Secret {system}/{} has no CA certificate in {}; the WebhookCerts step writes it and runs again when drift is seen",
                webhook_certs::CA_SECRET,
                webhook_certs::KEY_CA
            ))
        })
    }
}
