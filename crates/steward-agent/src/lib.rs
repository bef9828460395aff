//! The reference Steward agent: the process that runs inside a workspace instance.
//!
//! It binds its own HTTP server (health and restart contexts), registers that server's URL
//! with the daemon, then heartbeats until it is told to stop or learns it has been superseded.
//! This crate owns that lifecycle and its exit codes; `main.rs` only reads the environment,
//! installs logging and signal handling, and turns the [`Exit`] into a process exit code.
//!
//! Flow of [`Agent::run`]:
//! 1. register, retrying transient failures forever with [`Backoff`] (100 ms → 5 s, jittered);
//! 2. heartbeat at once, then every `heartbeat_interval`; failures are logged, not fatal;
//! 3. a 401 at any point ends the run with [`Exit::Superseded`]; any other refusal of the
//!    registration ends it with [`Exit::Rejected`]; the shutdown future ends it with
//!    [`Exit::Shutdown`].
//!
//! It never logs the token, nor any configuration value other than the workspace id,
//! generation and model.

pub mod backoff;
pub mod config;
pub mod control;
mod server;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web::Data;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

pub use backoff::Backoff;
pub use config::{Config, ConfigError};
pub use control::{CallError, ControlClient, Registration};
use server::AgentState;

/// Exit code for a configuration error (reported by `main` before [`run`] starts).
pub const CONFIG_ERROR_CODE: u8 = 2;

const REGISTER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// How a run ended, when it ended by the contract rather than by a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown future completed (SIGTERM/SIGINT): exit code 0.
    Shutdown,
    /// The daemon answered 401: a newer generation owns the workspace. Exit code 3.
    Superseded,
    /// The daemon refused the registration for another reason (4xx, bad reply). Exit code 4.
    Rejected,
}

impl Exit {
    /// The process exit code for this outcome.
    pub const fn code(self) -> u8 {
        match self {
            Self::Shutdown => 0,
            Self::Superseded => 3,
            Self::Rejected => 4,
        }
    }
}

/// Faults that stop the agent outside the contract (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configured listen address could not be bound.
    #[error("cannot bind the agent server on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// The HTTP server failed or stopped on its own.
    #[error("agent HTTP server failed: {0}")]
    Server(io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An agent whose server socket is bound but which has not started serving or registering.
/// Splitting [`Agent::bind`] from [`Agent::run`] lets callers learn the address first.
pub struct Agent {
    config: Config,
    state: Data<AgentState>,
    server: Server,
    local_addr: SocketAddr,
    url: String,
    client: ControlClient,
}

/// Binds and runs an agent: see [`Agent::run`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Exit, AgentError> {
    Agent::bind(config)?.run(shutdown).await
}

impl Agent {
    /// Binds the agent's HTTP server socket and prepares the daemon client.
    pub fn bind(config: Config) -> Result<Self, AgentError> {
        let bind_error = |source| AgentError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let state = Data::new(AgentState::new(
            config.workspace_id,
            config.generation,
            config.model.clone(),
            config.token.clone(),
        ));
        let server = server::serve(state.clone(), listener).map_err(bind_error)?;
        let url = match &config.advertise_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => server::default_url(local_addr),
        };
        let client = ControlClient::new(&config.control_url, config.token.clone())?;
        Ok(Self {
            config,
            state,
            server,
            local_addr,
            url,
            client,
        })
    }

    /// The address the agent's HTTP server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL this agent registers with the daemon.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves HTTP, registers and heartbeats until an [`Exit`] condition or `shutdown`.
    ///
    /// Guarantees: when it returns, heartbeating has stopped and the HTTP server is closed.
    /// Errors: only faults outside the contract ([`AgentError`]); daemon refusals are [`Exit`]s.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Exit, AgentError> {
        let span = tracing::info_span!(
            "agent",
            workspace_id = %self.config.workspace_id,
            generation = self.config.generation,
        );
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        if self.local_addr.ip().is_unspecified() && self.config.advertise_url.is_none() {
            tracing::warn!(parent: &span, "listening on an unspecified address without STEWARD_AGENT_URL; the daemon may not reach the registered URL");
        }
        tracing::info!(parent: &span, model = self.config.model.as_deref(), port = self.local_addr.port(), "agent started");

        let lifecycle = lifecycle(&self.config, &self.client, &self.state, &self.url);
        let exit = tokio::select! {
            exit = lifecycle.instrument(span.clone()) => exit,
            () = shutdown => {
                tracing::info!(parent: &span, "shutdown requested");
                Exit::Shutdown
            }
            joined = &mut server => return Err(AgentError::Server(server_stopped(joined))),
        };
        handle.stop(false).await;
        server
            .await
            .map_err(io::Error::other)
            .and_then(|served| served)
            .map_err(AgentError::Server)?;
        tracing::info!(parent: &span, ?exit, "agent stopped");
        Ok(exit)
    }
}

/// Registration then heartbeats; returns only when the daemon ends this generation.
async fn lifecycle(config: &Config, client: &ControlClient, state: &AgentState, url: &str) -> Exit {
    let registration = match register(client, url).await {
        Ok(registration) => registration,
        Err(exit) => return exit,
    };
    if (registration.workspace_id, registration.generation)
        != (config.workspace_id, config.generation)
    {
        tracing::warn!(
            registered_workspace_id = %registration.workspace_id,
            registered_generation = registration.generation,
            "the control plane registered a different workspace or generation than configured"
        );
    }
    state.mark_registered();
    let mut ticks = tokio::time::interval(config.heartbeat_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match client.heartbeat().await {
            Ok(()) => tracing::debug!("heartbeat acknowledged"),
            Err(CallError::Superseded) => {
                tracing::warn!("heartbeat refused with 401: superseded by a newer generation");
                return Exit::Superseded;
            }
            Err(err) => tracing::warn!(error = %err, "heartbeat failed; continuing"),
        }
    }
}

/// Registers `url`, retrying transient failures forever: the daemon may not be up yet.
async fn register(client: &ControlClient, url: &str) -> Result<Registration, Exit> {
    let mut backoff = REGISTER_BACKOFF;
    let mut rng = StdRng::from_entropy();
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match client.register(url).await {
            Ok(registration) => {
                tracing::info!(attempt, "registered with the control plane");
                return Ok(registration);
            }
            Err(CallError::Transient(reason)) => {
                let retry_in = backoff.next_delay(&mut rng);
                tracing::info!(attempt, %reason, ?retry_in, "registration failed; retrying");
                tokio::time::sleep(retry_in).await;
            }
            Err(CallError::Superseded) => {
                tracing::warn!("registration refused with 401: superseded by a newer generation");
                return Err(Exit::Superseded);
            }
            Err(CallError::Rejected { status, body }) => {
                tracing::error!(%status, error = body.error, message = body.message, "registration rejected");
                return Err(Exit::Rejected);
            }
            Err(CallError::InvalidReply(reason)) => {
                tracing::error!(%reason, "registration reply is invalid");
                return Err(Exit::Rejected);
            }
        }
    }
}

fn server_stopped(joined: Result<io::Result<()>, tokio::task::JoinError>) -> io::Error {
    match joined {
        Ok(Ok(())) => io::Error::other("stopped unexpectedly"),
        Ok(Err(err)) => err,
        Err(err) => io::Error::other(err),
    }
}
