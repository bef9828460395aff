//! A machine restored from storage (daemon start, actor restart) reconciles with what its
//! provider still has.
//!
//! Flow: the cycle a crash cut short is closed — `provision_succeeded` if its instance is
//! live, else `provision_failed` (interrupted) and its causes are served again; then a
//! deleted workspace is removed, a stopped one stopped, a parked one stays parked, an
//! unfinished switch goes on, a live instance of the latest generation is adopted, a
//! scheduled retry is re-armed at its time, and anything else gets a `recovery` cycle.
//! Guarantees: a crash adds no backoff step and drops no acknowledged intent; nothing is
//! adopted that a cycle meant to replace.

use super::{Effect, Machine, RecordKind, ScheduledRetry, Step, StepFailure, SwitchStage};
use crate::{Cause, CauseSet, Desired, Generation, Phase, Tick, Timestamp};

impl Machine {
    pub(super) fn on_recover(
        &mut self,
        live: Option<Generation>,
        tick: Tick,
        fx: &mut Vec<Effect>,
    ) {
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
                        reason: StepFailure::Interrupted,
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
}
