//! `nvca-mirror run` (container `nvca-mirror`): copies the Secrets named in the
//! chart's `imagePullSecrets` from the operator's namespace into `nvca-system`, keeps the
//! copies equal to their sources, and deletes copies no longer named.
//!
//! NVIDIA's is `nvca-mirror run` (`N/pkg/operator/mirror/cmd.go`, `controller.go`); the
//! flags, environment variables, reserved names and labels are its. Where ours differs:
//! - a named Secret missing from the source namespace is waited for (and logged with the
//!   command that creates it) instead of failing the container at start;
//! - a copy deleted or edited in `nvca-system` is put back at once (a watch on the
//!   copies), not only at the hourly resync;
//! - the target namespace is watched, so copies appear as soon as the operator creates
//!   `nvca-system`, without NVIDIA's five-minute give-up.
//!
//! `nvca-operator run` applies the same copies in its `PullSecrets` step (so the agent
//! never starts before its pull secret exists); the two write identical objects, each
//! with server-side apply under its own field manager.

use crate::kube::not_found::not_found;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;

use crate::kube::resources::pull_secrets::{LABEL_ADDITIONAL_PULL_SECRET, MIRROR, mirror_copy};
use crate::logging::LogFormat;
use crate::process::wait_for_signal;

/// NVIDIA's `AdditionalImagePullSecretsEnvVar`: base64 of the chart's `imagePullSecrets`
/// as JSON (`[{"name": "regcred"}]`).
pub const PULL_SECRETS_ENV: &str = "NVCA_ADDITIONAL_IMAGE_PULL_SECRETS_JSON_BASE64";

/// Secrets the operator manages itself; NVIDIA's mirror refuses them (`ReservedSecretNames`).
pub const RESERVED: [&str; 8] = [
    "nvca-image-pull-secret",
    "ngc-service-api-key",
    "ngc-api-key",
    "oauth-client-secret-key",
    "oauth-client-id",
    "otel-nvca-config",
    "nvca-webhook-tls-server-certs",
    "nvca-webhook-tls-ca-certs",
];

/// The flags of `mirror`: NVIDIA's `nvca-mirror run`.
#[derive(Clone, Debug, clap::Args)]
pub struct MirrorArgs {
    /// Where the named Secrets are read: the operator's namespace.
    #[arg(
        long,
        env = "NVCA_MIRROR_SOURCE_NAMESPACE",
        default_value = "nvca-operator"
    )]
    pub source_namespace: String,
    /// Where the copies are written.
    #[arg(long, env = "TARGET_NAMESPACE", default_value = "nvca-system")]
    pub target_namespace: String,
    /// A kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// error, warn, info, debug or trace; RUST_LOG refines it.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Every copy is checked against its source at least this often, e.g. 30m, 1h.
    #[arg(long, env = "RESYNC_PERIOD", value_parser = humantime::parse_duration, default_value = "1h")]
    pub resync_period: Duration,
    /// The Secrets to copy: base64 of a JSON list of `{"name": …}` (the chart's
    /// imagePullSecrets).
    #[arg(long, env = PULL_SECRETS_ENV, default_value = "")]
    pub additional_image_pull_secrets_b64: String,
}

#[derive(Debug, Error)]
pub enum MirrorError {
    #[error(
        "{PULL_SECRETS_ENV} is not base64 of a JSON list of {{\"name\": …}} ({reason}); set the chart's imagePullSecrets to a list of names"
    )]
    Decode { reason: String },
    #[error(
        "Secret {0:?} is managed by the operator itself and cannot be an image pull secret to copy; remove it from the chart's imagePullSecrets"
    )]
    Reserved(String),
    #[error("{0}")]
    Kubernetes(String),
}

impl MirrorError {
    pub fn category(&self) -> &'static str {
        match self {
            MirrorError::Decode { .. } => "decode",
            MirrorError::Reserved(_) => "reserved",
            MirrorError::Kubernetes(_) => "kubernetes",
        }
    }
}

/// The names in NVIDIA's encoding (base64 of `[{"name": …}]`); empty names are skipped,
/// reserved ones refused. An empty text is an empty list.
pub fn decode_names(b64: &str) -> Result<Vec<String>, MirrorError> {
    #[derive(serde::Deserialize)]
    struct Reference {
        #[serde(default)]
        name: String,
    }
    let b64 = b64.trim();
    if b64.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|error| MirrorError::Decode {
            reason: error.to_string(),
        })?;
    let references: Vec<Reference> =
        serde_json::from_slice(&bytes).map_err(|error| MirrorError::Decode {
            reason: error.to_string(),
        })?;
    let mut names = Vec::new();
    for reference in references {
        let name = reference.name.trim().to_string();
        if name.is_empty() || names.contains(&name) {
            continue;
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(MirrorError::Reserved(name));
        }
        names.push(name);
    }
    Ok(names)
}

/// The whole command, for the binary.
pub fn main(args: MirrorArgs) -> ExitCode {
    crate::logging::init(&args.log_level, args.log_format);
    crate::process::block_on("nvca-mirror", run(args), MirrorError::category)
}

/// Mirror until SIGTERM or Ctrl-C.
pub async fn run(args: MirrorArgs) -> Result<(), MirrorError> {
    let names = decode_names(&args.additional_image_pull_secrets_b64)?;
    let client = crate::kube::client::connect(args.kubeconfig.as_deref(), "operator")
        .await
        .map_err(|error| MirrorError::Kubernetes(error.to_string()))?;
    let mirror = Mirror {
        sources: Api::namespaced(client.clone(), &args.source_namespace),
        copies: Api::namespaced(client.clone(), &args.target_namespace),
        client,
        source_namespace: args.source_namespace.clone(),
        target_namespace: args.target_namespace.clone(),
        names,
    };
    tracing::info!(source = %mirror.source_namespace, target = %mirror.target_namespace,
        secrets = ?mirror.names, resync = ?args.resync_period, "nvca-mirror running");
    tokio::select! {
        () = mirror.keep(args.resync_period) => {}
        () = wait_for_signal() => tracing::info!("stopping nvca-mirror"),
    }
    Ok(())
}

struct Mirror {
    client: Client,
    sources: Api<Secret>,
    copies: Api<Secret>,
    source_namespace: String,
    target_namespace: String,
    names: Vec<String>,
}

/// What one pass found and did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub copied: Vec<String>,
    pub missing: Vec<String>,
    pub deleted: Vec<String>,
    /// The target namespace does not exist (yet).
    pub no_target: bool,
}

impl Mirror {
    /// Reconcile at start, on every change of a source, a copy or the target namespace,
    /// and every `resync`.
    async fn keep(&self, resync: Duration) {
        let named =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut sources = kube::runtime::watcher(self.sources.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut copies = kube::runtime::watcher(
            self.copies.clone(),
            watcher::Config::default().labels(&format!("{LABEL_ADDITIONAL_PULL_SECRET}=true")),
        )
        .default_backoff()
        .boxed();
        let mut namespace = kube::runtime::watcher(
            Api::<Namespace>::all(self.client.clone()),
            named(&self.target_namespace),
        )
        .default_backoff()
        .boxed();
        let mut tick = tokio::time::interval(resync);
        let mut last = None;
        loop {
            let relevant = tokio::select! {
                event = sources.next() => self.matters(event, true),
                event = copies.next() => self.matters(event, false),
                event = namespace.next() => matches!(event, Some(Ok(WatchEvent::Apply(_) | WatchEvent::InitDone))),
                _ = tick.tick() => true,
            };
            if !relevant {
                continue;
            }
            match self.pass().await {
                Ok(pass) => {
                    if last.as_ref() != Some(&pass) {
                        self.report(&pass);
                        last = Some(pass);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "mirroring pull secrets; retrying on the next change")
                }
            }
        }
    }

    /// Whether a watch event calls for a pass: a named source, or any copy.
    fn matters<K: kube::Resource>(
        &self,
        event: Option<Result<WatchEvent<K>, watcher::Error>>,
        only_named: bool,
    ) -> bool {
        match event {
            Some(Ok(WatchEvent::Apply(object) | WatchEvent::Delete(object))) => {
                !only_named || self.names.iter().any(|n| *n == object.name_any())
            }
            Some(Ok(WatchEvent::InitDone)) => true,
            Some(Ok(WatchEvent::Init | WatchEvent::InitApply(_))) => false,
            Some(Err(error)) => {
                tracing::debug!(%error, "watch interrupted; it resumes");
                false
            }
            None => false,
        }
    }

    fn report(&self, pass: &Pass) {
        if pass.no_target {
            tracing::info!(namespace = %self.target_namespace, "waiting for the target namespace (nvca-operator run creates it)");
        }
        for name in &pass.missing {
            tracing::warn!(
                "Secret {}/{name}, named in imagePullSecrets, does not exist: create it (kubectl create secret docker-registry {name} -n {} …) or remove it from imagePullSecrets; it is copied as soon as it exists",
                self.source_namespace,
                self.source_namespace
            );
        }
        if !pass.copied.is_empty() || !pass.deleted.is_empty() {
            tracing::info!(copied = ?pass.copied, deleted = ?pass.deleted, target = %self.target_namespace, "pull secrets mirrored");
        }
    }

    /// Copy every named source (a no-op on the server when the copy is equal) and delete
    /// every copy no longer named.
    async fn pass(&self) -> Result<Pass, kube::Error> {
        let mut pass = Pass::default();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if namespaces.get_opt(&self.target_namespace).await?.is_none() {
            pass.no_target = true;
            return Ok(pass);
        }
        let existing = self
            .copies
            .list(&ListParams::default().labels(&format!("{LABEL_ADDITIONAL_PULL_SECRET}=true")))
            .await?;
        let params = PatchParams::apply(MIRROR).force();
        for name in &self.names {
            let Some(source) = self.sources.get_opt(name).await? else {
                pass.missing.push(name.clone());
                continue;
            };
            let copy = mirror_copy(&source, &self.target_namespace);
            let current = existing.iter().find(|c| c.name_any() == *name);
            let equal = current.is_some_and(|c| {
                c.data == copy.data
                    && c.type_ == copy.type_
                    && copy
                        .labels()
                        .iter()
                        .all(|(k, v)| c.labels().get(k) == Some(v))
            });
            if !equal {
                self.copies
                    .patch(name, &params, &Patch::Apply(&copy))
                    .await?;
                pass.copied.push(name.clone());
            }
        }
        let wanted: BTreeSet<&String> = self.names.iter().collect();
        for copy in existing.iter().filter(|c| !wanted.contains(&c.name_any())) {
            match self
                .copies
                .delete(&copy.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => pass.deleted.push(copy.name_any()),
                Err(error) if not_found(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    #[test]
    fn names_decode_from_nvidias_base64_json() {
        assert_eq!(decode_names("").unwrap(), Vec::<String>::new());
        assert_eq!(
            decode_names(&b64(
                r#"[{"name":"regcred"},{"name":""},{"name":"other"},{"name":"regcred"}]"#
            ))
            .unwrap(),
            ["regcred", "other"]
        );
    }

    #[test]
    fn reserved_and_malformed_lists_say_how_to_fix_them() {
        let message = decode_names(&b64(r#"[{"name":"nvca-webhook-tls-ca-certs"}]"#))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("nvca-webhook-tls-ca-certs") && message.contains("imagePullSecrets"),
            "{message}"
        );
        let error = decode_names("not base64!").unwrap_err();
        assert_eq!(error.category(), "decode");
        assert!(error.to_string().contains(PULL_SECRETS_ENV));
        assert_eq!(
            decode_names(&b64(r#"{"name":"x"}"#))
                .unwrap_err()
                .category(),
            "decode"
        );
    }
}
