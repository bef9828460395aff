//! What goes into the machine ([`Event`]) and what comes out of it ([`Effect`], [`Outcome`],
//! and the [`Record`]s of what happened).

use crate::{
    Cause, CauseSet, DropReason, FailureReason, Generation, OpId, ParkReason, ReadyWhen,
    StaleResult, StepFailure, Timestamp,
};
use std::time::Duration;

/// What happens to a workspace, from the outside or from the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The workspace was just created: provision it.
    Create,
    /// A user asks for a fresh instance.
    Restart,
    /// The workspace's configuration changed (already applied by the shell, which holds it):
    /// the machine decides when an instance runs with it — a cycle now, folded into the
    /// pending one, or at the next start if the workspace is stopped.
    ConfigChanged(ConfigChange),
    /// A user asks for the workspace to run (no-op if it already does).
    Start,
    /// A user asks for the workspace to stop.
    Stop,
    /// A user asks for the workspace to be deleted.
    Delete,
    /// A probe's observation of the instance of `generation`.
    Health {
        /// The generation the probe observed.
        generation: Generation,
        /// What it saw.
        report: HealthReport,
    },
    /// A provider operation finished.
    StepFinished {
        /// The operation.
        op: OpId,
        /// Why it failed, if it did.
        result: Result<(), StepFailure>,
    },
    /// The agent of `generation` registered.
    AgentRegistered {
        /// The generation of the token it used.
        generation: Generation,
    },
    /// The agent of `generation` sent a heartbeat.
    AgentHeartbeat {
        /// The generation of the token it used.
        generation: Generation,
    },
    /// The shell finished delivering the restart context of `generation`.
    ContextDelivery {
        /// Generation the context was for.
        generation: Generation,
        /// Whether the agent accepted it before the deadline.
        delivered: bool,
    },
    /// A timer the machine scheduled fired.
    Timer(Timer),
    /// A user asks to move the workspace from provider `from` (the one it is on) to `to`.
    Switch {
        /// The provider the workspace is on now.
        from: String,
        /// The provider to move to.
        to: String,
        /// When an instance of `to` counts as ready.
        to_ready: ReadyWhen,
    },
    /// The machine was just restored from storage (daemon start or actor restart):
    /// `live` is the generation of the instance the provider still has, if any.
    Recover {
        /// Generation of the live instance found, if any.
        live: Option<Generation>,
    },
}

/// What about a workspace's configuration changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// A secret was set or removed.
    Secret,
    /// The model was set.
    Model,
}

/// A probe's observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthReport {
    /// The instance is up.
    Alive,
    /// The instance exists but is still booting: not dead.
    Pending,
    /// The instance is gone or not running.
    Dead,
}

/// Timers the machine asks the shell to fire later. Each carries the id it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The operation's deadline.
    StepDeadline(OpId),
    /// The agent of this generation must have registered by now.
    BootDeadline(Generation),
    /// A scheduled retry (token distinguishes retries).
    Retry(u64),
}

/// One provider operation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// First step of a cycle: remove whatever instance the workspace has.
    RemoveOld,
    /// Second step of a cycle: start the instance of the cycle's generation.
    Start,
    /// Stop the instance (user stop).
    Stop,
    /// Remove the instance for good (delete).
    Remove,
    /// Remove a stopped workspace's instance from the provider it is switching away from.
    Release,
}

impl HealthReport {
    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthReport::Alive => "alive",
            HealthReport::Pending => "pending",
            HealthReport::Dead => "dead",
        }
    }
}

impl Step {
    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::RemoveOld => "remove_old",
            Step::Start => "start",
            Step::Stop => "stop",
            Step::Remove => "remove",
            Step::Release => "release",
        }
    }

    /// Parses the name produced by [`Step::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Step::RemoveOld,
            Step::Start,
            Step::Stop,
            Step::Remove,
            Step::Release,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Record a lifecycle event (persisted with the state change that caused it).
    Record(Record),
    /// Run a provider operation in the background and report [`Event::StepFinished`].
    Run {
        /// Id to report back.
        op: OpId,
        /// What to do.
        step: Step,
        /// The generation it is for (for `Start`, the generation to provision).
        generation: Generation,
    },
    /// Abandon a running operation (its deadline passed); its completion will be stale.
    Abort(OpId),
    /// Fire `timer` at `at`.
    Schedule {
        /// When.
        at: Timestamp,
        /// What.
        timer: Timer,
    },
    /// The workspace is gone: remove it from storage and stop its actor.
    Purge,
    /// A restart folded into a pending cycle that already serves its cause: count it (metrics)
    /// but record nothing, since nothing changed. The first request of each cause in a
    /// pending cycle is recorded (`restart_coalesced`).
    Coalesced(Cause),
    /// From now on the workspace's instance lives on this provider: every later operation
    /// runs there. Persist it with the state change that caused it.
    UseProvider(String),
    /// POST the restart context to the agent of `generation` (which has registered and sent
    /// a heartbeat newer than the cycle start), then report [`Event::ContextDelivery`].
    DeliverContext(RestartContext),
}

/// What the agent of a new generation is told about the restart that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartContext {
    /// The new generation.
    pub generation: Generation,
    /// The generation it replaced.
    pub previous_generation: Generation,
    /// Why the restart happened.
    pub causes: CauseSet,
}

/// A lifecycle event, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The generation it concerns.
    pub generation: Generation,
    /// What happened.
    pub kind: RecordKind,
}

/// Kinds of recorded lifecycle events.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordKind {
    /// The workspace was created.
    Created,
    /// A restart was requested and starts a cycle now.
    RestartRequested {
        /// Why.
        cause: Cause,
    },
    /// A restart was requested during a cycle and folded into the pending one.
    RestartCoalesced {
        /// Why.
        cause: Cause,
    },
    /// A configuration change arrived while stopped; it applies at the next start.
    RestartDeferred {
        /// Why.
        cause: Cause,
    },
    /// A restart was not carried out.
    RestartDropped {
        /// Why it was asked for.
        cause: Cause,
        /// Why it was dropped.
        reason: DropReason,
    },
    /// A cycle started.
    ProvisionStarted {
        /// Causes it serves.
        causes: CauseSet,
        /// Generation of the instance it replaces.
        previous_generation: Generation,
    },
    /// A cycle's instance is up.
    ProvisionSucceeded,
    /// A cycle failed.
    ProvisionFailed {
        /// Why.
        reason: StepFailure,
    },
    /// A result the machine no longer waited for arrived and was ignored.
    StaleResultIgnored {
        /// What it was.
        what: StaleResult,
    },
    /// A stop started.
    StopStarted,
    /// The instance is stopped.
    Stopped,
    /// A delete started.
    DeleteStarted,
    /// The agent of the current generation registered.
    AgentRegistered,
    /// The agent of the instance up did not register within the boot timeout.
    BootTimedOut,
    /// The restart context reached the agent of the new generation.
    ContextDelivered,
    /// The restart context could not be delivered in time.
    ContextTimeout,
    /// A retry was scheduled.
    BackoffScheduled {
        /// Delay before it.
        delay: Duration,
        /// 0-based retry number.
        attempt: u32,
    },
    /// The workspace was parked in `failed`.
    Failed {
        /// Why.
        reason: ParkReason,
    },
    /// A provider switch was claimed.
    SwitchStarted {
        /// Provider left.
        from: String,
        /// Provider moved to.
        to: String,
    },
    /// The workspace runs (or, if stopped, is recorded) on the new provider.
    SwitchCompleted {
        /// Provider left.
        from: String,
        /// Provider moved to.
        to: String,
    },
    /// The switch failed; the workspace goes back to (or stays on) the old provider.
    SwitchRolledBack {
        /// Provider the workspace returns to.
        from: String,
        /// Provider that failed.
        to: String,
        /// Why.
        reason: FailureReason,
    },
    /// The workspace is gone.
    Deleted,
}

impl RecordKind {
    /// The event `type` name used at the edges.
    pub fn name(&self) -> &'static str {
        match self {
            RecordKind::Created => "created",
            RecordKind::RestartRequested { .. } => "restart_requested",
            RecordKind::RestartCoalesced { .. } => "restart_coalesced",
            RecordKind::RestartDeferred { .. } => "restart_deferred",
            RecordKind::RestartDropped { .. } => "restart_dropped",
            RecordKind::ProvisionStarted { .. } => "provision_started",
            RecordKind::ProvisionSucceeded => "provision_succeeded",
            RecordKind::ProvisionFailed { .. } => "provision_failed",
            RecordKind::StaleResultIgnored { .. } => "stale_result_ignored",
            RecordKind::StopStarted => "stop_started",
            RecordKind::Stopped => "stopped",
            RecordKind::DeleteStarted => "delete_started",
            RecordKind::AgentRegistered => "agent_registered",
            RecordKind::BootTimedOut => "boot_timeout",
            RecordKind::ContextDelivered => "context_delivered",
            RecordKind::ContextTimeout => "context_timeout",
            RecordKind::BackoffScheduled { .. } => "backoff_scheduled",
            RecordKind::Failed { .. } => "failed",
            RecordKind::SwitchStarted { .. } => "switch_started",
            RecordKind::SwitchCompleted { .. } => "switch_completed",
            RecordKind::SwitchRolledBack { .. } => "switch_rolled_back",
            RecordKind::Deleted => "deleted",
        }
    }
}

/// The answer to an event, for whoever sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A cycle of `generation` started now.
    Started(Generation),
    /// Folded into the pending cycle, which will have `generation`.
    Coalesced(Generation),
    /// A configuration change on a stopped workspace: applies at the next start.
    Deferred,
    /// Accepted (stop, start, delete, internal events).
    Accepted,
    /// Refused; nothing changed.
    Rejected(Rejection),
}

/// Why an intent was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The workspace is being deleted.
    Deleting,
    /// A provider switch is already in progress.
    AlreadySwitching,
    /// The workspace is already on the provider asked for.
    SameProvider,
}
