//! Probe reports: when an instance counts as dead, and when a death restarts it.
//!
//! Probes never decide: they report what their provider saw, and these rules decide. Flow:
//! an alive report of an agent silent for `heartbeat_timeout` counts as dead; a report during
//! an operation, while nothing is meant to be up, or about another generation than the one
//! up is dropped; a booting instance is not dead (for at most `boot_timeout`); inside the
//! debounce window (from a cycle's start) or the settle window (from its end) a dead report
//! is dropped; `failure_threshold` dead reports in a row fail the instance
//! ([`StepFailure::InstanceDied`]), which goes through backoff and the breaker (`crash_loop`).
//! Guarantees: a dropped report is counted, and recorded (`restart_dropped`) unless nothing
//! is meant to be up; a probe can never restart a booting instance or one a cycle replaces.

use super::{DropReason, Effect, HealthReport, Machine, RecordKind, StepFailure};
use crate::{Cause, CauseSet, Desired, Generation, Phase, Tick};

impl Machine {
    pub(super) fn on_health(
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
            StepFailure::InstanceDied,
            CauseSet::of(Cause::Health),
            tick,
            fx,
        );
    }

    /// Drops a health report: counted always, recorded as an event unless no instance is
    /// meant to be up (a stopped workspace would otherwise log every probe tick).
    fn drop_health(&mut self, reason: DropReason, fx: &mut Vec<Effect>) {
        let dropped = &mut self.counters.dropped[reason.index()];
        *dropped = dropped.saturating_add(1);
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
}
