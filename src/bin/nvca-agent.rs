//! `nvca-agent`: the agent's binary, the image of Deployment `nvca` in `nvca-system`.
//! `run` is container `agent` (SIS session, GPU discovery, health, function deployments);
//! `webhook` is container `webhook` (the admission webhooks on 8443).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvca::agent::{self, RunArgs};
use nvca::webhook::{self, WebhookArgs};

#[derive(Parser)]
#[command(
    name = "nvca-agent",
    version,
    about = "The nvca agent: keeps a GPU cluster registered with NVCF and runs its functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent from its config.yaml (ConfigMap agent-config).
    Run(Box<RunArgs>),
    /// Serve the admission webhooks over TLS.
    Webhook(Box<WebhookArgs>),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => agent::main(*args),
        Command::Webhook(args) => webhook::main(*args),
    }
}
