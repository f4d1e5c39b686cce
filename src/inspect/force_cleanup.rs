//! `nvca-state force-cleanup [--yes]`: prints the plan of `crate::kube::force_cleanup`
//! and, with `--yes`, carries it out.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::kube::force_cleanup::{ForceCleanupError, act, plan};

/// The flags of `force-cleanup`.
#[derive(Clone, Debug, clap::Args)]
pub struct ForceCleanupArgs {
    /// Act; without it only the plan is printed.
    #[arg(long)]
    pub yes: bool,
    /// How long deleted namespaces may take before they are finalized by force, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub wait: Duration,
    /// A kubeconfig file; without it, $KUBECONFIG or the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// The whole command: the plan, and with `--yes` the actions; the text to print.
pub async fn run(args: &ForceCleanupArgs) -> Result<String, ForceCleanupError> {
    let client = crate::kube::client::connect(args.kubeconfig.as_deref(), "operator")
        .await
        .map_err(ForceCleanupError::Kubernetes)?;
    let plan = plan(&client).await?;
    let mut out = plan.render(args.wait);
    if plan.is_empty() {
        return Ok(out);
    }
    if !args.yes {
        out.push_str("Nothing was changed. Run again with --yes to do it.\n");
        return Ok(out);
    }
    out.push_str("Done:\n");
    for line in act(&client, &plan, args.wait).await? {
        let _ = writeln!(out, "  {line}");
    }
    Ok(out)
}
