//! `nvca-self-managed register`: NVIDIA's `nvcf-cli cluster register` for users without
//! NVIDIA's CLI (`src/clis/nvcf-cli/cmd/cluster_registration.go`, `runClusterRegister`).
//!
//! 1. It reads the admin token (`--token-file` or `NVCF_TOKEN`, [`super::admin_token`]).
//! 2. It discovers the GPU cluster's OIDC issuer and JWKS from the cluster the kube
//!    client points at, or from `--oidc-issuer-url` ([`super::oidc_discovery`]), and warns
//!    when the issuer is the one every vanilla cluster shares.
//! 3. It drives the same persistent cluster machine and executor as the bootstrap, with
//!    the issuer and JWKS added to the creation (`POST /v1/accounts/{ncaId}/clusters`):
//!    SIS is asked by name first, "already exists" leads back to the look-up, and a cluster
//!    found by look-up gets its trust root refreshed (`PUT /v1/nvca/clusters/{id}/jwks`),
//!    as NVIDIA's `--ignore-existing` does. Every step is on disk before its effect runs,
//!    so the command is idempotent and a killed run is resumed by the next.
//! 4. Where the bootstrap writes ConfigMap `nvca-cluster-registration`, this command's
//!    sink is the register-values file ([`super::register_values`]), replaced atomically.
//! 5. It prints NVIDIA's summary and the values on stdout, so NVIDIA's Makefile (which
//!    keeps what follows `clusterID:`) works on its output too.
//!
//! Exit codes, as the bootstrap's: 0 registered and written; 1 the registration did not
//! complete (SIS refused, the retry budget ran out, the file could not be written);
//! 2 bad command line; 3 an input is missing or wrong (token, Kubernetes access, the
//! issuer's documents, the SIS URL, the store directory). Every message names the thing
//! and the fix.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::admin_token::{self, AdminTokenError, TOKEN_ENV};
use super::cluster_executor::{ClusterExecutor, CreationExtras, Fixes, TrustRoot};
use super::cluster_run::{
    ClusterDriver, OutOfTime, Unsettled, backoff_within, request_registration, settle, sis_config,
};
use super::oidc_discovery::{self, DiscoveryError, OidcIdentity};
use super::register_values::{
    RegisterValues, RegisterValuesFile, SelfManagedValues, derive_nats_url,
    derive_sibling_http_service_url,
};
use crate::driver::{Driver, DriverConfig, DriverError, NoHooks};
use crate::logging::LogFormat;
use crate::machines::cluster::{ClusterIds, ClusterSpec};
use crate::sis::SisClient;
use crate::store::{Store, StoreError};

/// What NVIDIA's `cluster register` sends besides the name, account and region
/// (`cluster_registration.go`, `RegisterClusterRequest`).
pub const CLOUD_PROVIDER: &str = "ON-PREM";
pub const NVCA_VERSION: &str = "0.0.0";
pub const CAPABILITIES: &[&str] = &["DynamicGPUDiscovery"];
/// `selfManaged.identitySource`: always `psat`, even with `--oidc-issuer-url` (NVIDIA's
/// CLI writes `custom` or `spire` then, which NVIDIA's stack overwrites with `psat` and
/// nvca's chart refuses): the agent's identity is the projected service-account token
/// whichever way its issuer's keys were found.
pub const IDENTITY_SOURCE: &str = "psat";

/// SIS's refusals explained in this command's flags.
pub const FIXES: Fixes = Fixes {
    sis_url: "check that --icms-url (or NVCF_ICMS_URL) is SIS's base URL",
    request: "fix --name (an RFC 1123 label of at most 32 characters), --nca-id or --region and run register again",
    token: "the admin token must be a current SIS token with authority cluster-management: mint a new one and pass it with --token-file or NVCF_TOKEN",
};

/// The flags of `register`; those NVIDIA's command has keep NVIDIA's names.
#[derive(Clone, Debug, clap::Args)]
pub struct RegisterArgs {
    /// The cluster's name at SIS (and its cluster group's).
    #[arg(long)]
    pub name: String,
    /// The NCA (account) ID the cluster belongs to.
    #[arg(long = "nca-id")]
    pub nca_id: String,
    /// One of SIS's regions.
    #[arg(long, default_value = "us-west-1")]
    pub region: String,
    /// SIS's (ICMS's) base URL, as the agent will reach it.
    #[arg(long = "icms-url", env = "NVCF_ICMS_URL")]
    pub icms_url: String,
    /// NATS for the agent; default nats://<the SIS host with api.|sis.|reval.|nats. → nats.>:4222.
    #[arg(long = "nats-url", env = "NVCF_NATS_URL")]
    pub nats_url: Option<String>,
    /// ReVal for the agent; default the SIS URL with the host's api.|sis.|reval.|nats. → reval.
    #[arg(long = "reval-url")]
    pub reval_url: Option<String>,
    /// The OIDC issuer to register instead of the Kubernetes API server's.
    #[arg(long = "oidc-issuer-url")]
    pub oidc_issuer_url: Option<String>,
    /// A file holding the admin token (authority cluster-management); without it, NVCF_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where to write the register-values file; default
    /// registration/<name>-register-values.yaml, where NVIDIA's stack keeps it.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The store directory of the registration machine; default
    /// $XDG_STATE_HOME/nvca/register (else ~/.local/state/nvca/register).
    #[arg(long, env = "NVCA_REGISTER_STORE")]
    pub store: Option<PathBuf>,
    /// How long to keep retrying SIS before giving up, e.g. 90s, 5m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    pub timeout: Duration,
    /// The GPU cluster's kubeconfig; without it, $KUBECONFIG (or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Accepted for NVIDIA's command lines: registering again is always idempotent.
    #[arg(long, hide = true)]
    pub ignore_existing: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl RegisterArgs {
    fn output(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            PathBuf::from("registration").join(format!("{}-register-values.yaml", self.name))
        })
    }

    fn store(&self) -> PathBuf {
        self.store
            .clone()
            .unwrap_or_else(|| default_store("register"))
    }

    /// The cluster as NVIDIA's command creates it.
    pub fn spec(&self) -> ClusterSpec {
        ClusterSpec {
            cluster_name: self.name.clone(),
            nca_id: self.nca_id.clone(),
            group_name: self.name.clone(),
            region: self.region.clone(),
            cloud_provider: CLOUD_PROVIDER.to_string(),
            nvca_version: NVCA_VERSION.to_string(),
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The file's values, IDs aside.
    pub fn values(&self) -> RegisterValues {
        RegisterValues {
            cluster_id: String::new(),
            cluster_group_id: String::new(),
            nca_id: self.nca_id.clone(),
            region: self.region.clone(),
            self_managed: SelfManagedValues {
                identity_source: IDENTITY_SOURCE.to_string(),
                icms_service_url: self.icms_url.clone(),
                reval_service_url: self
                    .reval_url
                    .clone()
                    .filter(|url| !url.is_empty())
                    .unwrap_or_else(|| derive_sibling_http_service_url(&self.icms_url, "reval")),
                nats_url: self
                    .nats_url
                    .clone()
                    .filter(|url| !url.is_empty())
                    .unwrap_or_else(|| derive_nats_url(&self.icms_url)),
            },
        }
    }
}

/// `$XDG_STATE_HOME/nvca/<what>`, else `~/.local/state/nvca/<what>`, else `.nvca/<what>`.
pub fn default_store(what: &str) -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        });
    match state {
        Some(dir) => dir.join("nvca").join(what),
        None => PathBuf::from(".nvca").join(what),
    }
}

/// Why `register` stopped without a registration written.
#[derive(Debug, Error)]
pub enum RegisterError {
    #[error("{0}")]
    Token(#[from] AdminTokenError),
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Store(String),
    #[error("SIS refused to register cluster {cluster}: {reason}")]
    Rejected { cluster: String, reason: String },
    #[error("{0}")]
    OutOfTime(String),
    #[error("cluster {cluster} is registered at SIS but {file} was not written: {reason}")]
    NotWritten {
        cluster: String,
        file: String,
        reason: String,
    },
}

impl RegisterError {
    /// The process exit code (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            RegisterError::Rejected { .. }
            | RegisterError::OutOfTime(_)
            | RegisterError::NotWritten { .. } => 1,
            _ => 3,
        }
    }

    /// A short label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            RegisterError::Token(error) => error.category(),
            RegisterError::Discovery(error) => error.category(),
            RegisterError::Input(_) => "input",
            RegisterError::Store(_) => "store",
            RegisterError::Rejected { .. } => "rejected",
            RegisterError::OutOfTime(_) => "out_of_time",
            RegisterError::NotWritten { .. } => "not_written",
        }
    }
}

impl From<StoreError> for RegisterError {
    fn from(error: StoreError) -> Self {
        RegisterError::Store(format!("{error}; pass another directory to --store"))
    }
}

impl From<DriverError> for RegisterError {
    fn from(error: DriverError) -> Self {
        RegisterError::Store(error.to_string())
    }
}

/// What a successful run registered and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub ids: ClusterIds,
    pub identity: OidcIdentity,
    pub values: RegisterValues,
    pub output: PathBuf,
}

/// The whole command, for the binary.
pub fn main(args: RegisterArgs, program: &str) -> ExitCode {
    let format = args.log_format;
    crate::process::run_with_exit_codes(
        &format!("{program} register"),
        format,
        async move {
            let registered = run(&args).await?;
            print!("{}", summary(&args, &registered));
            Ok::<_, RegisterError>(())
        },
        |error| (error.exit_code(), error.category()),
    )
}

/// Warnings of the discovery, on stderr where the user sees them (NVIDIA prints them):
/// plain lines for `text`, records for `json`.
pub(crate) fn print_warnings(identity: &OidcIdentity, format: LogFormat) {
    for warning in &identity.warnings {
        match format {
            LogFormat::Text => eprintln!("Warning: {warning}"),
            LogFormat::Json => tracing::warn!("{warning}"),
        }
    }
}

/// Register the cluster and write the values file; see the module docs.
pub async fn run(args: &RegisterArgs) -> Result<Registered, RegisterError> {
    // Inputs first, so a missing one fails at once with its name.
    let token = admin_token::load(args.token_file.as_deref(), std::env::var(TOKEN_ENV).ok())?;
    let identity = oidc_discovery::discover_cluster(
        args.kubeconfig.as_deref(),
        args.oidc_issuer_url.as_deref(),
    )
    .await?;
    print_warnings(&identity, args.log_format);
    tracing::info!(cluster = %args.name, account = %args.nca_id, sis = %args.icms_url,
        issuer = %identity.issuer, jwks = %identity.jwks_from, token = %token.source.describe(),
        "registering the cluster with SIS");

    let sis = SisClient::new(sis_config(&args.icms_url, None, args.timeout), token.source)
        .map_err(|error| RegisterError::Input(format!("{error}; fix --icms-url")))?;
    let output = args.output();
    let executor = Arc::new(
        ClusterExecutor::with_sink(
            sis,
            RegisterValuesFile::new(&output, args.values()),
            CreationExtras {
                description: None,
                attributes: Vec::new(),
                trust_root: Some(TrustRoot {
                    oidc_issuer: identity.issuer.clone(),
                    jwks: identity.jwks.clone(),
                }),
            },
        )
        .with_fixes(FIXES),
    );
    let store = Store::open(&args.store())?;
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
    let outcome = register(&driver, &executor, args).await;
    driver.shutdown().await;
    // The spooled NVCF_TOKEN file goes only now that no SIS call can need it.
    drop(token.spooled);
    let ids = outcome?;
    Ok(Registered {
        values: executor.sink().values(&ids),
        ids,
        identity,
        output,
    })
}

async fn register(
    driver: &ClusterDriver<RegisterValuesFile>,
    executor: &ClusterExecutor<RegisterValuesFile>,
    args: &RegisterArgs,
) -> Result<ClusterIds, RegisterError> {
    let name = args.name.as_str();
    let file = executor.sink().path().display().to_string();
    request_registration(driver, &args.spec(), None).await?;
    match settle(driver, name, args.timeout).await {
        Ok(()) => {}
        Err(Unsettled::Vanished | Unsettled::Stopped) => {
            return Err(RegisterError::Store(format!(
                "the cluster machine {name} stopped (see the log above); run register again to resume it"
            )));
        }
        Err(Unsettled::Rejected(reason)) => {
            return Err(RegisterError::Rejected {
                cluster: name.to_string(),
                reason,
            });
        }
        Err(Unsettled::OutOfTime {
            state,
            waiting,
            attempts,
        }) => {
            let out_of_time = OutOfTime {
                name,
                budget: args.timeout,
                sis_url: &args.icms_url,
                sink: &file,
                resume: "run register again to resume from here",
            };
            return Err(RegisterError::OutOfTime(out_of_time.message(
                executor.last_failure(),
                &state,
                &waiting,
                attempts,
            )));
        }
    }
    // A registration always ends with the file written in this run: every run looks the
    // cluster up again, and the look-up's answer is written.
    executor.written().ok_or_else(|| RegisterError::NotWritten {
        cluster: name.to_string(),
        file,
        reason: executor
            .last_failure()
            .map(|(_, error)| error)
            .unwrap_or_else(|| "no write was attempted; run register again".to_string()),
    })
}

/// What NVIDIA's command prints on stdout (`printRegistrationOutput`): the summary, then
/// the values, which NVIDIA's Makefile cuts from the `clusterID:` line on.
pub fn summary(args: &RegisterArgs, registered: &Registered) -> String {
    let ids = &registered.ids;
    let mut text = format!(
        "\nCluster Group ID: {}\nCluster Group Name: {}\n",
        ids.cluster_group_id, args.name
    );
    if !ids.cluster_id.is_empty() {
        text.push_str(&format!("Cluster ID: {}\n", ids.cluster_id));
    }
    text.push_str(&format!(
        "OIDC Issuer: {}\nRegion: {}\n\n--- Helm values for nvca-operator ---\nAdd the following to your nvca-operator Helm values:\n\n",
        registered.identity.issuer, args.region
    ));
    text.push_str(&registered.values.to_yaml());
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RegisterArgs,
    }

    fn parse(extra: &[&str]) -> RegisterArgs {
        let mut argv = vec![
            "register",
            "--name",
            "gpu-1",
            "--nca-id",
            "nca-1",
            "--icms-url",
            "http://sis.nvcf.example.com:8080",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    fn identity() -> OidcIdentity {
        OidcIdentity {
            issuer: "https://kubernetes.default.svc.cluster.local".into(),
            jwks: r#"{"keys":[{}]}"#.into(),
            jwks_from: "the API server".into(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn nvidias_command_line_works_and_creates_the_cluster_as_nvidia_does() {
        let args = parse(&["--ignore-existing", "--region", "us-east-1"]);
        assert_eq!(
            args.spec(),
            ClusterSpec {
                cluster_name: "gpu-1".into(),
                nca_id: "nca-1".into(),
                group_name: "gpu-1".into(),
                region: "us-east-1".into(),
                cloud_provider: "ON-PREM".into(),
                nvca_version: "0.0.0".into(),
                capabilities: vec!["DynamicGPUDiscovery".into()],
            }
        );
        assert_eq!(
            args.output(),
            PathBuf::from("registration/gpu-1-register-values.yaml")
        );
    }

    #[test]
    fn urls_default_to_the_sis_hosts_siblings_and_flags_win() {
        let values = parse(&[]).values();
        assert_eq!(values.self_managed.identity_source, "psat");
        assert_eq!(
            values.self_managed.icms_service_url,
            "http://sis.nvcf.example.com:8080"
        );
        assert_eq!(
            values.self_managed.reval_service_url,
            "http://reval.nvcf.example.com:8080"
        );
        assert_eq!(
            values.self_managed.nats_url,
            "nats://nats.nvcf.example.com:4222"
        );
        let values = parse(&["--nats-url", "nats://n:1", "--reval-url", "http://r"]).values();
        assert_eq!(values.self_managed.nats_url, "nats://n:1");
        assert_eq!(values.self_managed.reval_service_url, "http://r");
    }

    #[test]
    fn stdout_is_nvidias_summary_then_the_values() {
        let args = parse(&[]);
        let values = args.values();
        let registered = Registered {
            ids: ClusterIds {
                cluster_id: "c-1".into(),
                cluster_group_id: "g-1".into(),
            },
            values: RegisterValuesFile::new("x", values).values(&ClusterIds {
                cluster_id: "c-1".into(),
                cluster_group_id: "g-1".into(),
            }),
            identity: identity(),
            output: "x".into(),
        };
        let text = summary(&args, &registered);
        assert!(
            text.starts_with(
                "\nCluster Group ID: g-1\nCluster Group Name: gpu-1\nCluster ID: c-1\n\
                 OIDC Issuer: https://kubernetes.default.svc.cluster.local\nRegion: us-west-1\n\n\
                 --- Helm values for nvca-operator ---\n"
            ),
            "{text}"
        );
        let from_cluster_id = &text[text.find("\nclusterID:").unwrap() + 1..];
        assert_eq!(from_cluster_id, registered.values.to_yaml());
    }

    #[test]
    fn the_default_store_is_under_the_users_state_directory() {
        let store = default_store("register");
        assert!(store.ends_with("nvca/register"), "{}", store.display());
    }
}
