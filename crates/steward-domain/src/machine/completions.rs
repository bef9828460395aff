//! Provider steps that finished, and timers that fired.
//!
//! Flow of a cycle: `remove_old` succeeds → `start` runs (on the provider recorded now) →
//! the instance is up: `running`, or `starting` until its agent registers under the boot
//! deadline; a pending restart starts exactly one more cycle. A failed step (or its deadline)
//! ends the cycle with `provision_failed` and goes through backoff and the breaker (see
//! `failures`). A stop or delete that arrived during the cycle wins after the current step.
//! Guarantees: a completion or deadline of an operation that is not the one in flight is
//! stale and changes nothing but a counter; a retry timer superseded by a later intent or
//! retry is ignored; a delete always finishes (it retries, it never parks).

use super::{
    Effect, FailureReason, Machine, ParkReason, RecordKind, StaleResult, Step, StepFailure,
    SwitchStage, Timer,
};
use crate::{Cause, CauseSet, Desired, OpId, Phase, Tick, Timestamp};

impl Machine {
    pub(super) fn on_step_finished(
        &mut self,
        id: OpId,
        result: Result<(), StepFailure>,
        tick: Tick,
        fx: &mut Vec<Effect>,
    ) {
        let Some(op) = self.op.filter(|op| op.id == id) else {
            self.stale(StaleResult::Completion(id), fx);
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
                            reason: StepFailure::Cancelled,
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
                self.health_failures = 0;
                // The last failure stays until the workspace runs: an instance whose agent
                // has yet to register may time out like its predecessor.
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
            (Step::RemoveOld | Step::Start, Err(failure)) => {
                let causes = self
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
                        reason: failure.clone(),
                    },
                );
                match self.state.desired {
                    Desired::Running => self.fail(failure, causes, tick, fx),
                    // The failed step may have left something behind: make sure it is gone.
                    // A switch whose start failed is turned back: once stopped, the workspace
                    // is released from the new provider and rests on the old one.
                    Desired::Stopped => {
                        self.turn_back(FailureReason::Step(failure), fx);
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
            (Step::Stop, Err(failure)) => {
                if self.state.desired == Desired::Stopped {
                    self.park(ParkReason::StopFailed(failure), now, fx);
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
            (Step::Release, Err(failure)) if self.leaving_failed_provider() => {
                // The way back of a stopped workspace must empty the failed provider too: keep
                // trying with backoff (a later start waits for it the same way).
                let generation = self.state.generation;
                self.note_failure(FailureReason::ReleaseFailed(failure), generation);
                self.schedule_retry(CauseSet::EMPTY, tick, fx);
            }
            (Step::Release, Err(failure)) => {
                // Nothing moved: the workspace stays on the provider it was on.
                if let Some(switch) = self.state.switch.take() {
                    self.record(
                        fx,
                        RecordKind::SwitchRolledBack {
                            from: switch.from,
                            to: switch.to,
                            reason: FailureReason::ReleaseFailed(failure),
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
            (Step::Remove, Err(failure)) => {
                // A delete must finish: keep retrying with backoff, never park.
                let generation = self.state.observed_generation;
                self.note_failure(FailureReason::Step(failure), generation);
                self.schedule_retry(CauseSet::EMPTY, tick, fx);
            }
        }
    }

    /// After a stop (or a cycle cut short by one): carry on towards what is desired now.
    pub(super) fn converge_after_stop(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
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

    pub(super) fn on_timer(&mut self, timer: Timer, tick: Tick, fx: &mut Vec<Effect>) {
        match timer {
            Timer::StepDeadline(id) => {
                let Some(op) = self.op.filter(|op| op.id == id) else {
                    return; // the operation finished in time
                };
                fx.push(Effect::Abort(id));
                self.on_step_finished(id, Err(StepFailure::Deadline(op.step)), tick, fx);
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
                    self.fail(StepFailure::BootTimeout, causes, tick, fx);
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
}
