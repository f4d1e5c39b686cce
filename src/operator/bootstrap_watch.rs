//! `nvca-operator bootstrap-watch` (container `nvca-bootstrap-watch`): keeps ConfigMap
//! `nvca-cluster-registration` filled while the operator runs.
//!
//! NVIDIA's guide has two manual steps around the registration: after a manual
//! re-registration, restart the operator ("it caches the cluster IDs at startup"); and
//! when the ConfigMap shows empty IDs, run the bootstrap by hand. In nvca the first is
//! gone in `nvca-operator run` itself: it watches the ConfigMap and writes new IDs into
//! the NVCFBackend, which re-applies `agent-config` and the agent's token audience (see
//! `run.rs`; tested in `tests/operator.rs`). This container takes the second: whenever
//! the ConfigMap is missing or lacks `clusterId`/`clusterGroupId` (deleted, emptied, or
//! the bootstrap never finished), it runs the same bootstrap as the init container, which
//! asks SIS by name first and so never registers the cluster twice, and retries every
//! `--retry-interval` until the IDs are there. A change from one set of IDs to another (a
//! manual re-registration) is logged and left alone: `run` applies it.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, ResourceExt};

use super::REGISTRATION_CONFIGMAP;
use super::bootstrap::{self, BootstrapArgs};
use crate::kube::registration::RegisteredIds;
use crate::process::wait_for_signal;

/// The flags of `bootstrap-watch`: the bootstrap's, and how often a failed one is retried.
#[derive(Clone, Debug, clap::Args)]
pub struct BootstrapWatchArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// How long to wait after a bootstrap that did not fill the ConfigMap, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub retry_interval: Duration,
}

/// The whole command, for the binary.
pub fn main(args: BootstrapWatchArgs) -> ExitCode {
    bootstrap::init_logging(args.bootstrap.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nvca-operator bootstrap-watch: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nvca-operator bootstrap-watch: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Keep the registration until SIGTERM or Ctrl-C.
pub async fn run(args: BootstrapWatchArgs) -> Result<(), String> {
    let client = crate::kube::client::connect(args.bootstrap.kubeconfig.as_deref(), "operator")
        .await
        .map_err(|error| error.to_string())?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &args.bootstrap.system_namespace);
    tracing::info!(namespace = %args.bootstrap.system_namespace, "watching {REGISTRATION_CONFIGMAP}");
    tokio::select! {
        () = keep(&args, &configmaps) => Ok(()),
        () = wait_for_signal() => {
            tracing::info!("stopping bootstrap-watch");
            Ok(())
        }
    }
}

async fn keep(args: &BootstrapWatchArgs, configmaps: &Api<ConfigMap>) {
    let config =
        watcher::Config::default().fields(&format!("metadata.name={REGISTRATION_CONFIGMAP}"));
    let mut events = kube::runtime::watcher(configmaps.clone(), config)
        .default_backoff()
        .boxed();
    let mut retry = tokio::time::interval(args.retry_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: Option<RegisteredIds> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(WatchEvent::Apply(_) | WatchEvent::Delete(_) | WatchEvent::InitDone)) => {}
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    tracing::debug!(%error, "watch interrupted; it resumes");
                    continue;
                }
                None => return,
            },
            _ = retry.tick() => {}
        }
        let current = match configmaps.get_opt(REGISTRATION_CONFIGMAP).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "cannot read {REGISTRATION_CONFIGMAP}; retrying");
                continue;
            }
        };
        match RegisteredIds::of(current.as_ref()).complete() {
            Some(ids) => {
                if let Some(old) = known.as_ref().filter(|old| **old != ids) {
                    tracing::info!(
                        from = %old.cluster_id, to = %ids.cluster_id, group = %ids.cluster_group_id,
                        "re-registration seen; nvca-operator run applies the new IDs to the NVCFBackend and the agent without a restart"
                    );
                }
                known = Some(ids);
            }
            None => {
                let why = match &current {
                    None => "is missing".to_string(),
                    Some(cm) => format!(
                        "has no complete IDs (resourceVersion {})",
                        cm.resource_version().unwrap_or_default()
                    ),
                };
                tracing::info!("{REGISTRATION_CONFIGMAP} {why}: running the bootstrap");
                match run_bootstrap(&args.bootstrap).await {
                    Ok(()) => {
                        // What it wrote is what later changes are told from, whether or
                        // not its own write comes back as a watch event first.
                        if let Ok(restored) = configmaps.get_opt(REGISTRATION_CONFIGMAP).await {
                            known = RegisteredIds::of(restored.as_ref()).complete();
                        }
                        tracing::info!("registration restored");
                    }
                    Err(error) => tracing::error!(
                        retry_in = ?args.retry_interval,
                        "the bootstrap did not fill {REGISTRATION_CONFIGMAP}: {error}"
                    ),
                }
            }
        }
    }
}

/// A value-enum flag as written on the command line.
fn flag_value<V: clap::ValueEnum>(value: &V) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Run `nvca-operator bootstrap` with the same flags, as a child process: each run then
/// opens and releases the bootstrap's store (sled holds a directory for the life of the
/// process that opened it), and its output joins this container's log.
async fn run_bootstrap(args: &BootstrapArgs) -> Result<(), String> {
    let program = std::env::current_exe()
        .map_err(|error| format!("cannot find this program to run its bootstrap: {error}"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg("bootstrap")
        .arg("--system-namespace")
        .arg(&args.system_namespace)
        .arg("--token-file")
        .arg(&args.token_file)
        .arg("--token-format")
        .arg(flag_value(&args.token_format))
        .arg("--store")
        .arg(&args.store)
        .arg("--timeout")
        .arg(humantime::format_duration(args.timeout).to_string())
        .arg("--admin-listen")
        .arg(args.admin_listen.to_string())
        .arg("--log-format")
        .arg(flag_value(&args.log_format))
        .kill_on_drop(true);
    if let Some(kubeconfig) = &args.kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    let status = command
        .status()
        .await
        .map_err(|error| format!("cannot start the bootstrap: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the bootstrap exited with {status}; its log above says why"
        ))
    }
}
