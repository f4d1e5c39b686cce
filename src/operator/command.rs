//! What the operator's long-running commands (`nvca-operator run`, `nvca-mirror run`,
//! `nvca-operator-cleanup`) do around their async body: one runtime, and a failure told
//! twice, as a record for log pipelines and as one plain line on stderr.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Run `body` to its end; `program` names the command in the plain line, `category`
/// labels the record.
pub fn block_on<E: Display>(
    program: &str,
    body: impl Future<Output = Result<(), E>>,
    category: impl Fn(&E) -> &'static str,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(category = category(&error), "{error}");
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}
