//! `nvca-operator bootstrap` (shipped also as `/usr/bin/nvca-self-managed bootstrap`): the
//! init container `nvca-self-managed-bootstrap` and the guide's manual re-registration.
//!
//! It reads ConfigMap `nvcfbackend-self-managed` (key `cluster-dto.yaml`) and the SIS token
//! file, then drives the persistent cluster machine, keyed by cluster name, until SIS knows
//! the cluster and ConfigMap `nvca-cluster-registration` holds its `clusterId` and
//! `clusterGroupId`. SIS is always asked by name first and "already exists" leads back to
//! the look-up, and every step is durable before its effect runs, so any number of runs
//! and a kill at any instant leave exactly one registration.
//!
//! Exit codes: 0 registered and written; 1 the registration did not complete (SIS refused,
//! the retry budget ran out, the ConfigMap could not be written); 2 bad command line;
//! 3 an input is missing or wrong (ConfigMap, key, field, token file, Kubernetes access,
//! store directory). Every message names the thing and the fix.

pub use crate::logging::LogFormat;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use thiserror::Error;

use super::cluster_dto::{ClusterDto, DtoError};
use super::cluster_executor::{ClusterExecutor, CreationExtras, read_registration};
use super::cluster_run::{
    ClusterDriver, OutOfTime, Unsettled, backoff_within, request_registration, settle, sis_config,
};
use super::registration_sink::ConfigMapSink;
use super::{CLUSTER_DTO_CONFIGMAP, CLUSTER_DTO_KEY, REGISTRATION_CONFIGMAP};
use crate::driver::{Driver, DriverConfig, DriverError, NoHooks};
use crate::machines::cluster::ClusterIds;
use crate::sis::client::SisConfig;
use crate::sis::token::{DEFAULT_VAULT_SECRETS_PATH, TokenError};
use crate::sis::{SisClient, TokenSource};
use crate::store::{Store, StoreError};

/// Where the bootstrap keeps its machine: its own directory inside the operator's store
/// volume. Not the operator's directory itself: sled lets one process hold a directory,
/// and the guide runs the bootstrap by hand inside the running operator's container.
pub const DEFAULT_STORE: &str = "/var/lib/nvca/operator/bootstrap";

/// The shape of `--token-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenFormat {
    /// `vault` when the file is JSON (or named `*.json`), else `projected`.
    Auto,
    /// The vault agent's secrets file: `{"kv":{"tokens":{"icms":"…"}}}`.
    Vault,
    /// The file is the token itself (a projected service-account token).
    Projected,
}

/// The flags of `bootstrap`.
#[derive(Clone, Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The operator's namespace: where nvcfbackend-self-managed is read and
    /// nvca-cluster-registration written.
    #[arg(long, default_value = "nvca-operator")]
    pub system_namespace: String,
    /// The SIS token: the vault agent's secrets file (kv.tokens.icms), or a file holding
    /// the token itself.
    #[arg(long, default_value = DEFAULT_VAULT_SECRETS_PATH)]
    pub token_file: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub token_format: TokenFormat,
    /// The store directory of the bootstrap's registration machine.
    #[arg(long, env = "NVCA_BOOTSTRAP_STORE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
    /// How long to keep retrying SIS and Kubernetes before giving up, e.g. 90s, 5m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub timeout: Duration,
    /// A kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where `nvca-state dump --store` finds the machine while the bootstrap runs.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Why the bootstrap stopped without registering.
#[derive(Debug, Error)]
pub enum BootstrapError {
    #[error("cannot use Kubernetes: {0}")]
    Kubernetes(String),
    #[error(
        "ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP} not found: install the chart with ngcConfig.clusterSource=self-managed in namespace {namespace}, or pass the chart's namespace as --system-namespace"
    )]
    DtoConfigMapMissing { namespace: String },
    #[error(
        "ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP} has no key {CLUSTER_DTO_KEY}: the chart renders it only with ngcConfig.clusterSource=self-managed; set that value and upgrade the release"
    )]
    DtoKeyMissing { namespace: String },
    #[error("ConfigMap {namespace}/{CLUSTER_DTO_CONFIGMAP} key {CLUSTER_DTO_KEY} {source}")]
    Dto {
        namespace: String,
        #[source]
        source: DtoError,
    },
    #[error("{0} (the bootstrap reads it from --token-file)")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Sis(String),
    #[error("{0}")]
    Store(String),
    #[error("SIS refused to register cluster {cluster}: {reason}")]
    Rejected { cluster: String, reason: String },
    #[error("{0}")]
    OutOfTime(String),
    #[error(
        "cluster {cluster} is registered at SIS but ConfigMap {namespace}/{REGISTRATION_CONFIGMAP} does not hold its IDs: {reason}"
    )]
    NotWritten {
        cluster: String,
        namespace: String,
        reason: String,
    },
}

impl BootstrapError {
    /// The process exit code (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            BootstrapError::Rejected { .. }
            | BootstrapError::OutOfTime(_)
            | BootstrapError::NotWritten { .. } => 1,
            _ => 3,
        }
    }

    /// A short label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            BootstrapError::Kubernetes(_) => "kubernetes",
            BootstrapError::DtoConfigMapMissing { .. } => "configmap_missing",
            BootstrapError::DtoKeyMissing { .. } => "key_missing",
            BootstrapError::Dto { source, .. } => source.category(),
            BootstrapError::Token(error) => error.category(),
            BootstrapError::Sis(_) => "sis_config",
            BootstrapError::Store(_) => "store",
            BootstrapError::Rejected { .. } => "rejected",
            BootstrapError::OutOfTime(_) => "out_of_time",
            BootstrapError::NotWritten { .. } => "not_written",
        }
    }
}

impl From<StoreError> for BootstrapError {
    fn from(error: StoreError) -> Self {
        BootstrapError::Store(error.to_string())
    }
}

impl From<DriverError> for BootstrapError {
    fn from(error: DriverError) -> Self {
        BootstrapError::Store(error.to_string())
    }
}

/// What a successful run leaves in `nvca-cluster-registration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub cluster_name: String,
    pub ids: ClusterIds,
}

/// Logging at `info` in the chosen format (`RUST_LOG` refines it).
pub fn init_logging(format: LogFormat) {
    crate::logging::init("info", format);
}

/// The whole command, for the binaries: logging, a runtime, [`run`], the exit code.
/// `program` names the binary in the final error line.
pub fn main(args: BootstrapArgs, program: &str) -> ExitCode {
    crate::process::run_with_exit_codes(
        &format!("{program} bootstrap"),
        args.log_format,
        run(&args),
        |error| (error.exit_code(), error.category()),
    )
}

/// Register the cluster and write its IDs; see the module docs.
pub async fn run(args: &BootstrapArgs) -> Result<Registered, BootstrapError> {
    let namespace = args.system_namespace.as_str();
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);

    // Inputs first, so a missing one fails at once with its name.
    let dto = read_dto(&configmaps, namespace).await?;
    let token = token_source(&args.token_file, args.token_format)?;
    let current = read_registration(&configmaps).await.map_err(|error| {
        kube_read_error(
            &format!("{namespace}/{REGISTRATION_CONFIGMAP}"),
            namespace,
            error,
        )
    })?;
    tracing::info!(cluster = %dto.cluster_name, account = %dto.nca_id, sis = %dto.icms_service_url,
        token = %token.describe(), registered = ?current, "bootstrap starting");

    let sis = SisClient::new(dto_sis_config(&dto, args.timeout), token)
        .map_err(|error| BootstrapError::Sis(format!("{error}; fix selfManaged.icmsServiceURL")))?;
    let executor = Arc::new(ClusterExecutor::new(
        sis,
        client,
        namespace,
        CreationExtras {
            description: dto.cluster_description.clone(),
            attributes: dto.attributes.clone(),
            trust_root: None,
        },
    ));
    let store = Store::open(&args.store)?;
    if let Err(error) = crate::driver::admin::serve(store.clone(), args.admin_listen).await {
        // Only inspection is lost; the registration goes on.
        tracing::warn!(address = %args.admin_listen, %error, "admin endpoint not available");
    }
    let config = DriverConfig {
        backoff: backoff_within(args.timeout),
    };
    let (driver, report) = Driver::start(store, executor.clone(), Arc::new(NoHooks), config)?;
    if report.requeued > 0 {
        tracing::info!(
            effects = report.requeued,
            "resuming the effects an earlier run left pending"
        );
    }

    let outcome = register(&driver, &executor, &configmaps, &dto, current, args).await;
    driver.shutdown().await;
    outcome
}

async fn register(
    driver: &ClusterDriver<ConfigMapSink>,
    executor: &ClusterExecutor,
    configmaps: &Api<ConfigMap>,
    dto: &ClusterDto,
    current: Option<ClusterIds>,
    args: &BootstrapArgs,
) -> Result<Registered, BootstrapError> {
    let name = dto.cluster_name.as_str();
    request_registration(driver, &dto.spec(), Some(current)).await?;
    match settle(driver, name, args.timeout).await {
        Ok(()) => {}
        Err(Unsettled::Vanished) => {
            return Err(BootstrapError::Store(format!(
                "the cluster machine {name} vanished from the driver; run the bootstrap again"
            )));
        }
        Err(Unsettled::Stopped) => {
            return Err(BootstrapError::Store(format!(
                "the cluster machine {name} stopped (see the log above); run the bootstrap again to resume it"
            )));
        }
        Err(Unsettled::Rejected(reason)) => {
            return Err(BootstrapError::Rejected {
                cluster: name.to_string(),
                reason,
            });
        }
        Err(Unsettled::OutOfTime {
            state,
            waiting,
            attempts,
        }) => {
            let sink = format!(
                "ConfigMap {}/{REGISTRATION_CONFIGMAP}",
                args.system_namespace
            );
            let out_of_time = OutOfTime {
                name,
                budget: args.timeout,
                sis_url: &dto.icms_service_url,
                sink: &sink,
                resume: "the next run resumes from here",
            };
            return Err(BootstrapError::OutOfTime(out_of_time.message(
                executor.last_failure(),
                &state,
                &waiting,
                attempts,
            )));
        }
    }

    // The machine is satisfied; check the ConfigMap itself, since a write that failed for
    // good also leaves the machine registered.
    let written = read_registration(configmaps).await.map_err(|error| {
        kube_read_error(
            &format!("{}/{REGISTRATION_CONFIGMAP}", args.system_namespace),
            &args.system_namespace,
            error,
        )
    })?;
    match (written, executor.written()) {
        (Some(ids), Some(ours)) if ids == ours => {
            tracing::info!(cluster_id = %ids.cluster_id, cluster_group_id = %ids.cluster_group_id,
                cluster = name, configmap = REGISTRATION_CONFIGMAP, "Bootstrap completed successfully");
            Ok(Registered {
                cluster_name: name.to_string(),
                ids,
            })
        }
        (found, _) => Err(BootstrapError::NotWritten {
            cluster: name.to_string(),
            namespace: args.system_namespace.clone(),
            reason: match executor.last_failure() {
                Some((_, error)) => error,
                None => format!(
                    "it holds {found:?}, changed by someone else meanwhile; run the bootstrap again"
                ),
            },
        }),
    }
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, BootstrapError> {
    crate::kube::client::connect(kubeconfig, "operator")
        .await
        .map_err(BootstrapError::Kubernetes)
}

fn kube_read_error(object: &str, namespace: &str, error: kube::Error) -> BootstrapError {
    BootstrapError::Kubernetes(match &error {
        kube::Error::Api(status) if matches!(status.code, 401 | 403) => format!(
            "reading ConfigMap {object} was denied ({} {}); the bootstrap's ServiceAccount needs get on configmaps in namespace {namespace}",
            status.code, status.message
        ),
        kube::Error::Api(status) => format!(
            "reading ConfigMap {object}: the API server answered {} ({})",
            status.code, status.message
        ),
        _ => format!(
            "reading ConfigMap {object}: {error}; check that the Kubernetes API server is reachable (--kubeconfig, or the in-cluster service account)"
        ),
    })
}

async fn read_dto(
    configmaps: &Api<ConfigMap>,
    namespace: &str,
) -> Result<ClusterDto, BootstrapError> {
    let map = configmaps
        .get_opt(CLUSTER_DTO_CONFIGMAP)
        .await
        .map_err(|error| {
            kube_read_error(
                &format!("{namespace}/{CLUSTER_DTO_CONFIGMAP}"),
                namespace,
                error,
            )
        })?
        .ok_or_else(|| BootstrapError::DtoConfigMapMissing {
            namespace: namespace.to_string(),
        })?;
    let text = map
        .data
        .unwrap_or_default()
        .remove(CLUSTER_DTO_KEY)
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| BootstrapError::DtoKeyMissing {
            namespace: namespace.to_string(),
        })?;
    ClusterDto::parse(&text).map_err(|source| BootstrapError::Dto {
        namespace: namespace.to_string(),
        source,
    })
}

/// The token source for `path`, read once now so a missing or empty file fails at once.
pub fn token_source(path: &Path, format: TokenFormat) -> Result<TokenSource, TokenError> {
    let vault = match format {
        TokenFormat::Vault => true,
        TokenFormat::Projected => false,
        TokenFormat::Auto => {
            path.extension().is_some_and(|ext| ext == "json")
                || std::fs::read_to_string(path)
                    .is_ok_and(|text| text.trim_start().starts_with('{'))
        }
    };
    let source = if vault {
        TokenSource::vault_secrets(path)
    } else {
        TokenSource::projected(path)
    };
    source.token()?;
    Ok(source)
}

/// SIS client settings within the budget, at the DTO's SIS.
fn dto_sis_config(dto: &ClusterDto, budget: Duration) -> SisConfig {
    sis_config(
        &dto.icms_service_url,
        dto.icms_host_override.clone(),
        budget,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_token_format_tells_vault_from_projected_and_fails_on_missing_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("secrets.json");
        std::fs::write(&vault, r#"{"kv":{"tokens":{"icms":"t1"}}}"#).unwrap();
        let source = token_source(&vault, TokenFormat::Auto).unwrap();
        assert_eq!(source.token().unwrap(), "t1");

        let projected = dir.path().join("token");
        std::fs::write(&projected, "jwt.jwt.sig\n").unwrap();
        let source = token_source(&projected, TokenFormat::Auto).unwrap();
        assert_eq!(source.token().unwrap(), "jwt.jwt.sig");

        let missing = dir.path().join("absent.json");
        let error = token_source(&missing, TokenFormat::Auto).unwrap_err();
        assert_eq!(error.category(), "token_missing");
        assert!(error.to_string().contains("absent.json"), "{error}");

        std::fs::write(&vault, "").unwrap();
        let error = token_source(&vault, TokenFormat::Auto).unwrap_err();
        assert_eq!(error.category(), "token_empty");
        assert!(error.to_string().contains("vault agent"), "{error}");
    }
}
