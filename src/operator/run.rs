//! `nvca-operator run`: the NVCFBackend loop.
//!
//! What it does, in one process:
//! - keeps NVCFBackend `<clusterName>` in the operator's namespace built from ConfigMap
//!   `nvcfbackend-self-managed` (key `cluster-dto.yaml`), the IDs of ConfigMap
//!   `nvca-cluster-registration` taking precedence (a manual re-registration reaches the
//!   spec, and so the agent, without a restart). It writes the spec with server-side
//!   apply, so fields others own (`spec.overrides`) stay. It does so at start and when
//!   either ConfigMap changes, never because the NVCFBackend was deleted: deleting it is
//!   how users uninstall;
//! - feeds one persistent backend machine per NVCFBackend ([`BackendMachine`], store at
//!   `--store`) from watches: the NVCFBackend (spec generation, deletion), the objects it
//!   owns (a deleted or modified one is drift: the machine applies its steps again, and an
//!   Event says so), ICMSRequests (while draining), and the agent's `/healthz` every 15 s;
//! - applies the CRDs the agent and NVIDIA's components use ([`crds`]) and waits until
//!   they are served, before anything is provisioned;
//! - acts only while it holds the leader Lease ([`leader`]); a second replica waits;
//! - serves `/healthz`, `/version` and `/metrics` on `--listen` (`:8000`), and the
//!   machines' snapshot for `nvca-state` on `--listen-admin` (`127.0.0.1:8001`).

use crate::kube::not_found::not_found;
use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

use super::backend_executor::BackendExecutor;
use super::cluster_dto::ClusterDto;
use super::crds;
use super::health;
use super::leader::{self, Election, LeaderError};
use super::metrics::Metrics;
use super::{CLUSTER_DTO_CONFIGMAP, CLUSTER_DTO_KEY, FIELD_MANAGER, REGISTRATION_CONFIGMAP};
use crate::driver::{Driver, DriverConfig};
use crate::kube::agent_config;
use crate::kube::crd::{ICMSRequest, NVCFBackend};
use crate::kube::resources::{
    DEFAULT_IMAGE_REPOSITORY, NVCA, OperatorSettings, REQUESTS_NAMESPACE, SYSTEM_NAMESPACE,
    network_policies, pull_secrets, webhook_certs,
};
pub use crate::logging::LogFormat;
use crate::machines::Kind;
use crate::machines::backend::BackendState;
use crate::machines::backend::{BackendMachine, Event, ProvisionStep};
use crate::process::wait_for_signal;
use crate::store::{Store, Write, store_key};

/// Default store directory of the operator's machines (its pod mounts a volume there).
pub const DEFAULT_STORE: &str = "/var/lib/nvca/operator/store";
/// A machine parked in `cleanup_failed` is nudged again at most this often.
const CLEANUP_RETRY: Duration = Duration::from_secs(30);
/// How often a draining backend recounts the ICMSRequests, beside the watch.
const DRAIN_RECOUNT: Duration = Duration::from_secs(10);

/// The flags of `run`; NVIDIA's names where its operator has the flag.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The operator's namespace: where the chart's ConfigMaps are read and the NVCFBackend
    /// lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nvca-operator")]
    pub system_namespace: String,
    /// The NVCF account; used when cluster-dto.yaml has none.
    #[arg(long, default_value = "")]
    pub nca_id: String,
    /// The cluster ID; nvca-cluster-registration's takes precedence, cluster-dto.yaml's
    /// is the fallback.
    #[arg(long, default_value = "")]
    pub cluster_id: String,
    /// The cluster name (and the NVCFBackend's); cluster-dto.yaml's when empty.
    #[arg(long, default_value = "")]
    pub cluster_name: String,
    /// The chart's ngcConfig.clusterSource; nvca runs self-managed clusters only.
    #[arg(long, env = "NVCA_CLUSTER_SOURCE", default_value = SELF_MANAGED)]
    pub cluster_source: String,
    /// error, warn, info, debug or trace; RUST_LOG refines it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// A kubeconfig file; without it, the in-cluster service account (or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The store directory of the backend machines.
    #[arg(long, env = "NVCA_OPERATOR_STORE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
    /// Health (`/healthz`) and version (`/version`), e.g. `:8000` or `127.0.0.1:0`.
    #[arg(long, default_value = ":8000")]
    pub listen: String,
    /// The machines' snapshot for `nvca-state`; loopback by default.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub listen_admin: String,
    /// Where the agent answers health; override to reach an agent outside the cluster.
    #[arg(long, default_value = health::DEFAULT_URL)]
    pub agent_health_url: String,
    /// Call the admission webhooks at this base URL (e.g. `https://127.0.0.1:18443`)
    /// instead of Service nvca: for an agent run outside the cluster.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// How often the agent's health is read, e.g. 15s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub agent_health_interval: Duration,
    /// The agent's image repository when the NVCFBackend names none.
    #[arg(long, env = "NVCA_IMAGE_REPO", default_value = DEFAULT_IMAGE_REPOSITORY)]
    pub nvca_image_repo: String,
    /// Secrets in the operator's namespace the agent pulls its image with
    /// (comma-separated; the chart's imagePullSecrets).
    #[arg(
        long,
        env = "NVCA_IMAGE_PULL_SECRETS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub image_pull_secrets: Vec<String>,
    /// The same in the chart's encoding (base64 of `[{"name": …}]`); added to the above.
    #[arg(long, env = "ADDITIONAL_IMAGE_PULL_SECRETS_B64", default_value = "")]
    pub additional_image_pull_secrets_b64: String,
    #[arg(long, default_value = "")]
    pub node_selector_key: String,
    #[arg(long, default_value = "")]
    pub node_selector_value: String,
    #[arg(long, default_value = "")]
    pub priority_class_name: String,
    /// Environment of every function's containers, over what NVCF sends: base64 of a
    /// JSON object of names and values (the chart's agent.functionEnvOverrides, with its
    /// BYOO collector image).
    #[arg(long, env = "FUNCTION_ENV_OVERRIDES_B64", default_value = "")]
    pub function_env_overrides_b64: String,
    /// The same for tasks (agent.taskEnvOverrides).
    #[arg(long, env = "TASK_ENV_OVERRIDES_B64", default_value = "")]
    pub task_env_overrides_b64: String,
    /// The agent pod's tolerations: base64 of a JSON list (the chart's agent.tolerations);
    /// the NVCFBackend's spec.agentConfig.tolerations win when it has any.
    #[arg(long, env = "AGENT_TOLERATIONS_B64", default_value = "")]
    pub agent_tolerations_b64: String,
    /// Environment of the agent container, over what the operator sets: base64 of a JSON
    /// object (the chart's agent.overrideEnvironmentVariables); without it the
    /// NVCFBackend's spec.agentConfig.overrideEnvironmentVars.
    #[arg(long, env = "AGENT_OVERRIDE_ENV_VARS_JSON_B64", default_value = "")]
    pub agent_override_env_vars_json_b64: String,
    /// Label nvcf-backend for GXCache injection.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_gxcache: bool,
    /// Put the vault agent's injection annotations on the agent's pod.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub agent_vault_inject: bool,
    /// The cluster's internal networks, which workloads may not reach (comma-separated).
    #[arg(
        long,
        env = "K8S_CLUSTER_NETWORK_CIDRS",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/12"
    )]
    pub cluster_network_cidrs: Vec<String>,
    /// Act only while holding the Lease (a second replica waits); false: act at once.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// The Lease's name, in the operator's namespace.
    #[arg(long, default_value = "nvca-operator")]
    pub leader_election_lease: String,
    /// This replica's name in the Lease; the pod's name and process id when empty.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub leader_election_identity: String,
    /// How long a leader that stopped renewing keeps the Lease, e.g. 15s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub leader_lease_duration: Duration,
}

/// The one cluster source nvca serves (NVIDIA's also serves `ngc-managed` and
/// `helm-managed`, registered through NGC).
pub const SELF_MANAGED: &str = "self-managed";

/// Why the operator stopped. Each message names the thing and the fix.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "--{flag} is not base64 of the JSON it takes ({reason}); fix the chart's agent.{key} or pass a valid value"
    )]
    EncodedValue {
        flag: &'static str,
        key: &'static str,
        reason: String,
    },
    #[error(
        "cluster source {0:?} (NVCA_CLUSTER_SOURCE, the chart's ngcConfig.clusterSource) is not served: nvca runs self-managed clusters only; set ngcConfig.clusterSource: self-managed with the selfManaged endpoints and run helm upgrade, or install NVIDIA's nvca-operator chart for an NGC-managed cluster"
    )]
    ClusterSource(String),
    #[error("cannot use Kubernetes: {0}")]
    Kubernetes(String),
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Leadership(#[from] LeaderError),
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
            RunError::ClusterSource(_) => "cluster-source",
            RunError::EncodedValue { .. } => "chart-value",
            RunError::Kubernetes(_) => "kubernetes",
            RunError::Store(_) => "store",
            RunError::Listen { .. } => "listen",
            RunError::Leadership(_) => "leadership",
        }
    }
}

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

/// The whole command, for the binary.
pub fn main(args: RunArgs) -> ExitCode {
    crate::logging::init(&args.log_level, args.log_format);
    crate::process::block_on("nvca-operator run", run(args), RunError::category)
}

type BackendDriver = Driver<BackendMachine, BackendExecutor>;

/// What every task of the loop shares.
struct Context {
    client: Client,
    driver: BackendDriver,
    executor: Arc<BackendExecutor>,
    args: RunArgs,
    metrics: Arc<Metrics>,
    /// When each machine parked in `cleanup_failed` was last nudged.
    nudged: Mutex<HashMap<String, Instant>>,
}

/// Run until SIGTERM or Ctrl-C (or until the Lease is lost).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    if args.cluster_source.trim() != SELF_MANAGED {
        return Err(RunError::ClusterSource(args.cluster_source.clone()));
    }
    // Inputs first, so a bad one stops the operator before it changes anything.
    let settings = settings(&args)?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::new());
    let listen = parse_listen(&args.listen, "health endpoint", "listen")?;
    serve_health(listen, Arc::clone(&metrics)).await?;

    let leadership = if args.leader_elect {
        let identity = if args.leader_election_identity.trim().is_empty() {
            leader::default_identity()
        } else {
            args.leader_election_identity.trim().to_string()
        };
        let election = Election {
            namespace: args.system_namespace.clone(),
            lease: args.leader_election_lease.clone(),
            identity,
            duration: args.leader_lease_duration,
        };
        tokio::select! {
            held = leader::acquire(client.clone(), election) => Some(held),
            () = wait_for_signal() => {
                tracing::info!("stopping before leading: nothing to finish");
                return Ok(());
            }
        }
    } else {
        None
    };
    metrics.set_leader(true);

    // The kinds the agent writes must be served before it is provisioned.
    tokio::select! {
        () = crds::install_until_done(&client) => {}
        () = wait_for_signal() => {
            tracing::info!("stopping before the CRDs were installed: nothing to finish");
            if let Some(leadership) = leadership {
                leadership.release().await;
            }
            return Ok(());
        }
    }

    let store = Store::open(&args.store).map_err(|error| RunError::Store(error.to_string()))?;
    forget_released(&store).await?;
    let executor = BackendExecutor::new(client.clone(), settings);
    let (driver, report) = Driver::start(
        store.clone(),
        Arc::clone(&executor),
        Arc::clone(&metrics) as Arc<dyn crate::driver::Hooks>,
        DriverConfig::default(),
    )
    .map_err(|error| RunError::Store(error.to_string()))?;
    for quarantined in &report.quarantined {
        tracing::warn!(key = %quarantined.key, reason = %quarantined.reason, "record set aside; its machine is rebuilt from Kubernetes");
    }
    for key in driver.names() {
        if let Some(summary) = driver.summary(&key) {
            metrics.seed(&summary);
        }
    }
    let admin = parse_listen(&args.listen_admin, "admin endpoint", "listen-admin")?;
    crate::driver::admin::serve(store, admin)
        .await
        .map_err(|error| RunError::Listen {
            what: "admin endpoint",
            address: admin.to_string(),
            reason: error.to_string(),
            flag: "listen-admin",
        })?;

    let context = Arc::new(Context {
        client,
        driver: driver.clone(),
        executor,
        args,
        metrics: Arc::clone(&metrics),
        nudged: Mutex::new(HashMap::new()),
    });
    let mut tasks = vec![
        tokio::spawn(sync_backend_spec(Arc::clone(&context))),
        tokio::spawn(follow_agent_config_merge(Arc::clone(&context))),
        tokio::spawn(watch_backends(Arc::clone(&context))),
        tokio::spawn(watch_icms_requests(Arc::clone(&context))),
        tokio::spawn(recount_drains(Arc::clone(&context))),
        tokio::spawn(poll_health(Arc::clone(&context))),
        tokio::spawn(crds::keep_installed(context.client.clone())),
    ];
    tasks.extend(watch_owned_objects(&context));
    tracing::info!(namespace = %context.args.system_namespace, "nvca-operator running");

    let outcome = match leadership {
        Some(mut leadership) => {
            tokio::select! {
                () = wait_for_signal() => Ok(Some(leadership)),
                lost = leadership.lost() => Err(lost),
            }
        }
        None => {
            wait_for_signal().await;
            Ok(None)
        }
    };
    tracing::info!("stopping: machines finish the step they are in and resume at the next start");
    for task in &tasks {
        task.abort();
    }
    driver.shutdown().await;
    metrics.set_leader(false);
    match outcome {
        Ok(Some(leadership)) => {
            leadership.release().await;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(lost) => Err(lost.into()),
    }
}

fn settings(args: &RunArgs) -> Result<OperatorSettings, RunError> {
    let present = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_string());
    Ok(OperatorSettings {
        operator_namespace: args.system_namespace.clone(),
        image_repository: args.nvca_image_repo.clone(),
        image_pull_secrets: pull_secret_names(args),
        node_selector: present(&args.node_selector_key).zip(present(&args.node_selector_value)),
        priority_class_name: present(&args.priority_class_name),
        gxcache: args.enable_gxcache,
        cluster_network_cidrs: args
            .cluster_network_cidrs
            .iter()
            .filter_map(|cidr| present(cidr))
            .collect(),
        vault: args.agent_vault_inject,
        log_level: args.log_level.clone(),
        webhook_url: args.webhook_url.clone(),
        function_env_overrides: env_overrides(
            &args.function_env_overrides_b64,
            "function-env-overrides-b64",
            "functionEnvOverrides",
        )?,
        task_env_overrides: env_overrides(
            &args.task_env_overrides_b64,
            "task-env-overrides-b64",
            "taskEnvOverrides",
        )?,
        agent_tolerations: b64_json(
            &args.agent_tolerations_b64,
            "agent-tolerations-b64",
            "tolerations",
        )?
        .unwrap_or_default(),
        agent_env_overrides: b64_json(
            &args.agent_override_env_vars_json_b64,
            "agent-override-env-vars-json-b64",
            "overrideEnvironmentVariables",
        )?,
    })
}

/// NVIDIA's `decodeEnvOverrides`: base64 of a JSON object of strings; empty is none.
fn env_overrides(
    b64: &str,
    flag: &'static str,
    key: &'static str,
) -> Result<BTreeMap<String, String>, RunError> {
    Ok(b64_json(b64, flag, key)?.unwrap_or_default())
}

/// A flag of the chart's base64-of-JSON kind, for chart value `agent.<key>`; `None` when
/// empty.
fn b64_json<T: serde::de::DeserializeOwned>(
    b64: &str,
    flag: &'static str,
    key: &'static str,
) -> Result<Option<T>, RunError> {
    let b64 = b64.trim();
    if b64.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: String| RunError::EncodedValue { flag, key, reason };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|error| invalid(error.to_string()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| invalid(error.to_string()))
}

/// `--image-pull-secrets`, then those of `--additional-image-pull-secrets-b64` (a bad
/// encoding is logged and skipped: the mirror container refuses it loudly).
fn pull_secret_names(args: &RunArgs) -> Vec<String> {
    let mut names: Vec<String> = args
        .image_pull_secrets
        .iter()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect();
    match super::mirror::decode_names(&args.additional_image_pull_secrets_b64) {
        Ok(more) => {
            for name in more {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Err(error) => tracing::error!(category = error.category(), "{error}"),
    }
    names
}

/// `:8000` (every interface) or `host:port`.
pub(crate) fn parse_listen(
    text: &str,
    what: &'static str,
    flag: &'static str,
) -> Result<SocketAddr, RunError> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse().map_err(|error| RunError::Listen {
        what,
        address: text.to_string(),
        reason: format!("not host:port ({error})"),
        flag,
    })
}

async fn serve_health(address: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, RunError> {
    use axum::Router;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| RunError::Listen {
            what: "health endpoint",
            address: address.to_string(),
            reason: error.to_string(),
            flag: "listen",
        })?;
    let bound = listener.local_addr().map_err(|error| RunError::Listen {
        what: "health endpoint",
        address: address.to_string(),
        reason: error.to_string(),
        flag: "listen",
    })?;
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/version",
            get(|| async { axum::Json(json!({"version": env!("CARGO_PKG_VERSION")})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "health endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "health endpoint listening");
    Ok(bound)
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client, RunError> {
    crate::kube::client::connect(kubeconfig, "operator")
        .await
        .map_err(RunError::Kubernetes)
}

/// A released backend machine has done everything; its record is history. Dropping it
/// before the driver starts lets an NVCFBackend of the same name, created again later
/// (a reinstall), start from the beginning.
async fn forget_released(store: &Store) -> Result<(), RunError> {
    let (summaries, _) = store
        .summaries(Some(Kind::Backend))
        .map_err(|error| RunError::Store(error.to_string()))?;
    let writes: Vec<Write> = summaries
        .iter()
        .filter(|summary| summary.is_final && summary.pending.is_empty())
        .map(|summary| {
            tracing::info!(backend = %summary.name, "forgetting a released backend machine");
            Write::Delete {
                key: store_key(Kind::Backend, &summary.name),
            }
        })
        .collect();
    if !writes.is_empty() {
        store
            .commit(writes)
            .await
            .map_err(|error| RunError::Store(error.to_string()))?;
    }
    Ok(())
}

/// The parts of `cluster-dto.yaml` the NVCFBackend needs beyond [`ClusterDto`].
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct DtoExtras {
    agent: DtoAgent,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DtoAgent {
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
async fn sync_backend_spec(context: Arc<Context>) {
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
async fn follow_agent_config_merge(context: Arc<Context>) {
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

async fn write_backend(context: &Context, configmaps: &Api<ConfigMap>) -> Result<(), String> {
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

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<WatchEvent<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::watcher(api, config).default_backoff()
}

fn key_of(backend: &NVCFBackend) -> String {
    format!(
        "{}/{}",
        backend.namespace().unwrap_or_default(),
        backend.name_any()
    )
}

/// The agent's requests namespace of `backend` (`nvcf-backend` unless its spec names one).
fn requests_namespace(backend: &NVCFBackend) -> String {
    backend
        .spec
        .fields
        .cluster_config
        .as_ref()
        .map(|c| c.requests_namespace.clone())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| REQUESTS_NAMESPACE.to_string())
}

/// The names of the ICMSRequests that remain in the requests namespace (the function
/// deployments still running), as NVIDIA's `CountICMSRequests` counts them.
async fn remaining_deployments(
    client: &Client,
    backend: &NVCFBackend,
) -> Result<Vec<String>, kube::Error> {
    let all: Api<ICMSRequest> = Api::namespaced(client.clone(), &requests_namespace(backend));
    match all.list(&ListParams::default()).await {
        Ok(list) => Ok(list.iter().map(|r| r.name_any()).collect()),
        Err(error) if not_found(&error) => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// NVCFBackends: the spec's generation and the deletion, to the machines.
async fn watch_backends(context: Arc<Context>) {
    let api: Api<NVCFBackend> =
        Api::namespaced(context.client.clone(), &context.args.system_namespace);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let backend = match event {
            Ok(WatchEvent::Apply(backend) | WatchEvent::InitApply(backend)) => backend,
            Ok(_) => continue,
            Err(error) => {
                context.metrics.error("kubernetes");
                tracing::warn!(%error, "watching NVCFBackends; retrying");
                continue;
            }
        };
        if let Err(error) = observe_backend(&context, &backend).await {
            tracing::error!(backend = %key_of(&backend), %error, "cannot hand the NVCFBackend to its machine");
        }
    }
}

async fn observe_backend(context: &Context, backend: &NVCFBackend) -> Result<(), String> {
    let key = key_of(backend);
    let namespace = backend.namespace().unwrap_or_default();
    let name = backend.name_any();
    let driver = &context.driver;
    driver
        .ensure(&key, || BackendMachine::new(&namespace, &name))
        .await
        .map_err(|e| e.to_string())?;
    let Some(summary) = driver.summary(&key) else {
        return Ok(());
    };
    if summary.is_final {
        if backend.metadata.deletion_timestamp.is_none() {
            tracing::warn!(backend = %key, "this NVCFBackend was released and created again; restart the operator to provision it");
        }
        return Ok(());
    }
    let event = if backend.metadata.deletion_timestamp.is_some() {
        if BackendState::CleanupFailed.is(&summary.state) {
            let mut nudged = context
                .nudged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let recent = nudged
                .get(&key)
                .is_some_and(|at| at.elapsed() < CLEANUP_RETRY);
            if recent {
                return Ok(());
            }
            nudged.insert(key.clone(), Instant::now());
        } else if matches!(
            BackendState::of(&summary.state),
            Some(BackendState::CleaningUp | BackendState::Releasing | BackendState::Draining)
        ) {
            // Already deleting; the drain recount and effect outcomes drive it.
            return Ok(());
        }
        let remaining = remaining_deployments(&context.client, backend)
            .await
            .map_err(|e| format!("listing ICMSRequests: {e}"))?;
        Event::DeletionObserved { remaining }
    } else {
        let generation = backend
            .metadata
            .generation
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(0);
        Event::SpecChanged { generation }
    };
    driver.send(&key, event).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// ICMSRequests: a draining backend learns at once that the last one went.
async fn watch_icms_requests(context: Arc<Context>) {
    let api: Api<ICMSRequest> = Api::all(context.client.clone());
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Delete(_) | WatchEvent::InitDone) => recount(&context).await,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "watching ICMSRequests; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

async fn recount_drains(context: Arc<Context>) {
    let mut tick = tokio::time::interval(DRAIN_RECOUNT);
    loop {
        tick.tick().await;
        recount(&context).await;
        // A machine parked in cleanup_failed retries when the deletion is seen again.
        for key in context.driver.names() {
            let Some(summary) = context.driver.summary(&key) else {
                continue;
            };
            if BackendState::CleanupFailed.is(&summary.state)
                && let Some((namespace, name)) = key.split_once('/')
            {
                let api: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
                if let Ok(Some(backend)) = api.get_opt(name).await {
                    let _ = observe_backend(&context, &backend).await;
                }
            }
        }
    }
}

async fn recount(context: &Context) {
    let draining: Vec<String> = context
        .driver
        .names()
        .into_iter()
        .filter(|key| {
            context
                .driver
                .summary(key)
                .is_some_and(|s| BackendState::Draining.is(&s.state))
        })
        .collect();
    if draining.is_empty() {
        return;
    }
    for key in draining {
        let Some((namespace, name)) = key.split_once('/') else {
            continue;
        };
        let api: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
        let Ok(Some(backend)) = api.get_opt(name).await else {
            continue;
        };
        let remaining = match remaining_deployments(&context.client, &backend).await {
            Ok(remaining) => remaining,
            Err(error) => {
                tracing::warn!(%error, "cannot count ICMSRequests");
                continue;
            }
        };
        let event = Event::DeploymentsObserved { remaining };
        if let Err(error) = context.driver.send(&key, event).await {
            tracing::warn!(backend = %key, %error, "cannot tell the machine what remains");
        }
    }
}

/// The agent's `/healthz`, every interval, to every live machine.
async fn poll_health(context: Arc<Context>) {
    let http = crate::tls::http_client();
    let mut tick = tokio::time::interval(context.args.agent_health_interval);
    loop {
        tick.tick().await;
        let live: Vec<String> = context
            .driver
            .names()
            .into_iter()
            .filter(|key| {
                context.driver.summary(key).is_some_and(|s| {
                    matches!(
                        BackendState::of(&s.state),
                        Some(
                            BackendState::Pending
                                | BackendState::Provisioning
                                | BackendState::Ready
                        )
                    )
                })
            })
            .collect();
        if live.is_empty() {
            continue;
        }
        let report = health::read(&http, &context.args.agent_health_url).await;
        if report.status == crate::machines::backend::AgentStatus::Unknown {
            context.metrics.error("agent_health");
        }
        for key in live {
            if let Err(error) = context
                .driver
                .send(&key, Event::AgentObserved(report.clone()))
                .await
            {
                tracing::warn!(backend = %key, %error, "cannot hand the agent's health to the machine");
            }
        }
    }
}

/// Which provisioning step an owned object belongs to; `None` for objects that are not
/// the operator's.
fn step_of(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<ProvisionStep> {
    use ProvisionStep::*;
    let copy = labels
        .get(crate::kube::resources::LABEL_MANAGED_BY)
        .map(String::as_str)
        == Some(pull_secrets::MIRROR);
    Some(match (kind, name) {
        ("Namespace", SYSTEM_NAMESPACE) => SystemNamespace,
        ("Namespace", REQUESTS_NAMESPACE) => RequestsNamespace,
        ("Secret", webhook_certs::SERVER_SECRET | webhook_certs::CA_SECRET) => WebhookCerts,
        ("Secret", _) if copy => PullSecrets,
        ("ConfigMap", network_policies::CONFIGMAP) => NetworkPolicies,
        ("ConfigMap", agent_config::CONFIGMAP) => AgentConfig,
        ("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding", NVCA) => Rbac,
        ("Service", NVCA) => Service,
        ("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration", NVCA) => {
            WebhookConfigurations
        }
        ("Deployment", NVCA) => AgentDeployment,
        _ => {
            let _ = namespace;
            return None;
        }
    })
}

/// One watch per kind of owned object; a deletion is drift, and so is an object of a
/// fixed name found missing when the watch lists (at start, or after a broken watch):
/// deleted while no operator ran.
fn watch_owned_objects(context: &Arc<Context>) -> Vec<tokio::task::JoinHandle<()>> {
    let system = SYSTEM_NAMESPACE;
    let client = &context.client;
    let named = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    vec![
        spawn_drift(
            context,
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            &[SYSTEM_NAMESPACE, REQUESTS_NAMESPACE],
        ),
        spawn_drift(
            context,
            Api::<Secret>::namespaced(client.clone(), system),
            watcher::Config::default(),
            &[webhook_certs::SERVER_SECRET, webhook_certs::CA_SECRET],
        ),
        spawn_drift(
            context,
            Api::<ConfigMap>::namespaced(client.clone(), system),
            watcher::Config::default(),
            &[network_policies::CONFIGMAP, agent_config::CONFIGMAP],
        ),
        spawn_drift(
            context,
            Api::<ServiceAccount>::namespaced(client.clone(), system),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<ClusterRole>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<ClusterRoleBinding>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<Service>::namespaced(client.clone(), system),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            named(NVCA),
            &[NVCA],
        ),
        spawn_drift(
            context,
            Api::<Deployment>::namespaced(client.clone(), system),
            named(NVCA),
            &[NVCA],
        ),
    ]
}

fn spawn_drift<K>(
    context: &Arc<Context>,
    api: Api<K>,
    config: watcher::Config,
    expected: &'static [&'static str],
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let context = Arc::clone(context);
    tokio::spawn(async move {
        let kind = K::kind(&()).to_string();
        let namespace = api.namespace().map(str::to_string);
        let mut events = watcher(api, config).boxed();
        let mut listed: Vec<String> = Vec::new();
        while let Some(event) = events.next().await {
            let (object, deleted) = match event {
                Ok(WatchEvent::Delete(object)) => (object, true),
                Ok(WatchEvent::Apply(object)) => (object, false),
                Ok(WatchEvent::Init) => {
                    listed.clear();
                    continue;
                }
                // Checked like a change: after an operator upgrade (or a watch that
                // lost events), what this build would write differently is applied
                // again, as NVIDIA's operator re-applies everything at each resync.
                Ok(WatchEvent::InitApply(object)) => {
                    listed.push(object.name_any());
                    (object, false)
                }
                Ok(WatchEvent::InitDone) => {
                    for name in expected
                        .iter()
                        .filter(|name| !listed.iter().any(|l| l == *name))
                    {
                        let what = match &namespace {
                            Some(namespace) => format!("{kind} {namespace}/{name}"),
                            None => format!("{kind} {name}"),
                        };
                        if let Some(step) =
                            step_of(&kind, namespace.as_deref(), name, &BTreeMap::new())
                        {
                            drift(&context, step, &what, None).await;
                        }
                    }
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%kind, %error, "watching owned objects; retrying");
                    continue;
                }
            };
            let name = object.name_any();
            let namespace = object.namespace();
            let Some(step) = step_of(&kind, namespace.as_deref(), &name, object.labels()) else {
                continue;
            };
            let what = match &namespace {
                Some(namespace) => format!("{kind} {namespace}/{name}"),
                None => format!("{kind} {name}"),
            };
            if deleted {
                drift(&context, step, &what, None).await;
            } else {
                modified(&context, step, &kind, &name, &what).await;
            }
        }
    })
}

/// A changed owned object of a ready backend: drift when it no longer carries what the
/// operator applies (see `modified.rs`).
async fn modified(context: &Context, step: ProvisionStep, kind: &str, name: &str, what: &str) {
    for key in context.driver.names() {
        let ready = context
            .driver
            .summary(&key)
            .is_some_and(|summary| BackendState::Ready.is(&summary.state));
        if !ready {
            continue;
        }
        match context.executor.modified(&key, kind, name).await {
            Ok(Some(change)) => drift(context, step, what, Some(&change)).await,
            Ok(None) => {}
            Err(error) => {
                context.metrics.error("kubernetes");
                tracing::debug!(object = %what, ?error, "cannot check an owned object for drift");
            }
        }
    }
}

/// Tell every live machine that `what` drifted (deleted, or modified as `change` says),
/// and say so in an Event.
async fn drift(context: &Context, step: ProvisionStep, what: &str, change: Option<&str>) {
    // Events of one reason and action merge into one with a count: the action says
    // which kind of drift, so a modification is not hidden under an earlier deletion.
    let (how, action) = match change {
        None => ("was deleted".to_string(), "Recreate"),
        Some(change) => (format!("was modified ({change})"), "Reapply"),
    };
    for key in context.driver.names() {
        let Some(summary) = context.driver.summary(&key) else {
            continue;
        };
        if !matches!(
            BackendState::of(&summary.state),
            Some(BackendState::Ready | BackendState::Provisioning)
        ) {
            continue;
        }
        tracing::info!(backend = %key, object = %what, "owned object {how}: applying again");
        if let Err(error) = context.driver.send(&key, Event::DriftDetected(step)).await {
            tracing::warn!(backend = %key, %error, "cannot report drift");
            continue;
        }
        if let Some((namespace, name)) = key.split_once('/') {
            let api: Api<NVCFBackend> = Api::namespaced(context.client.clone(), namespace);
            if let Ok(Some(backend)) = api.get_opt(name).await {
                context
                    .executor
                    .event(
                        &backend.object_ref(&()),
                        true,
                        "DriftDetected",
                        &format!("{action}{}", <&str>::from(step)),
                        format!(
                            "{what} {how}; the operator applies step {} again",
                            <&str>::from(step)
                        ),
                    )
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["nvca-operator"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().run
    }

    const DTO: &str = r#"
clusterId: "dto-id"
clusterGroupId: ""
clusterName: "ncp-local"
clusterGroupName: "nvcf-default"
ncaID: "nca-1"
nvcaVersion: "2.52.1"
cloudProvider: "NCP"
region: "us-west-1"
capabilities: ["DynamicGPUDiscovery","KAIScheduler"]
icmsConfig:
  icmsServiceURL: "http://sis.sis.svc.cluster.local:8080"
agent:
  natsURL: "nats://nats.nats-system.svc.cluster.local:4222"
"#;

    #[test]
    fn registration_ids_win_over_flags_and_the_dto() {
        let registered = RegisteredIds {
            cluster_id: "reg-id".into(),
            cluster_group_id: "reg-group".into(),
        };
        let (name, spec) = desired_spec(
            "nvca-operator",
            DTO,
            &registered,
            &args(&["--cluster-id", "flag-id"]),
        )
        .unwrap();
        assert_eq!(name, "ncp-local");
        assert_eq!(spec["clusterConfig"]["clusterID"], "reg-id");
        assert_eq!(spec["clusterConfig"]["clusterGroupID"], "reg-group");
        assert_eq!(
            spec["agentConfig"]["natsURL"],
            "nats://nats.nats-system.svc.cluster.local:4222"
        );
        assert_eq!(spec["featureGate"]["values"][1], "KAIScheduler");
        assert_eq!(spec["clusterSource"], "self-hosted");

        let (_, spec) = desired_spec(
            "nvca-operator",
            DTO,
            &RegisteredIds::default(),
            &args(&["--cluster-id", "flag-id"]),
        )
        .unwrap();
        assert_eq!(spec["clusterConfig"]["clusterID"], "flag-id");
        let (_, spec) =
            desired_spec("nvca-operator", DTO, &RegisteredIds::default(), &args(&[])).unwrap();
        assert_eq!(spec["clusterConfig"]["clusterID"], "dto-id");
        assert!(spec["clusterConfig"].get("clusterGroupID").is_none());
    }

    #[test]
    fn the_spec_builds_a_complete_backend_config() {
        let registered = RegisteredIds {
            cluster_id: "c-1".into(),
            cluster_group_id: "g-1".into(),
        };
        let (name, spec) = desired_spec("nvca-operator", DTO, &registered, &args(&[])).unwrap();
        let mut backend = NVCFBackend::new(&name, serde_json::from_value(spec).unwrap());
        backend.metadata.namespace = Some("nvca-operator".into());
        let config = crate::kube::resources::BackendConfig::from_backend(
            &backend,
            &settings(&args(&["--image-pull-secrets", "regcred,other"])).unwrap(),
        )
        .unwrap();
        assert_eq!(config.cluster_id, "c-1");
        assert_eq!(config.image, "nvcr.io/nvidia/nvcf-byoc/nvca:2.52.1");
        assert_eq!(config.settings.image_pull_secrets, ["regcred", "other"]);
        assert!(config.settings.gxcache && config.settings.vault);
    }

    #[test]
    fn env_overrides_are_nvidias_base64_json_and_a_bad_one_names_the_chart_key() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(r#"{"A":"1","B":"two"}"#);
        let read = settings(&args(&["--function-env-overrides-b64", &b64])).unwrap();
        assert_eq!(
            read.function_env_overrides,
            BTreeMap::from([("A".into(), "1".into()), ("B".into(), "two".into())])
        );
        assert!(read.task_env_overrides.is_empty());
        for bad in ["not base64!", "WzFd"] {
            let message = settings(&args(&["--task-env-overrides-b64", bad]))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains("--task-env-overrides-b64")
                    && message.contains("agent.taskEnvOverrides"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_charts_agent_tolerations_reach_the_spec_as_nvidias_mapper_puts_them() {
        let dto = format!(
            "{DTO}  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: nvca\n    effect: NoSchedule\n"
        );
        let (_, spec) =
            desired_spec("nvca-operator", &dto, &RegisteredIds::default(), &args(&[])).unwrap();
        assert_eq!(
            spec["agentConfig"]["tolerations"],
            json!([{"key": "dedicated", "operator": "Equal", "value": "nvca", "effect": "NoSchedule"}])
        );
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(r#"[{"key":"k","operator":"Exists"}]"#);
        let settings = settings(&args(&["--agent-tolerations-b64", &b64])).unwrap();
        assert_eq!(settings.agent_tolerations[0].key.as_deref(), Some("k"));
    }

    #[test]
    fn bad_names_and_dtos_say_how_to_fix_them() {
        let bad = DTO.replace("\"ncp-local\"", "\"NCP_Local\"");
        let message = desired_spec("nvca-operator", &bad, &RegisteredIds::default(), &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("NCP_Local") && message.contains("clusterName"),
            "{message}"
        );
        let message = desired_spec(
            "nvca-operator",
            "clusterName: [",
            &RegisteredIds::default(),
            &args(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("nvcfbackend-self-managed") && message.contains("cluster-dto.yaml"),
            "{message}"
        );
    }

    #[test]
    fn listen_addresses_take_nvidias_colon_port_form() {
        assert_eq!(
            parse_listen(":8000", "x", "listen").unwrap().to_string(),
            "0.0.0.0:8000"
        );
        assert_eq!(
            parse_listen("127.0.0.1:0", "x", "listen").unwrap().port(),
            0
        );
        let message = parse_listen("eight", "health endpoint", "listen")
            .unwrap_err()
            .to_string();
        assert!(message.contains("--listen"), "{message}");
    }

    #[test]
    fn owned_objects_map_to_their_steps() {
        let none = BTreeMap::new();
        let copy = BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "nvca-mirror".to_string(),
        )]);
        assert_eq!(
            step_of("Deployment", Some("nvca-system"), "nvca", &none),
            Some(ProvisionStep::AgentDeployment)
        );
        assert_eq!(
            step_of("Namespace", None, "nvcf-backend", &none),
            Some(ProvisionStep::RequestsNamespace)
        );
        assert_eq!(
            step_of("Secret", Some("nvca-system"), "regcred", &copy),
            Some(ProvisionStep::PullSecrets)
        );
        assert_eq!(
            step_of("Secret", Some("nvca-system"), "regcred", &none),
            None
        );
        assert_eq!(
            step_of("ConfigMap", Some("nvca-system"), "agent-config", &none),
            Some(ProvisionStep::AgentConfig)
        );
        assert_eq!(
            step_of("ClusterRole", None, "nvca", &none),
            Some(ProvisionStep::Rbac)
        );
        assert_eq!(step_of("Namespace", None, "default", &none), None);
    }
}
