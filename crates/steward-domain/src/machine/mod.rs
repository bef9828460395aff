//! The lifecycle state machine of one workspace.
//!
//! Events go in through [`Machine::handle`]; what the shell must do comes out as [`Effect`]s.
//! The machine has at most one provider operation ([`Op`]) in flight. A *cycle* is the pair
//! of operations that replaces the instance: remove the old one, start generation `n`.
//!
//! Guarantees (each is a property test in `tests/properties.rs`; the race rules behind them
//! read as a decision table in `tests/table.rs`):
//! - never two operations, hence never two cycles, in flight;
//! - a restart during a cycle sets `pending`; when the cycle ends, pending starts exactly one
//!   more cycle, whatever the number of requests;
//! - `manual`/`config` restarts are never dropped: each is followed by a cycle that starts
//!   after it, unless a later stop or delete cancels it;
//! - completions, deadlines and retries carry the id they belong to; stale ones change
//!   nothing but a counter;
//! - generations strictly increase.
//!
//! The code is split by concern: [`types`] (events in, effects out), [`state`] (what is
//! persisted and inspected), [`reasons`] (why things failed), then the handlers: `intents`
//! (create, restart, configuration changes, start, stop, delete), `health` (probe reports),
//! `agent` (the agent's signs of life and its restart context), `completions` (provider
//! steps and timers), `switch` (provider switches), `recovery` (a machine restored from
//! storage), and the building blocks they share: `cycle` (starting cycles and operations,
//! readiness) and `failures` (backoff, the breaker, parking).

mod agent;
mod completions;
mod cycle;
mod failures;
mod health;
mod intents;
mod progress;
pub(crate) mod reasons;
mod recovery;
pub(crate) mod state;
mod switch;
pub(crate) mod types;

pub use progress::{Goal, Progress, Settled};
pub use reasons::{DropReason, FailureReason, ParkReason, StaleResult, StepFailure};
pub use state::{
    Counters, Cycle, Failure, MachineState, Op, ScheduledRetry, Switch, SwitchStage, Transition,
};
pub use types::{
    ConfigChange, Effect, Event, HealthReport, Outcome, Record, RecordKind, Rejection,
    RestartContext, Step, Timer,
};

use crate::{Generation, Phase, Policy, Tick, Timestamp};
use std::collections::VecDeque;
use std::sync::Arc;

/// How many phase transitions the machine remembers for inspection.
const TRANSITIONS_KEPT: usize = 8;

/// The lifecycle state machine of one workspace.
#[derive(Clone, Debug)]
pub struct Machine {
    policy: Arc<Policy>,
    state: MachineState,
    /// Whether an instance of `observed_generation` is believed up.
    instance_up: bool,
    op: Option<Op>,
    next_op: u64,
    /// Token of the armed retry timer; older timers are stale.
    retry_token: u64,
    health_failures: u32,
    /// The agent of the instance up: the generation it registered for and its last sign of
    /// life. Not persisted: after a restart the agent proves itself again.
    agent: Option<(Generation, Timestamp)>,
    /// The last probe report (after heartbeat staleness is applied), for inspection.
    last_report: Option<(Generation, HealthReport, Timestamp)>,
    /// Since when the instance up has been reported booting (reset by an alive report or a
    /// new cycle).
    pending_since: Option<Timestamp>,
    /// The restart context owed to the agent of the cycle's generation, until delivered.
    /// Not persisted: a cycle cut short by a restart is replaced, with its own context.
    context_due: Option<RestartContext>,
    counters: Counters,
    transitions: VecDeque<Transition>,
    /// The latest generation seen `running` (see [`Progress`]). Not persisted: a restored
    /// machine starts from what its state shows.
    ran: Generation,
    /// The latest generation a failure was recorded for (see [`Progress`]).
    failed: Generation,
}

impl Machine {
    /// A machine for `state`, with nothing in flight. Send [`Event::Create`] to a new
    /// workspace's machine, or [`Event::Recover`] to a restored one.
    pub fn restore(policy: Arc<Policy>, state: MachineState) -> Self {
        let mut machine = Self {
            policy,
            state,
            instance_up: false,
            op: None,
            next_op: 1,
            retry_token: 0,
            health_failures: 0,
            agent: None,
            last_report: None,
            pending_since: None,
            context_due: None,
            counters: Counters::default(),
            transitions: VecDeque::new(),
            ran: Generation(0),
            failed: Generation(0),
        };
        machine.note_progress();
        machine
    }

    /// The persisted part of the state.
    pub fn state(&self) -> &MachineState {
        &self.state
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// The cycle in flight.
    pub fn cycle(&self) -> Option<&Cycle> {
        self.state.cycle.as_ref()
    }

    /// The operation in flight.
    pub fn op(&self) -> Option<&Op> {
        self.op.as_ref()
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Recent phase transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.transitions.iter()
    }

    /// The last probe report: generation, what it said, when.
    pub fn last_report(&self) -> Option<(Generation, HealthReport, Timestamp)> {
        self.last_report
    }

    /// Consecutive dead reports counted towards a health restart.
    pub fn health_failures(&self) -> u32 {
        self.health_failures
    }

    /// When the scheduled retry fires, if one is scheduled.
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.state.retry.map(|r| r.at)
    }

    /// End of the debounce window, if inside one at `now`.
    pub fn debounce_until(&self, now: Timestamp) -> Option<Timestamp> {
        let until = self
            .state
            .last_cycle_started_at?
            .plus(self.policy.debounce_window);
        (now < until).then_some(until)
    }

    /// End of the settle window, if inside one at `now`.
    pub fn settle_until(&self, now: Timestamp) -> Option<Timestamp> {
        let until = self
            .state
            .last_cycle_ended_at?
            .plus(self.policy.settle_window);
        (now < until).then_some(until)
    }

    /// Whether the instance of `observed_generation` is believed up.
    pub fn instance_up(&self) -> bool {
        self.instance_up
    }

    /// Feeds one event; returns the answer and what the shell must do.
    pub fn handle(&mut self, event: Event, tick: Tick) -> (Outcome, Vec<Effect>) {
        let mut fx = Vec::new();
        let outcome = self.step(event, tick, &mut fx);
        self.note_progress();
        (outcome, fx)
    }

    fn step(&mut self, event: Event, tick: Tick, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.phase == Phase::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        let now = tick.now;
        match event {
            Event::Create => self.on_create(now, fx),
            Event::Restart => self.on_restart(now, fx),
            Event::ConfigChanged(change) => self.on_config_changed(change, now, fx),
            Event::Start => self.on_start(now, fx),
            Event::Stop => self.on_stop(now, fx),
            Event::Delete => self.on_delete(now, fx),
            Event::Switch { from, to, to_ready } => self.on_switch(from, to, to_ready, now, fx),
            Event::Health { generation, report } => {
                self.on_health(generation, report, tick, fx);
                Outcome::Accepted
            }
            Event::StepFinished { op, result } => {
                self.on_step_finished(op, result, tick, fx);
                Outcome::Accepted
            }
            Event::AgentRegistered { generation } => {
                self.on_agent_registered(generation, now, fx);
                Outcome::Accepted
            }
            Event::AgentHeartbeat { generation } => {
                self.on_agent_heartbeat(generation, now, fx);
                Outcome::Accepted
            }
            Event::ContextDelivery {
                generation,
                delivered,
            } => {
                let kind = if delivered {
                    RecordKind::ContextDelivered
                } else {
                    RecordKind::ContextTimeout
                };
                fx.push(Effect::Record(Record { generation, kind }));
                Outcome::Accepted
            }
            Event::Timer(timer) => {
                self.on_timer(timer, tick, fx);
                Outcome::Accepted
            }
            Event::Recover { live } => {
                self.on_recover(live, tick, fx);
                Outcome::Accepted
            }
        }
    }

    fn stale(&mut self, what: StaleResult, fx: &mut Vec<Effect>) {
        self.counters.stale_results = self.counters.stale_results.saturating_add(1);
        self.record(fx, RecordKind::StaleResultIgnored { what });
    }

    fn set_phase(&mut self, to: Phase, at: Timestamp) {
        let from = self.state.phase;
        if from == to {
            return;
        }
        self.state.phase = to;
        if self.transitions.len() == TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition { from, to, at });
    }

    fn record(&self, fx: &mut Vec<Effect>, kind: RecordKind) {
        fx.push(Effect::Record(Record {
            generation: self.state.generation,
            kind,
        }));
    }
}

#[cfg(test)]
mod tests;
