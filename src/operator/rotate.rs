//! `nvca-self-managed rotate`: NVIDIA's `nvcf-cli cluster rotate`
//! (`src/clis/nvcf-cli/cmd/cluster_registration.go`, `runClusterRotate`). It discovers the
//! GPU cluster's issuer and JWKS as `register` does and replaces the trust root SIS holds
//! for the cluster: `PUT /v1/nvca/clusters/{clusterId}/jwks {jwks, oidcIssuer}` with the
//! admin token (authority `cluster-management`, which SIS lets update any cluster).
//!
//! NVIDIA asks "This replaces the cluster's trust root. Proceed? [y/N]" unless `--force`;
//! nvca does not prompt (it is run by scripts as often as by hand) and accepts `--force`
//! so NVIDIA's command lines work. `--oidc-issuer-url` is nvca's addition: NVIDIA's
//! rotate always re-discovers from the API server, which would replace a custom issuer
//! registered with `register --oidc-issuer-url`.
//!
//! Exit codes: 0 rotated; 1 SIS refused or could not be reached; 2 bad command line;
//! 3 an input is missing or wrong (token, Kubernetes access, the issuer's documents, the
//! SIS URL).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use thiserror::Error;

use super::admin_token::{self, AdminTokenError, TOKEN_ENV};
use super::cluster_executor::jwks_refusal_hint;
use super::oidc_discovery::{self, DiscoveryError, OidcIdentity};
use super::register::print_warnings;
use crate::logging::LogFormat;
use crate::sis::client::RetryPolicy;
use crate::sis::types::JwksUpdate;
use crate::sis::{SisClient, SisConfig, SisError};

/// The flags of `rotate`; those NVIDIA's command has keep NVIDIA's names.
#[derive(Clone, Debug, clap::Args)]
pub struct RotateArgs {
    /// The cluster's ID at SIS (clusterID of the register-values file).
    #[arg(long = "cluster-id")]
    pub cluster_id: String,
    /// SIS's (ICMS's) base URL.
    #[arg(long = "icms-url", env = "NVCF_ICMS_URL")]
    pub icms_url: String,
    /// The OIDC issuer to register instead of the Kubernetes API server's.
    #[arg(long = "oidc-issuer-url")]
    pub oidc_issuer_url: Option<String>,
    /// A file holding the admin token (authority cluster-management); without it, NVCF_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The GPU cluster's kubeconfig; without it, $KUBECONFIG (or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for SIS's answer, retries included.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub timeout: Duration,
    /// Accepted for NVIDIA's command lines: nvca never prompts.
    #[arg(long, hide = true)]
    pub force: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Why the trust root was not replaced.
#[derive(Debug, Error)]
pub enum RotateError {
    #[error("{0}")]
    Token(#[from] AdminTokenError),
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
    #[error("{0}")]
    Input(String),
    #[error("SIS did not take the JWKS of cluster {cluster_id}: {reason}")]
    Refused { cluster_id: String, reason: String },
}

impl RotateError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RotateError::Refused { .. } => 1,
            _ => 3,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            RotateError::Token(error) => error.category(),
            RotateError::Discovery(error) => error.category(),
            RotateError::Input(_) => "input",
            RotateError::Refused { .. } => "refused",
        }
    }
}

/// The whole command, for the binary.
pub fn main(args: RotateArgs, program: &str) -> ExitCode {
    let format = args.log_format;
    crate::process::run_with_exit_codes(
        &format!("{program} rotate"),
        format,
        async move {
            let identity = run(&args).await?;
            print!("{}", summary(&args, &identity));
            Ok::<_, RotateError>(())
        },
        |error| (error.exit_code(), error.category()),
    )
}

/// Discover and push; see the module docs.
pub async fn run(args: &RotateArgs) -> Result<OidcIdentity, RotateError> {
    let token = admin_token::load(args.token_file.as_deref(), std::env::var(TOKEN_ENV).ok())?;
    let identity = oidc_discovery::discover_cluster(
        args.kubeconfig.as_deref(),
        args.oidc_issuer_url.as_deref(),
    )
    .await?;
    print_warnings(&identity, args.log_format);
    tracing::info!(cluster_id = %args.cluster_id, sis = %args.icms_url, issuer = %identity.issuer,
        jwks = %identity.jwks_from, "replacing the cluster's trust root at SIS");

    let mut config = SisConfig::new(args.icms_url.clone());
    config.timeout = (args.timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(15));
    config.retry = RetryPolicy {
        max_attempts: 3,
        min_wait: Duration::from_secs(1),
        max_wait: Duration::from_secs(5),
    };
    let sis = SisClient::new(config, token.source)
        .map_err(|error| RotateError::Input(format!("{error}; fix --icms-url")))?;
    let update = JwksUpdate {
        jwks: identity.jwks.clone(),
        oidc_issuer: Some(identity.issuer.clone()),
    };
    let pushed = tokio::time::timeout(args.timeout, sis.push_jwks(&args.cluster_id, &update))
        .await
        .unwrap_or_else(|_| {
            Err(SisError::Timeout {
                endpoint: crate::sis::Endpoint::Jwks,
                timeout: args.timeout,
                attempts: 0,
                base_url: sis.base_url().to_string(),
            })
        });
    drop(token.spooled);
    pushed.map_err(|error| RotateError::Refused {
        cluster_id: args.cluster_id.clone(),
        reason: refusal(&args.icms_url, &args.cluster_id, &error),
    })?;
    Ok(identity)
}

/// SIS's refusal with the fix in this command's flags.
fn refusal(base_url: &str, cluster_id: &str, error: &SisError) -> String {
    let fix = match error {
        SisError::NotFound { message, .. } if message.contains(cluster_id) => {
            "check --cluster-id: it is the clusterID of the register-values file".to_string()
        }
        SisError::Unauthorized { .. } | SisError::Forbidden { .. } => {
            "the admin token must be a current SIS token with authority cluster-management: mint a new one and pass it with --token-file or NVCF_TOKEN".to_string()
        }
        SisError::Rejected { .. } => {
            "SIS could not use the JWKS; check the issuer's keys".to_string()
        }
        error if error.is_transient() => {
            "check that --icms-url (or NVCF_ICMS_URL) reaches SIS, and run rotate again".to_string()
        }
        _ => String::new(),
    };
    let hint = jwks_refusal_hint(error).map(str::to_string).unwrap_or(fix);
    if hint.is_empty() {
        format!("SIS at {base_url}: {error}")
    } else {
        format!("SIS at {base_url}: {error}; {hint}")
    }
}

/// What NVIDIA's command prints once SIS took the keys.
pub fn summary(args: &RotateArgs, identity: &OidcIdentity) -> String {
    format!(
        "JWKS rotated successfully for cluster '{}'\nOIDC Issuer: {}\n",
        args.cluster_id, identity.issuer
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sis::Endpoint;

    #[test]
    fn refusals_say_which_flag_to_fix() {
        let url = "http://sis";
        let unknown = SisError::NotFound {
            endpoint: Endpoint::Jwks,
            message: "Cluster c-9 not found".into(),
        };
        assert!(refusal(url, "c-9", &unknown).contains("--cluster-id"));
        let flag_off = SisError::NotFound {
            endpoint: Endpoint::Jwks,
            message: "empty body".into(),
        };
        assert!(refusal(url, "c-9", &flag_off).contains("oidcClusterIdentityEnabled"));
        let denied = SisError::Forbidden {
            endpoint: Endpoint::Jwks,
            message: "Access Denied".into(),
        };
        let text = refusal(url, "c-9", &denied);
        assert!(
            text.contains("403") && text.contains("cluster-management"),
            "{text}"
        );
        let down = SisError::Connect {
            endpoint: Endpoint::Jwks,
            base_url: url.into(),
            reason: "refused".into(),
            attempts: 3,
        };
        assert!(refusal(url, "c-9", &down).contains("--icms-url"));
    }
}
