//! `nvca`'s run: flags, the wiring of the SIS session, GPU inventory, health server,
//! config follow-up, and the functions component it hosts ([`super::functions_host`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use thiserror::Error;
use tokio::sync::watch;

use super::config::{AgentSettings, FeatureFlags, Overrides, TokenFile};
use super::context::AgentContext;
use super::functions_host::run_functions;
use super::health::Health;
use super::maintenance::MaintenanceMode;
use super::metrics::Metrics;
use super::session::{SessionExecutor, check_jwks, send, sync_registration, tick};
use super::{config, kai, nodes, server, session};
use crate::driver::crash_point::{CrashPoint, CrashPointError, Names};
use crate::driver::{Backoff, Driver, DriverConfig, Hooks, NoHooks};
use crate::gpu::registration::Registered;
use crate::gpu::{DiscoveryOptions, Inventory};
pub use crate::logging::LogFormat;
use crate::machines::session::SessionState;
use crate::machines::session::{self as session_machine, Event, SessionMachine};
use crate::machines::{Kind, function};
use crate::process::wait_for_signal;
use crate::sis::queue::NatsAuth;
use crate::sis::types::QueueCredentials;
use crate::sis::{QueueConfig, RetryPolicy, SisClient, SisConfig};
use crate::store::Store;

/// Default store directory (the Deployment mounts an emptyDir at `/var/lib/nvca/agent`).
pub const DEFAULT_STORE: &str = "/var/lib/nvca/agent/store";

/// How the queue consumer authenticates to NATS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NatsAuthMode {
    /// PSAT when the SIS token is a projected token (NVIDIA's self-managed mode), else none.
    Auto,
    None,
    Psat,
}

/// The flags of `nvca` (NVIDIA's `--config`, and nvca's own). config.yaml says the rest; a flag given here wins.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The agent's config.yaml, as the operator renders it into ConfigMap agent-config.
    #[arg(long, default_value = crate::kube::agent_config::PATH)]
    pub config: PathBuf,
    /// The agent's store directory (sled): its SIS session and function machines.
    #[arg(long, env = "NVCA_AGENT_STORE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
    /// Health, version and metrics, e.g. `:8000` or `127.0.0.1:0` (config: agent.svcAddress).
    #[arg(long)]
    pub listen: Option<String>,
    /// The machines' snapshot for `nvca-state` (config: agent.adminAddr).
    #[arg(long)]
    pub listen_admin: Option<String>,
    /// A kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The projected ServiceAccount token SIS accepts (config:
    /// authz.clusterIssuedTokenFilePath or agent.tokenFile).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Read the SIS token from the vault agent's secrets.json (kv.tokens.icms) instead.
    #[arg(long)]
    pub vault_secrets_file: Option<PathBuf>,
    /// How the queue consumer authenticates to NATS.
    #[arg(long, value_enum, default_value = "auto")]
    pub nats_auth: NatsAuthMode,
    /// Heartbeat interval, e.g. `5m` (config: agent.heartbeatInterval).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Queue credential renewal interval, e.g. `45m` (config: agent.credRenewInterval).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cred_renew_interval: Option<Duration>,
    /// How often the registration is compared with the inventory, e.g. `60s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub registration_diff_interval: Option<Duration>,
    /// How often the JWKS is checked for a change, e.g. `30m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub jwks_interval: Option<Duration>,
    /// Publish the inventory this long after the last node change, e.g. `2s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub inventory_quiet: Option<Duration>,
    /// …and at most this long after the first unpublished one, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub inventory_max_delay: Option<Duration>,
    /// First wait before retrying a SIS call that got no answer (NVIDIA: 3s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub sis_backoff_initial: Duration,
    /// Longest wait between retries of a SIS call (NVIDIA: 1m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub sis_backoff_max: Duration,
    /// Timeout of one SIS call.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub sis_timeout: Duration,
    /// How often config.yaml is read again for a new maintenance mode.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub config_poll: Duration,
    /// Ignore SIS's SELF_DESTRUCT (config: agent.skipSelfDestruct).
    #[arg(long)]
    pub skip_self_destruct: bool,
    /// Do not run function deployments (the SIS session, discovery and health only).
    #[arg(long)]
    pub no_functions: bool,
    /// error, warn, info, debug or trace; RUST_LOG refines it (config: agent.logLevel).
    #[arg(long)]
    pub log_level: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            token_file: self.token_file.clone(),
            vault_secrets_file: self.vault_secrets_file.clone(),
            heartbeat_interval: self.heartbeat_interval,
            cred_renew_interval: self.cred_renew_interval,
            registration_diff_interval: self.registration_diff_interval,
            jwks_interval: self.jwks_interval,
            inventory_quiet: self.inventory_quiet,
            inventory_max_delay: self.inventory_max_delay,
            skip_self_destruct: self.skip_self_destruct,
        }
    }
}

/// Why the agent cannot run. Each message names the thing and the fix.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot use Kubernetes: {0}")]
    Kubernetes(String),
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    CrashPoint(#[from] CrashPointError),
    #[error("cannot reach SIS: {0}")]
    Sis(String),
    #[error("cannot listen on {what} {address}: {reason}; pass a free address to --{flag}")]
    Listen {
        what: &'static str,
        address: String,
        reason: String,
        flag: &'static str,
    },
}

impl RunError {
    pub fn category(&self) -> &'static str {
        match self {
            RunError::Config(error) => error.category(),
            RunError::Kubernetes(_) => "kubernetes",
            RunError::Store(_) => "store",
            RunError::CrashPoint(error) => error.category(),
            RunError::Sis(_) => "sis",
            RunError::Listen { .. } => "listen",
        }
    }
}

/// The whole command, for the binary.
pub fn main(args: RunArgs) -> ExitCode {
    let settings = match AgentSettings::read(&args.config, &args.overrides()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("nvca: {error}");
            return ExitCode::FAILURE;
        }
    };
    let level = args
        .log_level
        .clone()
        .unwrap_or_else(|| settings.log_level.clone());
    crate::logging::init(&level, args.log_format);
    crate::process::block_on("nvca", run(args, settings), RunError::category)
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client, RunError> {
    crate::kube::client::connect(kubeconfig, "agent")
        .await
        .map_err(RunError::Kubernetes)
}

/// The machines of the agent, by the names crash points (`NVCA_CRASH_AT`) may use.
const CRASH_POINT_MACHINES: [Names; 2] = [
    Names {
        kind: Kind::Function,
        states: function::STATE_NAMES,
        effects: <function::Effect as strum::VariantNames>::VARIANTS,
    },
    Names {
        kind: Kind::Session,
        states: session_machine::STATE_NAMES,
        effects: <session_machine::Effect as strum::VariantNames>::VARIANTS,
    },
];

/// The drivers' hooks: none, unless a crash test set a crash point.
fn hooks() -> Result<Arc<dyn Hooks>, CrashPointError> {
    Ok(match CrashPoint::from_env(&CRASH_POINT_MACHINES)? {
        Some(point) => {
            tracing::warn!(point = ?point.moment(), kind = %point.kind(), occurrence = point.occurrence(),
                "a crash point is set: this process kills itself there (tests only)");
            Arc::new(point)
        }
        None => Arc::new(NoHooks),
    })
}

/// Run until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs, settings: AgentSettings) -> Result<(), RunError> {
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let hooks = hooks()?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let store = Store::open(&args.store).map_err(|error| RunError::Store(error.to_string()))?;
    let cluster_id = settings.cluster.id.clone();

    let token = settings.token.source();
    let sis = SisClient::new(
        SisConfig {
            base_url: settings.icms_url.clone(),
            cluster_id: Some(cluster_id.clone()),
            timeout: args.sis_timeout,
            // One try per call: a call that must not be lost lives in the session machine,
            // whose driver retries it with backoff the store records.
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            host_override: settings.icms_host_override.clone(),
        },
        token,
    )
    .map_err(|error| RunError::Sis(error.to_string()))?;

    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new(&settings.cluster));
    metrics.set_maintenance(settings.maintenance);
    let (inventory_tx, inventory_rx) = watch::channel::<Option<Arc<Inventory>>>(None);
    let (maintenance_tx, maintenance_rx) = watch::channel(settings.maintenance);
    let (self_destructed_tx, self_destructed_rx) = watch::channel(false);
    let (credentials_tx, credentials_rx) = watch::channel(QueueCredentials::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let last_registered: Arc<Mutex<Option<Registered>>> = Arc::default();

    match client.apiserver_version().await {
        Ok(info) => health.set_k8s_version(&info.git_version),
        Err(error) => tracing::warn!(%error, "cannot read the Kubernetes version yet"),
    }
    if let Some(version) = &settings.kubernetes_version_override {
        health.set_k8s_version(version);
    }

    let executor = Arc::new(SessionExecutor {
        sis: sis.clone(),
        client: client.clone(),
        cluster_id: cluster_id.clone(),
        nca_id: settings.cluster.nca_id.clone(),
        cluster_name: settings.cluster.name.clone(),
        operator_version: settings.operator_version.clone(),
        requests_namespace: settings.requests_namespace.clone(),
        skip_self_destruct: settings.skip_self_destruct,
        cluster_targeting: settings.features.is_enabled("ClusterTargeting"),
        k8s_version_override: settings.kubernetes_version_override.clone(),
        inventory: inventory_rx.clone(),
        maintenance: maintenance_rx.clone(),
        health: Arc::clone(&health),
        metrics: Arc::clone(&metrics),
        credentials: credentials_tx,
        self_destructed: self_destructed_tx.clone(),
        last_registered: Arc::clone(&last_registered),
    });
    let driver_config = DriverConfig {
        backoff: Backoff {
            initial: args.sis_backoff_initial,
            max: args.sis_backoff_max,
        },
    };
    let (driver, report) = Driver::start(store.clone(), executor, hooks.clone(), driver_config)
        .map_err(|error| RunError::Store(error.to_string()))?;
    for quarantined in &report.quarantined {
        tracing::warn!(key = %quarantined.key, reason = %quarantined.reason, "record set aside; the session starts again");
    }
    driver
        .ensure(&cluster_id, || SessionMachine::new(&cluster_id))
        .await
        .map_err(|error| RunError::Store(error.to_string()))?;
    if driver
        .summary(&cluster_id)
        .is_some_and(|summary| SessionState::SelfDestructed.is(&summary.state))
    {
        tracing::warn!(cluster = %cluster_id, "SIS told this cluster to SELF_DESTRUCT earlier: no calls to SIS; re-register the cluster to start again");
        self_destructed_tx.send_replace(true);
    }

    let admin = crate::process::listen_address(
        &args
            .listen_admin
            .clone()
            .unwrap_or(settings.admin_address.clone()),
    )
    .map_err(|reason| RunError::Listen {
        what: "admin endpoint",
        address: settings.admin_address.clone(),
        reason,
        flag: "listen-admin",
    })?;
    crate::driver::admin::serve(store.clone(), admin)
        .await
        .map_err(|error| RunError::Listen {
            what: "admin endpoint",
            address: admin.to_string(),
            reason: error.to_string(),
            flag: "listen-admin",
        })?;
    let extra: server::ExtraMetrics = Arc::default();
    let listen_text = args.listen.clone().unwrap_or(settings.svc_address.clone());
    let listen =
        crate::process::listen_address(&listen_text).map_err(|reason| RunError::Listen {
            what: "health endpoint",
            address: listen_text.clone(),
            reason,
            flag: "listen",
        })?;
    server::serve(
        listen,
        Arc::clone(&health),
        Arc::clone(&metrics),
        extra.clone(),
    )
    .await
    .map_err(|error| RunError::Listen {
        what: "health endpoint",
        address: listen.to_string(),
        reason: error.to_string(),
        flag: "listen",
    })?;

    let options = DiscoveryOptions::new(&settings.cluster.cloud_provider)
        .map_err(|error| RunError::Kubernetes(error.to_string()))?;
    let options = DiscoveryOptions {
        multi_node_workloads: settings
            .features
            .is_enabled(FeatureFlags::MULTI_NODE_WORKLOADS),
        ..options
    };
    let source = nodes::InventorySource {
        client: client.clone(),
        options,
        dynamic: settings.dynamic_gpu_discovery(),
        manual_b64: settings.manual_gpus_b64.clone(),
        system_namespace: settings.system_namespace.clone(),
        requests_namespace: settings.requests_namespace.clone(),
        quiet: settings.intervals.inventory_quiet,
        max_delay: settings.intervals.inventory_max_delay,
        resync: settings.intervals.registration_diff,
        health: Arc::clone(&health),
        metrics: Arc::clone(&metrics),
        publish: inventory_tx,
    };
    let mut tasks = vec![tokio::spawn(source.run())];

    let queue = queue_config(&settings, args.nats_auth);
    let context = AgentContext {
        client: client.clone(),
        sis: sis.clone(),
        cluster: settings.cluster.clone(),
        queue,
        store: store.clone(),
        features: settings.features.clone(),
        system_namespace: settings.system_namespace.clone(),
        requests_namespace: settings.requests_namespace.clone(),
        inventory: inventory_rx.clone(),
        maintenance: maintenance_rx.clone(),
        self_destructed: self_destructed_rx.clone(),
        credentials: credentials_rx,
        shutdown: shutdown_rx,
    };

    // Start-up: wait for the first look at the nodes, then register (NVIDIA registers at
    // every start, once its caches are synced).
    let mut first = inventory_rx.clone();
    tokio::select! {
        _ = first.wait_for(Option::is_some) => {}
        () = wait_for_signal() => {
            tracing::info!("stopped before the nodes were listed");
            for task in &tasks {
                task.abort();
            }
            driver.shutdown().await;
            return Ok(());
        }
    }
    health.set_started();
    send(
        &driver,
        &cluster_id,
        Event::RegistrationDue {
            reason: "agent started".to_string(),
        },
    )
    .await;

    let due = {
        let driver = driver.clone();
        let cluster_id = cluster_id.clone();
        move |event: Event| {
            let driver = driver.clone();
            let cluster_id = cluster_id.clone();
            tokio::spawn(async move { send(&driver, &cluster_id, event).await });
        }
    };
    if let Some(summaries) = driver.watch(&cluster_id) {
        tasks.push(tokio::spawn(session::follow_session(
            summaries,
            Arc::clone(&health),
            due.clone(),
        )));
    }
    tasks.push(tokio::spawn(sync_registration(
        driver.clone(),
        cluster_id.clone(),
        inventory_rx.clone(),
        maintenance_rx.clone(),
        Arc::clone(&last_registered),
        settings.dynamic_gpu_discovery(),
        settings.intervals.registration_diff,
    )));
    tasks.push(tokio::spawn(tick(
        settings.intervals.heartbeat,
        due.clone(),
        || Event::HeartbeatDue,
    )));
    tasks.push(tokio::spawn(tick(
        settings.intervals.cred_renew,
        due.clone(),
        || Event::CredentialsDue,
    )));
    if matches!(settings.token, TokenFile::Projected(_)) {
        tasks.push(tokio::spawn(check_jwks(
            client.clone(),
            settings.intervals.jwks,
            due.clone(),
        )));
    }
    tasks.push(tokio::spawn(follow_config(
        args.config.clone(),
        args.overrides(),
        args.config_poll,
        settings.maintenance,
        maintenance_tx,
        Arc::clone(&metrics),
    )));
    if settings.features.is_enabled(FeatureFlags::KAI_SCHEDULER) {
        tasks.push(tokio::spawn(kai::watch_queues(
            client.clone(),
            Arc::clone(&health),
        )));
    }
    // After SELF_DESTRUCT the workloads were evicted already: nothing to run or report.
    let functions = if args.no_functions || *self_destructed_rx.borrow() {
        None
    } else {
        Some(tokio::spawn(run_functions(
            context.clone(),
            settings.clone(),
            extra,
            hooks,
            Arc::clone(&health),
        )))
    };
    tracing::info!(cluster = %cluster_id, "nvca-agent running");

    wait_for_signal().await;
    tracing::info!("stopping: machines finish the step they are in and resume at the next start");
    shutdown_tx.send_replace(true);
    if let Some(functions) = functions {
        // The task stops its component when shutdown turns true.
        let _ = tokio::time::timeout(Duration::from_secs(20), functions).await;
    }
    for task in &tasks {
        task.abort();
    }
    driver.shutdown().await;
    Ok(())
}

/// The NATS queue of the cluster, as the function deployments connect to it.
fn queue_config(settings: &AgentSettings, mode: NatsAuthMode) -> QueueConfig {
    let mut queue = QueueConfig::new(settings.nats_url.clone(), settings.cluster.id.clone());
    queue.auth = match (mode, &settings.token) {
        (NatsAuthMode::None, _) => NatsAuth::None,
        (NatsAuthMode::Psat | NatsAuthMode::Auto, TokenFile::Projected(path)) => {
            NatsAuth::Psat(Arc::new(crate::sis::TokenSource::projected(path)))
        }
        (NatsAuthMode::Psat, TokenFile::VaultSecrets(path)) => {
            tracing::warn!(file = %path.display(), "--nats-auth psat needs a projected token; connecting without authentication");
            NatsAuth::None
        }
        (NatsAuthMode::Auto, TokenFile::VaultSecrets(_)) => NatsAuth::None,
    };
    queue
}

/// Reads config.yaml again every `poll`: a new maintenance mode (the operator's drain
/// patch) applies without a restart. Other changes are logged; they need a restart.
async fn follow_config(
    path: PathBuf,
    overrides: Overrides,
    poll: Duration,
    mut mode: MaintenanceMode,
    publish: watch::Sender<MaintenanceMode>,
    metrics: Arc<Metrics>,
) {
    let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut ticker = tokio::time::interval(poll);
    loop {
        ticker.tick().await;
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text == last_text {
            continue;
        }
        last_text = text;
        match AgentSettings::read(&path, &overrides) {
            Ok(settings) => {
                for warning in &settings.warnings {
                    tracing::warn!("{warning}");
                }
                if settings.maintenance != mode {
                    tracing::warn!(from = %mode, to = %settings.maintenance, "maintenance mode changed");
                    mode = settings.maintenance;
                    metrics.set_maintenance(mode);
                    publish.send_replace(mode);
                } else {
                    tracing::info!(
                        "config.yaml changed; changes other than the maintenance mode apply at the next restart"
                    );
                }
            }
            Err(error) => {
                tracing::error!(%error, "config.yaml changed and cannot be used; keeping the running configuration")
            }
        }
    }
}
