//! `nvca-operator-cleanup`: the chart's pre-delete hook; see `nvca::operator::cleanup`.

use std::process::ExitCode;

use clap::Parser;
use nvca::operator::cleanup::{self, CleanupArgs};

fn main() -> ExitCode {
    cleanup::main(CleanupArgs::parse())
}
