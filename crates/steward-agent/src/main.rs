//! `steward-agent`: the reference agent binary.
//!
//! A thin shell over the library: reads the environment, installs logging to stderr and the
//! SIGTERM/SIGINT handlers, and maps the run's outcome to the exit code (0 shutdown, 1 fault,
//! 2 configuration error, 3 superseded, 4 rejected). All behaviour lives in `steward_agent`.

use std::io::IsTerminal;
use std::process::ExitCode;

use steward_agent::{Config, CONFIG_ERROR_CODE};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // Otherwise a closed stderr makes tracing-subscriber's own eprintln! panic the agent.
        .log_internal_errors(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = match Config::from_process_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("steward-agent: configuration error: {err}");
            return ExitCode::from(CONFIG_ERROR_CODE);
        }
    };
    // Installed before anything starts, so a signal is never lost or fatal by default.
    let signals = signal(SignalKind::terminate())
        .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    let (mut term, mut int) = match signals {
        Ok(signals) => signals,
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
        }
    };

    match steward_agent::run(config, shutdown).await {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            tracing::error!(error = %err, "agent failed");
            ExitCode::FAILURE
        }
    }
}
