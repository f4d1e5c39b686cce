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
//!
//! This file holds the flags and the wiring; the jobs are beside it: [`backend_spec`] (the
//! NVCFBackend from the chart's ConfigMaps), [`watches`] (what feeds the machines),
//! [`drift`] (owned objects changed or deleted), [`health_server`].

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

mod backend_spec;
mod drift;
mod health_server;
mod watches;

use backend_spec::*;
pub use backend_spec::{RegisteredIds, SpecError, desired_spec};
use drift::*;
use health_server::*;
use watches::*;

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

#[cfg(test)]
mod tests;
