//! `steward`: the daemon (`steward serve`) and, later, its CLI client. A thin shell: the
//! library crates do the work; this crate parses flags, layers configuration, wires the
//! pieces and handles signals. `anyhow` lives here and nowhere else.

mod config;
mod files;
mod serve;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Steward keeps agent workspaces alive, race-free.
#[derive(Parser)]
#[command(name = "steward", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
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
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steward: {e:#}");
            ExitCode::FAILURE
        }
    }
}
