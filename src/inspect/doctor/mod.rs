//! `nvca-state doctor`: what is wrong, and what to do about it, in one list.
//!
//! Two sources, each optional: the machines of a store (as `dump` reads them) and the
//! cluster (through a kubeconfig). Each check is a pure function of what was read; every
//! finding names the thing and, when something is wrong, the fix. The exit status is 1
//! when any check failed, so a script can gate on it.

mod cluster;
mod machines;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{Format, Source, load_snapshot};
use crate::machines::Timestamp;

pub use cluster::{ClusterFacts, check_cluster, gather};
pub use machines::check_machines;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Fail,
    Warn,
    Ok,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Fail => "FAIL",
            Severity::Warn => "WARN",
            Severity::Ok => "OK",
        }
    }
}

/// One thing checked: what, how it is, and what to do when it is not well.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Ok,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(subject: impl Into<String>, message: impl Into<String>, fix: &str) -> Finding {
        Finding {
            severity: Severity::Warn,
            subject: subject.into(),
            message: message.into(),
            fix: Some(fix.to_string()),
        }
    }

    pub fn fail(subject: impl Into<String>, message: impl Into<String>, fix: &str) -> Finding {
        Finding {
            severity: Severity::Fail,
            subject: subject.into(),
            message: message.into(),
            fix: Some(fix.to_string()),
        }
    }
}

/// The flags of `doctor`.
#[derive(Clone, Debug, clap::Args)]
pub struct DoctorArgs {
    /// The store directory of the operator or agent; its machines are checked when it
    /// exists (read directly, or through the admin endpoint of the process holding it).
    #[arg(long, env = "NVCA_STORE", default_value = "/var/lib/nvca")]
    pub store: PathBuf,
    /// The admin endpoint of a running operator or agent (host:port); overrides --store.
    #[arg(long, env = "NVCA_ADMIN")]
    pub admin: Option<String>,
    /// A kubeconfig file; without it, $KUBECONFIG or the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace the chart was installed in.
    #[arg(long, default_value = "nvca-operator")]
    pub operator_namespace: String,
    /// How long one of NVCA's namespaces may take to go before it counts as stuck.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub stuck_after: Duration,
    /// Output format (table or json).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

/// The report, and whether any check failed.
pub async fn run(args: &DoctorArgs) -> (String, bool) {
    let now = Timestamp::now();
    let mut findings = Vec::new();
    let source = match &args.admin {
        Some(address) => Source::Admin(address.clone()),
        None => Source::Store(args.store.clone()),
    };
    match load_snapshot(&source, None).await {
        Ok(snapshot) => findings.extend(check_machines(&snapshot, now)),
        Err(error) => findings.push(Finding::warn(
            "machines",
            format!("not checked: {error}"),
            "run doctor where the store is (in the operator or agent pod), or pass --store or --admin",
        )),
    }
    match crate::kube::client::connect(args.kubeconfig.as_deref(), "operator").await {
        Ok(client) => {
            let facts = gather(&client, &args.operator_namespace).await;
            findings.extend(check_cluster(&facts, now, args.stuck_after));
        }
        Err(error) => findings.push(Finding::warn(
            "cluster",
            format!("not checked: {error}"),
            "pass --kubeconfig with a file that may read NVCA's objects",
        )),
    }
    findings.sort_by_key(|finding| finding.severity);
    let failed = findings.iter().any(|f| f.severity == Severity::Fail);
    let text = match args.output {
        Format::Json | Format::Yaml => serde_json::to_string_pretty(&findings)
            .map(|json| json + "\n")
            .unwrap_or_else(|error| format!("cannot print as JSON: {error}\n")),
        Format::Table => render(&findings),
    };
    (text, failed)
}

/// One line per finding, worst first, the fix under it; a count at the end.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let _ = writeln!(
            out,
            "{:<5} {}: {}",
            finding.severity.label(),
            finding.subject,
            finding.message
        );
        if let Some(fix) = &finding.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let _ = writeln!(
        out,
        "{} failed, {} warning(s), {} ok",
        count(Severity::Fail),
        count(Severity::Warn),
        count(Severity::Ok)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_puts_failures_first_with_their_fix_and_counts() {
        let mut findings = vec![
            Finding::ok("NVCFBackend a/b", "Ready, agent healthy"),
            Finding::fail(
                "namespace nvca-system",
                "Terminating for 5m",
                "force-cleanup",
            ),
        ];
        findings.sort_by_key(|f| f.severity);
        let text = render(&findings);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "FAIL  namespace nvca-system: Terminating for 5m");
        assert_eq!(lines[1], "      fix: force-cleanup");
        assert_eq!(lines[2], "OK    NVCFBackend a/b: Ready, agent healthy");
        assert_eq!(lines[3], "1 failed, 0 warning(s), 1 ok");
    }
}
