//! Providers: the things that actually run a workspace's instance.
//!
//! One trait, [`Provider`], and its implementations: [`sim`] (simulated instances with
//! configurable latency and faults), [`process`] (local child processes) and [`docker`]
//! (containers through the engine's API). The workspace
//! actor never knows which provider it drives; providers know nothing of actors, the store
//! or the lifecycle rules — they do what they are told and report what they see.
//!
//! Every operation is idempotent where the engine allows: removing or stopping an instance
//! that is already gone succeeds.

pub mod docker;
mod error;
pub mod logs;
pub mod process;
pub mod sim;

pub use error::ProviderError;
pub use logs::{LogLine, LogQuery, LogStream};

use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use steward_domain::{Generation, ReadyWhen, WorkspaceId, WorkspaceSpec};

/// Everything a provider needs to start one instance.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// Workspace the instance belongs to.
    pub workspace_id: WorkspaceId,
    /// Generation being provisioned (labels, agent token scope).
    pub generation: Generation,
    /// Image (docker).
    pub image: Option<String>,
    /// Command and arguments, never passed through a shell.
    pub command: Option<Vec<String>>,
    /// Environment: plain variables and the `STEWARD_*` channel variables.
    pub env: BTreeMap<String, String>,
    /// Decrypted secrets, also exported as environment variables. `SecretString` keeps them
    /// out of `Debug` output.
    pub secrets: BTreeMap<String, SecretString>,
}

impl InstanceSpec {
    /// Rejects environment entries no operating system can represent (empty names, `=` or
    /// NUL in names, NUL in values). Messages name keys, never values.
    pub fn check_env(&self) -> Result<(), ProviderError> {
        use secrecy::ExposeSecret;
        let entries = self
            .env
            .iter()
            .map(|(k, v)| (k, v.as_str()))
            .chain(self.secrets.iter().map(|(k, v)| (k, v.expose_secret())));
        for (key, value) in entries {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(ProviderError::InvalidSpec(format!(
                    "environment variable name {key:?} is not valid"
                )));
            }
            if value.contains('\0') {
                return Err(ProviderError::InvalidSpec(format!(
                    "the value of environment variable {key} contains a NUL byte"
                )));
            }
        }
        Ok(())
    }
}

/// What a provider sees of a workspace's instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Running.
    Alive(Generation),
    /// Exists, still booting: not dead.
    Booting(Generation),
    /// Exists, not running.
    Dead(Generation),
    /// No instance.
    Absent,
}

/// An instance death the provider learned of as it happened (e.g. from the engine's event
/// stream). Turned into a dead health report at once; probes remain the fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceDeath {
    /// Workspace whose instance died.
    pub workspace_id: WorkspaceId,
    /// Generation of the instance that died.
    pub generation: Generation,
}

/// An instance the provider has, as found by [`Provider::list`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceSummary {
    /// Workspace it belongs to.
    pub workspace_id: WorkspaceId,
    /// Its liveness.
    pub liveness: Liveness,
}

/// A backend that runs workspace instances. At most one instance per workspace.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Configured name, e.g. `sim`.
    fn name(&self) -> &str;

    /// When an instance of this provider counts as ready, unless a workspace overrides it.
    fn default_ready_when(&self) -> ReadyWhen;

    /// Whether this provider can run a workspace configured as `spec` at all (docker needs an
    /// image, say). Asked before a create or a switch is accepted, so that nothing is started
    /// or removed for a workspace that could only fail here. `Err` says why, naming no value.
    fn admits(&self, _spec: &WorkspaceSpec) -> Result<(), String> {
        Ok(())
    }

    /// Starts the instance of `spec.generation`. Fails if the workspace already has one.
    async fn start(&self, spec: &InstanceSpec) -> Result<(), ProviderError>;

    /// Stops the workspace's instance, keeping what the engine keeps of a stopped instance.
    /// Succeeds if there is nothing to stop.
    async fn stop(&self, id: WorkspaceId) -> Result<(), ProviderError>;

    /// Stops and removes the workspace's instance. Succeeds if there is none.
    async fn remove(&self, id: WorkspaceId) -> Result<(), ProviderError>;

    /// What the provider sees of the workspace's instance.
    async fn liveness(&self, id: WorkspaceId) -> Result<Liveness, ProviderError>;

    /// Kills the instance abruptly, as a crash would (fault drill).
    async fn kill(&self, id: WorkspaceId) -> Result<(), ProviderError>;

    /// Every instance this provider has that belongs to Steward, in one call.
    async fn list(&self) -> Result<Vec<InstanceSummary>, ProviderError>;

    /// The workspace's output (stdout and stderr, interleaved in the order written, oldest
    /// first) that `query` selects, and with `query.follow` the lines written after them.
    /// A workspace with no output yet (or a stopped one: what it wrote last) is not an
    /// error. Errors: `OutputGone` when `query.generation` names a generation whose output
    /// the provider no longer has; `Engine` when it cannot be read.
    async fn logs(&self, id: WorkspaceId, query: LogQuery) -> Result<LogStream, ProviderError>;

    /// The workspace is gone: drop whatever the provider keeps of its output, and end the
    /// streams following it. Called once its instance is removed.
    async fn forget_logs(&self, id: WorkspaceId);

    /// Deaths the provider learns of as they happen, if it can (a fresh subscription).
    /// `None`: only probes find dead instances.
    fn deaths(&self) -> Option<tokio::sync::broadcast::Receiver<InstanceDeath>> {
        None
    }

    /// The daemon is exiting: release or stop what the provider owns. Called once, at exit.
    async fn shutdown(&self) {}
}

/// The configured providers, by name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: HashMap<String, Arc<dyn Provider>>,
    /// Providers this daemon knows but has not enabled (configuration says so).
    disabled: BTreeSet<String>,
}

impl Providers {
    /// Adds a provider under its name.
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.by_name.insert(provider.name().to_owned(), provider);
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.by_name.get(name)
    }

    /// Records that the provider called `name` exists but is disabled here, so that asking
    /// for it is answered as such rather than as an unknown name.
    pub fn disable(&mut self, name: &str) {
        self.disabled.insert(name.to_owned());
    }

    /// Whether `name` is a provider this daemon knows but has not enabled.
    pub fn is_disabled(&self, name: &str) -> bool {
        !self.by_name.contains_key(name) && self.disabled.contains(name)
    }

    /// Names of every configured provider, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.by_name.values()
    }
}
