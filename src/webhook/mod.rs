//! The admission webhooks (`webhook-server`, container `webhook` of Deployment `nvca`),
//! a drop-in for NVIDIA's `webhook-server` (`N/pkg/webhook/`, `N` =
//! `src/compute-plane-services/nvca` of github.com/NVIDIA/nvcf). The operator's
//! Mutating/ValidatingWebhookConfigurations `nvca` call it through Service `nvca` on
//! 8443 ([`crate::kube::resources::webhooks`]); docs/webhook.md has the contracts.
//!
//! The decisions are pure functions of an AdmissionReview ([`node_affinity`],
//! [`nvca_mutating`], [`validate`]); [`server`] carries them over TLS with a
//! certificate that is reloaded when its files change ([`certs`]), and
//! [`shared_cluster`] watches nodes for the one input that is not configuration.

pub mod cert_secret;
pub mod certs;
pub mod config;
pub mod enforcement;
pub mod error;
pub mod features;
pub mod metrics;
pub mod node_affinity;
pub mod nvca_mutating;
pub mod review;
pub mod runtime_class;
pub mod server;
pub mod shared_cluster;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub use error::WebhookError;

/// The flags of `webhook-server` (NVIDIA's `--config`, and nvca's own).
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// The agent's config.yaml (ConfigMap agent-config): webhook.svcAddress,
    /// webhook.tlsCertFile, webhook.tlsKeyFile, agent.featureFlags, cluster.attributes.
    #[arg(long, default_value = crate::kube::agent_config::PATH)]
    pub config: PathBuf,
    /// Address to serve TLS on, instead of webhook.svcAddress.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serving certificate (PEM), instead of webhook.tlsCertFile.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM), instead of webhook.tlsKeyFile.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// How often to look for a rotated certificate.
    #[arg(long, default_value = "10s")]
    pub reload_interval: humantime::Duration,
    /// Log filter when RUST_LOG is not set.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The whole command, for the binary.
pub fn main(args: WebhookArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    crate::process::block_on("webhook-server", run(args), WebhookError::category)
}

/// Serve until SIGTERM or Ctrl-C.
pub async fn run(args: WebhookArgs) -> Result<(), WebhookError> {
    crate::tls::ensure_crypto_provider();
    let settings = config::Settings::load(&args)?;
    let client = kube::Client::try_default()
        .await
        .map_err(|error| WebhookError::Kubernetes(error.to_string()))?;
    if let Some(secret) = &settings.cert_secret {
        secret
            .first_copy(&client, &settings.cert_files, settings.reload_interval)
            .await;
    }
    let cert = certs::ReloadingCert::load(settings.cert_files.clone())?;
    let listener = server::TlsListener::bind(&settings.listen, &cert).await?;
    let mut webhooks = server::Webhooks::new(settings.features, settings.utils_resources);
    webhooks.dcgm = settings.dcgm;
    webhooks.kata_classes = settings.kata_classes;
    let background = [
        tokio::spawn(shared_cluster::watch(
            client.clone(),
            Arc::clone(&webhooks.shared_cluster),
        )),
        tokio::spawn(runtime_class::watch(
            client.clone(),
            webhooks.kata_classes.non_gpu.clone(),
            Arc::clone(&webhooks.kata_non_gpu_class),
        )),
        tokio::spawn(Arc::clone(&cert).watch(settings.reload_interval)),
    ]
    .into_iter()
    .chain(settings.cert_secret.clone().map(|secret| {
        tokio::spawn(secret.keep(
            client.clone(),
            settings.cert_files.clone(),
            settings.reload_interval,
        ))
    }))
    .collect::<Vec<_>>();
    let webhooks = Arc::new(webhooks);
    tracing::info!(address = %settings.listen, "serving the admission webhooks over TLS");
    server::serve(listener, webhooks, crate::process::wait_for_signal()).await;
    for task in background {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
