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
//!   finds a child whose start a crash cut short (see below). Set last, so neither the env
//!   nor the secrets can choose it; the agent has no use for it. Nothing else of the daemon's
//!   environment (`HOME`, credentials, `STEWARD_*` of the daemon itself) leaks into an
//!   instance.
//! - **Working directory**: the daemon's. A per-workspace directory would need a lifecycle of
//!   its own (created when, removed on delete?); an agent that wants a scratch directory can
//!   make one. This keeps the provider's state on disk down to logs and records.
//! - **stdin** is `/dev/null`; **stdout and stderr** are appended to
//!   `<log_dir>/<workspace_id>.log` (file mode `0600`, new directories `0700`), one file per
//!   workspace across generations, with a `=== steward:` line at each start and exit.
//!
//! ## Supervision
//!
//! One task per child owns its [`tokio::process::Child`]. It reaps the leader, records the
//! exit status, and drains the group. While the leader lives, only this task signals the
//! group, and only after checking that the leader has not been reaped: until then the leader's
//! pid (which is the group id) cannot have been recycled, so a signal cannot reach a stranger.
//! After the leader is reaped, the group id stays reserved for as long as any member of the
//! group lives, which is exactly as long as the drain signals it.
//!
//! Orphaned descendants are reparented to PID 1 (or a subreaper). If that process does not
//! reap them (a daemon running as PID 1 of a container without an init, for instance), they
//! stay zombies; zombies count as gone here (read from `/proc` on Linux), so a stop never
//! waits for them.
//!
//! ## Surviving a daemon crash
//!
//! Children do not die with the daemon (own group, never killed on drop). So that the next run
//! knows them, every child has a record in [`ProcessConfig::state_dir`]:
//! `<workspace>.<generation>.<pid>.record` (mode `0600`, new directories `0700`), holding the
//! workspace, the generation, the pid (= group id), the process start time in clock ticks
//! after boot (`/proc/<pid>/stat`, field 22), the boot id (`/proc/sys/kernel/random/boot_id`)
//! and the wall-clock start. It is written atomically (temporary file, fsync, rename, fsync of
//! the directory) before `start` reports success, so a start the daemon acknowledged is never
//! forgotten, and it is removed by the child's supervisor once nothing of its group runs. One
//! file per child, named after its pid: the cleanup of one child can never remove another's
//! record, not even that of a newer generation of the same workspace.
//!
//! The pid is known only once the child runs, so a crash between the spawn and that record
//! would leave a child nobody knows of, and the next run would start a second instance beside
//! it. Hence a *provisional* record comes first: before spawning, `start` durably writes
//! `<workspace>.<generation>.<tag>.pending` (same modes; `tag` is 64 random bits, so that one
//! start's cleanup never removes another's), holding the workspace, the generation, the
//! start's nonce (the value of [`NONCE_VAR`] in the child's environment), the boot id and the
//! wall-clock start. Once the full record is durable the provisional one is deleted. A start
//! that cannot write its provisional record fails without spawning anything; one whose spawn
//! fails deletes it; one whose full record cannot be written kills the child, whose
//! provisional record then goes with its group (so that a crash before the kill lands still
//! leaves the child findable).
//!
//! A provider built with a state directory adopts, right away, the children its records name:
//! a record whose process still runs, is not a zombie, leads its own group and has the
//! recorded start time is tracked again as that workspace's instance of that generation, so
//! that `list` at boot includes it. Any other record is stale — its process is gone, or its
//! pid now belongs to another process — and is deleted without signaling anything. So is
//! every record of another boot: after a reboot, pids and start times (counted from boot)
//! name unrelated processes. Of two live records of one workspace, the newest generation is
//! adopted and the older one is stopped.
//!
//! A provisional record of this boot is resolved by one scan of `/proc`: its child is a
//! process that runs (not a zombie), leads its own process group but not its own session
//! (the child is started with `setpgid`, never `setsid`: a program that daemonized itself
//! does not pass for its launcher), is neither init nor the daemon, and whose initial
//! environment (`/proc/<pid>/environ`) holds `STEWARD_PROCESS_NONCE=<nonce>`; of several (a
//! descendant that moved to a group of its own inherits the variable), the earliest started.
//! One found is adopted like the process of a full record (identity: pid and start time) and
//! gets its full record (if that cannot be written, the provisional record stays as its
//! record); either way the provisional record is then deleted. No other process can carry the
//! nonce by chance: 128 bits from the operating system's generator, written only to a `0600`
//! file in a `0700` directory and to the child's environment.
//!
//! An adopted process is no child of ours (it was reparented when the previous daemon died),
//! so its supervisor cannot wait for it: every 100 ms it looks in `/proc` whether the process
//! with that pid *and that start time* still runs, and it checks so again right before each
//! signal to the group. Otherwise it behaves as for a child: SIGTERM then SIGKILL
//! after the grace period on a stop, and the group drained once the leader is gone. Its exit
//! status went to its new parent and stays unknown.
//!
//! ## What it does not do
//!
//! Without a `state_dir` (or without a `/proc` that shows start times and the boot id),
//! nothing is recorded and a restarted daemon does not know the children of its previous
//! run. A group whose leader died while no daemon ran is not drained (its record is stale,
//! and its id may have been reused, so it is never signaled). The provider does not sandbox,
//! limit resources or switch users (so the children can read each other's environments,
//! nonces included), and `remove` keeps the log file (restarts remove the old instance too;
//! deleting a workspace's logs is the daemon's business).

use crate::{InstanceSpec, InstanceSummary, Liveness, Provider, ProviderError};
use async_trait::async_trait;
use dashmap::mapref::entry::Entry as Slot;
use dashmap::DashMap;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use steward_domain::{Generation, ReadyWhen, WorkspaceId};
use tokio::process::Command;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long `stop`, `remove` and `kill` wait, after the group got SIGKILL, for it to be gone
/// before they report an error. SIGKILL cannot be ignored; a process stuck in the kernel
/// (uninterruptible I/O) can still outlive it for a while.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// First and longest pause between two looks at a group that is being drained.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(500);

/// How often the supervisor of an adopted process (not our child: nothing tells us when it
/// exits) looks in `/proc` whether it still runs.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

/// The variable in each child's environment holding the nonce of its start (when the
/// provider records its children): how the next run finds a child whose start a crash cut
/// short. See the module documentation.
pub const NONCE_VAR: &str = "STEWARD_PROCESS_NONCE";

/// Where Linux publishes the id of the current boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

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
}

impl fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("children", &self.children.len())
            .field("boot_id", &self.boot_id)
            .finish()
    }
}

/// One child this provider started or adopted. Holds no environment: nothing here is secret.
#[derive(Debug)]
struct Tracked {
    generation: Generation,
    /// The leader's pid, which is also the group id.
    pid: u32,
    /// Wall-clock start, for inspection.
    started_at: SystemTime,
    /// Requests to the supervisor task; it alone signals the group while the leader lives.
    signals: mpsc::UnboundedSender<GroupSignal>,
    /// Published by the supervisor task.
    state: watch::Receiver<ChildState>,
}

/// What the supervisor task is asked to send to the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupSignal {
    /// Graceful stop: SIGTERM now, SIGKILL when the grace period is over.
    Terminate,
    /// SIGKILL now.
    Kill,
}

/// How a group leader ended: its exit status, or `None` where it cannot be known (waiting
/// for it failed, or it was adopted, and its status went to its new parent).
type Exit = Option<ExitStatus>;

/// Where a child is in its life, as the supervisor task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildState {
    /// The leader has not exited (a child: has not been reaped).
    Running,
    /// The leader has exited; the rest of its group is being stopped.
    Draining(Exit),
    /// The leader has exited and nothing of its group runs any more.
    Exited(Exit),
}

impl ChildState {
    fn exit_status(self) -> Exit {
        match self {
            ChildState::Running => None,
            ChildState::Draining(status) | ChildState::Exited(status) => status,
        }
    }
}

impl Tracked {
    fn state(&self) -> ChildState {
        *self.state.borrow()
    }

    fn liveness(&self) -> Liveness {
        match self.state() {
            ChildState::Running => Liveness::Alive(self.generation),
            ChildState::Draining(_) | ChildState::Exited(_) => Liveness::Dead(self.generation),
        }
    }

    /// Asks the supervisor to signal the group. Once the leader has exited the supervisor
    /// drains the group on its own and no longer listens, so a lost request changes nothing.
    fn request(&self, signal: GroupSignal) {
        let _ = self.signals.send(signal);
    }

    /// Waits until `reached` holds for the child's state, for at most `bound`.
    async fn wait_until(
        &self,
        id: WorkspaceId,
        bound: Duration,
        reached: impl FnMut(&ChildState) -> bool,
    ) -> Result<(), ProviderError> {
        let mut state = self.state.clone();
        let waited =
            tokio::time::timeout(bound, async { state.wait_for(reached).await.map(|_| ()) }).await;
        match waited {
            Ok(Ok(())) => Ok(()),
            // The supervisor ended without getting there: its runtime is shutting down.
            Ok(Err(_)) => Err(ProviderError::Engine(format!(
                "the supervisor of process {} (workspace {id}) is gone",
                self.pid
            ))),
            Err(_) => Err(ProviderError::Engine(format!(
                "process group {} (workspace {id}) still runs after SIGKILL",
                self.pid
            ))),
        }
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
        let provider = Self {
            name,
            config,
            children: DashMap::new(),
            closed: AtomicBool::new(false),
            boot_id,
        };
        provider.adopt();
        provider
    }

    /// Its configuration.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// The log file of a workspace's instances (stdout and stderr, every generation).
    pub fn log_path(&self, id: WorkspaceId) -> PathBuf {
        self.config.log_dir.join(format!("{id}.log"))
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

    /// The program and arguments to run for `spec`.
    fn argv<'a>(&'a self, spec: &'a InstanceSpec) -> Result<&'a [String], ProviderError> {
        let argv = match spec.command.as_deref() {
            Some(command) if !command.is_empty() => command,
            _ => self.config.default_command.as_slice(),
        };
        let Some(program) = argv.first() else {
            return Err(ProviderError::InvalidSpec(
                "the workspace has no command and the process provider has no default_command"
                    .to_owned(),
            ));
        };
        if program.is_empty() {
            return Err(ProviderError::InvalidSpec(
                "the program name is empty".to_owned(),
            ));
        }
        if let Some(i) = argv.iter().position(|arg| arg.contains('\0')) {
            return Err(ProviderError::InvalidSpec(format!(
                "command element {i} contains a NUL byte"
            )));
        }
        Ok(argv)
    }

    /// Hands `instance` to a supervisor task of its own on `runtime`; returns what tracks it.
    fn supervise(&self, runtime: &Handle, instance: Instance) -> Arc<Tracked> {
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ChildState::Running);
        let tracked = Arc::new(Tracked {
            generation: instance.generation,
            pid: instance.group.as_raw().unsigned_abs(),
            started_at: instance.started_at,
            signals,
            state,
        });
        let supervisor = Supervisor {
            grace: self.grace(),
            log_path: self.log_path(instance.workspace),
            instance,
            signals: signal_rx,
            state: state_tx,
        };
        runtime.spawn(supervisor.run());
        tracked
    }

    /// Records a child that has just started, when there is a state directory: the path of
    /// its record, durable once this returns.
    fn record(
        &self,
        workspace: WorkspaceId,
        generation: Generation,
        group: Pid,
        started_at: SystemTime,
    ) -> Result<Option<PathBuf>, ProviderError> {
        let dir = &self.config.state_dir;
        if dir.as_os_str().is_empty() {
            return Ok(None);
        }
        let identity = Identity::of(group).ok_or_else(|| {
            ProviderError::Engine(format!("cannot read the start time of process {group}"))
        })?;
        let record = Record {
            workspace,
            generation,
            identity,
            boot_id: self.boot_id.clone(),
            started_at,
        };
        write_record(dir, &record).map(Some).map_err(|e| {
            ProviderError::Engine(format!(
                "recording process {group} in {}: {e}",
                dir.display()
            ))
        })
    }

    /// Before a spawn, when there is a state directory: durably writes the provisional record
    /// of a start; returns its path and the nonce to put in the child's environment.
    fn provisional(
        &self,
        workspace: WorkspaceId,
        generation: Generation,
        started_at: SystemTime,
    ) -> Result<Option<(PathBuf, String)>, ProviderError> {
        let dir = &self.config.state_dir;
        if dir.as_os_str().is_empty() {
            return Ok(None);
        }
        let written = random_hex::<16>().and_then(|nonce| {
            let provisional = Provisional {
                workspace,
                generation,
                nonce,
                boot_id: self.boot_id.clone(),
                started_at,
            };
            let path = write_provisional(dir, &provisional)?;
            Ok(Some((path, provisional.nonce)))
        });
        written.map_err(|e| {
            ProviderError::Engine(format!(
                "recording the start of workspace {workspace} in {}: {e}",
                dir.display()
            ))
        })
    }

    /// Adopts the live children that the records of previous runs name, and deletes the
    /// records of those that are gone. See the module documentation.
    fn adopt(&self) {
        let dir = &self.config.state_dir;
        if dir.as_os_str().is_empty() {
            return;
        }
        let Ok(runtime) = Handle::try_current() else {
            tracing::warn!(
                provider = %self.name,
                "built outside a tokio runtime: the processes of previous runs are not adopted"
            );
            return;
        };
        let mut live = Vec::new();
        for (path, record) in read_records(dir) {
            if record.boot_id != self.boot_id {
                tracing::info!(
                    workspace = %record.workspace,
                    generation = %record.generation,
                    pid = record.identity.pid.as_raw(),
                    "the record of a process is from an earlier boot; removing it"
                );
                remove_record(&path);
            } else if record.identity.adoptable() {
                live.push((path, record));
            } else {
                tracing::info!(
                    workspace = %record.workspace,
                    generation = %record.generation,
                    pid = record.identity.pid.as_raw(),
                    "the process of a previous run is gone (or its pid was reused); removing its record"
                );
                remove_record(&path);
            }
        }
        self.resolve_provisionals(dir, &mut live);
        // The newest generation of each workspace first: it is the one tracked.
        live.sort_by(|(_, a), (_, b)| {
            (a.workspace, b.generation).cmp(&(b.workspace, a.generation))
        });
        for (path, record) in live {
            let instance = Instance {
                workspace: record.workspace,
                generation: record.generation,
                group: record.identity.pid,
                started_at: record.started_at,
                record: Some(path),
                leader: Leader::Adopted(record.identity),
            };
            let tracked = self.supervise(&runtime, instance);
            match self.children.entry(record.workspace) {
                Slot::Vacant(slot) => {
                    slot.insert(tracked);
                    tracing::info!(
                        workspace = %record.workspace,
                        generation = %record.generation,
                        pid = record.identity.pid.as_raw(),
                        "adopted the instance process of a previous run"
                    );
                }
                Slot::Occupied(newer) => {
                    tracing::warn!(
                        workspace = %record.workspace,
                        generation = %record.generation,
                        pid = record.identity.pid.as_raw(),
                        newer_generation = %newer.get().generation,
                        "a superseded instance process of a previous run still runs; stopping it"
                    );
                    tracked.request(GroupSignal::Terminate);
                }
            }
        }
    }

    /// Resolves the provisional records of starts that a crash cut short (see the module
    /// documentation): the child of each one of this boot is looked for by its nonce and, if
    /// found, joins `live` with a full record of its own. Every provisional record is deleted,
    /// unless it has to stand in for a full record that cannot be written.
    fn resolve_provisionals(&self, dir: &Path, live: &mut Vec<(PathBuf, Record)>) {
        let mut pending = Vec::new();
        for (path, provisional) in read_provisionals(dir) {
            if provisional.boot_id == self.boot_id {
                pending.push((path, provisional));
            } else {
                tracing::info!(
                    workspace = %provisional.workspace,
                    generation = %provisional.generation,
                    "a provisional process record is from an earlier boot; removing it"
                );
                remove_record(&path);
            }
        }
        if pending.is_empty() {
            return;
        }
        let nonces: HashSet<&str> = pending.iter().map(|(_, p)| p.nonce.as_str()).collect();
        let found = find_by_nonce(&nonces);
        for (path, provisional) in pending {
            let Some(identity) = found.get(&provisional.nonce).copied() else {
                tracing::info!(
                    workspace = %provisional.workspace,
                    generation = %provisional.generation,
                    "no process carries the nonce of a provisional record (its spawn never happened, or its process is gone); removing it"
                );
                remove_record(&path);
                continue;
            };
            if live.iter().any(|(_, record)| record.identity == identity) {
                // The crash came after the full record was written: that one names the child.
                remove_record(&path);
                continue;
            }
            let record = Record {
                workspace: provisional.workspace,
                generation: provisional.generation,
                identity,
                boot_id: self.boot_id.clone(),
                started_at: provisional.started_at,
            };
            tracing::info!(
                workspace = %record.workspace,
                generation = %record.generation,
                pid = identity.pid.as_raw(),
                "found the process of a start that a crash cut short, by its nonce"
            );
            match write_record(dir, &record) {
                Ok(full) => {
                    remove_record(&path);
                    live.push((full, record));
                }
                Err(error) => {
                    tracing::warn!(
                        workspace = %record.workspace,
                        pid = identity.pid.as_raw(),
                        %error,
                        "cannot write the record of a process found by its nonce; its provisional record stands in"
                    );
                    live.push((path, record));
                }
            }
        }
    }

    /// Stops the workspace's child and forgets it: SIGTERM to the group, SIGKILL after the
    /// grace period, and returns once nothing of the group runs.
    async fn stop_child(
        &self,
        id: WorkspaceId,
        operation: &'static str,
    ) -> Result<(), ProviderError> {
        let Some(tracked) = self.children.get(&id).map(|t| Arc::clone(t.value())) else {
            return Ok(());
        };
        if tracked.state() == ChildState::Running {
            tracing::info!(
                workspace = %id,
                generation = %tracked.generation,
                pid = tracked.pid,
                operation,
                "stopping instance process"
            );
        }
        tracked.request(GroupSignal::Terminate);
        tracked
            .wait_until(id, self.grace() + KILL_WAIT, |s| {
                matches!(s, ChildState::Exited(_))
            })
            .await?;
        // Only this child: a start may have replaced it meanwhile.
        self.children
            .remove_if(&id, |_, t| Arc::ptr_eq(t, &tracked));
        Ok(())
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

    /// Flow: check the spec, write the provisional record (durably, in the state directory),
    /// open the log, spawn with the record's nonce, write the full record (durably), delete
    /// the provisional one, hand the child to its supervisor. Errors: `AlreadyExists` if the
    /// workspace's child runs; `InvalidSpec` for a missing or unrunnable program or a
    /// malformed environment; `Engine` for I/O failures — nothing is spawned without a
    /// provisional record, and a child whose full record could not be written is killed.
    async fn start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        let id = spec.workspace_id;
        if self.closed.load(Ordering::Acquire) {
            return Err(ProviderError::Engine(
                "the process provider is shutting down".to_owned(),
            ));
        }
        let argv = self.argv(spec)?;
        spec.check_env()?;

        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.envs(&spec.env);
        for (key, value) in &spec.secrets {
            command.env(key, value.expose_secret());
        }
        command
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // `command` holds secret values from here on: it is never logged or formatted.

        // The slot stays locked from the check to the insert, so two starts cannot both spawn;
        // nothing in between awaits (the records' fsyncs block this shard of the map for a
        // few milliseconds, no more).
        let slot = self.children.entry(id);
        if let Slot::Occupied(existing) = &slot {
            if existing.get().state() == ChildState::Running {
                return Err(ProviderError::AlreadyExists(existing.get().generation.0));
            }
            // A dead child is replaced; its supervisor finishes draining its group on its own.
        }
        let started_at = SystemTime::now();
        let provisional = match self.provisional(id, spec.generation, started_at)? {
            Some((path, nonce)) => {
                // Last: neither the env nor the secrets can choose it.
                command.env(NONCE_VAR, nonce);
                Some(path)
            }
            None => None,
        };
        // Until the spawn succeeds, a failure leaves no child: its provisional record goes.
        let abandon = |error: ProviderError| {
            if let Some(path) = &provisional {
                remove_record(path);
            }
            error
        };
        let log_path = self.log_path(id);
        let log = open_log(&self.config.log_dir, &log_path, spec.generation).map_err(abandon)?;
        let stderr = log.try_clone().map_err(|e| {
            abandon(ProviderError::Engine(format!(
                "log file of workspace {id}: {e}"
            )))
        })?;
        command.stdout(log).stderr(stderr);

        let child = command
            .spawn()
            .map_err(|e| abandon(spawn_error(&argv[0], &e)))?;
        let pid = child
            .id()
            .ok_or_else(|| ProviderError::Engine("the started process has no pid".to_owned()))?;
        let group = i32::try_from(pid)
            .map(Pid::from_raw)
            .map_err(|_| ProviderError::Engine(format!("pid {pid} out of range")))?;
        let recorded = self.record(id, spec.generation, group, started_at);
        let record = match &recorded {
            Ok(full) => {
                if let Some(path) = &provisional {
                    remove_record(path);
                }
                full.clone()
            }
            // The child is killed below; until its group is gone, its provisional record
            // names it (should the daemon crash before the kill lands).
            Err(_) => provisional,
        };
        let tracked = self.supervise(
            &Handle::current(),
            Instance {
                workspace: id,
                generation: spec.generation,
                group,
                started_at,
                record,
                leader: Leader::Child(child),
            },
        );
        if let Err(error) = recorded {
            tracing::warn!(workspace = %id, generation = %spec.generation, pid, %error, "could not record the instance process; killing it");
            tracked.request(GroupSignal::Kill);
            return Err(error);
        }
        slot.insert(tracked);
        tracing::info!(workspace = %id, generation = %spec.generation, pid, "instance process started");
        Ok(())
    }

    async fn stop(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        self.stop_child(id, "stop").await
    }

    async fn remove(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        self.stop_child(id, "remove").await
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

/// Creates the log directory (`0700` where new) and opens the workspace's log for appending
/// (`0600`), marking the start of a generation.
fn open_log(dir: &Path, path: &Path, generation: Generation) -> Result<File, ProviderError> {
    let io_error = |what: &str, e: io::Error| ProviderError::Engine(format!("{what}: {e}"));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(&format!("creating log directory {}", dir.display()), e))?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(&format!("opening log file {}", path.display()), e))?;
    // `mode` applies only to a new file; an older one is tightened too.
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(|e| io_error(&format!("restricting log file {}", path.display()), e))?;
    writeln!(
        file,
        "=== steward: generation {generation} starting at {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    )
    .map_err(|e| io_error(&format!("writing log file {}", path.display()), e))?;
    Ok(file)
}

/// A spawn failure, told in terms of the spec where the spec is at fault.
fn spawn_error(program: &str, error: &io::Error) -> ProviderError {
    match error.kind() {
        io::ErrorKind::NotFound => {
            ProviderError::InvalidSpec(format!("program {program:?} not found"))
        }
        io::ErrorKind::PermissionDenied => ProviderError::InvalidSpec(format!(
            "program {program:?} cannot be executed (permission denied)"
        )),
        _ if error.raw_os_error() == Some(Errno::ENOEXEC as i32) => ProviderError::InvalidSpec(
            format!("program {program:?} is not in an executable format"),
        ),
        _ => ProviderError::Engine(format!("cannot start {program:?}: {error}")),
    }
}

/// What tells a process apart from a later one that got the same pid: the pid and the start
/// time of the process, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    pid: Pid,
    starttime: u64,
}

impl Identity {
    /// The identity of the process that has `pid` now, if `/proc` shows one.
    fn of(pid: Pid) -> Option<Self> {
        read_stat(pid).map(|stat| Self {
            pid,
            starttime: stat.starttime,
        })
    }

    /// Whether this very process (same pid, same start time) still runs, not as a zombie,
    /// and leads its own process group.
    fn leads_live_group(self) -> bool {
        read_stat(self.pid).is_some_and(|stat| {
            stat.runs() && stat.pgrp == self.pid.as_raw() && stat.starttime == self.starttime
        })
    }

    /// Whether a record naming this process may be adopted: it leads a live group, and that
    /// group is neither init's nor the daemon's own (which only a forged record could name).
    fn adoptable(self) -> bool {
        let daemon = [nix::unistd::getpid(), nix::unistd::getpgrp()];
        self.pid.as_raw() > 1 && !daemon.contains(&self.pid) && self.leads_live_group()
    }
}

/// A child's record in the state directory: enough to find it again after a daemon crash,
/// and to tell it from a later process that got the same pid. Stored as `key=value` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    workspace: WorkspaceId,
    generation: Generation,
    identity: Identity,
    /// The boot it was written in: its pid and start time mean nothing in another.
    boot_id: String,
    /// Wall-clock start, for inspection.
    started_at: SystemTime,
}

impl Record {
    /// One file per child: a child's cleanup can never remove another's record.
    fn file_name(&self) -> String {
        format!(
            "{}.{}.{}.record",
            self.workspace, self.generation, self.identity.pid
        )
    }

    fn to_text(&self) -> String {
        format!(
            "workspace={}\ngeneration={}\npid={}\nstarttime={}\nboot_id={}\nstarted_at_ms={}\n",
            self.workspace,
            self.generation,
            self.identity.pid,
            self.identity.starttime,
            self.boot_id,
            millis_since_epoch(self.started_at)
        )
    }

    /// The record `text` holds: every key once, nothing else.
    fn parse(text: &str) -> Option<Self> {
        let fields = fields(
            text,
            &[
                "workspace",
                "generation",
                "pid",
                "starttime",
                "boot_id",
                "started_at_ms",
            ],
        )?;
        let pid: i32 = fields.get("pid")?.parse().ok()?;
        Some(Self {
            workspace: fields.get("workspace")?.parse().ok()?,
            generation: Generation(fields.get("generation")?.parse().ok()?),
            identity: Identity {
                pid: Some(pid).filter(|pid| *pid > 0).map(Pid::from_raw)?,
                starttime: fields.get("starttime")?.parse().ok()?,
            },
            boot_id: parse_boot_id(fields.get("boot_id")?)?,
            started_at: parse_millis(fields.get("started_at_ms")?)?,
        })
    }
}

/// The record of a start, written before the spawn: the child is not known yet, only the
/// nonce it will carry in its environment ([`NONCE_VAR`]). Stored as `key=value` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Provisional {
    workspace: WorkspaceId,
    generation: Generation,
    /// 128 random bits, 32 lowercase hex digits.
    nonce: String,
    /// The boot it was written in: a process of another boot is never its child.
    boot_id: String,
    /// Wall-clock start, for inspection.
    started_at: SystemTime,
}

impl Provisional {
    fn to_text(&self) -> String {
        format!(
            "workspace={}\ngeneration={}\nnonce={}\nboot_id={}\nstarted_at_ms={}\n",
            self.workspace,
            self.generation,
            self.nonce,
            self.boot_id,
            millis_since_epoch(self.started_at)
        )
    }

    /// The provisional record `text` holds: every key once, nothing else.
    fn parse(text: &str) -> Option<Self> {
        let fields = fields(
            text,
            &[
                "workspace",
                "generation",
                "nonce",
                "boot_id",
                "started_at_ms",
            ],
        )?;
        let nonce = *fields.get("nonce")?;
        let well_formed = nonce.len() == 32
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        Some(Self {
            workspace: fields.get("workspace")?.parse().ok()?,
            generation: Generation(fields.get("generation")?.parse().ok()?),
            nonce: Some(nonce.to_owned()).filter(|_| well_formed)?,
            boot_id: parse_boot_id(fields.get("boot_id")?)?,
            started_at: parse_millis(fields.get("started_at_ms")?)?,
        })
    }
}

/// The `key=value` lines of `text`, if each of `keys` is there once and nothing else is.
fn fields<'a>(text: &'a str, keys: &[&str]) -> Option<HashMap<&'a str, &'a str>> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=')?;
        if !keys.contains(&key) || fields.insert(key, value).is_some() {
            return None;
        }
    }
    (fields.len() == keys.len()).then_some(fields)
}

fn millis_since_epoch(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn parse_millis(text: &str) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(text.parse().ok()?))
}

/// A boot id as Linux writes it (a UUID); anything else is refused.
fn parse_boot_id(text: &str) -> Option<String> {
    let well_formed = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    well_formed.then(|| text.to_owned())
}

/// The id of the current boot, if `/proc` tells it.
fn read_boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .and_then(|text| parse_boot_id(text.trim()))
}

/// `BYTES` random bytes from the operating system's generator, as lowercase hex.
fn random_hex<const BYTES: usize>() -> io::Result<String> {
    let mut bytes = [0u8; BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `record` into `dir` (`0700` where new) atomically and durably; returns its path.
fn write_record(dir: &Path, record: &Record) -> io::Result<PathBuf> {
    write_durably(dir, &record.file_name(), &record.to_text())
}

/// Writes `provisional` into `dir` as [`write_record`] does, under a name of its own
/// (`<workspace>.<generation>.<64 random bits>.pending`); returns its path.
fn write_provisional(dir: &Path, provisional: &Provisional) -> io::Result<PathBuf> {
    let name = format!(
        "{}.{}.{}.pending",
        provisional.workspace,
        provisional.generation,
        random_hex::<8>()?
    );
    write_durably(dir, &name, &provisional.to_text())
}

/// Puts `text` at `dir/name` (`dir` `0700` where new) atomically and durably.
fn write_durably(dir: &Path, name: &str, text: &str) -> io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    replace_durably(dir, &temporary, &path, text.as_bytes()).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })?;
    Ok(path)
}

/// Puts `contents` at `path` in `dir` through `temporary` (`0600`): written, fsynced, renamed
/// into place, and the directory fsynced, so that `path` holds either nothing or all of it,
/// even after a crash.
fn replace_durably(dir: &Path, temporary: &Path, path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(temporary, path)?;
    File::open(dir)?.sync_all()
}

/// Every record in `dir`, with its path. A temporary file of an interrupted write counts too:
/// the start that wrote it was cut short by a crash, and its child, if its record is whole and
/// names it, is adopted like any other. A file that does not hold a record is deleted; any
/// other file is left alone.
fn read_records(dir: &Path) -> Vec<(PathBuf, Record)> {
    read_entries(dir, "record", Record::parse)
}

/// Every provisional record in `dir`, with its path, as [`read_records`] reads records (a
/// temporary file of an interrupted write is resolved too: no process carries its nonce).
fn read_provisionals(dir: &Path) -> Vec<(PathBuf, Provisional)> {
    read_entries(dir, "pending", Provisional::parse)
}

/// The files of `dir` named `*.<kind>` or `*.<kind>.tmp` that `parse` accepts, with their
/// paths; the ones it refuses are deleted.
fn read_entries<T>(dir: &Path, kind: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<(PathBuf, T)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the process records");
            return Vec::new();
        }
    };
    let (suffix, temporary) = (format!(".{kind}"), format!(".{kind}.tmp"));
    let mut found = Vec::new();
    for path in entries.flatten().map(|entry| entry.path()) {
        let is_ours = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(&suffix) || name.ends_with(&temporary));
        if !is_ours {
            continue;
        }
        match std::fs::read_to_string(&path).map(|text| parse(&text)) {
            Ok(Some(entry)) => found.push((path, entry)),
            Ok(None) => {
                tracing::warn!(path = %path.display(), "removing a malformed process record");
                remove_record(&path);
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read a process record")
            }
        }
    }
    found
}

/// For each of `nonces`, the process that is the child of the start with that nonce, if one
/// runs: see the module documentation for what qualifies, and which of several is chosen.
fn find_by_nonce(nonces: &HashSet<&str>) -> HashMap<String, Identity> {
    let mut found: HashMap<String, Identity> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw)
        else {
            continue;
        };
        let Some(stat) = read_stat(pid) else {
            continue;
        };
        let identity = Identity {
            pid,
            starttime: stat.starttime,
        };
        // A session leader called setsid itself: never the child, which only got setpgid.
        if stat.session == pid.as_raw() || !identity.adoptable() {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(nonce) = nonce_in(&environ).filter(|nonce| nonces.contains(nonce)) else {
            continue;
        };
        // Still the process whose environment was read.
        if !identity.leads_live_group() {
            continue;
        }
        let earliest = found.entry(nonce.to_owned()).or_insert(identity);
        if (identity.starttime, pid.as_raw()) < (earliest.starttime, earliest.pid.as_raw()) {
            *earliest = identity;
        }
    }
    found
}

/// The value of [`NONCE_VAR`] in the text of `/proc/<pid>/environ` (`NAME=value` entries,
/// each ended by a NUL byte).
fn nonce_in(environ: &[u8]) -> Option<&str> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry
            .strip_prefix(NONCE_VAR.as_bytes())?
            .strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()
    })
}

/// Deletes a record; one already gone is fine, any other failure is only logged (at worst,
/// the next run finds the record stale).
fn remove_record(path: &Path) {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), %error, "cannot remove a process record");
        }
        _ => {}
    }
}

/// One instance to supervise: its group leader and what is known of it.
struct Instance {
    workspace: WorkspaceId,
    generation: Generation,
    /// The leader's pid, which is the group id.
    group: Pid,
    started_at: SystemTime,
    /// Its record in the state directory, if it has one: removed once the group is gone.
    record: Option<PathBuf>,
    leader: Leader,
}

/// How a supervisor learns that the group leader has exited.
enum Leader {
    /// Started by this run: our child, reaped like any child.
    Child(tokio::process::Child),
    /// Adopted from a previous run: no child of ours, so looked up in `/proc`, by identity.
    Adopted(Identity),
}

impl Leader {
    /// Resolves once the leader has exited. Cancel-safe.
    async fn exited(&mut self) -> io::Result<Exit> {
        match self {
            Leader::Child(child) => child.wait().await.map(Some),
            Leader::Adopted(identity) => {
                while identity.leads_live_group() {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                Ok(None)
            }
        }
    }

    /// How the leader ended, if it has; `None` while it runs. While it runs its pid — the
    /// group id — is ours, so the group may be signaled: a child's pid cannot be recycled
    /// before it is reaped, and an adopted leader was just seen to be the very process of its
    /// record (it would have to die and its pid be recycled, around the whole pid range, in
    /// the instant between this look and the signal).
    fn try_exited(&mut self) -> io::Result<Option<Exit>> {
        match self {
            Leader::Child(child) => child.try_wait().map(|status| status.map(Some)),
            Leader::Adopted(identity) => Ok((!identity.leads_live_group()).then_some(None)),
        }
    }
}

/// The task that owns one instance: sees its leader exit, signals and drains its group.
struct Supervisor {
    instance: Instance,
    grace: Duration,
    log_path: PathBuf,
    signals: mpsc::UnboundedReceiver<GroupSignal>,
    state: watch::Sender<ChildState>,
}

impl Supervisor {
    /// Guarantees: publishes `Draining` once the leader has exited (a child: is reaped) and
    /// `Exited` once nothing of the group runs, after removing the instance's record; after a
    /// `Terminate`, the group gets SIGKILL when the grace period is over; after the leader's
    /// exit, the rest of the group gets SIGKILL (after what is left of the grace period, if a
    /// stop is in progress; at once otherwise).
    async fn run(mut self) {
        let mut kill_at: Option<Instant> = None;
        let mut killed = false;
        let status = loop {
            let escalation = async {
                match kill_at {
                    Some(at) if !killed => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let signal = tokio::select! {
                exit = self.instance.leader.exited() => break self.collected(exit),
                Some(signal) = self.signals.recv() => signal,
                () = escalation => {
                    tracing::warn!(
                        workspace = %self.instance.workspace,
                        generation = %self.instance.generation,
                        pid = self.instance.group.as_raw(),
                        grace_ms = self.grace.as_millis() as u64,
                        "instance process still runs after its grace period; sending SIGKILL"
                    );
                    GroupSignal::Kill
                }
            };
            match self.instance.leader.try_exited() {
                Ok(None) => {}
                Ok(Some(exit)) => break exit,
                Err(error) => break self.collected(Err(error)),
            }
            match signal {
                GroupSignal::Terminate => {
                    if kill_at.is_none() {
                        self.signal_group(Signal::SIGTERM);
                        kill_at = Some(Instant::now() + self.grace);
                    }
                }
                GroupSignal::Kill => {
                    self.signal_group(Signal::SIGKILL);
                    killed = true;
                }
            }
        };
        self.state.send_replace(ChildState::Draining(status));
        let outcome = status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
        let uptime = SystemTime::now()
            .duration_since(self.instance.started_at)
            .unwrap_or_default();
        tracing::info!(
            workspace = %self.instance.workspace,
            generation = %self.instance.generation,
            pid = self.instance.group.as_raw(),
            adopted = matches!(self.instance.leader, Leader::Adopted(_)),
            status = %outcome,
            uptime_ms = uptime.as_millis() as u64,
            "instance process exited"
        );
        self.note_in_log(&format!(
            "=== steward: generation {} exited ({outcome})",
            self.instance.generation
        ));

        let group = self.instance.group;
        // A stop in progress leaves the rest of the group the rest of its grace period.
        if let Some(at) = kill_at.filter(|_| !killed) {
            let mut pause = POLL_MIN;
            while Instant::now() < at && group_runs(group).await {
                tokio::time::sleep(pause.min(at.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
        // The group id stays reserved while any member lives, so these signals reach only
        // what is left of this instance. Repeated: a member may fork while it is killed.
        let mut pause = POLL_MIN;
        let mut warned = false;
        let draining_since = Instant::now();
        while group_runs(group).await {
            self.signal_group(Signal::SIGKILL);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
            if !warned && draining_since.elapsed() >= KILL_WAIT {
                warned = true;
                tracing::warn!(
                    workspace = %self.instance.workspace,
                    generation = %self.instance.generation,
                    pgid = group.as_raw(),
                    "processes of an instance's group survive SIGKILL"
                );
            }
        }
        if let Some(record) = &self.instance.record {
            remove_record(record);
        }
        self.state.send_replace(ChildState::Exited(status));
    }

    fn collected(&self, status: io::Result<Exit>) -> Exit {
        status
            .inspect_err(|error| {
                tracing::warn!(
                    workspace = %self.instance.workspace,
                    pid = self.instance.group.as_raw(),
                    %error,
                    "could not collect the exit status of an instance process"
                );
            })
            .ok()
            .flatten()
    }

    fn signal_group(&self, signal: Signal) {
        match killpg(self.instance.group, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => tracing::warn!(
                workspace = %self.instance.workspace,
                pgid = self.instance.group.as_raw(),
                signal = signal.as_str(),
                %error,
                "could not signal an instance's process group"
            ),
        }
    }

    /// Appends a line of the daemon's own to the workspace's log; a failure is only logged.
    fn note_in_log(&self, line: &str) {
        let written = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = written {
            tracing::warn!(workspace = %self.instance.workspace, %error, "could not write to the instance log");
        }
    }
}

/// Whether any process of group `group` still runs (zombies do not count).
async fn group_runs(group: Pid) -> bool {
    match killpg(group, None) {
        Err(Errno::ESRCH) => false,
        // `kill` counts zombies as members; look closer.
        _ => tokio::task::spawn_blocking(move || group_has_live_member(group.as_raw()))
            .await
            .unwrap_or(true),
    }
}

/// Whether `/proc` shows a process of group `group` that is not a zombie. Without a readable
/// `/proc` (not Linux), every member counts as live.
fn group_has_live_member(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|stat| stat.pgrp == group && stat.runs())
    })
}

/// What this provider reads of `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    state: char,
    pgrp: i32,
    /// The session id: the pid of a process that called `setsid`.
    session: i32,
    /// Start time in clock ticks after boot: with the pid, the identity of a process.
    starttime: u64,
}

impl Stat {
    /// Neither a zombie nor dead.
    fn runs(self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// `/proc/<pid>/stat` of `pid`, if the process exists (zombies do).
fn read_stat(pid: Pid) -> Option<Stat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
}

/// Fields 3 (state), 5 (pgrp), 6 (session) and 22 (starttime) of the text of
/// `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session …`, where `comm` may hold spaces
/// and parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 21 lie between the session and the start time.
    let starttime = fields.nth(15)?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        session,
        starttime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLEEP: &str = "19094 (sleep) S 19092 19092 10367 0 -1 4194304 100 0 1 0 0 0 0 0 20 0 \
                         1 0 262173 3133440 389 18446744073709551615 94058393686016";

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let sleep = Stat {
            state: 'S',
            pgrp: 19092,
            session: 10367,
            starttime: 262_173,
        };
        assert_eq!(parse_stat(SLEEP), Some(sleep));
        let odd = SLEEP.replace("(sleep) S", "(a) b (c) Z");
        assert_eq!(
            parse_stat(&odd),
            Some(Stat {
                state: 'Z',
                ..sleep
            })
        );
        assert_eq!(parse_stat("1234 (sleep) S 1 1230 1230 0 -1 4194304"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_own_process_has_an_identity_but_is_never_adoptable() {
        let me = Identity::of(nix::unistd::getpid()).expect("/proc/self");
        assert!(!me.adoptable());
        let init = Identity {
            pid: Pid::from_raw(1),
            ..me
        };
        assert!(!init.adoptable());
    }

    /// A record of a fresh workspace's generation 7, pid 4321.
    fn record() -> Record {
        Record {
            workspace: WorkspaceId::from(uuid::Uuid::new_v4()),
            generation: Generation(7),
            identity: Identity {
                pid: Pid::from_raw(4321),
                starttime: 98_765,
            },
            boot_id: BOOT_ID.to_owned(),
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    const BOOT_ID: &str = "5b9c7e0a-2d1f-4c3b-9a8e-7f6d5c4b3a21";

    /// A provisional record of a fresh workspace's generation 7.
    fn provisional() -> Provisional {
        Provisional {
            workspace: WorkspaceId::from(uuid::Uuid::new_v4()),
            generation: Generation(7),
            nonce: "0123456789abcdef0123456789abcdef".to_owned(),
            boot_id: BOOT_ID.to_owned(),
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn records_read_back_as_written_and_anything_else_is_refused() {
        let record = record();
        let text = record.to_text();
        assert_eq!(Record::parse(&text), Some(record.clone()));
        assert_eq!(
            record.file_name(),
            format!("{}.7.4321.record", record.workspace)
        );

        assert_eq!(Record::parse(""), None);
        assert_eq!(Record::parse(&text.replace("pid=4321", "pid=0")), None);
        assert_eq!(Record::parse(&text.replace("pid=4321", "pid=-5")), None);
        assert_eq!(
            Record::parse(&format!("{text}pid=4321\n")),
            None,
            "a key twice"
        );
        assert_eq!(Record::parse(&format!("{text}extra=1\n")), None);
        assert_eq!(Record::parse(&text[..text.len() / 2]), None, "cut short");
        let without_boot = text.replace(&format!("boot_id={BOOT_ID}\n"), "");
        assert_eq!(Record::parse(&without_boot), None, "a boot id is required");
        assert_eq!(Record::parse(&text.replace(BOOT_ID, "not a boot id")), None);
    }

    #[test]
    fn provisional_records_read_back_as_written_and_anything_else_is_refused() {
        let provisional = provisional();
        let text = provisional.to_text();
        assert!(text.contains("nonce=0123456789abcdef0123456789abcdef\n"));
        assert_eq!(Provisional::parse(&text), Some(provisional.clone()));

        let nonce = &provisional.nonce;
        for bad in [
            "",
            "0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(
                Provisional::parse(&text.replace(nonce, bad)),
                None,
                "nonce {bad:?}"
            );
        }
        let without_boot = text.replace(&format!("boot_id={BOOT_ID}\n"), "");
        assert_eq!(Provisional::parse(&without_boot), None);
        assert_eq!(Provisional::parse(&format!("{text}pid=1\n")), None);
        assert_eq!(
            Provisional::parse(&record().to_text()),
            None,
            "a full record"
        );
        assert_eq!(Record::parse(&text), None, "not a full record");
    }

    #[test]
    fn provisional_records_get_names_of_their_own() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let provisional = provisional();
        let first = write_provisional(dir.path(), &provisional).expect("written");
        let second = write_provisional(dir.path(), &provisional).expect("written again");
        assert_ne!(first, second);
        let name = first.file_name().and_then(|n| n.to_str()).expect("a name");
        let prefix = format!("{}.7.", provisional.workspace);
        let tag = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".pending"))
            .expect("<workspace>.<generation>.<tag>.pending");
        assert!(tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!name.contains(&provisional.nonce), "the nonce stays inside");
        let mut read = read_provisionals(dir.path());
        read.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = vec![(first, provisional.clone()), (second, provisional)];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, expected);
        assert!(read_records(dir.path()).is_empty());
    }

    #[test]
    fn the_nonce_is_found_in_an_environment_only_under_its_own_name() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let environ = format!("PATH=/bin\0STEWARD_PROCESS_NONCE={nonce}\0FOO=bar\0");
        assert_eq!(nonce_in(environ.as_bytes()), Some(nonce));
        assert_eq!(nonce_in(b"PATH=/bin\0FOO=STEWARD_PROCESS_NONCE=x\0"), None);
        assert_eq!(nonce_in(b"STEWARD_PROCESS_NONCE_X=abc\0"), None);
        assert_eq!(nonce_in(b"XSTEWARD_PROCESS_NONCE=abc\0"), None);
        assert_eq!(nonce_in(b""), None);
        let a = random_hex::<16>().expect("random");
        assert!(a.len() == 32 && a != random_hex::<16>().expect("random"));
    }

    #[test]
    fn the_boot_id_is_read_from_proc() {
        let id = read_boot_id().expect("a boot id on Linux");
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(read_boot_id(), Some(id));
    }

    #[test]
    fn records_are_written_atomically_with_private_modes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = dir.path().join("state");
        let record = record();
        let path = write_record(&state, &record).expect("written");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(&state)
            .expect("state dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [record.file_name().as_str()], "no temporary left");
        assert_eq!(read_records(&state), [(path, record)]);
    }

    #[test]
    fn config_defaults_apply_to_missing_keys_and_unknown_keys_are_refused() {
        let config: ProcessConfig = toml::from_str("").expect("empty config");
        assert_eq!(config, ProcessConfig::default());
        assert_eq!(config.stop_grace, Duration::from_secs(5));
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
