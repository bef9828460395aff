//! The CLI client: `steward ws ...` and `steward admin ...`, a thin client of the HTTP API
//! (v1). This module owns the clap types of those commands and their dispatch; `target`
//! finds the daemon and its token, `client` speaks HTTP, `render` formats human output and
//! `sse` decodes live event streams.
//!
//! It must not reach into the daemon's crates: it knows the daemon only through the API and
//! the files the daemon documents in its data directory (`listen.addr`, `admin.token`). It
//! runs on its own small tokio runtime, apart from the actix system of `serve`.
//!
//! Exit codes: 0 success, 1 the daemon refused the request (API error) or answered
//! unexpectedly, 2 usage or local configuration (including clap's own errors and a missing
//! token file), 3 the daemon could not be reached, 4 a wait (`--wait`, `ws wait`) ran out
//! before the intent settled, 5 it settled without reaching what was asked (a cycle failed,
//! the stop failed, or a later intent overruled it). Under `--json`, an error is a JSON
//! document on stdout (`{"error", "message", "status"?}`) with the same exit code; a wait
//! that ran out or did not reach its goal prints the daemon's answer instead (it has
//! `settled` and the document), with exit code 4 or 5.

mod client;
mod render;
mod sse;
mod target;
mod wire;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use client::{CliError, Client, CreateRequest, Lifecycle};
use render::Intent;
use target::TokenSource;

/// How the client finds and authenticates to the daemon, and how it prints. Accepted before
/// the command (`steward --json ws list`) and after it (`steward ws list --json`).
#[derive(Args, Clone)]
#[command(next_help_heading = "Client options (ws, admin)")]
pub struct ClientOpts {
    /// Daemon URL [default: from <data-dir>/listen.addr, else http://127.0.0.1:7878].
    #[arg(long, value_name = "URL", env = "STEWARD_URL")]
    url: Option<String>,
    /// Admin token [default: <data-dir>/admin.token]; as a flag it is visible in `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STEWARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The daemon's data directory (holds listen.addr and admin.token).
    #[arg(
        long,
        value_name = "DIR",
        env = "STEWARD_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// Print the daemon's JSON answers instead of tables and text.
    #[arg(long)]
    json: bool,
}

/// Argument ids of [`ClientOpts`], to refuse them in front of `serve`.
const CLIENT_OPTION_IDS: [&str; 4] = ["url", "token", "data_dir", "json"];

/// `steward ws ...`.
#[derive(Args)]
#[command(mut_args(|arg| arg.global(true)))]
pub struct WsArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: WsCommand,
}

/// `steward admin ...`.
#[derive(Args)]
#[command(mut_args(|arg| arg.global(true)))]
pub struct AdminArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum WsCommand {
    /// Create a workspace; its first cycle starts at once.
    #[command(after_help = "The command may also follow `--`: \
        steward ws create --name demo --provider process -- sleep 600\n\
        (a workspace with a command of its own is running once its process is up; add \
        --ready-when agent if that command is an agent that registers)")]
    Create(Box<CreateArgs>),
    /// List workspaces, oldest first (every filter given must hold).
    List(ListArgs),
    /// Show one workspace.
    Get {
        /// Workspace id or name.
        id: String,
    },
    /// Restart a workspace (coalesced into the next cycle if one is in flight).
    #[command(after_help = WAIT_HELP)]
    Restart {
        /// Workspace id or name.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Stop a workspace's instance (it stays stopped until `start`).
    #[command(after_help = WAIT_HELP)]
    Stop {
        /// Workspace id or name.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Start a stopped workspace.
    #[command(after_help = WAIT_HELP)]
    Start {
        /// Workspace id or name.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Delete a workspace, its instance and its secrets.
    #[command(after_help = WAIT_HELP)]
    Delete {
        /// Workspace id or name.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Wait until a workspace is running, stopped or gone.
    #[command(
        after_help = "Exit codes: 0 it is, 4 the timeout ran out, 5 it will not be \
        without another intent (a cycle of its latest generation failed; it is meant to stay \
        stopped, or to run).\n\n  steward ws wait ID --for running --timeout 2m"
    )]
    Wait {
        /// Workspace id or name.
        id: String,
        /// What to wait for.
        #[arg(long = "for", value_enum)]
        goal: WaitGoal,
        /// Wait at most this long (`250ms`, `30s`, `5m`) [default: the daemon's http.wait_max].
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// Set, remove or list secrets (values are never shown).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Change the model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Move a workspace to another provider (its instance is replaced there; on failure it
    /// rolls back to the old provider).
    #[command(after_help = WAIT_HELP)]
    Switch {
        /// Workspace id or name.
        id: String,
        /// The provider to move to.
        provider: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Print what a workspace's instance wrote (stdout and stderr, interleaved in order),
    /// oldest first.
    Logs {
        /// Workspace id or name.
        id: String,
        /// Keep printing new lines as they are written (across restarts), until interrupted
        /// or the workspace is deleted.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines (the daemon's cap, logs.max_tail, is the default and the
        /// most).
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// Only lines written at or after this RFC 3339 time (e.g. 2026-12-08T10:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Begin each line with the RFC 3339 time it was written.
        #[arg(long)]
        timestamps: bool,
        /// Only the output of generation G (while the provider still has it).
        #[arg(long, value_name = "G")]
        generation: Option<u64>,
    },
    /// Print a workspace's lifecycle events, oldest first.
    Events {
        /// Workspace id or name.
        id: String,
        /// Keep printing events as they happen, until interrupted or the stream ends (e.g.
        /// the workspace is deleted).
        #[arg(long, short)]
        follow: bool,
        /// Only events with a sequence number greater than SEQ.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// Human name (1-128 characters).
    #[arg(long)]
    name: String,
    /// Provider: sim, process or docker [default: the daemon's default_provider].
    #[arg(long)]
    provider: Option<String>,
    /// Image (docker provider).
    #[arg(long)]
    image: Option<String>,
    /// One argument of the command; repeat for each (or give the command after `--`).
    #[arg(
        long = "command",
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "argv"
    )]
    command: Vec<String>,
    /// Environment variable for the instance; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Secret for the instance; repeatable. Visible to other users in `ps`: prefer
    /// `steward ws secret set ID KEY` with the value on stdin.
    #[arg(long, value_name = "KEY=VALUE")]
    secret: Vec<String>,
    /// Model handed to the agent.
    #[arg(long)]
    model: Option<String>,
    /// When the workspace counts as running [default: `instance` with a command of your own
    /// (it is not known to register as an agent), else the provider's: `agent` for process
    /// and docker, whose default program is the reference agent; `instance` for sim].
    #[arg(long, value_enum)]
    ready_when: Option<ReadyWhen>,
    /// Same key and body give the same workspace (safe to retry).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    wait: WaitArg,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    argv: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReadyWhen {
    /// As soon as the instance is up.
    Instance,
    /// When the agent of the current generation has registered.
    Agent,
}

/// `steward ws list` filters.
#[derive(Args)]
struct ListArgs {
    /// Only workspaces on this provider.
    #[arg(long)]
    provider: Option<String>,
    /// Only workspaces in this phase (repeatable: any of them).
    #[arg(long, value_name = "PHASE")]
    phase: Vec<String>,
    /// Only workspaces whose name starts with PREFIX.
    #[arg(long, value_name = "PREFIX")]
    name: Option<String>,
    /// At most N workspaces (default: all, fetched a page at a time).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

impl ListArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        query.extend(self.provider.clone().map(|p| ("provider", p)));
        query.extend(self.phase.iter().map(|p| ("phase", p.clone())));
        query.extend(self.name.clone().map(|n| ("name", n)));
        query
    }
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret (a config restart follows).
    #[command(
        after_help = "Without VALUE the value is read from stdin (one trailing newline \
        is removed). Prefer it: command-line arguments are visible to other users in `ps`.\n\
        \n  printf %s \"$API_KEY\" | steward ws secret set ID API_KEY"
    )]
    Set {
        /// Workspace id or name.
        id: String,
        /// Secret name (exported to the instance as an environment variable).
        key: String,
        /// The value; omit it to read the value from stdin (recommended).
        value: Option<String>,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Remove a secret (a config restart follows).
    #[command(after_help = WAIT_HELP)]
    Rm {
        /// Workspace id or name.
        id: String,
        /// Secret name.
        key: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// List a workspace's secret keys (never values).
    List {
        /// Workspace id or name.
        id: String,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Set the model (a config restart follows).
    #[command(after_help = WAIT_HELP)]
    Set {
        /// Workspace id or name.
        id: String,
        /// The model.
        model: String,
        #[command(flatten)]
        wait: WaitArg,
    },
}

/// What `--wait` does, under each intent's help.
const WAIT_HELP: &str = "With --wait, the answer comes once the intent has settled: the \
    generation it names (or a later one) running, or a cycle of it failed, or a later intent \
    stopped or deleted the workspace; for stop, stopped; for delete, gone. Exit codes: 0 \
    settled as asked, 4 the wait ran out (the intent goes on), 5 it failed or was overruled.";

/// `--wait [DURATION]` of an intent.
#[derive(Args, Clone, Default)]
struct WaitArg {
    /// Answer once the intent has settled, waiting at most DURATION (`250ms`, `30s`, `5m`;
    /// at most the daemon's http.wait_max; `--wait` alone: 5m).
    #[arg(
        long,
        value_name = "DURATION",
        num_args = 0..=1,
        default_missing_value = "5m"
    )]
    wait: Option<String>,
}

/// What `ws wait --for` waits for.
#[derive(Clone, Copy, ValueEnum)]
enum WaitGoal {
    /// The latest generation (or a later one) running.
    Running,
    /// Stopped.
    Stopped,
    /// Gone.
    Deleted,
}

impl WaitGoal {
    fn as_str(self) -> &'static str {
        match self {
            WaitGoal::Running => "running",
            WaitGoal::Stopped => "stopped",
            WaitGoal::Deleted => "deleted",
        }
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Inspect live workspace actors: all of them, or one in detail.
    Actors {
        /// Workspace id or name.
        id: Option<String>,
    },
    /// Fault drill: kill a workspace's instance through its provider, as a crash would (the
    /// probes find it dead; a health restart follows unless the debounce window holds it).
    Kill {
        /// Workspace id or name.
        id: String,
    },
}

/// Runs `steward ws ...`.
pub fn run_ws(args: WsArgs) -> ExitCode {
    run(&args.client, Request::Ws(args.command))
}

/// Runs `steward admin ...`.
pub fn run_admin(args: AdminArgs) -> ExitCode {
    run(&args.client, Request::Admin(args.command))
}

/// Refuses client options written in front of `serve` (`steward --data-dir X serve`), which
/// would otherwise be silently ignored; `serve` has its own flags after its name.
pub fn reject_client_options_for_serve(matches: &ArgMatches) -> Result<(), String> {
    if matches.subcommand_name() != Some("serve") {
        return Ok(());
    }
    let given: Vec<String> = CLIENT_OPTION_IDS
        .iter()
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(format!(
        "client options ({}) belong to `ws` and `admin`; give serve's own flags after \
         `serve` (e.g. `steward serve --data-dir DIR`)",
        given.join(", ")
    ))
}

enum Request {
    Ws(WsCommand),
    Admin(AdminCommand),
}

impl Request {
    /// The workspace the command is about, as typed: an id or a name, resolved to an id
    /// before the command runs.
    fn target(&mut self) -> Option<&mut String> {
        match self {
            Request::Ws(command) => match command {
                WsCommand::Create(_) | WsCommand::List(_) => None,
                WsCommand::Get { id }
                | WsCommand::Restart { id, .. }
                | WsCommand::Stop { id, .. }
                | WsCommand::Start { id, .. }
                | WsCommand::Delete { id, .. }
                | WsCommand::Wait { id, .. }
                | WsCommand::Switch { id, .. }
                | WsCommand::Logs { id, .. }
                | WsCommand::Events { id, .. } => Some(id),
                WsCommand::Secret(
                    SecretCommand::Set { id, .. }
                    | SecretCommand::Rm { id, .. }
                    | SecretCommand::List { id },
                ) => Some(id),
                WsCommand::Model(ModelCommand::Set { id, .. }) => Some(id),
            },
            Request::Admin(AdminCommand::Actors { id }) => id.as_mut(),
            Request::Admin(AdminCommand::Kill { id }) => Some(id),
        }
    }
}

fn run(opts: &ClientOpts, request: Request) -> ExitCode {
    let mut token_source = None;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                let base = target::base_url(opts.url.as_deref(), &opts.data_dir)?;
                let (token, source) = target::admin_token(opts.token.as_deref(), &opts.data_dir)?;
                token_source = Some(source);
                let client = Client::new(base, token)?;
                let mut out = io::stdout().lock();
                execute(&client, opts.json, request, &mut out).await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let hint = match (&e, &token_source) {
                (CliError::Api { status: 401, .. }, Some(TokenSource::Given)) => Some(
                    "the token came from --token or STEWARD_ADMIN_TOKEN; is it this daemon's \
                     admin token?"
                        .to_owned(),
                ),
                (CliError::Api { status: 401, .. }, Some(TokenSource::File(path))) => {
                    Some(format!(
                        "the token came from {}; is that the data directory of the daemon you are \
                     talking to?",
                        path.display()
                    ))
                }
                _ => None,
            };
            let answered = matches!(e, CliError::WaitRanOut(_) | CliError::NotReached(_));
            if opts.json && answered {
                // The daemon's answer (with `settled` and the document) is already on stdout.
                eprintln!("error: {e}");
            } else if opts.json {
                // Scripts read one JSON document on stdout, whatever happened.
                let mut body = e.to_json();
                if let Some(hint) = hint {
                    body["hint"] = json!(hint);
                }
                let _ = render::json(&mut io::stdout().lock(), &body);
            } else {
                eprintln!("error: {e}");
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// A usage error found by the argument parser, as `--json` prints it (`{"error": "USAGE",
/// "message"}` on stdout), when `--json` is among `args`; `None` otherwise, or for help and
/// version requests, which print as usual.
pub fn usage_error_as_json(
    error: &clap::Error,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<String> {
    use clap::error::ErrorKind;
    let help = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if help || !args.into_iter().any(|a| a == "--json") {
        return None;
    }
    let text = error.render().to_string();
    let message = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let body = json!({ "error": "USAGE", "message": message });
    serde_json::to_string_pretty(&body).ok()
}

async fn execute(
    client: &Client,
    json: bool,
    request: Request,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut request = request;
    if let Some(target) = request.target() {
        *target = client.resolve(target).await?;
    }
    match request {
        Request::Ws(command) => ws(client, json, command, out).await,
        Request::Admin(AdminCommand::Actors { id: None }) => {
            let reply = client.actors().await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                render::actor_table(out, &reply.parse()?.actors)?;
            }
            Ok(())
        }
        Request::Admin(AdminCommand::Actors { id: Some(id) }) => {
            let reply = client.actor(&id).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                render::actor(out, &reply.parse()?)?;
            }
            Ok(())
        }
        Request::Admin(AdminCommand::Kill { id }) => {
            let reply = client.kill(&id).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                writeln!(
                    out,
                    "killed the instance of workspace {}: the probes will find it dead \
                     (follow with `steward ws events {} --follow`)",
                    render::clean(&id),
                    render::clean(&id)
                )?;
            }
            Ok(())
        }
    }
}

async fn ws(
    client: &Client,
    json: bool,
    command: WsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        WsCommand::Create(args) => {
            let client = client.clone().waiting(args.wait.wait.clone());
            let reply = client.create(create_request(*args)?).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                render::created(out, &reply.parse()?, reply.status == 200)?;
            }
            waited(json, &reply.raw, WaitGoal::Running, out)?;
        }
        WsCommand::List(args) => {
            let reply = client.list(&args.query(), args.limit).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                render::workspace_table(out, &reply.parse()?.workspaces)?;
            }
        }
        WsCommand::Get { id } => {
            let reply = client.get(&id).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                render::workspace(out, &reply.parse()?)?;
            }
        }
        WsCommand::Restart { id, wait } => {
            let client = client.clone().waiting(wait.wait);
            lifecycle(
                &client,
                json,
                &id,
                Lifecycle::Restart,
                &Intent::Restart,
                out,
            )
            .await?;
        }
        WsCommand::Stop { id, wait } => {
            let client = client.clone().waiting(wait.wait);
            lifecycle(&client, json, &id, Lifecycle::Stop, &Intent::Stop, out).await?;
        }
        WsCommand::Start { id, wait } => {
            let client = client.clone().waiting(wait.wait);
            lifecycle(&client, json, &id, Lifecycle::Start, &Intent::Start, out).await?;
        }
        WsCommand::Delete { id, wait } => {
            let reply = client.clone().waiting(wait.wait).delete(&id).await?;
            confirm(json, &reply, &Intent::Delete, out)?;
            waited(json, &reply.raw, WaitGoal::Deleted, out)?;
        }
        WsCommand::Wait { id, goal, timeout } => {
            let reply = client
                .wait_for(&id, goal.as_str(), timeout.as_deref())
                .await?;
            if json {
                render::json(out, &reply.raw)?;
            }
            waited(json, &reply.raw, goal, out)?;
        }
        WsCommand::Secret(SecretCommand::Set {
            id,
            key,
            value,
            wait,
        }) => {
            let value = match value {
                Some(value) => SecretString::from(value),
                None => secret_from_stdin(&key)?,
            };
            let client = client.clone().waiting(wait.wait);
            let reply = client.set_secret(&id, &key, &value).await?;
            confirm(json, &reply, &Intent::SecretSet(&key), out)?;
            waited(json, &reply.raw, WaitGoal::Running, out)?;
        }
        WsCommand::Secret(SecretCommand::Rm { id, key, wait }) => {
            let client = client.clone().waiting(wait.wait);
            let reply = client.remove_secret(&id, &key).await?;
            confirm(json, &reply, &Intent::SecretRemoved(&key), out)?;
            waited(json, &reply.raw, WaitGoal::Running, out)?;
        }
        WsCommand::Secret(SecretCommand::List { id }) => {
            let reply = client.secret_keys(&id).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                render::secret_keys(out, &reply.parse()?.keys)?;
            }
        }
        WsCommand::Switch { id, provider, wait } => {
            let client = client.clone().waiting(wait.wait);
            let reply = client.switch_provider(&id, &provider).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                writeln!(
                    out,
                    "switch to {provider} accepted: follow it with `steward ws events {id} --follow`"
                )?;
            }
            // A stopped workspace's switch only releases its instance: it stays stopped.
            let workspace = &reply.raw["workspace"];
            let stays_stopped = workspace["phase"] == "stopped" && workspace["switch"].is_null();
            let goal = if stays_stopped {
                WaitGoal::Stopped
            } else {
                WaitGoal::Running
            };
            waited(json, &reply.raw, goal, out)?;
        }
        WsCommand::Model(ModelCommand::Set { id, model, wait }) => {
            let client = client.clone().waiting(wait.wait);
            let reply = client.set_model(&id, &model).await?;
            confirm(json, &reply, &Intent::ModelSet(&model), out)?;
            waited(json, &reply.raw, WaitGoal::Running, out)?;
        }
        WsCommand::Events {
            id,
            follow: false,
            after,
        } => {
            let reply = client.events(&id, after).await?;
            if json {
                render::json(out, &reply.raw)?;
            } else {
                for event in reply.parse()?.events {
                    render::event(out, &parse_event(event)?)?;
                }
            }
        }
        WsCommand::Events {
            id,
            follow: true,
            after,
        } => follow(client, json, &id, after, out).await?,
        WsCommand::Logs {
            id,
            follow,
            tail,
            since,
            timestamps,
            generation,
        } => {
            let mut query = Vec::new();
            if let Some(tail) = tail {
                query.push(("tail", tail.to_string()));
            }
            if let Some(since) = since {
                query.push(("since", since));
            }
            if timestamps {
                query.push(("timestamps", "true".to_owned()));
            }
            if let Some(generation) = generation {
                query.push(("generation", generation.to_string()));
            }
            if follow {
                query.push(("follow", "true".to_owned()));
            }
            print_logs(client.logs(&id, &query, follow).await?, out).await?;
        }
    }
    Ok(())
}

async fn lifecycle(
    client: &Client,
    json: bool,
    id: &str,
    action: Lifecycle,
    intent: &Intent<'_>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let reply = client.lifecycle(id, action).await?;
    confirm(json, &reply, intent, out)?;
    let goal = match action {
        Lifecycle::Stop => WaitGoal::Stopped,
        Lifecycle::Restart | Lifecycle::Start => WaitGoal::Running,
    };
    waited(json, &reply.raw, goal, out)
}

/// After an answer that may come from a wait (it has `settled`): says where the workspace
/// is, and fails with exit code 4 if the wait ran out, 5 if the workspace is not `goal` (a
/// cycle failed, a stop failed, a later intent overruled it). An answer without a wait
/// passes.
fn waited(json: bool, raw: &Value, goal: WaitGoal, out: &mut impl Write) -> Result<(), CliError> {
    let Some(settled) = raw.get("settled").and_then(Value::as_bool) else {
        return Ok(());
    };
    let workspace = &raw["workspace"];
    let phase = workspace["phase"].as_str().unwrap_or("gone");
    let id = workspace["id"].as_str().unwrap_or_default();
    let expected = goal.as_str();
    if !settled {
        return Err(CliError::WaitRanOut(format!(
            "workspace {id} was {expected} (it is {phase})"
        )));
    }
    let reached = match goal {
        WaitGoal::Deleted => workspace.is_null(),
        // A configuration change of a stopped workspace has nothing to wait for.
        WaitGoal::Running => phase == "running" || raw["outcome"] == "deferred",
        WaitGoal::Stopped => phase == "stopped",
    };
    if !reached {
        let why = workspace["failure"]["reason"]
            .as_str()
            .map(|reason| format!(": {}", render::clean(reason)))
            .unwrap_or_default();
        return Err(CliError::NotReached(format!(
            "workspace {id} is {phase}, not {expected}{why}"
        )));
    }
    if !json {
        match goal {
            WaitGoal::Deleted => writeln!(out, "settled: the workspace is gone")?,
            _ => writeln!(
                out,
                "settled: workspace {id} is {phase}, generation {}",
                workspace["observed_generation"]
            )?,
        }
    }
    Ok(())
}

fn confirm(
    json: bool,
    reply: &client::Reply<wire::IntentAnswer>,
    intent: &Intent<'_>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if json {
        render::json(out, &reply.raw)?;
    } else {
        render::intent(out, intent, &reply.parse()?)?;
    }
    Ok(())
}

/// Prints a logs answer as it arrives (the daemon's text as is) until it ends or the user
/// interrupts (Ctrl-C ends it successfully: following is open-ended by design).
async fn print_logs(mut stream: client::LogStream, out: &mut impl Write) -> Result<(), CliError> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk?,
            _ = &mut interrupted => return Ok(()),
        };
        let Some(chunk) = chunk else {
            return Ok(());
        };
        out.write_all(&chunk)?;
        out.flush()?;
    }
}

/// Prints events as they arrive until the stream ends or the user interrupts (Ctrl-C ends
/// it successfully: following is open-ended by design).
async fn follow(
    client: &Client,
    json: bool,
    id: &str,
    after: u64,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut stream = client.follow(id, after).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            event = stream.next() => event?,
            _ = &mut interrupted => return Ok(()),
        };
        let Some(event) = event else {
            return Ok(());
        };
        if json {
            render::json_line(out, &event)?;
        } else {
            render::event(out, &parse_event(event)?)?;
        }
        out.flush()?;
    }
}

fn parse_event(event: Value) -> Result<wire::Event, CliError> {
    serde_json::from_value(event).map_err(|e| CliError::Protocol {
        status: 200,
        detail: format!("an event lacks seq, type, generation or at: {e}"),
    })
}

/// Builds the create body. Secrets are checked here rather than by clap so that a malformed
/// one is never echoed back in an error message.
fn create_request(args: CreateArgs) -> Result<CreateRequest, CliError> {
    let mut body = Map::new();
    body.insert("name".into(), json!(args.name));
    if let Some(provider) = args.provider {
        body.insert("provider".into(), json!(provider));
    }
    if let Some(image) = args.image {
        body.insert("image".into(), json!(image));
    }
    let command = if args.command.is_empty() {
        args.argv
    } else {
        args.command
    };
    if !command.is_empty() {
        body.insert("command".into(), json!(command));
    }
    if !args.env.is_empty() {
        let env: BTreeMap<String, String> = args.env.into_iter().collect();
        body.insert("env".into(), json!(env));
    }
    if !args.secret.is_empty() {
        let mut secrets = Map::new();
        for (i, pair) in args.secret.iter().enumerate() {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--secret #{} is not KEY=VALUE (the value is not shown)",
                        i + 1
                    ))
                })?;
            secrets.insert(key.to_owned(), json!(value));
        }
        body.insert("secrets".into(), Value::Object(secrets));
    }
    if let Some(model) = args.model {
        body.insert("model".into(), json!(model));
    }
    if let Some(ready_when) = args.ready_when {
        let ready_when = match ready_when {
            ReadyWhen::Instance => "instance",
            ReadyWhen::Agent => "agent",
        };
        body.insert("ready_when".into(), json!(ready_when));
    }
    Ok(CreateRequest {
        body: Value::Object(body),
        idempotency_key: args.idempotency_key,
    })
}

/// Parses `KEY=VALUE` (non-empty key; the value may contain `=`).
fn key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

/// Reads a secret value from stdin, without one trailing newline (`\n` or `\r\n`).
fn secret_from_stdin(key: &str) -> Result<SecretString, CliError> {
    let mut stdin = io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "reading the value of {} from stdin; end it with Enter, then Ctrl-D",
            render::clean(key)
        );
    }
    let mut text = String::new();
    stdin.read_to_string(&mut text).map_err(CliError::Stdin)?;
    let value = SecretString::from(strip_one_newline(text));
    if value.expose_secret().is_empty() {
        return Err(CliError::Usage(format!(
            "empty value on stdin for secret {}; nothing was changed",
            render::clean(key)
        )));
    }
    Ok(value)
}

fn strip_one_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// A stand-in for the binary's top level, shaped like `main`'s.
    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        command: TopCommand,
    }

    #[derive(Subcommand)]
    enum TopCommand {
        Ws(WsArgs),
        Admin(AdminArgs),
    }

    fn parse(args: &[&str]) -> Top {
        Top::try_parse_from(std::iter::once("steward").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn ws(top: Top) -> WsArgs {
        match top.command {
            TopCommand::Ws(ws) => ws,
            TopCommand::Admin(_) => panic!("expected ws"),
        }
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Top::command().debug_assert();
    }

    #[test]
    fn client_options_work_before_and_after_the_subcommand() {
        for args in [
            &["--url", "u", "--json", "ws", "list"][..],
            &["ws", "--url", "u", "--json", "list"],
            &["ws", "list", "--url", "u", "--json"],
        ] {
            let ws = ws(parse(args));
            assert_eq!(ws.client.url.as_deref(), Some("u"), "{args:?}");
            assert!(ws.client.json, "{args:?}");
        }
    }

    #[test]
    fn the_command_comes_from_flags_or_after_double_dash_not_both() {
        let create = |args: &[&str]| match ws(parse(args)).command {
            WsCommand::Create(c) => create_request(*c).expect("a valid request").body,
            _ => panic!("expected create"),
        };
        let body = create(&["ws", "create", "--name", "n", "--", "sleep", "-x", "1"]);
        assert_eq!(body["command"], json!(["sleep", "-x", "1"]));
        let body = create(&[
            "ws",
            "create",
            "--name",
            "n",
            "--command",
            "sh",
            "--command",
            "-c",
        ]);
        assert_eq!(body["command"], json!(["sh", "-c"]));
        assert!(body.get("secrets").is_none());
        let both = [
            "steward",
            "ws",
            "create",
            "--name",
            "n",
            "--command",
            "a",
            "--",
            "b",
        ];
        assert!(Top::try_parse_from(both).is_err());
    }

    #[test]
    fn create_collects_env_secrets_and_options() {
        let top = parse(&[
            "ws",
            "create",
            "--name",
            "n",
            "--env",
            "A=1=2",
            "--secret",
            "S=v",
            "--model",
            "m",
            "--ready-when",
            "agent",
            "--provider",
            "sim",
        ]);
        let WsCommand::Create(args) = ws(top).command else {
            panic!("expected create");
        };
        let body = create_request(*args).expect("a valid request").body;
        assert_eq!(
            body,
            json!({ "name": "n", "env": { "A": "1=2" }, "secrets": { "S": "v" }, "model": "m",
                    "ready_when": "agent", "provider": "sim" })
        );
    }

    #[test]
    fn a_malformed_secret_is_refused_without_echoing_it() {
        let top = parse(&["ws", "create", "--name", "n", "--secret", "hunter2"]);
        let WsCommand::Create(args) = ws(top).command else {
            panic!("expected create");
        };
        let Err(err) = create_request(*args) else {
            panic!("a secret without = must be refused");
        };
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn serve_refuses_client_options_in_front_of_it() {
        let command = clap::Command::new("steward")
            .args(
                ClientOpts::augment_args(clap::Command::new("x"))
                    .get_arguments()
                    .cloned(),
            )
            .subcommand(clap::Command::new("serve"));
        let matches = command
            .clone()
            .try_get_matches_from(["steward", "--data-dir", "d", "serve"])
            .expect("parses");
        let err = reject_client_options_for_serve(&matches).expect_err("refused");
        assert!(err.contains("--data-dir"), "{err}");
        let matches = command
            .try_get_matches_from(["steward", "serve"])
            .expect("parses");
        assert!(reject_client_options_for_serve(&matches).is_ok());
    }

    #[test]
    fn parser_errors_are_json_only_under_json() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let Err(error) = Top::try_parse_from(["steward", "--json", "ws", "frobnicate"]) else {
            panic!("an unknown subcommand is an error");
        };
        let text = usage_error_as_json(&error, args(&["steward", "--json", "ws", "frobnicate"]))
            .expect("JSON under --json");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["error"], "USAGE");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("frobnicate")),
            "{body}"
        );
        assert!(usage_error_as_json(&error, args(&["steward", "ws", "frobnicate"])).is_none());
        let Err(help) = Top::try_parse_from(["steward", "--json", "--help"]) else {
            panic!("help is an error kind");
        };
        assert!(usage_error_as_json(&help, args(&["steward", "--json", "--help"])).is_none());
    }

    #[test]
    fn one_trailing_newline_is_removed_from_stdin_values() {
        assert_eq!(strip_one_newline("v\n".into()), "v");
        assert_eq!(strip_one_newline("v\r\n".into()), "v");
        assert_eq!(strip_one_newline("v\n\n".into()), "v\n");
        assert_eq!(strip_one_newline("v".into()), "v");
    }
}
