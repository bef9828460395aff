//! The task that owns one child: it sees the leader exit, signals and drains the group.
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
//! An adopted process is no child of ours (it was reparented when the previous daemon died),
//! so its supervisor cannot wait for it: every 100 ms it looks in `/proc` whether the process
//! with that pid *and that start time* still runs, and it checks so again right before each
//! signal to the group. Otherwise it behaves as for a child: SIGTERM then SIGKILL
//! after the grace period on a stop, and the group drained once the leader is gone. Its exit
//! status went to its new parent and stays unknown.

use super::logs::Journal;
use super::procfs::{group_runs, Identity};
use super::records::remove_record;
use super::{ProcessProvider, KILL_WAIT};
use crate::{Liveness, ProviderError};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use steward_domain::{Generation, WorkspaceId};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// First and longest pause between two looks at a group that is being drained.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(500);

/// How often the supervisor of an adopted process (not our child: nothing tells us when it
/// exits) looks in `/proc` whether it still runs.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

/// One child this provider started or adopted. Holds no environment: nothing here is secret.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) generation: Generation,
    /// The leader's pid, which is also the group id.
    pub(super) pid: u32,
    /// Wall-clock start, for inspection.
    pub(super) started_at: SystemTime,
    /// Requests to the supervisor task; it alone signals the group while the leader lives.
    pub(super) signals: mpsc::UnboundedSender<GroupSignal>,
    /// Published by the supervisor task.
    pub(super) state: watch::Receiver<ChildState>,
}

/// What the supervisor task is asked to send to the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GroupSignal {
    /// Graceful stop: SIGTERM now, SIGKILL when the grace period is over.
    Terminate,
    /// SIGKILL now.
    Kill,
}

/// How a group leader ended: its exit status, or `None` where it cannot be known (waiting
/// for it failed, or it was adopted, and its status went to its new parent).
pub(super) type Exit = Option<ExitStatus>;

/// Where a child is in its life, as the supervisor task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChildState {
    /// The leader has not exited (a child: has not been reaped).
    Running,
    /// The leader has exited; the rest of its group is being stopped.
    Draining(Exit),
    /// The leader has exited and nothing of its group runs any more.
    Exited(Exit),
}

impl ChildState {
    pub(super) fn exit_status(self) -> Exit {
        match self {
            ChildState::Running => None,
            ChildState::Draining(status) | ChildState::Exited(status) => status,
        }
    }
}

impl Tracked {
    pub(super) fn state(&self) -> ChildState {
        *self.state.borrow()
    }

    pub(super) fn liveness(&self) -> Liveness {
        match self.state() {
            ChildState::Running => Liveness::Alive(self.generation),
            ChildState::Draining(_) | ChildState::Exited(_) => Liveness::Dead(self.generation),
        }
    }

    /// Asks the supervisor to signal the group. Once the leader has exited the supervisor
    /// drains the group on its own and no longer listens, so a lost request changes nothing.
    pub(super) fn request(&self, signal: GroupSignal) {
        let _ = self.signals.send(signal);
    }

    /// Waits until `reached` holds for the child's state, for at most `bound`.
    pub(super) async fn wait_until(
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
    /// Hands `instance` to a supervisor task of its own on `runtime`; returns what tracks it.
    pub(super) fn supervise(&self, runtime: &Handle, instance: Instance) -> Arc<Tracked> {
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
            journal: self.journals.of(instance.workspace),
            instance,
            signals: signal_rx,
            state: state_tx,
        };
        runtime.spawn(supervisor.run());
        tracked
    }

    /// Stops the workspace's child and forgets it: SIGTERM to the group, SIGKILL after the
    /// grace period, and returns once nothing of the group runs.
    pub(super) async fn stop_child(
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

/// How long a supervisor waits, once the group is gone, for the last of its output to be
/// read (a process that left the group may still hold the pipe) before it notes the exit.
const OUTPUT_WAIT: Duration = Duration::from_secs(1);

/// One instance to supervise: its group leader and what is known of it.
pub(super) struct Instance {
    pub(super) workspace: WorkspaceId,
    pub(super) generation: Generation,
    /// The leader's pid, which is the group id.
    pub(super) group: Pid,
    pub(super) started_at: SystemTime,
    /// Its record in the state directory, if it has one: removed once the group is gone.
    pub(super) record: Option<PathBuf>,
    pub(super) leader: Leader,
    /// The task reading its output, if any (see `logs.rs`).
    pub(super) output: Option<tokio::task::JoinHandle<()>>,
}

/// How a supervisor learns that the group leader has exited.
pub(super) enum Leader {
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
    journal: Arc<Journal>,
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
        // The exit is noted after the instance's last output.
        if let Some(output) = self.instance.output.take() {
            let _ = tokio::time::timeout(OUTPUT_WAIT, output).await;
        }
        self.journal.note(
            self.instance.workspace,
            self.instance.generation,
            &format!(
                "=== steward: generation {} exited ({outcome})",
                self.instance.generation
            ),
        );
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
}
