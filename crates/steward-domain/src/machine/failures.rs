//! Failures of a workspace meant to run: backoff, retries, the breaker, parking.
//!
//! Flow: a failure ([`StepFailure`]: a failed cycle, a boot timeout, a death) is recorded as
//! the workspace's [`Failure`]; a switch on its new provider rolls back; user intents that
//! arrived meanwhile start a fresh cycle at once; otherwise a retry of the failed causes is
//! scheduled with exponential backoff and jitter — or, once the breaker trips, the workspace
//! is parked in `failed` with the [`ParkReason`] the failure implies (`crash_loop`,
//! `provision_failed`, `boot_timeout`).
//!
//! The breaker trips on more than `max_failures` failures within `failure_window`, or in a
//! row without the workspace running in between (failures slower than the window allows, such
//! as boot timeouts, park too). Guarantees: an intent is never dropped by a failure (each
//! intent buys at most one immediate cycle, so this cannot loop); a parked workspace moves
//! on only by a user intent, which gives it a fresh failure budget; the way back of a switch
//! never parks (it must empty the provider that failed first).

use super::{
    Effect, Failure, FailureReason, Machine, ParkReason, RecordKind, ScheduledRetry, StepFailure,
    Timer,
};
use crate::{Cause, CauseSet, Desired, Generation, Phase, Tick, Timestamp};

impl Machine {
    /// A failure of the running workspace (cycle, boot or death): back off and retry the
    /// `causes` of what failed, or park the workspace once the breaker trips.
    pub(super) fn fail(
        &mut self,
        failure: StepFailure,
        causes: CauseSet,
        tick: Tick,
        fx: &mut Vec<Effect>,
    ) {
        let now = tick.now;
        let breaker = ParkReason::tripped_by(&failure);
        let generation = self.state.generation;
        let consecutive = self.note_failure(FailureReason::Step(failure.clone()), generation);
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
        if self.roll_back(FailureReason::Step(failure), causes, now, fx) {
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
        let in_window = u32::try_from(self.state.recent_failures.len()).unwrap_or(u32::MAX);
        let max = self.policy.backoff.max_failures;
        if in_window > max || consecutive > max {
            self.park(breaker, now, fx);
            return;
        }
        self.set_phase(Phase::Provisioning, now);
        self.schedule_retry(causes, tick, fx);
    }

    /// Records `reason` as the last failure, of `generation`; returns how many failures in a
    /// row that makes since the workspace last ran.
    pub(super) fn note_failure(&mut self, reason: FailureReason, generation: Generation) -> u32 {
        let consecutive = self
            .state
            .failure
            .as_ref()
            .map_or(1, |f| f.consecutive.saturating_add(1));
        self.state.failure = Some(Failure {
            reason,
            generation,
            consecutive,
        });
        consecutive
    }

    pub(super) fn schedule_retry(&mut self, causes: CauseSet, tick: Tick, fx: &mut Vec<Effect>) {
        let attempt = self.state.backoff_attempt;
        let delay = self.policy.backoff.delay(attempt, tick.jitter);
        self.state.backoff_attempt = attempt.saturating_add(1);
        let at = tick.now.plus(delay);
        let causes = causes.union(self.state.retry.map(|r| r.causes).unwrap_or_default());
        self.record(fx, RecordKind::BackoffScheduled { delay, attempt });
        self.arm_retry(ScheduledRetry { at, causes }, fx);
    }

    /// Arms the timer of `retry` (a fresh token makes any older retry timer stale).
    pub(super) fn arm_retry(&mut self, retry: ScheduledRetry, fx: &mut Vec<Effect>) {
        self.retry_token += 1;
        self.state.retry = Some(retry);
        fx.push(Effect::Schedule {
            at: retry.at,
            timer: Timer::Retry(self.retry_token),
        });
    }

    /// The causes of the scheduled retry, which is cancelled: a cycle starting now serves
    /// them.
    pub(super) fn take_retry_causes(&mut self) -> CauseSet {
        self.state
            .retry
            .take()
            .map(|r| r.causes)
            .unwrap_or_default()
    }

    /// A user intent revives a parked workspace: it gets a fresh failure budget (the last
    /// failure is still shown until it runs).
    pub(super) fn revive_if_parked(&mut self) {
        if self.state.phase == Phase::Failed {
            self.state.recent_failures.clear();
            self.state.backoff_attempt = 0;
            if let Some(failure) = self.state.failure.as_mut() {
                failure.consecutive = 0;
            }
        }
    }

    /// Parks the workspace in `failed`; only a user intent moves it on.
    pub(super) fn park(&mut self, reason: ParkReason, now: Timestamp, fx: &mut Vec<Effect>) {
        self.abandon_switch(FailureReason::Parked(reason.clone()), fx);
        self.state.retry = None;
        self.state.pending = CauseSet::EMPTY;
        // The failure that tripped the breaker is already counted: it now reads as the
        // reason the workspace is parked.
        let consecutive = self.state.failure.as_ref().map_or(1, |f| f.consecutive);
        self.state.failure = Some(Failure {
            reason: FailureReason::Parked(reason.clone()),
            generation: self.state.generation,
            consecutive,
        });
        self.record(fx, RecordKind::Failed { reason });
        self.set_phase(Phase::Failed, now);
    }

    /// Parked in `failed`, still meant to run, and no user intent waiting.
    pub(super) fn parked_without_intent(&self) -> bool {
        self.state.phase == Phase::Failed
            && self.state.desired == Desired::Running
            && self.state.pending.is_empty()
    }
}
