//! `steward`: the daemon (`steward serve`) and its CLI client (`steward ws ...`,
//! `steward admin ...`, in `cli`). A thin shell: the library crates do the work; this crate
//! parses flags, layers configuration, wires the pieces and handles signals. `anyhow` lives
//! here and nowhere else.

mod cli;
mod config;
mod files;
mod logging;
mod prometheus;
mod serve;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The daemon allocates small, short-lived values on every request (intents, commit rows,
/// events) from several threads; glibc's allocator was a seventh of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Steward keeps agent workspaces alive, race-free.
#[derive(Parser)]
#[command(name = "steward", version, about)]
struct Cli {
    /// Options of the client commands; also accepted after them.
    #[command(flatten)]
    client: cli::ClientOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Manage workspaces through the daemon's HTTP API.
    Ws(cli::WsArgs),
    /// Inspect the daemon's live workspace actors.
    Admin(cli::AdminArgs),
}

/// Flags override STEWARD_* variables, which override the config file, which overrides the
/// built-in defaults (config/default.toml).
#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:7878 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for the database, admin token and secrets key.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (sqlite://... or postgres://...).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Admin bearer token (default: <data-dir>/admin.token, generated on first start).
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    let matches =
        Cli::command().try_get_matches().unwrap_or_else(|e| {
            match cli::usage_error_as_json(&e, std::env::args_os()) {
                Some(json) => {
                    println!("{json}");
                    std::process::exit(e.exit_code())
                }
                None => e.exit(),
            }
        });
    if let Err(message) = cli::reject_client_options_for_serve(&matches) {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Serve(args) => {
            let overrides = config::Overrides {
                listen: args.listen,
                data_dir: args.data_dir,
                database_url: args.database_url,
                admin_token: args.admin_token,
            };
            config::Config::load(args.config.as_deref(), overrides).and_then(serve::run)
        }
        Command::Ws(args) => return cli::run_ws(args),
        Command::Admin(args) => return cli::run_admin(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steward: {e:#}");
            ExitCode::FAILURE
        }
    }
}
