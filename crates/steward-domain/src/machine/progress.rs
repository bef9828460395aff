//! When an intent has settled: what a waiter watches ([`Progress`]) and the rules it applies
//! ([`Goal`]).
//!
//! A client that asks to wait for an intent's outcome gets its answer once the intent has
//! settled, and the shell wakes it only when the workspace's machine changes: it hands the
//! waiter the machine's [`Progress`] after each event, and the waiter asks its [`Goal`]
//! whether that settles it. Both are plain values; the rules are pure functions of them.
//!
//! Guarantees (table tests and a property test in `tests/progress.rs`):
//! - an intent that runs the workspace settles once the generation its answer names, or a
//!   later one, is running by the readiness rule, or once a cycle of such a generation failed,
//!   or once a later intent stopped or deleted the workspace;
//! - a stop settles once the workspace is stopped (or its stop failed, or a later intent
//!   overruled it); a delete only once the workspace is gone, which the shell tells;
//! - `ran` and `failed` never decrease, so a waiter that missed a moment (it looks at the
//!   latest progress, not at every one) still sees that it happened.

use super::{Event, Machine, Outcome};
use crate::{Desired, Generation, Phase};

/// Where a workspace's intents stand, as a waiter sees it after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// What the owner last asked for.
    pub desired: Desired,
    /// Latest generation started or scheduled.
    pub generation: Generation,
    /// The latest generation that has been `running` since the machine was restored.
    pub ran: Generation,
    /// The latest generation a failure was recorded for (a failed cycle, a boot timeout, a
    /// death, a failed stop) since the machine was restored.
    pub failed: Generation,
    /// Whether a provider switch is in progress.
    pub switching: bool,
}

/// What a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Generation `0` or a later one running (or failing, or a later stop or delete).
    Run(Generation),
    /// A running workspace's provider switch done: generation `0` or a later one running on
    /// the new provider (or failing — a switch that rolls back has failed —, or a later stop
    /// or delete).
    Switch(Generation),
    /// The workspace stopped (or its stop failed, or a later intent made it run).
    Stop,
    /// A stopped workspace's switch done: released from the provider it left (or a later
    /// intent made it run, or deleted it).
    Release,
    /// The workspace gone: only the shell knows (its records are deleted), so no progress
    /// settles this goal.
    Gone,
    /// Nothing to wait for (a configuration change kept for a stopped workspace's next start).
    Nothing,
}

/// How a goal settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The generation waited for (or a later one) is running.
    Running,
    /// A cycle of the generation waited for (or a later one) failed; or the stop failed.
    Failed,
    /// The workspace is stopped.
    Stopped,
    /// A later intent changed what the owner wants (stopped, deleted, or ran the workspace).
    Overruled,
    /// There was nothing to wait for.
    Applied,
    /// The workspace is gone (its records deleted): only the shell can tell.
    Gone,
}

impl Settled {
    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Running => "running",
            Settled::Failed => "failed",
            Settled::Stopped => "stopped",
            Settled::Overruled => "overruled",
            Settled::Applied => "applied",
            Settled::Gone => "gone",
        }
    }
}

impl Goal {
    /// What the answer `outcome` to `event` gives a waiter to wait for, with `progress` the
    /// machine's progress right after the event. `None` for events that are not intents and
    /// for refused intents.
    pub fn after(event: &Event, outcome: Outcome, progress: &Progress) -> Option<Goal> {
        if matches!(outcome, Outcome::Rejected(_)) {
            return None;
        }
        let run = |generation| match outcome {
            Outcome::Started(g) | Outcome::Coalesced(g) => Goal::Run(g),
            _ => Goal::Run(generation),
        };
        Some(match event {
            Event::Create | Event::Restart | Event::Start => run(progress.generation),
            Event::ConfigChanged(_) if outcome == Outcome::Deferred => Goal::Nothing,
            Event::ConfigChanged(_) => run(progress.generation),
            Event::Switch { .. } if progress.desired == Desired::Stopped => Goal::Release,
            // The cycle in flight serves it, or the next one: it is done when it is done.
            Event::Switch { .. } => Goal::Switch(progress.generation),
            Event::Stop => Goal::Stop,
            Event::Delete => Goal::Gone,
            _ => return None,
        })
    }

    /// The goal of a client that waits for the workspace to reach `phase` (`running`,
    /// `stopped`) without an intent of its own: the latest generation running, or stopped.
    pub fn reach(phase: Phase, progress: &Progress) -> Option<Goal> {
        match phase {
            Phase::Running => Some(Goal::Run(progress.generation)),
            Phase::Stopped => Some(Goal::Stop),
            Phase::Deleted => Some(Goal::Gone),
            _ => None,
        }
    }

    /// Whether `progress` settles this goal, and how.
    pub fn settled(self, progress: &Progress) -> Option<Settled> {
        match self {
            Goal::Nothing => Some(Settled::Applied),
            Goal::Gone => None,
            Goal::Run(generation) | Goal::Switch(generation) => {
                let done = !(matches!(self, Goal::Switch(_)) && progress.switching);
                if progress.ran >= generation && progress.ran.0 > 0 && done {
                    Some(Settled::Running)
                } else if progress.failed >= generation && progress.failed.0 > 0 {
                    Some(Settled::Failed)
                } else if progress.desired != Desired::Running {
                    Some(Settled::Overruled)
                } else {
                    None
                }
            }
            Goal::Stop => match (progress.desired, progress.phase) {
                (Desired::Stopped, Phase::Stopped) => Some(Settled::Stopped),
                (Desired::Stopped, Phase::Failed) => Some(Settled::Failed),
                (Desired::Stopped, _) => None,
                _ => Some(Settled::Overruled),
            },
            Goal::Release => match (progress.desired, progress.phase) {
                (Desired::Stopped, Phase::Stopped) if !progress.switching => Some(Settled::Stopped),
                (Desired::Stopped, Phase::Failed) => Some(Settled::Failed),
                (Desired::Stopped, _) => None,
                _ => Some(Settled::Overruled),
            },
        }
    }
}

impl Machine {
    /// Where this workspace's intents stand (see [`Progress`]).
    pub fn progress(&self) -> Progress {
        Progress {
            phase: self.state.phase,
            desired: self.state.desired,
            generation: self.state.generation,
            ran: self.ran,
            failed: self.failed,
            switching: self.state.switch.is_some(),
        }
    }

    /// Folds the state after an event into `ran` and `failed`, which only grow.
    pub(super) fn note_progress(&mut self) {
        if self.state.phase == Phase::Running {
            self.ran = self.ran.max(self.state.observed_generation);
        }
        if let Some(failure) = &self.state.failure {
            self.failed = self.failed.max(failure.generation);
        }
    }
}
