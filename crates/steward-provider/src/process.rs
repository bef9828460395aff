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
//!   one place this provider exposes secret values. Nothing else of the daemon's environment
//!   (`HOME`, credentials, `STEWARD_*` of the daemon itself) leaks into an instance.
//! - **Working directory**: the daemon's. A per-workspace directory would need a lifecycle of
//!   its own (created when, removed on delete?); an agent that wants a scratch directory can
//!   make one. This keeps the provider free of state on disk other than logs.
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
//! ## What it does not do
//!
//! It keeps nothing on disk but logs: a restarted daemon does not know the children of its
//! previous run (with `leave_running`, those keep running, untracked). It does not sandbox,
//! limit resources or switch users, and `remove` keeps the log file (restarts remove the old
//! instance too; deleting a workspace's logs is the daemon's business).

use crate::{InstanceSpec, InstanceSummary, Liveness, Provider, ProviderError};
use async_trait::async_trait;
use dashmap::mapref::entry::Entry as Slot;
use dashmap::DashMap;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use steward_domain::{Generation, ReadyWhen, WorkspaceId};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long `stop`, `remove` and `kill` wait, after the group got SIGKILL, for it to be gone
/// before they report an error. SIGKILL cannot be ignored; a process stuck in the kernel
/// (uninterruptible I/O) can still outlive it for a while.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// First and longest pause between two looks at a group that is being drained.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(500);

/// `[providers.process]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Whether the provider is offered at all.
    pub enabled: bool,
    /// How long a stopped instance gets between SIGTERM and SIGKILL, in milliseconds.
    pub stop_grace_ms: u64,
    /// Directory of the per-workspace log files (empty: the daemon uses `<data_dir>/logs`).
    pub log_dir: PathBuf,
    /// On daemon exit ([`Provider::shutdown`]), leave the children running instead of
    /// stopping them. A restarted daemon does not track them again.
    pub leave_running: bool,
    /// Command of a workspace that has none. Empty: a workspace must bring its own.
    pub default_command: Vec<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stop_grace_ms: 5000,
            log_dir: PathBuf::new(),
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
}

impl fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("children", &self.children.len())
            .finish()
    }
}

/// One child this provider started. Holds no environment: nothing here is secret.
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

/// Where a child is in its life, as the supervisor task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildState {
    /// The leader has not been reaped.
    Running,
    /// The leader has exited (status unknown if waiting for it failed); the rest of its group
    /// is being stopped.
    Draining(Option<ExitStatus>),
    /// The leader has exited and nothing of its group runs any more.
    Exited(Option<ExitStatus>),
}

impl ChildState {
    fn exit_status(self) -> Option<ExitStatus> {
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
    /// A process provider called `name`.
    pub fn new(name: impl Into<String>, config: ProcessConfig) -> Self {
        Self {
            name: name.into(),
            config,
            children: DashMap::new(),
            closed: AtomicBool::new(false),
        }
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
    /// runs, or when its status could not be collected).
    pub fn exit_status(&self, id: WorkspaceId) -> Option<ExitStatus> {
        self.children.get(&id).and_then(|t| t.state().exit_status())
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.config.stop_grace_ms)
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

    /// Flow: check the spec, open the log, spawn, record, hand the child to its supervisor.
    /// Errors: `AlreadyExists` if the workspace's child runs; `InvalidSpec` for a missing or
    /// unrunnable program or a malformed environment; `Engine` for I/O failures.
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
        // nothing in between awaits.
        let slot = self.children.entry(id);
        if let Slot::Occupied(existing) = &slot {
            if existing.get().state() == ChildState::Running {
                return Err(ProviderError::AlreadyExists(existing.get().generation.0));
            }
            // A dead child is replaced; its supervisor finishes draining its group on its own.
        }
        let log_path = self.log_path(id);
        let log = open_log(&self.config.log_dir, &log_path, spec.generation)?;
        let stderr = log
            .try_clone()
            .map_err(|e| ProviderError::Engine(format!("log file of workspace {id}: {e}")))?;
        command.stdout(log).stderr(stderr);

        let child = command.spawn().map_err(|e| spawn_error(&argv[0], &e))?;
        let pid = child
            .id()
            .ok_or_else(|| ProviderError::Engine("the started process has no pid".to_owned()))?;
        let group = i32::try_from(pid)
            .map(Pid::from_raw)
            .map_err(|_| ProviderError::Engine(format!("pid {pid} out of range")))?;
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ChildState::Running);
        slot.insert(Arc::new(Tracked {
            generation: spec.generation,
            pid,
            started_at: SystemTime::now(),
            signals,
            state,
        }));
        tracing::info!(workspace = %id, generation = %spec.generation, pid, "instance process started");
        let supervisor = Supervisor {
            workspace: id,
            generation: spec.generation,
            group,
            grace: self.grace(),
            log_path,
            started: Instant::now(),
            signals: signal_rx,
            state: state_tx,
        };
        tokio::spawn(supervisor.run(child));
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

    /// Refuses new starts, then stops every child in parallel (each with the grace period),
    /// unless `leave_running` is set.
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

/// The task that owns one child: reaps its leader, signals and drains its group.
struct Supervisor {
    workspace: WorkspaceId,
    generation: Generation,
    group: Pid,
    grace: Duration,
    log_path: PathBuf,
    started: Instant,
    signals: mpsc::UnboundedReceiver<GroupSignal>,
    state: watch::Sender<ChildState>,
}

impl Supervisor {
    /// Guarantees: publishes `Draining` once the leader is reaped and `Exited` once nothing
    /// of the group runs; after a `Terminate`, the group gets SIGKILL when the grace period
    /// is over; after the leader's exit, the rest of the group gets SIGKILL (after what is
    /// left of the grace period, if a stop is in progress; at once otherwise).
    async fn run(mut self, mut child: tokio::process::Child) {
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
                status = child.wait() => break self.collected(status),
                Some(signal) = self.signals.recv() => signal,
                () = escalation => {
                    tracing::warn!(
                        workspace = %self.workspace,
                        generation = %self.generation,
                        pid = self.group.as_raw(),
                        grace_ms = self.grace.as_millis() as u64,
                        "instance process still runs after its grace period; sending SIGKILL"
                    );
                    GroupSignal::Kill
                }
            };
            // While `try_wait` sees the leader unreaped, its pid — the group id — is still
            // ours: the signal cannot reach a recycled pid.
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => break Some(status),
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
        tracing::info!(
            workspace = %self.workspace,
            generation = %self.generation,
            pid = self.group.as_raw(),
            status = %outcome,
            uptime_ms = self.started.elapsed().as_millis() as u64,
            "instance process exited"
        );
        self.note_in_log(&format!(
            "=== steward: generation {} exited ({outcome})",
            self.generation
        ));

        // A stop in progress leaves the rest of the group the rest of its grace period.
        if let Some(at) = kill_at.filter(|_| !killed) {
            let mut pause = POLL_MIN;
            while Instant::now() < at && group_runs(self.group).await {
                tokio::time::sleep(pause.min(at.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
        // The group id stays reserved while any member lives, so these signals reach only
        // what is left of this instance. Repeated: a member may fork while it is killed.
        let mut pause = POLL_MIN;
        let mut warned = false;
        let draining_since = Instant::now();
        while group_runs(self.group).await {
            self.signal_group(Signal::SIGKILL);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
            if !warned && draining_since.elapsed() >= KILL_WAIT {
                warned = true;
                tracing::warn!(
                    workspace = %self.workspace,
                    generation = %self.generation,
                    pgid = self.group.as_raw(),
                    "processes of an instance's group survive SIGKILL"
                );
            }
        }
        self.state.send_replace(ChildState::Exited(status));
    }

    fn collected(&self, status: io::Result<ExitStatus>) -> Option<ExitStatus> {
        status
            .inspect_err(|error| {
                tracing::warn!(
                    workspace = %self.workspace,
                    pid = self.group.as_raw(),
                    %error,
                    "could not collect the exit status of an instance process"
                );
            })
            .ok()
    }

    fn signal_group(&self, signal: Signal) {
        match killpg(self.group, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => tracing::warn!(
                workspace = %self.workspace,
                pgid = self.group.as_raw(),
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
            tracing::warn!(workspace = %self.workspace, %error, "could not write to the instance log");
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
                .is_some_and(|(state, pgrp)| pgrp == group && state != 'Z' && state != 'X')
    })
}

/// State and process group from the text of `/proc/<pid>/stat`:
/// `pid (comm) state ppid pgrp …`, where `comm` may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        assert_eq!(
            parse_stat("1234 (sleep) S 1 1230 1230 0 -1 4194304"),
            Some(('S', 1230))
        );
        assert_eq!(parse_stat("77 (a) b (c) Z 1 70 70 0 -1"), Some(('Z', 70)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn config_defaults_apply_to_missing_keys_and_unknown_keys_are_refused() {
        let config: ProcessConfig = toml::from_str("").expect("empty config");
        assert_eq!(config, ProcessConfig::default());
        assert_eq!(config.stop_grace_ms, 5000);
        assert!(
            config.log_dir.as_os_str().is_empty(),
            "empty: the daemon puts logs under its data dir"
        );
        assert!(config.enabled && !config.leave_running && config.default_command.is_empty());

        let config: ProcessConfig =
            toml::from_str("stop_grace_ms = 300\ndefault_command = [\"agent\", \"--serve\"]")
                .expect("partial config");
        assert_eq!(config.stop_grace_ms, 300);
        assert_eq!(config.default_command, ["agent", "--serve"]);
        assert!(toml::from_str::<ProcessConfig>("grace = 1").is_err());
    }
}
