//! `nvca-mirror run`: the chart's `nvca-mirror` container (NVIDIA's `cmd/nvca-mirror`
//! binary and subcommand): copies the Secrets named in `imagePullSecrets` into
//! `nvca-system` and keeps them in sync.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::operator::mirror::{self, MirrorArgs};

#[derive(Parser)]
#[command(
    name = "nvca-mirror",
    version,
    about = "Mirror the chart's image pull secrets into NVCA's system namespace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy the Secrets named in imagePullSecrets into nvca-system and keep them in sync.
    Run(MirrorArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => mirror::main(args),
    }
}
