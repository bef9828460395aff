//! The `process` provider: a workspace's instance is a child process of the daemon.
//!
//! ## What an instance is
//!
//! The child is started in a process group of its own, and the instance *is* that group:
//! stopping signals the whole group, so whatever the agent forks goes with it. When the group
//! leader (the process this provider started) exits, the instance is dead, and whatever it left
//! behind in its group is killed at once — as when the main process of a container exits.
//! A process that leaves the group (`setsid`, `setpgid`) escapes; catching those would need a
//! cgroup, which this provider does not use.
//!
//! ## What the child gets
//!
//! - **Program**: `command[0]` with `command[1..]` as its arguments (the workspace's command,
//!   else [`ProcessConfig::default_command`]). It is executed directly: never through a
//!   shell, nothing is interpolated.
//! - **Environment**: cleared, then `PATH` copied from the daemon (so that a bare program name
//!   resolves as it would for the operator), then the spec's `env`, then its `secrets` — the
//!   one place this provider exposes secret values — and last, when the provider records its
//!   children (a [`ProcessConfig::state_dir`]), [`NONCE_VAR`] (`STEWARD_PROCESS_NONCE`): 128
//!   random bits as 32 lowercase hex digits, fresh for each start, by which the next run
//!   finds a child whose start a crash cut short (see below, and `process/adopt.rs`). Set last, so neither the env
//!   nor the secrets can choose it; the agent has no use for it. Nothing else of the daemon's
//!   environment (`HOME`, credentials, `STEWARD_*` of the daemon itself) leaks into an
//!   instance.
//! - **Working directory**: the daemon's. A per-workspace directory would need a lifecycle of
//!   its own (created when, removed on delete?); an agent that wants a scratch directory can
//!   make one. This keeps the provider's state on disk down to logs and records.
//! - **stdin** is `/dev/null`; **stdout and stderr** are one named pipe that the daemon reads
//!   into the workspace's journal, `<log_dir>/<workspace_id>.log` (file mode `0600`, new
//!   directories `0700`), one per workspace across generations, with a `=== steward:` line at
//!   each start and exit, rotated past [`ProcessConfig::log_max_bytes`] and deleted with the
//!   workspace (`process/logs.rs`).
//!
//! ## Supervision
//!
//! One task per child owns it (`process/supervisor.rs`): it alone signals the group while the
//! leader lives, sees the leader exit, and drains what is left of the group. What `/proc`
//! tells about processes (identities, zombies, the boot) is read in `process/procfs.rs`.
//!
//! ## Surviving a daemon crash
//!
//! Children do not die with the daemon (own group, never killed on drop). So that the next run
//! knows them, every child has a durable record in [`ProcessConfig::state_dir`], written
//! before `start` reports success, and a *provisional* record before it is even spawned
//! (`process/records.rs`); the start path is in `process/spawn.rs`. A provider built with a
//! state directory adopts the live children its records name, and resolves the provisional
//! records of starts a crash cut short by the nonce in their children's environments
//! (`process/adopt.rs`).
//!
//! ## What it does not do
//!
//! Without a `state_dir` (or without a `/proc` that shows start times and the boot id),
//! nothing is recorded and a restarted daemon does not know the children of its previous
//! run. A group whose leader died while no daemon ran is not drained (its record is stale,
//! and its id may have been reused, so it is never signaled). The provider does not sandbox,
//! limit resources or switch users (so the children can read each other's environments,
//! nonces included). `remove` keeps the journal (restarts remove the old instance too); it goes
//! with the workspace, when the daemon calls [`Provider::forget_logs`].

mod adopt;
mod logs;
mod procfs;
mod records;
mod spawn;
mod supervisor;

use crate::logs::{LogQuery, LogStream};
use crate::{InstanceSpec, InstanceSummary, Liveness, Provider, ProviderError};
use async_trait::async_trait;
use dashmap::DashMap;
use logs::Journals;
use procfs::{read_boot_id, read_stat};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use steward_domain::{ReadyWhen, WorkspaceId, WorkspaceSpec};
use supervisor::{ChildState, GroupSignal, Tracked};

/// How long `stop`, `remove` and `kill` wait, after the group got SIGKILL, for it to be gone
/// before they report an error. SIGKILL cannot be ignored; a process stuck in the kernel
/// (uninterruptible I/O) can still outlive it for a while.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The variable in each child's environment holding the nonce of its start (when the
/// provider records its children): how the next run finds a child whose start a crash cut
/// short. See the module documentation.
pub const NONCE_VAR: &str = "STEWARD_PROCESS_NONCE";

/// `[providers.process]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Whether the provider is offered at all.
    pub enabled: bool,
    /// How long a stopped instance gets between SIGTERM and SIGKILL.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Directory of the per-workspace log files (empty: the daemon uses `<data_dir>/logs`).
    pub log_dir: PathBuf,
    /// Size past which a workspace's log file is rotated: it replaces the one kept before,
    /// so a workspace keeps at most about twice this on disk.
    pub log_max_bytes: u64,
    /// Directory of the records of live children, from which the next run adopts them after
    /// a crash (empty: the daemon uses `<data_dir>/process`; a provider built with it empty
    /// records and adopts nothing).
    pub state_dir: PathBuf,
    /// On daemon exit ([`Provider::shutdown`]), leave the children running, and their records,
    /// instead of stopping them: the next run adopts them.
    pub leave_running: bool,
    /// Command of a workspace that has none. Empty: a workspace must bring its own.
    pub default_command: Vec<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stop_grace: Duration::from_secs(5),
            log_dir: PathBuf::new(),
            log_max_bytes: 4 * 1024 * 1024,
            state_dir: PathBuf::new(),
            leave_running: false,
            default_command: Vec::new(),
        }
    }
}

/// Local child processes, one per workspace.
pub struct ProcessProvider {
    name: String,
    config: ProcessConfig,
    children: DashMap<WorkspaceId, Arc<Tracked>>,
    /// Set by [`Provider::shutdown`]: no new child may start once the daemon is exiting.
    closed: AtomicBool,
    /// The id of the current boot, written into every record (empty without a state
    /// directory: nothing is recorded).
    boot_id: String,
    /// The workspaces' output.
    journals: Journals,
}

impl fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("children", &self.children.len())
            .field("boot_id", &self.boot_id)
            .field("journals", &self.journals)
            .finish()
    }
}

impl ProcessProvider {
    /// A process provider called `name`. With a [`ProcessConfig::state_dir`], it adopts at
    /// once the children of previous runs that its records name (and deletes stale records):
    /// build it inside a tokio runtime, which then runs their supervisors. Without a `/proc`
    /// to tell a process from a later one with its pid, and a boot id to tell this boot from
    /// an earlier one, it records nothing (its `state_dir` is emptied, with a warning).
    pub fn new(name: impl Into<String>, mut config: ProcessConfig) -> Self {
        let name = name.into();
        let mut boot_id = String::new();
        if !config.state_dir.as_os_str().is_empty() {
            match read_boot_id().filter(|_| read_stat(nix::unistd::getpid()).is_some()) {
                Some(id) => boot_id = id,
                None => {
                    tracing::warn!(
                        provider = %name,
                        "no /proc (or no boot id in it): instance processes are not recorded, and a restarted daemon will not know them"
                    );
                    config.state_dir = PathBuf::new();
                }
            }
        }
        let journals = Journals::new(config.log_dir.clone(), config.log_max_bytes);
        let provider = Self {
            name,
            config,
            children: DashMap::new(),
            closed: AtomicBool::new(false),
            boot_id,
            journals,
        };
        provider.adopt();
        provider
    }

    /// Its configuration.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// The log file of a workspace's instances (stdout and stderr, every generation; see
    /// `process/logs.rs` for its format).
    pub fn log_path(&self, id: WorkspaceId) -> PathBuf {
        self.journals.of(id).path().to_path_buf()
    }

    /// Whether output of the workspace's instances is still being read (some process of an
    /// instance still holds its output open).
    pub fn reading_output(&self, id: WorkspaceId) -> bool {
        self.journals.pumping(id)
    }

    /// Pid of the workspace's tracked child (also its process group id), alive or not.
    pub fn pid(&self, id: WorkspaceId) -> Option<u32> {
        self.children.get(&id).map(|t| t.pid)
    }

    /// When the workspace's tracked child was started.
    pub fn started_at(&self, id: WorkspaceId) -> Option<SystemTime> {
        self.children.get(&id).map(|t| t.started_at)
    }

    /// Exit status of the workspace's tracked child, once it has exited (`None` while it
    /// runs, when its status could not be collected, or for an adopted child).
    pub fn exit_status(&self, id: WorkspaceId) -> Option<ExitStatus> {
        self.children.get(&id).and_then(|t| t.state().exit_status())
    }

    fn grace(&self) -> Duration {
        self.config.stop_grace
    }
}

#[async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_ready_when(&self) -> ReadyWhen {
        ReadyWhen::Agent
    }

    fn admits(&self, spec: &WorkspaceSpec) -> Result<(), String> {
        let named = spec.command.as_ref().is_some_and(|c| !c.is_empty());
        if named || !self.config.default_command.is_empty() {
            return Ok(());
        }
        Err(format!(
            "provider {:?} has no default command (no steward-agent installed next to \
             steward): the workspace needs a command",
            self.name
        ))
    }

    /// See `process/spawn.rs`: the records come first, so that a child is never unknown to
    /// the next run. Errors: `AlreadyExists` if the workspace's child runs; `InvalidSpec` for
    /// a missing or unrunnable program or a malformed environment; `Engine` for I/O failures.
    async fn start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        self.spawn(spec).await
    }

    async fn stop(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        self.stop_child(id, "stop").await
    }

    async fn remove(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        self.stop_child(id, "remove").await
    }

    /// The workspace's journal (see `process/logs.rs`).
    async fn logs(&self, id: WorkspaceId, query: LogQuery) -> Result<LogStream, ProviderError> {
        self.journals.of(id).stream(query).await
    }

    /// Deletes the workspace's journal and ends its followers.
    async fn forget_logs(&self, id: WorkspaceId) {
        self.journals.forget(id);
    }

    async fn liveness(&self, id: WorkspaceId) -> Result<Liveness, ProviderError> {
        Ok(self
            .children
            .get(&id)
            .map_or(Liveness::Absent, |t| t.liveness()))
    }

    /// SIGKILL to the group, as a crash would; returns once the leader is dead. The child
    /// stays tracked, as `Dead`, until it is stopped, removed or replaced.
    async fn kill(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let Some(tracked) = self.children.get(&id).map(|t| Arc::clone(t.value())) else {
            return Ok(());
        };
        tracing::warn!(workspace = %id, generation = %tracked.generation, pid = tracked.pid, "killing instance process (fault drill)");
        tracked.request(GroupSignal::Kill);
        tracked
            .wait_until(id, KILL_WAIT, |s| *s != ChildState::Running)
            .await
    }

    async fn list(&self) -> Result<Vec<InstanceSummary>, ProviderError> {
        Ok(self
            .children
            .iter()
            .map(|t| InstanceSummary {
                workspace_id: *t.key(),
                liveness: t.liveness(),
            })
            .collect())
    }

    /// Refuses new starts, then stops every child, adopted ones included, in parallel (each
    /// with the grace period), unless `leave_running` is set: then the children and their
    /// records stay, for the next run to adopt.
    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let ids: Vec<WorkspaceId> = self.children.iter().map(|t| *t.key()).collect();
        if self.config.leave_running {
            tracing::info!(provider = %self.name, children = ids.len(), "leaving instance processes running");
            return;
        }
        tracing::info!(provider = %self.name, children = ids.len(), "stopping instance processes");
        let results =
            futures::future::join_all(ids.iter().map(|id| self.stop_child(*id, "shutdown"))).await;
        for (id, result) in ids.iter().zip(results) {
            if let Err(error) = result {
                tracing::warn!(workspace = %id, %error, "instance process not stopped at shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_without_a_command_is_admitted_only_with_a_default_command() {
        let spec = |command: Option<Vec<String>>| WorkspaceSpec {
            name: "w".into(),
            provider: "process".into(),
            image: None,
            command,
            env: Default::default(),
            model: None,
        };
        let bare = ProcessProvider::new("process", ProcessConfig::default());
        let refused = bare.admits(&spec(None)).expect_err("nothing to run");
        assert!(refused.contains("needs a command"), "{refused}");
        assert!(bare
            .admits(&spec(Some(vec!["sleep".into(), "1".into()])))
            .is_ok());
        let with_default = ProcessProvider::new(
            "process",
            ProcessConfig {
                default_command: vec!["steward-agent".into()],
                ..ProcessConfig::default()
            },
        );
        assert!(with_default.admits(&spec(None)).is_ok());
    }

    #[test]
    fn config_defaults_apply_to_missing_keys_and_unknown_keys_are_refused() {
        let config: ProcessConfig = toml::from_str("").expect("empty config");
        assert_eq!(config, ProcessConfig::default());
        assert_eq!(config.stop_grace, Duration::from_secs(5));
        assert_eq!(config.log_max_bytes, 4 * 1024 * 1024);
        assert!(
            config.log_dir.as_os_str().is_empty(),
            "empty: the daemon puts logs under its data dir"
        );
        assert!(
            config.state_dir.as_os_str().is_empty(),
            "empty: the daemon puts records under its data dir"
        );
        assert!(config.enabled && !config.leave_running && config.default_command.is_empty());

        let config: ProcessConfig =
            toml::from_str("stop_grace = \"300ms\"\ndefault_command = [\"agent\", \"--serve\"]")
                .expect("partial config");
        assert_eq!(config.stop_grace, Duration::from_millis(300));
        assert_eq!(config.default_command, ["agent", "--serve"]);
        assert!(toml::from_str::<ProcessConfig>("grace = 1").is_err());
    }
}
