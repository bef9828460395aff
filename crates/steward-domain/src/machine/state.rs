//! The state of one workspace's machine: what is persisted ([`MachineState`]) and what the
//! shell may look at ([`Cycle`], [`Op`], [`Counters`], [`Transition`]).

use crate::{
    CauseSet, Desired, FailureReason, Generation, OpId, Phase, ReadyWhen, Step, Timestamp,
};

/// The cycle in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// Generation being provisioned.
    pub generation: Generation,
    /// Causes it serves.
    pub causes: CauseSet,
    /// When it started.
    pub started_at: Timestamp,
}

/// The provider operation in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Its id.
    pub id: OpId,
    /// What it does.
    pub step: Step,
    /// Generation it is for.
    pub generation: Generation,
    /// When it was issued.
    pub started_at: Timestamp,
    /// When it is abandoned.
    pub deadline: Timestamp,
}

/// A provider switch in progress. Persisted, so that a restored machine finishes it (or
/// finishes its rollback) instead of forgetting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The provider being left.
    pub from: String,
    /// The provider being moved to.
    pub to: String,
    /// Readiness rule on `from`.
    pub from_ready: ReadyWhen,
    /// Readiness rule on `to`.
    pub to_ready: ReadyWhen,
    /// How far it got.
    pub stage: SwitchStage,
    /// Whether this is the way back after a failed switch (a rollback never rolls back).
    pub rollback: bool,
}

/// How far a switch got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchStage {
    /// The instance (if any) is still on `from`.
    Leaving,
    /// `from` is empty and the workspace is recorded on `to`; the switch completes when the
    /// workspace is running there (or stopped).
    Arrived,
}

impl SwitchStage {
    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchStage::Leaving => "leaving",
            SwitchStage::Arrived => "arrived",
        }
    }

    /// Parses the name produced by [`SwitchStage::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [SwitchStage::Leaving, SwitchStage::Arrived]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// The last failure, shown to users until the workspace runs again (or a user intent
/// revives it from `failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: FailureReason,
    /// Generation that failed.
    pub generation: Generation,
    /// Failures in a row since the workspace last ran (this one included). More than
    /// `max_failures` park it, however far apart they are: a failure that takes longer than
    /// `failure_window / max_failures` to show (a boot timeout, a provision timeout) would
    /// never trip the windowed breaker.
    pub consecutive: u32,
}

/// A phase change, kept for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Old phase.
    pub from: Phase,
    /// New phase.
    pub to: Phase,
    /// When.
    pub at: Timestamp,
}

/// Counters kept for inspection (the shell exports metrics from effects, not from these).
/// 32 bits each, saturating: every machine carries them, and the metrics are exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Cycles started.
    pub cycles: u32,
    /// Cycles that failed.
    pub cycles_failed: u32,
    /// Restarts folded into a pending cycle.
    pub coalesced: u32,
    /// Health restarts dropped, by reason (indexed like [`crate::DropReason::ALL`]).
    pub dropped: [u32; 6],
    /// Stale completions and timers ignored.
    pub stale_results: u32,
}

/// The persisted part of a machine: what survives an actor or daemon restart.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineState {
    /// Phase.
    pub phase: Phase,
    /// What the owner wants.
    pub desired: Desired,
    /// When the instance counts as ready.
    pub ready_when: ReadyWhen,
    /// Latest generation started or scheduled.
    pub generation: Generation,
    /// Generation of the instance that is up.
    pub observed_generation: Generation,
    /// Causes of the restart waiting for the cycle in flight to end.
    pub pending: CauseSet,
    /// Last failure.
    pub failure: Option<Failure>,
    /// Retry number of the next backoff.
    pub backoff_attempt: u32,
    /// Failures inside the breaker window.
    pub recent_failures: Vec<Timestamp>,
    /// When the last cycle started (debounce).
    pub last_cycle_started_at: Option<Timestamp>,
    /// When the last cycle ended (settle).
    pub last_cycle_ended_at: Option<Timestamp>,
    /// Since when the workspace has been `running` (backoff reset).
    pub healthy_since: Option<Timestamp>,
    /// The retry scheduled after a failure, if any. Persisted, so that a restored machine
    /// re-arms it instead of scheduling (and counting) another one.
    pub retry: Option<ScheduledRetry>,
    /// The cycle in flight. Persisted, so that a restored machine knows which cycle a crash
    /// interrupted: it adopts its instance or closes it and serves its causes again.
    pub cycle: Option<Cycle>,
    /// The provider switch in progress, if any.
    pub switch: Option<Box<Switch>>,
}

/// A retry scheduled after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledRetry {
    /// When it fires.
    pub at: Timestamp,
    /// The causes it serves.
    pub causes: CauseSet,
}

impl MachineState {
    /// The state of a workspace that was just created and has not been provisioned.
    pub fn new(ready_when: ReadyWhen) -> Self {
        Self {
            phase: Phase::Provisioning,
            desired: Desired::Running,
            ready_when,
            generation: Generation(0),
            observed_generation: Generation(0),
            pending: CauseSet::EMPTY,
            failure: None,
            backoff_attempt: 0,
            recent_failures: Vec::new(),
            last_cycle_started_at: None,
            last_cycle_ended_at: None,
            healthy_since: None,
            retry: None,
            cycle: None,
            switch: None,
        }
    }
}
