//! `nvca`: the agent, container `agent` of Deployment `nvca` (SIS session, GPU discovery,
//! health, function deployments). NVIDIA's binary name and command line
//! (`/usr/bin/nvca --config /var/run/nvca/config.yaml`), so either operator runs this
//! image; nvca's own flags are optional.

use std::process::ExitCode;

use clap::Parser;
use nvca::agent::{self, RunArgs};

#[derive(Parser)]
#[command(
    name = "nvca",
    version,
    about = "The nvca agent: keeps a GPU cluster registered with NVCF and runs its functions"
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn main() -> ExitCode {
    agent::main(Cli::parse().run)
}
