//! `nvca-operator`: the operator's binary. Subcommands: `bootstrap` (register the cluster
//! with SIS; the init container `nvca-self-managed-bootstrap`), `crds` (print the CRDs, or
//! apply them with `--apply`),
//! `run` (the NVCFBackend loop) and `bootstrap-watch` (the `nvca-bootstrap-watch`
//! container). The `nvca-mirror` container and the chart's pre-delete hook are binaries of
//! their own, as NVIDIA's are: `nvca-mirror`, `nvca-operator-cleanup`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::operator::bootstrap::{self, BootstrapArgs};
use nvca::operator::bootstrap_watch::{self, BootstrapWatchArgs};
use nvca::operator::crds::{self, CrdsArgs};
use nvca::operator::run::{self, RunArgs};

#[derive(Parser)]
#[command(
    name = "nvca-operator",
    version,
    about = "The nvca operator for self-managed NVCF GPU clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register the cluster with SIS and write its IDs into ConfigMap nvca-cluster-registration.
    Bootstrap(BootstrapArgs),
    /// Print the CustomResourceDefinitions as YAML; with --apply, apply those the
    /// operator installs at start and wait until they are served.
    Crds(CrdsArgs),
    /// Keep the NVCFBackend and NVCA's agent: provision, repair, report health, uninstall.
    Run(Box<RunArgs>),
    /// Keep ConfigMap nvca-cluster-registration filled: run the bootstrap again whenever
    /// its IDs go missing (the nvca-bootstrap-watch container).
    BootstrapWatch(Box<BootstrapWatchArgs>),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bootstrap(args) => bootstrap::main(args, "nvca-operator"),
        Command::Run(args) => run::main(*args),
        Command::BootstrapWatch(args) => bootstrap_watch::main(*args),
        Command::Crds(args) => crds::main(args),
    }
}
