//! Provider switches: moving a workspace's instance from one provider to another.
//!
//! Flow: `switch_started` (the claim, in the same commit as `MachineState::switch`); a
//! running workspace gets a cycle whose remove step empties the old provider, then the
//! workspace is recorded on the new one ([`Effect::UseProvider`]) and its start step runs
//! there; `switch_completed` once it is `running`. A failure on the new provider (its start,
//! its deadline, a boot timeout, a death before `running`) rolls back: `switch_rolled_back`
//! and a cycle at once that empties the new provider and provisions on the old one. A stopped
//! workspace only has its instance released from the old provider. Guarantees: a second
//! switch while one is in progress is refused and changes nothing; a rollback never rolls
//! back again; an instance never lives on two providers.

use super::SwitchStage;
use super::{Effect, FailureReason, Machine, Outcome, RecordKind, Rejection, Step, Switch};
use crate::{Cause, CauseSet, Desired, ReadyWhen, Timestamp};

impl Machine {
    /// Claims a provider switch. Flow: `switch_started`; a running workspace gets a cycle
    /// (now, or after the operation in flight) whose remove step empties `from`, then the
    /// workspace is recorded on `to` and its start step runs there; `switch_completed` once
    /// it is running. A failure on `to` rolls back: the cycle that follows empties `to` and
    /// provisions on `from` again (`switch_rolled_back`). A stopped workspace only has its
    /// instance released from `from`. Guarantees: a second switch while one is in progress
    /// is refused and changes nothing.
    pub(super) fn on_switch(
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
    pub(super) fn arrive(&mut self, fx: &mut Vec<Effect>) {
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
    pub(super) fn complete_switch(&mut self, fx: &mut Vec<Effect>) {
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
    pub(super) fn roll_back(
        &mut self,
        reason: FailureReason,
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
    pub(super) fn turn_back(&mut self, reason: FailureReason, fx: &mut Vec<Effect>) -> bool {
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
                reason,
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
    pub(super) fn leaving_failed_provider(&self) -> bool {
        self.state
            .switch
            .as_ref()
            .is_some_and(|s| s.rollback && s.stage == SwitchStage::Leaving)
    }

    /// A switch that cannot get off its old provider is given up; nothing moved.
    pub(super) fn abandon_switch(&mut self, reason: FailureReason, fx: &mut Vec<Effect>) {
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
                    reason,
                },
            );
        }
    }
}
