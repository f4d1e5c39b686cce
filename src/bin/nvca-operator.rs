//! `nvca-operator`: the operator's binary. Subcommands: `bootstrap` (register the cluster
//! with SIS; the init container `nvca-self-managed-bootstrap`), `crds` (print the CRDs),
//! `run` (the NVCFBackend loop), `mirror` (the `nvca-mirror` container) and
//! `bootstrap-watch` (the `nvca-bootstrap-watch` container).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::operator::bootstrap::{self, BootstrapArgs};
use nvca::operator::bootstrap_watch::{self, BootstrapWatchArgs};
use nvca::operator::mirror::{self, MirrorArgs};
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
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Keep the NVCFBackend and NVCA's agent: provision, repair, report health, uninstall.
    Run(Box<RunArgs>),
    /// Copy the Secrets named in imagePullSecrets into nvca-system and keep them in sync
    /// (the nvca-mirror container).
    Mirror(MirrorArgs),
    /// Keep ConfigMap nvca-cluster-registration filled: run the bootstrap again whenever
    /// its IDs go missing (the nvca-bootstrap-watch container).
    BootstrapWatch(Box<BootstrapWatchArgs>),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bootstrap(args) => bootstrap::main(args, "nvca-operator"),
        Command::Run(args) => run::main(*args),
        Command::Mirror(args) => mirror::main(args),
        Command::BootstrapWatch(args) => bootstrap_watch::main(*args),
        Command::Crds => match nvca::kube::crd::to_yaml(&nvca::kube::crd::all()) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("nvca-operator crds: cannot render the CRDs as YAML: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
