//! `nvca-self-managed`: the name NVIDIA's image gives the bootstrap, so the guide's manual
//! re-registration works as written:
//! `kubectl exec -n nvca-operator deploy/nvca-operator -c nvca-operator --
//!  /usr/bin/nvca-self-managed bootstrap --system-namespace nvca-operator`.
//! The same command as `nvca-operator bootstrap`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::operator::bootstrap::{self, BootstrapArgs};

#[derive(Parser)]
#[command(
    name = "nvca-self-managed",
    version,
    about = "Register a self-managed cluster with SIS (same as `nvca-operator bootstrap`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register the cluster with SIS and write its IDs into ConfigMap nvca-cluster-registration.
    Bootstrap(BootstrapArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bootstrap(args) => bootstrap::main(args, "nvca-self-managed"),
    }
}
