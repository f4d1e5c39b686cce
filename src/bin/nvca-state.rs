//! `nvca-state`: inspect the persistent machines of nvca.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::inspect::doctor::{self, DoctorArgs};
use nvca::inspect::force_cleanup::{self, ForceCleanupArgs};
use nvca::inspect::{Format, Source, load_snapshot, render_dump, render_show};
use nvca::machines::{Kind, Timestamp};

#[derive(Parser)]
#[command(
    name = "nvca-state",
    version,
    about = "What nvca's machines are doing, and why"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct SourceArgs {
    /// The store directory of the operator or agent. Read directly when no process holds
    /// it, otherwise through the admin endpoint of the process that does.
    #[arg(long, env = "NVCA_STORE", default_value = "/var/lib/nvca")]
    store: PathBuf,
    /// The admin endpoint of a running operator or agent (host:port); overrides --store.
    #[arg(long, env = "NVCA_ADMIN")]
    admin: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Format,
}

impl SourceArgs {
    fn source(&self) -> Source {
        match &self.admin {
            Some(address) => Source::Admin(address.clone()),
            None => Source::Store(self.store.clone()),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Every machine: kind, name, state, since when, last event, pending effects, retries, last error.
    Dump {
        #[command(flatten)]
        source: SourceArgs,
        /// Only machines of this kind: cluster, backend, function or session.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<Kind>,
    },
    /// One machine with its pending effects and recent history. KEY is kind/name, as dump lists it.
    Show {
        key: String,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// The guide's last resort when an uninstall is stuck: force-delete function pods,
    /// strip NVCA's finalizers, delete and finalize NVCA's namespaces. Prints the plan;
    /// acts only with --yes.
    ForceCleanup(ForceCleanupArgs),
    /// What is wrong and what to do: stuck or failing machines, the registration, each
    /// NVCFBackend's conditions, namespaces stuck Terminating, webhooks without their
    /// Service, the agent's Deployment. Exits 1 when a check failed.
    Doctor(DoctorArgs),
}

fn parse_kind(name: &str) -> Result<Kind, String> {
    Kind::parse(name).ok_or_else(|| format!("unknown kind {name:?}: use {}", Kind::choices()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let now = Timestamp::now();
    // Doctor prints its report either way; a failed check makes the exit status 1.
    let (output, failed) = match &cli.command {
        Command::Dump { source, kind } => (
            match load_snapshot(&source.source(), *kind).await {
                Ok(snapshot) => render_dump(&snapshot, source.output, now),
                Err(error) => Err(error),
            }
            .map_err(|error| error.to_string()),
            false,
        ),
        Command::Show { key, source } => {
            let kind = key.split('/').next().and_then(Kind::parse);
            (
                match load_snapshot(&source.source(), kind).await {
                    Ok(snapshot) => render_show(&snapshot, key, source.output, now),
                    Err(error) => Err(error),
                }
                .map_err(|error| error.to_string()),
                false,
            )
        }
        Command::ForceCleanup(args) => (
            force_cleanup::run(args)
                .await
                .map_err(|error| format!("force-cleanup: {error}")),
            false,
        ),
        Command::Doctor(args) => {
            let (report, failed) = doctor::run(args).await;
            (Ok(report), failed)
        }
    };
    match output {
        Ok(text) => {
            print!("{text}");
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("nvca-state: {error}");
            ExitCode::FAILURE
        }
    }
}
