//! How every nvca process runs: one async runtime around the command's body, the
//! failure told where it is read, and the stop signal. The long-running commands
//! (`nvca-operator run`, `nvca`, `webhook-server`, `nvca-mirror run`,
//! `nvca-operator-cleanup`, `sis-sim serve`) tell a failure twice, as a record for log
//! pipelines and as one plain line on stderr ([`block_on`]); the registration commands
//! (`bootstrap`, `register`, `rotate`) set up their logging, tell it once in the format
//! asked for, and exit with the error's own code ([`run_with_exit_codes`]).

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::logging::LogFormat;

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

/// Run `body` on a fresh runtime with logging set up in `format`; a failure is one plain
/// line on stderr (`text`) or a record (`json`), and `code` gives its exit code and
/// category. A runtime that cannot start exits 3 (an input of the machine is wrong).
pub fn run_with_exit_codes<T, E: Display>(
    program: &str,
    format: LogFormat,
    body: impl Future<Output = Result<T, E>>,
    code: impl Fn(&E) -> (u8, &'static str),
) -> ExitCode {
    crate::logging::init("info", format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(body) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            let (exit, category) = code(&error);
            match format {
                LogFormat::Text => eprintln!("{program}: {error}"),
                LogFormat::Json => tracing::error!(category, "{error}"),
            }
            ExitCode::from(exit)
        }
    }
}

/// A listen address as NVIDIA's flags write it: `:8000` (every interface) or `host:port`.
pub fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .map_err(|error| format!("not host:port ({error})"))
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
