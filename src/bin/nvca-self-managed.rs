//! `nvca-self-managed`: the self-managed cluster's registration commands.
//!
//! - `bootstrap`: the name NVIDIA's image gives the bootstrap, so the guide's manual
//!   re-registration works as written:
//!   `kubectl exec -n nvca-operator deploy/nvca-operator -c nvca-operator --
//!    /usr/bin/nvca-self-managed bootstrap --system-namespace nvca-operator`.
//!   The same command as `nvca-operator bootstrap`.
//! - `register` and `rotate`: NVIDIA's `nvcf-cli cluster register` and `cluster rotate`,
//!   the current (PSAT) path, for users without NVIDIA's CLI (docs/bootstrap.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::operator::bootstrap::{self, BootstrapArgs};
use nvca::operator::register::{self, RegisterArgs};
use nvca::operator::rotate::{self, RotateArgs};

#[derive(Parser)]
#[command(
    name = "nvca-self-managed",
    version,
    about = "Register a self-managed cluster with SIS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register the cluster with SIS and write its IDs into ConfigMap nvca-cluster-registration
    /// (same as `nvca-operator bootstrap`).
    Bootstrap(BootstrapArgs),
    /// Register the cluster with SIS together with its OIDC issuer and JWKS, and write the
    /// register-values file for the operator chart (NVIDIA's `nvcf-cli cluster register`).
    Register(RegisterArgs),
    /// Replace the OIDC issuer and JWKS SIS holds for a cluster with the cluster's current
    /// ones (NVIDIA's `nvcf-cli cluster rotate`).
    Rotate(RotateArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bootstrap(args) => bootstrap::main(args, "nvca-self-managed"),
        Command::Register(args) => register::main(args, "nvca-self-managed"),
        Command::Rotate(args) => rotate::main(args, "nvca-self-managed"),
    }
}
