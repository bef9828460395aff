//! What users ask for: create, restart, configuration changes, start, stop, delete.
//!
//! Flow: an intent on an idle workspace starts a cycle now; during a cycle it folds into the
//! pending one (restarts, configuration changes) or waits for the current step to end (stop,
//! delete). Guarantees: an intent is never dropped, only superseded (a stop or delete cancels
//! pending restarts); a restart folded into a pending cycle that already serves its cause
//! writes nothing; a deleted workspace refuses everything.

use super::{ConfigChange, Machine, Outcome, RecordKind, Rejection, Step};
use crate::machine::Effect;
use crate::{Cause, CauseSet, Desired, Phase, Timestamp};

impl Machine {
    pub(super) fn on_create(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        self.record(fx, RecordKind::Created);
        self.state.desired = Desired::Running;
        Outcome::Started(self.start_cycle(CauseSet::of(Cause::Create), now, fx))
    }

    pub(super) fn on_restart(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        self.restart_for(Cause::Manual, now, fx)
    }

    /// A configuration change (the shell has applied it) needs an instance that runs with it:
    /// a cycle now, or folded into the pending one. A stopped workspace keeps it for its next
    /// start (`restart_deferred`): a change never starts what the owner stopped.
    pub(super) fn on_config_changed(
        &mut self,
        // Every change needs a new instance today; the kind is where one that does not
        // (say, a label) would be told apart.
        _change: ConfigChange,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) -> Outcome {
        match self.state.desired {
            Desired::Deleted => Outcome::Rejected(Rejection::Deleting),
            Desired::Stopped => {
                self.record(
                    fx,
                    RecordKind::RestartDeferred {
                        cause: Cause::Config,
                    },
                );
                Outcome::Deferred
            }
            Desired::Running => self.restart_for(Cause::Config, now, fx),
        }
    }

    pub(super) fn on_start(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        if self.state.desired == Desired::Deleted {
            return Outcome::Rejected(Rejection::Deleting);
        }
        let already_running = self.state.desired == Desired::Running
            && (self.state.cycle.is_some()
                || matches!(self.state.phase, Phase::Running | Phase::Starting));
        if already_running {
            return Outcome::Accepted;
        }
        self.restart_for(Cause::Manual, now, fx)
    }

    /// A user's restart (`manual`, `config`) of a workspace that is not being deleted: a
    /// cycle now, or folded into the pending one if an operation is in flight. It revives a
    /// parked workspace and overrules a stop.
    fn restart_for(&mut self, cause: Cause, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
        debug_assert!(cause.is_intent() && self.state.desired != Desired::Deleted);
        self.state.desired = Desired::Running;
        self.revive_if_parked();
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
            return Outcome::Coalesced(self.state.generation.next());
        }
        self.record(fx, RecordKind::RestartRequested { cause });
        let causes = self.take_retry_causes().union(CauseSet::of(cause));
        Outcome::Started(self.start_cycle(causes, now, fx))
    }

    pub(super) fn on_stop(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
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

    pub(super) fn on_delete(&mut self, now: Timestamp, fx: &mut Vec<Effect>) -> Outcome {
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
}
