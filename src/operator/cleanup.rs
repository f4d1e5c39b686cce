//! `nvca-operator-cleanup`: the chart's pre-delete hook (Job
//! `<full name>-pre-delete-cleanup`), so that a plain `helm uninstall` leaves nothing of the
//! agent behind. NVIDIA's is `cmd/nvca-operator-cleanup` (`N/pkg/operator/cleanup/
//! shutdown.go`, `RunShutdownCleanup`); the flags are its.
//!
//! Helm runs the hook before it deletes anything, so the operator is still running:
//! 1. every NVCFBackend in `--namespace` is deleted, and the operator uninstalls in order
//!    (drain, clean-up, finalizer; docs/operator.md#uninstall);
//! 2. the hook waits for them to go, up to `--drain-timeout` (NVIDIA's 6 minutes), and
//!    logs what the operator reports while it waits (its `Ready` condition names what
//!    blocks it: function deployments that remain, a namespace that does not go);
//! 3. whatever is left then (the operator was not running, or deployments did not drain)
//!    is removed as `nvca-state force-cleanup --yes` removes it, as NVIDIA's clean-up
//!    goes on after its drain timeout; a clean uninstall leaves nothing for this step;
//! 4. `--hook-cluster-role-binding-name`, when given, is deleted.
//!
//! NVIDIA's operator holds finalizers on its own ClusterRole, ClusterRoleBinding and
//! ServiceAccount until this hook releases them, and waits for an agent rollout after
//! setting maintenance mode; nvca's does neither, so `--cluster-role-name`,
//! `--cluster-role-binding-name`, `--service-account-name` and `--rollout-timeout` are
//! accepted (the chart passes them) and named once in the log as not needed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;

use crate::kube::crd::NVCFBackend;
use crate::kube::force_cleanup::{self, ForceCleanupError};
use crate::kube::not_found::not_found;
use crate::logging::LogFormat;

/// How often the wait logs what the operator reports.
const REPORT_EVERY: Duration = Duration::from_secs(15);
/// How long namespaces left after the drain timeout may take before they are finalized.
const NAMESPACE_WAIT: Duration = Duration::from_secs(30);

/// NVIDIA's flags of `nvca-operator-cleanup`.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "nvca-operator-cleanup",
    version,
    about = "Uninstall NVCA's agent before `helm uninstall` removes the nvca-operator chart"
)]
pub struct CleanupArgs {
    /// Where the NVCFBackend lives: the operator's namespace.
    #[arg(long, default_value = "nvca-operator")]
    pub namespace: String,
    /// A kubeconfig file; without it, the pod's service account (or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, env = "NVCA_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How long the operator gets to uninstall (function deployments drain in this time).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "6m")]
    pub drain_timeout: Duration,
    /// NVIDIA's wait for an agent rollout; not needed by nvca.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    pub rollout_timeout: Duration,
    /// NVIDIA's operator ClusterRole, whose finalizer its hook removes; nvca's has none.
    #[arg(long, default_value = "nvca-operator")]
    pub cluster_role_name: String,
    /// As --cluster-role-name, for the ClusterRoleBinding.
    #[arg(long, default_value = "nvca-operator")]
    pub cluster_role_binding_name: String,
    /// As --cluster-role-name, for the ServiceAccount.
    #[arg(long, default_value = "nvca-operator")]
    pub service_account_name: String,
    /// A ClusterRoleBinding to delete once the clean-up succeeded (the hook's own).
    #[arg(long, default_value = "")]
    pub hook_cluster_role_binding_name: String,
}

#[derive(Debug, Error)]
pub enum CleanupError {
    #[error("{0}")]
    Kubernetes(String),
    #[error(
        "{doing}: {reason}; check that the hook's ClusterRole <release>-pre-delete-cleanup allows it, or run `nvca-state force-cleanup --yes` with a cluster-admin kubeconfig and then `helm uninstall --no-hooks`"
    )]
    Api { doing: String, reason: String },
    #[error("{0}")]
    ForceCleanup(#[from] ForceCleanupError),
}

impl CleanupError {
    pub fn category(&self) -> &'static str {
        match self {
            CleanupError::Kubernetes(_) => "kubernetes",
            CleanupError::Api { .. } => "api",
            CleanupError::ForceCleanup(error) => error.category(),
        }
    }
}

fn api_error(doing: String) -> impl FnOnce(kube::Error) -> CleanupError {
    move |error| CleanupError::Api {
        doing,
        reason: error.to_string(),
    }
}

/// The whole command, for the binary.
pub fn main(args: CleanupArgs) -> ExitCode {
    crate::logging::init(&args.log_level, args.log_format);
    crate::process::block_on("nvca-operator-cleanup", run(&args), CleanupError::category)
}

/// Uninstall: through the operator first, by force for what it left.
pub async fn run(args: &CleanupArgs) -> Result<(), CleanupError> {
    tracing::info!(
        cluster_role = %args.cluster_role_name,
        cluster_role_binding = %args.cluster_role_binding_name,
        service_account = %args.service_account_name,
        rollout_timeout = ?args.rollout_timeout,
        "nvca's operator holds no finalizers on its RBAC and waits on no agent rollout: these flags are not needed"
    );
    let client = crate::kube::client::connect(args.kubeconfig.as_deref(), "cleanup hook")
        .await
        .map_err(CleanupError::Kubernetes)?;
    let backends: Api<NVCFBackend> = Api::namespaced(client.clone(), &args.namespace);
    let names = delete_backends(&backends, &args.namespace).await?;
    let left = wait_gone(&backends, &names, args.drain_timeout).await?;
    if !left.is_empty() {
        tracing::warn!(
            backends = ?left,
            timeout = %humantime::format_duration(args.drain_timeout),
            "the operator did not finish uninstalling in time; removing what is left by force"
        );
    }
    let plan = force_cleanup::plan(&client).await?;
    if plan.is_empty() {
        tracing::info!("nothing of NVCA's agent is left");
    } else {
        tracing::info!(plan = %plan.render(NAMESPACE_WAIT), "removing what is left");
        for done in force_cleanup::act(&client, &plan, NAMESPACE_WAIT).await? {
            tracing::info!("{done}");
        }
    }
    delete_hook_binding(&client, &args.hook_cluster_role_binding_name).await?;
    tracing::info!("NVCA operator cleanup complete");
    Ok(())
}

/// Delete every NVCFBackend of the namespace; their names.
async fn delete_backends(
    backends: &Api<NVCFBackend>,
    namespace: &str,
) -> Result<Vec<String>, CleanupError> {
    let listed = match backends.list(&ListParams::default()).await {
        Ok(list) => list.items,
        // No NVCFBackend CRD: nothing was ever installed.
        Err(error) if not_found(&error) => Vec::new(),
        Err(error) => {
            return Err(api_error(format!("listing NVCFBackends in {namespace}"))(
                error,
            ));
        }
    };
    let mut names = Vec::new();
    for backend in listed {
        let name = backend.name_any();
        match backends.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(nvcfbackend = %name, "deleted; the operator uninstalls the agent")
            }
            Err(error) if not_found(&error) => continue,
            Err(error) => {
                return Err(api_error(format!(
                    "deleting NVCFBackend {namespace}/{name}"
                ))(error));
            }
        }
        names.push(name);
    }
    if names.is_empty() {
        tracing::info!(%namespace, "no NVCFBackend to uninstall");
    }
    Ok(names)
}

/// Wait up to `timeout` for the NVCFBackends to go; the names still there.
async fn wait_gone(
    backends: &Api<NVCFBackend>,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<String>, CleanupError> {
    let deadline = Instant::now() + timeout;
    let mut next_report = Instant::now() + REPORT_EVERY;
    loop {
        let mut left = Vec::new();
        for name in names {
            let current = backends
                .get_opt(name)
                .await
                .map_err(api_error(format!("reading NVCFBackend {name}")))?;
            if let Some(backend) = current {
                if Instant::now() >= next_report {
                    tracing::info!(nvcfbackend = %name, reports = %progress(&backend), "waiting for the operator");
                }
                left.push(name.clone());
            }
        }
        if Instant::now() >= next_report {
            next_report = Instant::now() + REPORT_EVERY;
        }
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the operator's conditions say, for the log.
fn progress(backend: &NVCFBackend) -> String {
    let conditions = backend
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    if conditions.is_empty() {
        return "no status yet (is the operator running?)".to_string();
    }
    conditions
        .iter()
        .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn delete_hook_binding(client: &Client, name: &str) -> Result<(), CleanupError> {
    if name.is_empty() {
        return Ok(());
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    match bindings.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(cluster_role_binding = %name, "removed the hook's binding"),
        Err(error) if not_found(&error) => {}
        Err(error) => {
            return Err(api_error(format!("deleting ClusterRoleBinding {name}"))(
                error,
            ));
        }
    }
    Ok(())
}
