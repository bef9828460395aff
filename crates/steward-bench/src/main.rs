//! `steward-bench`: Docker benchmarks of the Steward daemon, each measured side by side with
//! a baseline of direct engine calls in the same run, on 127.0.0.1 and the local engine
//! socket only.
//!
//! Subcommands:
//!
//! - `docker-cycle` — latency of one restart cycle (API accept → new container running and
//!   recorded) vs. the same container replacement made directly with bollard;
//! - `docker-throughput` — restart cycles/s with 16 workspaces restarting continuously vs.
//!   direct cycles under the same cap of engine calls in flight;
//! - `docker-reconcile` — start-up reconcile of 1 000 unchanged workspaces vs. one labelled
//!   list call, with a count of the engine calls the boot makes (through a counting proxy);
//! - `cleanup` — removes containers left by an interrupted run of this tool (owner labels
//!   starting with `steward-bench-`), and nothing else.
//!
//! Each prints JSON lines (stdout) as results come in and a markdown table at the end;
//! progress goes to stderr. Every run is bounded (`--timeout`) and removes its containers and
//! stops its daemons however it ends (error, timeout, Ctrl-C, SIGTERM).
//!
//! This is a binary that drives the daemon from outside: it starts the release `steward`
//! binary as a child process and talks to it over HTTP, like `tests/` does; it does not link
//! the daemon's crates.

mod cpu;
mod cycle;
mod daemon;
mod engine;
mod proxy;
mod reconcile;
mod report;
mod session;
mod throughput;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use session::Session;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Docker benchmarks of Steward against direct engine calls, in the same run.
#[derive(Debug, Parser)]
#[command(name = "steward-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The daemon binary (a release build).
    #[arg(
        long,
        env = "STEWARD_BIN",
        default_value = "target/release/steward",
        global = true
    )]
    steward: PathBuf,
    /// The agent image, present on the engine (scripts/image.sh builds it; never pulled).
    #[arg(long, default_value = "steward-agent:dev", global = true)]
    image: String,
    /// The engine's Unix socket.
    #[arg(long, default_value = "/var/run/docker.sock", global = true)]
    socket: PathBuf,
    /// `[providers.docker] max_concurrent_ops` of the daemon, and the cap of the baselines.
    #[arg(long, default_value_t = 4, global = true)]
    max_concurrent_ops: usize,
    /// Upper bound of the whole subcommand (clean-up comes on top).
    #[arg(long, value_parser = humantime::parse_duration, global = true)]
    timeout: Option<Duration>,
    /// Keep the temporary directory (daemon logs, data dirs) even when the run succeeds.
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Latency of one restart cycle of a Docker workspace vs. direct engine calls.
    DockerCycle(cycle::CycleArgs),
    /// Restart cycles/s with many workspaces restarting continuously vs. direct cycles.
    DockerThroughput(throughput::ThroughputArgs),
    /// Start-up reconcile of many unchanged workspaces vs. one labelled list call.
    DockerReconcile(reconcile::ReconcileArgs),
    /// Removes containers left by interrupted runs of this tool.
    Cleanup,
}

impl Command {
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(match self {
            Command::DockerCycle(_) => 20 * 60,
            Command::DockerThroughput(_) => 15 * 60,
            Command::DockerReconcile(_) => 60 * 60,
            Command::Cleanup => 10 * 60,
        })
    }
}

/// Upper bound of the clean-up after a run.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("steward-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steward-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let timeout = cli.timeout.unwrap_or_else(|| cli.command.default_timeout());
    if let Command::Cleanup = cli.command {
        let docker = engine::connect(&cli.socket).await?;
        let removed = tokio::time::timeout(timeout, engine::remove_leftovers(&docker))
            .await
            .map_err(|_| anyhow!("clean-up timed out after {timeout:?}"))??;
        eprintln!("cleanup: removed {removed} containers of earlier runs");
        return Ok(());
    }
    let session = Session::open(cli.steward, cli.socket, cli.image, cli.max_concurrent_ops).await?;
    eprintln!(
        "steward-bench: run {} in {}",
        session.id,
        session.dir.path().display()
    );
    let scenario = async {
        match &cli.command {
            Command::DockerCycle(args) => cycle::run(&session, args).await,
            Command::DockerThroughput(args) => throughput::run(&session, args).await,
            Command::DockerReconcile(args) => reconcile::run(&session, args).await,
            Command::Cleanup => Ok(()),
        }
    };
    // The scenario's future owns its daemons: when it ends or is dropped (timeout, signal),
    // they are stopped (SIGKILL on drop if the scenario did not stop them itself).
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, scenario) => {
            outcome.unwrap_or_else(|_| Err(anyhow!("timed out after {timeout:?}")))
        }
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    let cleaned = tokio::time::timeout(CLEANUP_TIMEOUT, session.cleanup()).await;
    match cleaned {
        Ok(Ok(n)) => eprintln!("steward-bench: removed {n} containers"),
        Ok(Err(e)) => {
            eprintln!("steward-bench: clean-up failed: {e:#} (run `steward-bench cleanup`)")
        }
        Err(_) => eprintln!("steward-bench: clean-up timed out (run `steward-bench cleanup`)"),
    }
    if cli.keep || outcome.is_err() {
        let path = session.dir.keep();
        eprintln!("steward-bench: logs and data kept in {}", path.display());
    }
    outcome
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
