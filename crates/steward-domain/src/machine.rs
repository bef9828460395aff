//! The lifecycle state machine of one workspace.
//!
//! Events go in through [`Machine::handle`]; what the shell must do comes out as [`Effect`]s.
//! The machine has at most one provider operation ([`Op`]) in flight. A *cycle* is the pair
//! of operations that replaces the instance: remove the old one, start generation `n`.
//!
//! Guarantees (each is a property test in `tests.rs`):
//! - never two operations, hence never two cycles, in flight;
//! - a restart during a cycle sets `pending`; when the cycle ends, pending starts exactly one
//!   more cycle, whatever the number of requests;
//! - `manual`/`config` restarts are never dropped: each is followed by a cycle that starts
//!   after it, unless a later stop or delete cancels it;
//! - completions, deadlines and retries carry the id they belong to; stale ones change
//!   nothing but a counter;
//! - generations strictly increase.

use crate::{
    Cause, CauseSet, Desired, Generation, OpId, Phase, Policy, ReadyWhen, Tick, Timestamp,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Failure reason of a cycle cut short by a daemon or actor restart.
const INTERRUPTED: &str = "interrupted: the daemon restarted during the cycle";

/// How many phase transitions the machine remembers for inspection.
const TRANSITIONS_KEPT: usize = 8;

/// What happens to a workspace, from the outside or from the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The workspace was just created: provision it.
    Create,
    /// Something asks for a fresh instance.
    Restart(Cause),
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
        /// `Err(reason)` if it failed.
        result: Result<(), String>,
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
        reason: String,
    },
    /// A completion or timer of an abandoned operation arrived and was ignored.
    StaleResultIgnored {
        /// What it was about.
        what: String,
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
        reason: String,
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
        reason: String,
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

/// Why a health restart was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A cycle (or another operation) is in flight.
    CycleInFlight,
    /// Inside the debounce window after the last cycle started.
    Debounce,
    /// Inside the settle window after the last cycle ended.
    Settle,
    /// The report is for another generation than the one up.
    StaleGeneration,
    /// The instance is still booting: not dead.
    Pending,
    /// No instance is meant to be up (stopped, failed, deleting, retry scheduled).
    NotRunning,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 6] = [
        DropReason::CycleInFlight,
        DropReason::Debounce,
        DropReason::Settle,
        DropReason::StaleGeneration,
        DropReason::Pending,
        DropReason::NotRunning,
    ];

    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::CycleInFlight => "cycle_in_flight",
            DropReason::Debounce => "debounce",
            DropReason::Settle => "settle",
            DropReason::StaleGeneration => "stale_generation",
            DropReason::Pending => "pending",
            DropReason::NotRunning => "not_running",
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

/// The last failure, shown to users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: String,
    /// Generation that failed.
    pub generation: Generation,
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
    /// Health restarts dropped, by reason (indexed like [`DropReason::ALL`]).
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
}

impl Machine {
    /// A machine for `state`, with nothing in flight. Send [`Event::Create`] to a new
    /// workspace's machine, or [`Event::Recover`] to a restored one.
    pub fn restore(policy: Arc<Policy>, state: MachineState) -> Self {
        Self {
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
        }
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

    /// A restored machine learns, without an event, that the agent of `generation` had
    /// registered before the restart; it gets a full heartbeat timeout from `now` to be heard
    /// from again. Ignored unless `generation` is the one up.
    pub fn agent_known(&mut self, generation: Generation, now: Timestamp) {
        if generation == self.state.observed_generation && generation.0 > 0 {
            self.agent = Some((generation, now));
        }
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
        (outcome, fx)
    }

    fn step(&mut self, event: Event, tick: Tick, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.phase == Phase::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        match event {
            Event::Create => {
                self.record(fx, RecordKind::Created);
                self.state.desired = Desired::Running;
                let generation = self.start_cycle(CauseSet::of(Cause::Create), tick.now, fx);
                Outcome::Started(generation)
            }
            Event::Restart(cause) => self.on_restart(cause, tick.now, fx),
            Event::Start => self.on_start(tick.now, fx),
            Event::Stop => self.on_stop(tick.now, fx),
            Event::Switch { from, to, to_ready } => {
                self.on_switch(from, to, to_ready, tick.now, fx)
            }
            Event::Delete => self.on_delete(tick.now, fx),
            Event::Health { generation, report } => {
                self.on_health(generation, report, tick, fx);
                Outcome::Accepted
            }
            Event::StepFinished { op, result } => {
                self.on_step_finished(op, result, tick, fx);
                Outcome::Accepted
            }
            Event::AgentRegistered { generation } => {
                self.on_agent_registered(generation, tick.now, fx);
                Outcome::Accepted
            }
            Event::AgentHeartbeat { generation } => {
                let up = generation == self.state.observed_generation && self.instance_up;
                if self.agent.is_none() && up {
                    // Its registration predates a restart of the daemon or actor: the
                    // authenticated heartbeat of the generation up is proof enough.
                    self.agent = Some((generation, tick.now));
                    if self.state.phase == Phase::Starting {
                        self.become_running(tick.now, fx);
                    }
                }
                if let Some((registered, last)) = self.agent.as_mut() {
                    if *registered == generation {
                        *last = tick.now;
                        // Registered and heard from after the cycle started: it is fresh.
                        if let Some(context) =
                            self.context_due.filter(|c| c.generation == generation)
                        {
                            self.context_due = None;
                            fx.push(Effect::DeliverContext(context));
                        }
                        return Outcome::Accepted;
                    }
                }
                self.stale(format!("heartbeat of generation {generation}"), fx);
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

    // ---- intents -------------------------------------------------------------------------

    fn on_restart(&mut self, cause: Cause, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        if cause == Cause::Health {
            // Health restarts only come from probe reports; see `on_health`.
            self.drop_health(DropReason::NotRunning, fx);
            return Outcome::Accepted;
        }
        if self.state.desired == Desired::Stopped && cause == Cause::Config {
            self.record(fx, RecordKind::RestartDeferred { cause });
            return Outcome::Deferred;
        }
        self.state.desired = Desired::Running;
        if cause.is_intent() {
            self.revive_if_parked();
        }
        if self.state.cycle.is_some() && self.state.phase == Phase::Stopping {
            // A stop was overruled while the cycle still runs: it is provisioning again.
            self.set_phase(Phase::Provisioning, now);
        }
        if self.op.is_some() {
            self.counters.coalesced = self.counters.coalesced.saturating_add(1);
            if self.state.pending.contains(cause) {
                // The pending cycle already serves this cause, durably: nothing to write.
                // A million requests during one cycle must not be a million rows.
                fx.push(Effect::Coalesced(cause));
            } else {
                self.state.pending.insert(cause);
                self.record(fx, RecordKind::RestartCoalesced { cause });
            }
            return Outcome::Coalesced(self.next_cycle_generation());
        }
        self.record(fx, RecordKind::RestartRequested { cause });
        let causes = self.take_retry_causes().union(CauseSet::of(cause));
        Outcome::Started(self.start_cycle(causes, now, fx))
    }

    fn on_start(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        let already_running = self.state.desired == Desired::Running
            && (self.state.cycle.is_some()
                || matches!(self.state.phase, Phase::Running | Phase::Starting));
        if already_running {
            return Outcome::Accepted;
        }
        self.on_restart(Cause::Manual, now, fx)
    }

    fn on_stop(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        if self.state.desired == Desired::Stopped
            && matches!(self.state.phase, Phase::Stopped | Phase::Stopping)
        {
            return Outcome::Accepted;
        }
        self.state.desired = Desired::Stopped;
        self.state.pending = CauseSet::EMPTY;
        self.state.retry = None;
        self.record(fx, RecordKind::StopStarted);
        self.set_phase(Phase::Stopping, now);
        if self.op.is_none() {
            self.run(Step::Stop, self.state.observed_generation, now, fx);
        }
        Outcome::Accepted
    }

    fn on_delete(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Accepted;
        }
        self.state.desired = Desired::Deleted;
        self.state.pending = CauseSet::EMPTY;
        self.state.retry = None;
        // The instance, wherever the switch got, is on the provider recorded now: the
        // delete removes it there.
        self.state.switch = None;
        self.record(fx, RecordKind::DeleteStarted);
        self.set_phase(Phase::Deleting, now);
        if self.op.is_none() {
            self.run(Step::Remove, self.state.observed_generation, now, fx);
        }
        Outcome::Accepted
    }

    /// Claims a provider switch. Flow: `switch_started`; a running workspace gets a cycle
    /// (now, or after the operation in flight) whose remove step empties `from`, then the
    /// workspace is recorded on `to` and its start step runs there; `switch_completed` once
    /// it is running. A failure on `to` rolls back: the cycle that follows empties `to` and
    /// provisions on `from` again (`switch_rolled_back`). A stopped workspace only has its
    /// instance released from `from`. Guarantees: a second switch while one is in progress
    /// is refused and changes nothing.
    fn on_switch(
        &mut self,
        from: String,
        to: String,
        to_ready: ReadyWhen,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        if self.state.switch.is_some() {
            return Outcome::Rejected(Rejection::AlreadySwitching);
        }
        if from == to {
            return Outcome::Rejected(Rejection::SameProvider);
        }
        self.record(
            fx,
            RecordKind::SwitchStarted {
                from: from.clone(),
                to: to.clone(),
            },
        );
        self.state.switch = Some(Box::new(Switch {
            from,
            to,
            from_ready: self.state.ready_when,
            to_ready,
            stage: SwitchStage::Leaving,
            rollback: false,
        }));
        if self.state.desired == Desired::Stopped {
            // The stop in flight, if any, finishes first; see `converge_after_stop`.
            if self.op.is_none() {
                self.run(Step::Release, self.state.observed_generation, now, fx);
            }
            return Outcome::Accepted;
        }
        // Running (deleting was refused above).
        self.revive_if_parked();
        if self.op.is_some() {
            self.state.pending.insert(Cause::Switch);
        } else {
            let causes = self.take_retry_causes().union(CauseSet::of(Cause::Switch));
            self.start_cycle(causes, now, fx);
        }
        Outcome::Accepted
    }

    /// The switch in progress reaches its target: `from` is empty. Records the workspace on
    /// the target provider; a rollback is over at this point.
    fn arrive(&mut self, fx: &mut Vec<Effect>) {
        let Some(switch) = self
            .state
            .switch
            .as_mut()
            .filter(|s| s.stage == SwitchStage::Leaving)
        else {
            return;
        };
        fx.push(Effect::UseProvider(switch.to.clone()));
        self.state.ready_when = switch.to_ready;
        if switch.rollback {
            self.state.switch = None;
        } else {
            switch.stage = SwitchStage::Arrived;
            // The cycle under way now serves the switch: no extra cycle for it.
            self.state.pending.remove(Cause::Switch);
        }
    }

    /// The workspace runs (or rests, stopped) on the provider it switched to.
    fn complete_switch(&mut self, fx: &mut Vec<Effect>) {
        if let Some(switch) = self
            .state
            .switch
            .take_if(|s| s.stage == SwitchStage::Arrived)
        {
            self.record(
                fx,
                RecordKind::SwitchCompleted {
                    from: switch.from,
                    to: switch.to,
                },
            );
        }
    }

    /// A failure on the provider switched to turns the switch around: `true` if a rollback
    /// cycle started (the caller must not also back off).
    fn roll_back(
        &mut self,
        reason: &str,
        causes: CauseSet,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) -> bool {
        if !self.turn_back(reason, fx) {
            return false;
        }
        let causes = self
            .state
            .pending
            .take()
            .union(causes)
            .union(CauseSet::of(Cause::Switch));
        self.start_cycle(causes, now, fx);
        true
    }

    /// Records that the switch failed on its new provider and turns it into the way back
    /// (`switch_rolled_back`): whatever runs next empties the new provider and returns to the
    /// old one. `false` if there is no arrived switch to turn back.
    fn turn_back(&mut self, reason: &str, fx: &mut Vec<Effect>) -> bool {
        let Some(switch) = self
            .state
            .switch
            .take_if(|s| s.stage == SwitchStage::Arrived && !s.rollback)
        else {
            return false;
        };
        self.record(
            fx,
            RecordKind::SwitchRolledBack {
                from: switch.from.clone(),
                to: switch.to.clone(),
                reason: reason.to_owned(),
            },
        );
        self.state.switch = Some(Box::new(Switch {
            from: switch.to,
            to: switch.from,
            from_ready: switch.to_ready,
            to_ready: switch.from_ready,
            stage: SwitchStage::Leaving,
            rollback: true,
        }));
        true
    }

    /// Whether the switch in progress is the way back, still on the provider that failed.
    fn leaving_failed_provider(&self) -> bool {
        self.state
            .switch
            .as_ref()
            .is_some_and(|s| s.rollback && s.stage == SwitchStage::Leaving)
    }

    /// A switch that cannot get off its old provider is given up; nothing moved.
    fn abandon_switch(&mut self, reason: &str, fx: &mut Vec<Effect>) {
        if let Some(switch) = self
            .state
            .switch
            .take_if(|s| s.stage == SwitchStage::Leaving && !s.rollback)
        {
            self.record(
                fx,
                RecordKind::SwitchRolledBack {
                    from: switch.from,
                    to: switch.to,
                    reason: reason.to_owned(),
                },
            );
        }
    }

    // ---- health --------------------------------------------------------------------------

    fn on_health(
        &mut self,
        generation: Generation,
        report: HealthReport,
        tick: Tick,
        fx: &mut Vec<Effect>,
    ) {
        let now = tick.now;
        // An agent that registered and then fell silent is as dead as its instance.
        let report = match (report, self.agent) {
            (HealthReport::Alive, Some((registered, last)))
                if registered == generation && now.since(last) > self.policy.heartbeat_timeout =>
            {
                HealthReport::Dead
            }
            _ => report,
        };
        self.last_report = Some((generation, report, now));
        let up = self.state.desired == Desired::Running
            && self.instance_up
            && matches!(self.state.phase, Phase::Running | Phase::Starting);
        let reason = if self.op.is_some() {
            Some(DropReason::CycleInFlight)
        } else if !up {
            Some(DropReason::NotRunning)
        } else if generation != self.state.observed_generation {
            Some(DropReason::StaleGeneration)
        } else {
            None
        };
        match (report, reason) {
            (HealthReport::Alive, None) => {
                self.health_failures = 0;
                self.pending_since = None;
                return;
            }
            (HealthReport::Alive, Some(_)) => return,
            (_, Some(reason)) => return self.drop_health(reason, fx),
            (HealthReport::Pending, None) => {
                // Booting is not dead — for at most a boot timeout: an instance stuck
                // "booting" (say, a container created but never started) is dead.
                let since = *self.pending_since.get_or_insert(now);
                if now.since(since) <= self.policy.boot_timeout {
                    return self.drop_health(DropReason::Pending, fx);
                }
            }
            (HealthReport::Dead, None) => {}
        }
        if self.debounce_until(now).is_some() {
            return self.drop_health(DropReason::Debounce, fx);
        }
        if self.settle_until(now).is_some() {
            return self.drop_health(DropReason::Settle, fx);
        }
        self.health_failures += 1;
        if self.health_failures < self.policy.failure_threshold {
            return;
        }
        self.health_failures = 0;
        self.instance_up = false;
        self.record(
            fx,
            RecordKind::RestartRequested {
                cause: Cause::Health,
            },
        );
        self.fail(
            "instance died".to_owned(),
            "crash_loop",
            CauseSet::of(Cause::Health),
            tick,
            fx,
        );
    }

    /// Drops a health report: counted always, recorded as an event unless no instance is
    /// meant to be up (a stopped workspace would otherwise log every probe tick).
    fn drop_health(&mut self, reason: DropReason, fx: &mut Vec<Effect>) {
        let idx = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.counters.dropped[idx] = self.counters.dropped[idx].saturating_add(1);
        if reason != DropReason::NotRunning {
            self.record(
                fx,
                RecordKind::RestartDropped {
                    cause: Cause::Health,
                    reason,
                },
            );
        }
    }

    // ---- completions ---------------------------------------------------------------------

    fn on_step_finished(
        &mut self,
        id: OpId,
        result: Result<(), String>,
        tick: Tick,
        fx: &mut Vec<Effect>,
    ) {
        let Some(op) = self.op.filter(|op| op.id == id) else {
            self.stale(format!("completion of operation {}", id.0), fx);
            return;
        };
        self.op = None;
        let now = tick.now;
        match (op.step, result) {
            (Step::RemoveOld, Ok(())) => {
                self.instance_gone();
                if self.state.desired == Desired::Running {
                    self.arrive(fx);
                    self.run(Step::Start, op.generation, now, fx);
                } else {
                    // Stop or delete arrived during the cycle: nothing is up any more.
                    self.state.cycle = None;
                    self.state.last_cycle_ended_at = Some(now);
                    self.record(
                        fx,
                        RecordKind::ProvisionFailed {
                            reason: "cancelled".into(),
                        },
                    );
                    self.converge_after_stop(now, fx);
                }
            }
            (Step::Start, Ok(())) => {
                self.state.cycle = None;
                self.instance_up = true;
                self.state.observed_generation = op.generation;
                self.state.last_cycle_ended_at = Some(now);
                self.state.failure = None;
                self.health_failures = 0;
                self.record(fx, RecordKind::ProvisionSucceeded);
                match self.state.desired {
                    Desired::Running if !self.state.pending.is_empty() => {
                        let causes = self.state.pending.take();
                        self.start_cycle(causes, now, fx);
                    }
                    Desired::Running => self.instance_ready_or_booting(now, fx),
                    Desired::Stopped => self.run(Step::Stop, op.generation, now, fx),
                    Desired::Deleted => self.run(Step::Remove, op.generation, now, fx),
                }
            }
            (Step::RemoveOld | Step::Start, Err(reason)) => {
                let op_cycle_causes = self
                    .state
                    .cycle
                    .take()
                    .map(|c| c.causes)
                    .unwrap_or_default();
                self.state.last_cycle_ended_at = Some(now);
                self.counters.cycles_failed = self.counters.cycles_failed.saturating_add(1);
                self.record(
                    fx,
                    RecordKind::ProvisionFailed {
                        reason: reason.clone(),
                    },
                );
                match self.state.desired {
                    Desired::Running => {
                        let causes = op_cycle_causes;
                        self.fail(reason, "provision_failed", causes, tick, fx);
                    }
                    // The failed step may have left something behind: make sure it is gone.
                    // A switch whose start failed is turned back: once stopped, the workspace
                    // is released from the new provider and rests on the old one.
                    Desired::Stopped => {
                        self.turn_back(&reason, fx);
                        self.run(Step::Stop, op.generation, now, fx)
                    }
                    Desired::Deleted => self.run(Step::Remove, op.generation, now, fx),
                }
            }
            (Step::Stop, result) if self.parked_without_intent() => {
                // The stop of a parked workspace's leftover instance: it stays parked.
                if result.is_ok() {
                    self.instance_gone();
                }
            }
            (Step::Stop, Ok(())) => {
                self.instance_gone();
                self.converge_after_stop(now, fx);
            }
            (Step::Stop, Err(reason)) => {
                if self.state.desired == Desired::Stopped {
                    self.park(format!("stop failed: {reason}"), now, fx);
                } else {
                    self.converge_after_stop(now, fx);
                }
            }
            (Step::Release, Ok(())) => {
                self.instance_gone();
                self.arrive(fx);
                self.complete_switch(fx);
                self.converge_after_stop(now, fx);
            }
            (Step::Release, Err(reason)) if self.leaving_failed_provider() => {
                // The way back of a stopped workspace must empty the failed provider too: keep
                // trying with backoff (a later start waits for it the same way).
                self.state.failure = Some(Failure {
                    reason,
                    generation: self.state.generation,
                });
                self.schedule_retry(CauseSet::EMPTY, tick, fx);
            }
            (Step::Release, Err(reason)) => {
                // Nothing moved: the workspace stays on the provider it was on.
                let reason = format!("release failed: {reason}");
                if let Some(switch) = self.state.switch.take() {
                    self.record(
                        fx,
                        RecordKind::SwitchRolledBack {
                            from: switch.from,
                            to: switch.to,
                            reason,
                        },
                    );
                }
                self.converge_after_stop(now, fx);
            }
            (Step::Remove, Ok(())) => {
                self.instance_gone();
                self.record(fx, RecordKind::Deleted);
                self.set_phase(Phase::Deleted, now);
                fx.push(Effect::Purge);
            }
            (Step::Remove, Err(reason)) => {
                // A delete must finish: keep retrying with backoff, never park.
                self.state.failure = Some(Failure {
                    reason,
                    generation: self.state.observed_generation,
                });
                self.schedule_retry(CauseSet::EMPTY, tick, fx);
            }
        }
    }

    /// After a stop (or a cycle cut short by one): carry on towards what is desired now.
    fn converge_after_stop(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        match self.state.desired {
            Desired::Running => {
                let causes = self.state.pending.take().union(CauseSet::of(Cause::Manual));
                self.start_cycle(causes, now, fx);
            }
            Desired::Stopped => {
                if self.state.phase != Phase::Stopped {
                    self.record(fx, RecordKind::Stopped);
                    self.set_phase(Phase::Stopped, now);
                }
                // A switch claimed before or during the stop: a stopped workspace's switch
                // only releases what the old provider keeps of its instance.
                match self.state.switch.as_ref().map(|s| s.stage) {
                    Some(SwitchStage::Leaving) if self.op.is_none() => {
                        self.run(Step::Release, self.state.observed_generation, now, fx)
                    }
                    Some(SwitchStage::Arrived) => self.complete_switch(fx),
                    _ => {}
                }
            }
            Desired::Deleted => self.run(Step::Remove, self.state.observed_generation, now, fx),
        }
    }

    fn on_agent_registered(
        &mut self,
        generation: Generation,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
        if self.starting(generation) {
            // The agent came up before its start step reported back: remember it; the
            // completed start goes straight to running.
            self.agent = Some((generation, now));
            self.record(fx, RecordKind::AgentRegistered);
            return;
        }
        if generation != self.state.observed_generation || !self.instance_up {
            self.stale(format!("agent registration of generation {generation}"), fx);
            return;
        }
        self.agent = Some((generation, now));
        self.record(fx, RecordKind::AgentRegistered);
        if self.state.phase == Phase::Starting {
            self.become_running(now, fx);
        }
    }

    /// Whether the agent of `generation` may speak for the workspace: only the latest
    /// generation, while its instance is up or being started (an agent may register before
    /// its start step reports back). Once a new cycle starts, the replaced agent is
    /// superseded.
    pub fn accepts_agent(&self, generation: Generation) -> bool {
        generation == self.state.generation
            && (generation == self.state.observed_generation || self.starting(generation))
    }

    /// Whether the start step of `generation` is in flight.
    fn starting(&self, generation: Generation) -> bool {
        self.op
            .is_some_and(|op| op.step == Step::Start && op.generation == generation)
    }

    // ---- timers --------------------------------------------------------------------------

    fn on_timer(&mut self, timer: Timer, tick: Tick, fx: &mut Vec<Effect>) {
        match timer {
            Timer::StepDeadline(id) => {
                let Some(op) = self.op.filter(|op| op.id == id) else {
                    return; // the operation finished in time
                };
                fx.push(Effect::Abort(id));
                let reason = match op.step {
                    Step::Start => "provision_timeout",
                    Step::RemoveOld | Step::Stop | Step::Remove | Step::Release => "stop_timeout",
                };
                self.on_step_finished(id, Err(reason.to_owned()), tick, fx);
            }
            Timer::BootDeadline(generation) => {
                let booting = self.state.phase == Phase::Starting
                    && self.state.observed_generation == generation
                    && self.op.is_none();
                if booting {
                    self.instance_up = false;
                    self.counters.cycles_failed = self.counters.cycles_failed.saturating_add(1);
                    self.record(fx, RecordKind::BootTimedOut);
                    let causes = CauseSet::of(Cause::Recovery);
                    self.fail("boot_timeout".into(), "boot_timeout", causes, tick, fx);
                    if self.state.phase == Phase::Failed && self.op.is_none() {
                        // Parked: the instance whose agent never came must not linger.
                        self.run(Step::Stop, generation, tick.now, fx);
                    }
                }
            }
            Timer::Retry(token) => {
                if token != self.retry_token {
                    return; // superseded by a later intent or retry
                }
                let Some(retry) = self.state.retry.take() else {
                    return;
                };
                match self.state.desired {
                    Desired::Running => {
                        let causes = retry.causes.union(self.state.pending.take());
                        self.start_cycle(causes, tick.now, fx);
                    }
                    Desired::Deleted => {
                        self.run(Step::Remove, self.state.observed_generation, tick.now, fx)
                    }
                    Desired::Stopped if self.leaving_failed_provider() => {
                        self.run(Step::Release, self.state.observed_generation, tick.now, fx)
                    }
                    Desired::Stopped => {}
                }
            }
        }
    }

    // ---- recovery ------------------------------------------------------------------------

    fn on_recover(&mut self, live: Option<Generation>, tick: Tick, fx: &mut Vec<Effect>) {
        let now = tick.now;
        if let Some(cycle) = self.state.cycle.take() {
            // Close the cycle the restart cut short, in the record as in the state.
            self.state.last_cycle_ended_at = Some(now);
            if live == Some(cycle.generation) {
                // Its start completed before the restart: the instance is up.
                self.state.observed_generation = cycle.generation;
                self.instance_up = true;
                self.record(fx, RecordKind::ProvisionSucceeded);
            } else {
                self.record(
                    fx,
                    RecordKind::ProvisionFailed {
                        reason: INTERRUPTED.into(),
                    },
                );
                if self.state.desired == Desired::Running {
                    // Its causes were acknowledged: serve them in the recovery cycle.
                    self.state.pending = self.state.pending.union(cycle.causes);
                }
            }
        }
        match self.state.desired {
            Desired::Deleted => self.run(Step::Remove, self.state.observed_generation, now, fx),
            Desired::Stopped => match live {
                Some(generation) => {
                    self.set_phase(Phase::Stopping, now);
                    self.run(Step::Stop, generation, now, fx);
                }
                None => self.converge_after_stop(now, fx),
            },
            Desired::Running if self.parked_without_intent() => {
                // Parked, and no intent since: it stays parked. An instance still there (the
                // stop of a parked workspace's leftover was cut short) is stopped again.
                if let Some(generation) = live {
                    self.run(Step::Stop, generation, now, fx);
                }
            }
            Desired::Running => {
                if self
                    .state
                    .switch
                    .as_ref()
                    .is_some_and(|s| s.stage == SwitchStage::Leaving)
                {
                    // A switch that has not left its old provider goes on: whatever runs
                    // there is replaced on the new one, never adopted.
                    self.state.pending.insert(Cause::Switch);
                }
                let current = live.is_some() && live == Some(self.state.generation);
                if current && self.state.pending.is_empty() && self.state.retry.is_none() {
                    return self.adopt(now, fx);
                }
                if let Some(retry) = self.state.retry {
                    // A retry was due before the restart: keep its time and causes.
                    let causes = retry.causes.union(self.state.pending.take());
                    self.set_phase(Phase::Provisioning, now);
                    return self.arm_retry(
                        ScheduledRetry {
                            at: retry.at.max(now),
                            causes,
                        },
                        fx,
                    );
                }
                let causes = self
                    .state
                    .pending
                    .take()
                    .union(CauseSet::of(Cause::Recovery));
                self.record(
                    fx,
                    RecordKind::RestartRequested {
                        cause: Cause::Recovery,
                    },
                );
                self.start_cycle(causes, now, fx);
            }
        }
    }

    /// Takes the live instance of the latest generation as this machine's.
    fn adopt(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        self.state.observed_generation = self.state.generation;
        self.instance_up = true;
        match self.state.phase {
            Phase::Running => {}
            Phase::Starting => self.schedule_boot_deadline(now, fx),
            _ => self.instance_ready_or_booting(now, fx),
        }
    }

    // ---- building blocks -----------------------------------------------------------------

    /// Starts a cycle for `causes`; returns its generation.
    fn start_cycle(
        &mut self,
        causes: CauseSet,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) -> Generation {
        debug_assert!(
            self.op.is_none(),
            "a cycle never starts while an operation is in flight"
        );
        let previous_generation = self.state.observed_generation;
        let generation = self.state.generation.next();
        self.state.generation = generation;
        self.state.pending = CauseSet::EMPTY;
        self.state.last_cycle_started_at = Some(now);
        self.state.retry = None;
        self.pending_since = None;
        self.health_failures = 0;
        self.state.cycle = Some(Cycle {
            generation,
            causes,
            started_at: now,
        });
        // Only a restart (not the first provision) owes the new agent a context; a context
        // still owed by a cycle that failed carries over to the one that replaces it.
        let owed = self.context_due.take();
        let replaced = owed.map_or(previous_generation, |c| c.previous_generation);
        self.context_due = (replaced.0 > 0).then_some(RestartContext {
            generation,
            previous_generation: replaced,
            causes: owed.map_or(causes, |c| c.causes.union(causes)),
        });
        self.counters.cycles = self.counters.cycles.saturating_add(1);
        self.set_phase(Phase::Provisioning, now);
        self.record(
            fx,
            RecordKind::ProvisionStarted {
                causes,
                previous_generation,
            },
        );
        self.run(Step::RemoveOld, generation, now, fx);
        generation
    }

    fn run(&mut self, step: Step, generation: Generation, now: Timestamp, fx: &mut Vec<Effect>) {
        let id = OpId(self.next_op);
        self.next_op += 1;
        let timeout = match step {
            Step::Start => self.policy.provision_timeout,
            Step::RemoveOld | Step::Stop | Step::Remove | Step::Release => self.policy.stop_timeout,
        };
        let deadline = now.plus(timeout);
        self.op = Some(Op {
            id,
            step,
            generation,
            started_at: now,
            deadline,
        });
        fx.push(Effect::Run {
            op: id,
            step,
            generation,
        });
        fx.push(Effect::Schedule {
            at: deadline,
            timer: Timer::StepDeadline(id),
        });
    }

    /// A failure of the running workspace (cycle, boot or crash): back off and retry the
    /// `causes` of what failed, or park the workspace once the breaker trips. User intents
    /// that arrived while the failed cycle ran are never dropped: they start a fresh cycle
    /// at once (each intent buys at most one such cycle, so this cannot loop).
    fn fail(
        &mut self,
        reason: String,
        breaker_reason: &str,
        causes: CauseSet,
        tick: Tick,
        fx: &mut Vec<Effect>,
    ) {
        let now = tick.now;
        self.state.failure = Some(Failure {
            reason,
            generation: self.state.generation,
        });
        if let Some(since) = self.state.healthy_since.take() {
            if now.since(since) >= self.policy.backoff.reset_after {
                self.state.backoff_attempt = 0;
            }
        }
        let window = self.policy.backoff.failure_window;
        self.state
            .recent_failures
            .retain(|t| now.since(*t) < window);
        self.state.recent_failures.push(now);
        let reason = self
            .state
            .failure
            .as_ref()
            .map(|f| f.reason.clone())
            .unwrap_or_default();
        if self.roll_back(&reason, causes, now, fx) {
            return;
        }
        if self.leaving_failed_provider() {
            // The way back cannot empty the provider that failed (say, its engine is down).
            // It must, before anything starts on the old one (never two instances), so it
            // keeps trying with backoff and never parks: the workspace is not left behind
            // on the broken provider, and the retry goes on once that provider answers.
            let causes = causes
                .union(self.state.pending.take())
                .union(CauseSet::of(Cause::Switch));
            self.set_phase(Phase::Provisioning, now);
            self.schedule_retry(causes, tick, fx);
            return;
        }
        if self.state.pending.has_intent() {
            let causes = self.state.pending.take().union(causes);
            self.start_cycle(causes, now, fx);
            return;
        }
        let causes = causes.union(self.state.pending.take());
        let failures = u32::try_from(self.state.recent_failures.len()).unwrap_or(u32::MAX);
        if failures > self.policy.backoff.max_failures {
            self.park(breaker_reason.to_owned(), now, fx);
            return;
        }
        self.set_phase(Phase::Provisioning, now);
        self.schedule_retry(causes, tick, fx);
    }

    fn schedule_retry(&mut self, causes: CauseSet, tick: Tick, fx: &mut Vec<Effect>) {
        let attempt = self.state.backoff_attempt;
        let delay = self.policy.backoff.delay(attempt, tick.jitter);
        self.state.backoff_attempt = attempt.saturating_add(1);
        let at = tick.now.plus(delay);
        let causes = causes.union(self.state.retry.map(|r| r.causes).unwrap_or_default());
        self.record(fx, RecordKind::BackoffScheduled { delay, attempt });
        self.arm_retry(ScheduledRetry { at, causes }, fx);
    }

    /// Arms the timer of `retry` (a fresh token makes any older retry timer stale).
    fn arm_retry(&mut self, retry: ScheduledRetry, fx: &mut Vec<Effect>) {
        self.retry_token += 1;
        self.state.retry = Some(retry);
        fx.push(Effect::Schedule {
            at: retry.at,
            timer: Timer::Retry(self.retry_token),
        });
    }

    /// A user intent revives a parked workspace: it gets a fresh failure budget.
    fn revive_if_parked(&mut self) {
        if self.state.phase == Phase::Failed {
            self.state.recent_failures.clear();
            self.state.backoff_attempt = 0;
        }
    }

    /// Parks the workspace in `failed`; only a user intent moves it on.
    fn park(&mut self, reason: String, now: Timestamp, fx: &mut Vec<Effect>) {
        self.abandon_switch(&reason, fx);
        self.state.retry = None;
        self.state.pending = CauseSet::EMPTY;
        self.state.failure = Some(Failure {
            reason: reason.clone(),
            generation: self.state.generation,
        });
        self.record(fx, RecordKind::Failed { reason });
        self.set_phase(Phase::Failed, now);
    }

    /// Parked in `failed`, still meant to run, and no user intent waiting.
    fn parked_without_intent(&self) -> bool {
        self.state.phase == Phase::Failed
            && self.state.desired == Desired::Running
            && self.state.pending.is_empty()
    }

    /// The instance was stopped or removed: nothing is up.
    fn instance_gone(&mut self) {
        self.instance_up = false;
        self.agent = None;
        self.state.observed_generation = Generation(0);
    }

    fn instance_ready_or_booting(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        let registered = self
            .agent
            .is_some_and(|(g, _)| g == self.state.observed_generation);
        match self.state.ready_when {
            ReadyWhen::Instance => self.become_running(now, fx),
            ReadyWhen::Agent if registered => self.become_running(now, fx),
            ReadyWhen::Agent => {
                self.set_phase(Phase::Starting, now);
                self.schedule_boot_deadline(now, fx);
            }
        }
    }

    fn schedule_boot_deadline(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        fx.push(Effect::Schedule {
            at: now.plus(self.policy.boot_timeout),
            timer: Timer::BootDeadline(self.state.observed_generation),
        });
    }

    fn become_running(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        self.set_phase(Phase::Running, now);
        self.state.healthy_since = Some(now);
        self.state.failure = None;
        self.complete_switch(fx);
    }

    fn take_retry_causes(&mut self) -> CauseSet {
        self.state
            .retry
            .take()
            .map(|r| r.causes)
            .unwrap_or_default()
    }

    /// Generation the next cycle will have.
    fn next_cycle_generation(&self) -> Generation {
        self.state.generation.next()
    }

    fn stale(&mut self, what: String, fx: &mut Vec<Effect>) {
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
#[path = "machine/tests.rs"]
mod tests;
