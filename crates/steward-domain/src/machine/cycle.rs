//! The building blocks of a cycle: starting one, issuing a provider operation under its
//! deadline, and an instance that is up becoming ready.
//!
//! Guarantees: a cycle never starts while an operation is in flight; every operation has a
//! deadline; generations strictly increase; only a restart (not the first provision) owes
//! the new agent a restart context.

use super::{Cycle, Effect, Machine, Op, RecordKind, RestartContext, Step, Timer};
use crate::{CauseSet, Generation, OpId, Phase, ReadyWhen, Timestamp};

impl Machine {
    /// Starts a cycle for `causes`; returns its generation.
    pub(super) fn start_cycle(
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

    pub(super) fn run(
        &mut self,
        step: Step,
        generation: Generation,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
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

    /// The instance was stopped or removed: nothing is up.
    pub(super) fn instance_gone(&mut self) {
        self.instance_up = false;
        self.agent = None;
        self.state.observed_generation = Generation(0);
    }

    pub(super) fn instance_ready_or_booting(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
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

    pub(super) fn schedule_boot_deadline(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        fx.push(Effect::Schedule {
            at: now.plus(self.policy.boot_timeout),
            timer: Timer::BootDeadline(self.state.observed_generation),
        });
    }

    pub(super) fn become_running(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        self.set_phase(Phase::Running, now);
        self.state.healthy_since = Some(now);
        self.state.failure = None;
        self.complete_switch(fx);
    }
}
