//! The connection to the Docker engine: one client, negotiated lazily, shared by every
//! operation; a cap on concurrent calls; a deadline on each call; engine failures sorted into
//! what the provider needs to tell apart.
//!
//! It knows nothing of workspaces, labels or liveness, and no bollard type leaves the
//! `docker` module through it: failures become [`Failure`], then [`ProviderError`].
//!
//! The client is made on first use and kept; a call that cannot reach the engine drops it, so
//! the next call connects and negotiates again. An engine that is down when the daemon starts,
//! or that restarts (even as another version), therefore never needs a daemon restart.

use crate::ProviderError;
use bollard::errors::Error as BollardError;
use bollard::{Docker, API_DEFAULT_VERSION};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Why an engine call failed, sorted by what callers do about it.
#[derive(Debug)]
pub(super) enum Failure {
    /// The engine answered with an error status (`message` is the engine's own text).
    Status {
        /// HTTP status.
        code: u16,
        /// The engine's message.
        message: String,
    },
    /// No connection to the engine (socket missing, refused, closed mid-call).
    Unreachable(String),
    /// The engine did not answer within the call's deadline.
    TimedOut(Duration),
    /// Anything else: an answer that could not be read, a request that could not be built.
    Other(String),
}

impl Failure {
    /// The HTTP status, if the engine answered with one.
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The engine's message, if it answered with an error status.
    pub(super) fn message(&self) -> &str {
        match self {
            Failure::Status { message, .. } => message,
            _ => "",
        }
    }
}

/// The shared access to one engine.
pub(super) struct Engine {
    /// Unix socket of the engine.
    socket: PathBuf,
    /// The negotiated client, once one call has reached the engine.
    client: RwLock<Option<Docker>>,
    /// One permit per engine call in flight: a restart storm queues here instead of piling
    /// onto the engine.
    permits: Semaphore,
    /// Deadline of one call (a stop gets the container's stop timeout on top).
    call_timeout: Duration,
    /// bollard's own bound on waiting for an answer's headers, in seconds. Set above every
    /// deadline of ours so that ours decide; it also bounds opening the event stream.
    transport_timeout_secs: u64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("socket", &self.socket)
            .field("connected", &self.cached().is_some())
            .field("permits_free", &self.permits.available_permits())
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl Engine {
    /// Access to the engine at `socket`. Does not connect.
    pub(super) fn new(
        socket: PathBuf,
        max_concurrent_ops: usize,
        call_timeout: Duration,
        longest_extra: Duration,
    ) -> Self {
        Self {
            socket,
            client: RwLock::new(None),
            permits: Semaphore::new(max_concurrent_ops),
            call_timeout,
            transport_timeout_secs: (call_timeout + longest_extra).as_secs() + 5,
        }
    }

    /// Runs one engine call: waits for a permit, connects if needed, and bounds the call by
    /// the call timeout plus `extra`. Waiting for the permit is not bounded here: each call
    /// ahead in the queue is, so the queue always drains.
    pub(super) async fn call<T, F, Fut>(&self, extra: Duration, call: F) -> Result<T, Failure>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, BollardError>>,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::Other("the docker provider is closed".to_owned()))?;
        let docker = self.client().await?;
        let bound = self.call_timeout + extra;
        match tokio::time::timeout(bound, call(docker)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(error)),
            Err(_) => Err(Failure::TimedOut(bound)),
        }
    }

    /// A connected client for a long-lived request (the event stream), which must not hold a
    /// permit for its whole life: the permit is held only while connecting.
    pub(super) async fn client_for_stream(&self) -> Result<Docker, Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::Other("the docker provider is closed".to_owned()))?;
        self.client().await
    }

    /// Sorts a bollard error; a connection failure also drops the client, so that the next
    /// call negotiates afresh with whatever engine answers then.
    pub(super) fn classify(&self, error: BollardError) -> Failure {
        let failure = match error {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => Failure::Status {
                code: status_code,
                message,
            },
            BollardError::RequestTimeoutError => {
                Failure::TimedOut(Duration::from_secs(self.transport_timeout_secs))
            }
            error @ (BollardError::SocketNotFoundError(_)
            | BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }) => Failure::Unreachable(chain(&error)),
            error => Failure::Other(chain(&error)),
        };
        if matches!(failure, Failure::Unreachable(_)) {
            self.forget();
        }
        failure
    }

    /// The failure as a provider error, `what` saying what was being done.
    pub(super) fn error(&self, failure: Failure, what: impl fmt::Display) -> ProviderError {
        let socket = self.socket.display();
        ProviderError::Engine(match failure {
            Failure::Unreachable(detail) => {
                format!("docker engine unreachable at {socket}: {detail} ({what})")
            }
            Failure::TimedOut(bound) => format!(
                "docker engine at {socket} did not answer within {}s ({what})",
                bound.as_secs()
            ),
            Failure::Status { code, message } => {
                format!("{what}: docker engine answered {code}: {message}")
            }
            Failure::Other(detail) => format!("{what}: {detail}"),
        })
    }

    fn cached(&self) -> Option<Docker> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn forget(&self) {
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The kept client, or a new one negotiated down to the engine's API version (bollard
    /// speaks a newer API than engines in the field; without this every request fails with
    /// "client version too new"). Concurrent first calls may each negotiate; one client is
    /// kept, the others serve their own call.
    async fn client(&self) -> Result<Docker, Failure> {
        if let Some(docker) = self.cached() {
            return Ok(docker);
        }
        let path = self
            .socket
            .to_str()
            .ok_or_else(|| Failure::Unreachable("the socket path is not valid UTF-8".to_owned()))?;
        let docker =
            Docker::connect_with_unix(path, self.transport_timeout_secs, API_DEFAULT_VERSION)
                .map_err(|e| self.classify(e))?;
        let docker = match tokio::time::timeout(self.call_timeout, docker.negotiate_version()).await
        {
            Ok(Ok(docker)) => docker,
            Ok(Err(error)) => return Err(self.classify(error)),
            Err(_) => return Err(Failure::TimedOut(self.call_timeout)),
        };
        let mut slot = self.client.write().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            tracing::info!(
                socket = %self.socket.display(),
                api_version = %docker.client_version(),
                "connected to the docker engine"
            );
            *slot = Some(docker.clone());
        }
        Ok(docker)
    }
}

/// An error and its sources, as one line ("client error (Connect): No such file or directory").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
