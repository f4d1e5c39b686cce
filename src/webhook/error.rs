//! What can stop the webhook server. Admission decisions are not errors: a refused
//! object is a [`super::review::Outcome`].

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error(
        "cannot read the agent configuration {path}: {reason}; the operator renders it into ConfigMap agent-config, check that it is mounted (or pass --config)"
    )]
    Config { path: PathBuf, reason: String },

    #[error("{0}")]
    Features(String),

    #[error(
        "the webhook needs a serving certificate: set webhook.tlsCertFile and webhook.tlsKeyFile in the agent configuration (or --tls-cert-file and --tls-key-file)"
    )]
    NoCertificate,

    #[error(
        "cannot load the serving certificate {cert} with key {key}: {reason}; the operator keeps them in Secret nvca-webhook-tls-server-certs (tls.crt, tls.key)"
    )]
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },

    #[error(
        "cannot copy the serving certificate from Secret {namespace}/{name} (webhook.tlsSecretName): {reason}; the operator creates it with keys tls.crt and tls.key, and the webhook's ServiceAccount must be allowed to read it"
    )]
    CertSecret {
        namespace: String,
        name: String,
        reason: String,
    },

    #[error(
        "cannot listen on {address}: {reason}; set webhook.svcAddress (or --listen) to a free address"
    )]
    Listen { address: String, reason: String },

    #[error(
        "cannot reach the Kubernetes API to watch nodes for nvca.nvcf.nvidia.io/schedule: {0}; the webhook runs in-cluster or with KUBECONFIG set"
    )]
    Kubernetes(String),
}

impl WebhookError {
    /// A short, bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            WebhookError::Config { .. } => "config",
            WebhookError::Features(_) => "features",
            WebhookError::NoCertificate
            | WebhookError::Certificate { .. }
            | WebhookError::CertSecret { .. } => "certificate",
            WebhookError::Listen { .. } => "listen",
            WebhookError::Kubernetes(_) => "kubernetes",
        }
    }
}
