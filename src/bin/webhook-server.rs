//! `webhook-server`: the admission webhooks on 8443, container `webhook` of Deployment
//! `nvca`. NVIDIA's binary name and command line
//! (`/usr/bin/webhook-server --config /var/run/nvca/config.yaml`), so either operator
//! runs this image; nvca's own flags are optional.

use std::process::ExitCode;

use clap::Parser;
use nvca::webhook::{self, WebhookArgs};

#[derive(Parser)]
#[command(
    name = "webhook-server",
    version,
    about = "The nvca admission webhooks for NVCF function pods"
)]
struct Cli {
    #[command(flatten)]
    args: WebhookArgs,
}

fn main() -> ExitCode {
    webhook::main(Cli::parse().args)
}
