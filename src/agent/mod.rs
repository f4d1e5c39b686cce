//! The agent (`nvca-agent run`, container `agent` of Deployment `nvca`): keeps the cluster
//! registered with SIS and tells it what GPUs it has; serves health, version and metrics
//! on `:8000`; hands [`context::AgentContext`] to function deployments.
//!
//! - [`config`]: config.yaml (ConfigMap `agent-config`) into settings.
//! - [`maintenance`]: the maintenance mode from the feature flags.
//! - [`context`]: what the parts beside the SIS session share.
//!
//! docs/agent.md lists each contract with the NVIDIA file it came from.

pub mod config;
pub mod context;
pub mod maintenance;

use std::path::PathBuf;
use std::process::ExitCode;

pub use context::AgentContext;

/// The flags of `nvca-agent run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The agent's config.yaml, as the operator renders it into ConfigMap agent-config.
    #[arg(long, default_value = crate::kube::agent_config::PATH)]
    pub config: PathBuf,
}

pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("nvca-agent run: not built yet (issue 6)");
    ExitCode::FAILURE
}
