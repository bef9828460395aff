//! The lifecycle semantics, as example tests (here), a decision table of the race rules
//! (`table.rs`) and property tests of the invariants (`properties.rs`).

use super::*;
use crate::{BackoffPolicy, Cause, CauseSet, Desired, Generation, OpId, ReadyWhen, Timestamp};
use proptest::prelude::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// A shell double: owns a machine, a clock, and what the machine asked for.
struct Harness {
    m: Machine,
    now: Timestamp,
    /// Operations the shell is running: (id, step, generation).
    running: Vec<(OpId, Step, Generation)>,
    /// Timers the shell holds.
    timers: Vec<(Timestamp, Timer)>,
    /// Every record, in order.
    records: Vec<Record>,
    purged: bool,
    /// Restart contexts the machine asked to deliver.
    contexts: Vec<RestartContext>,
    /// Greatest number of operations ever in flight at once.
    max_running: usize,
    /// The provider the workspace is recorded on (follows `UseProvider`).
    provider: String,
    /// The provider each running operation was issued on.
    issued_on: Vec<String>,
    /// Providers that hold an instance of the workspace (running or stopped).
    holding: std::collections::BTreeSet<String>,
    /// Restarts folded into a pending cycle that already served their cause.
    silent_coalesces: usize,
}

/// The event of a user's restart for `cause` (`manual` or `config`).
fn intent(cause: Cause) -> Event {
    match cause {
        Cause::Config => Event::ConfigChanged(ConfigChange::Secret),
        _ => Event::Restart,
    }
}

fn policy() -> Policy {
    Policy {
        debounce_window: 60 * SEC,
        settle_window: 10 * SEC,
        provision_timeout: 30 * SEC,
        stop_timeout: 10 * SEC,
        boot_timeout: 20 * SEC,
        failure_threshold: 2,
        heartbeat_timeout: 30 * SEC,
        backoff: BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        },
    }
}

impl Harness {
    fn new(ready_when: ReadyWhen) -> Self {
        let m = Machine::restore(Arc::new(policy()), MachineState::new(ready_when));
        Self {
            m,
            now: Timestamp(1_000_000),
            running: vec![],
            timers: vec![],
            records: vec![],
            purged: false,
            contexts: vec![],
            max_running: 0,
            provider: "a".into(),
            issued_on: vec![],
            holding: Default::default(),
            silent_coalesces: 0,
        }
    }

    /// A created workspace whose first cycle is done: `running`, generation 1.
    fn running() -> Self {
        let mut h = Self::new(ReadyWhen::Instance);
        h.send(Event::Create);
        h.finish_all_ok();
        assert_eq!(h.m.phase(), Phase::Running);
        assert_eq!(h.holding, ["a".to_owned()].into());
        h
    }

    fn send(&mut self, e: Event) -> Outcome {
        let (outcome, fx) = self.m.handle(e, Tick::at(self.now));
        let mut runs = Vec::new();
        for f in fx {
            match f {
                Effect::Record(r) => self.records.push(r),
                Effect::Run {
                    op,
                    step,
                    generation,
                } => runs.push((op, step, generation)),
                Effect::Abort(op) => {
                    if let Some(i) = self.running.iter().position(|(id, _, _)| *id == op) {
                        self.running.remove(i);
                        self.issued_on.remove(i);
                    }
                }
                Effect::Schedule { at, timer } => self.timers.push((at, timer)),
                Effect::Purge => self.purged = true,
                Effect::DeliverContext(c) => self.contexts.push(c),
                Effect::UseProvider(p) => self.provider = p,
                Effect::Coalesced(_) => self.silent_coalesces += 1,
            }
        }
        // Like the actor: operations run after every other effect of the decision.
        for run in runs {
            self.running.push(run);
            self.issued_on.push(self.provider.clone());
        }
        self.max_running = self.max_running.max(self.running.len());
        outcome
    }

    /// Completes the oldest running operation.
    fn finish(&mut self, result: Result<(), String>) -> Step {
        let (op, step, _) = self.running.remove(0);
        let on = self.issued_on.remove(0);
        if result.is_ok() {
            match step {
                Step::Start => {
                    self.holding.insert(on);
                }
                Step::RemoveOld | Step::Remove | Step::Release => {
                    self.holding.remove(&on);
                }
                Step::Stop => {}
            }
        }
        self.send(Event::StepFinished {
            op,
            result: result.map_err(StepFailure::Provider),
        });
        step
    }

    fn switch(&mut self, to: &str) -> Outcome {
        let from = self.provider.clone();
        self.send(Event::Switch {
            from,
            to: to.into(),
            to_ready: ReadyWhen::Instance,
        })
    }

    fn finish_all_ok(&mut self) {
        while !self.running.is_empty() {
            self.finish(Ok(()));
        }
    }

    /// Moves the clock and fires due timers, in order.
    fn advance(&mut self, d: Duration) {
        let until = self.now.plus(d);
        loop {
            self.timers.sort_by_key(|(at, _)| *at);
            match self.timers.first() {
                Some((at, _)) if *at <= until => {
                    let (at, timer) = self.timers.remove(0);
                    self.now = self.now.max(at);
                    self.send(Event::Timer(timer));
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn count(&self, name: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.kind.name() == name)
            .count()
    }

    fn names_since(&self, from: usize) -> Vec<&'static str> {
        self.records[from..].iter().map(|r| r.kind.name()).collect()
    }

    fn dead(&mut self) {
        let generation = self.m.state().observed_generation;
        self.send(Event::Health {
            generation,
            report: HealthReport::Dead,
        });
    }
}

// ---- coalescing ----------------------------------------------------------------------------

#[test]
fn restart_when_idle_starts_a_cycle_with_the_next_generation() {
    let mut h = Harness::running();
    assert_eq!(
        h.send(Event::Restart),
        Outcome::Started(Generation(2))
    );
    assert_eq!(h.m.phase(), Phase::Provisioning);
    assert_eq!(h.m.cycle().map(|c| c.generation), Some(Generation(2)));
}

#[test]
fn restarts_during_a_cycle_coalesce_into_exactly_one_more_cycle() {
    let mut h = Harness::running();
    let mark = h.count("provision_started");
    h.send(Event::Restart);
    for _ in 0..49 {
        assert_eq!(
            h.send(Event::Restart),
            Outcome::Coalesced(Generation(3))
        );
    }
    h.finish_all_ok();
    assert_eq!(h.count("provision_started") - mark, 2);
    assert_eq!(h.m.state().generation, Generation(3));
    assert_eq!(h.m.state().observed_generation, Generation(3));
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.max_running, 1);
}

#[test]
fn the_pending_cycle_serves_every_cause_that_coalesced() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.send(Event::ConfigChanged(ConfigChange::Secret));
    h.send(Event::Restart);
    h.finish(Ok(()));
    h.finish(Ok(()));
    let causes = h.m.cycle().expect("pending cycle started").causes;
    assert!(causes.contains(Cause::Config) && causes.contains(Cause::Manual));
}

#[test]
fn config_change_while_stopped_waits_for_the_next_start() {
    let mut h = Harness::running();
    h.send(Event::Stop);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert_eq!(h.send(Event::ConfigChanged(ConfigChange::Secret)), Outcome::Deferred);
    assert!(h.running.is_empty());
    assert_eq!(h.send(Event::Start), Outcome::Started(Generation(2)));
}

// ---- stop and delete win -------------------------------------------------------------------

#[test]
fn stop_during_a_cycle_wins_after_the_current_step_and_cancels_pending() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.send(Event::ConfigChanged(ConfigChange::Secret));
    assert_eq!(h.send(Event::Stop), Outcome::Accepted);
    assert_eq!(h.m.phase(), Phase::Stopping);
    assert!(h.m.state().pending.is_empty());
    let mark = h.records.len();
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert!(!h.names_since(mark).contains(&"provision_started"));
    assert!(!h.names_since(mark).contains(&"provision_succeeded"));
}

#[test]
fn stop_after_the_start_step_stops_the_new_instance() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.finish(Ok(())); // remove old
    h.send(Event::Stop);
    assert_eq!(h.finish(Ok(())), Step::Start);
    assert_eq!(h.finish(Ok(())), Step::Stop);
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert!(!h.m.instance_up());
}

#[test]
fn delete_during_a_cycle_removes_the_instance_and_purges() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.send(Event::Delete);
    assert_eq!(h.m.phase(), Phase::Deleting);
    assert_eq!(
        h.send(Event::Restart),
        Outcome::Rejected(Rejection::Deleting)
    );
    h.finish_all_ok();
    assert!(h.purged);
    assert_eq!(h.m.phase(), Phase::Deleted);
}

#[test]
fn restart_after_stop_brings_the_workspace_back() {
    let mut h = Harness::running();
    h.send(Event::Stop);
    assert!(matches!(
        h.send(Event::Restart),
        Outcome::Coalesced(_)
    ));
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
}

// ---- stale results -------------------------------------------------------------------------

#[test]
fn a_completion_of_an_abandoned_operation_is_ignored_and_counted() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    let (stale_op, _, _) = h.running[0];
    h.advance(10 * SEC); // stop_timeout passes: abandoned, retry scheduled
    assert!(h.running.is_empty());
    h.advance(2 * SEC); // retry starts generation 3
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
    let before = h.m.state().clone();
    h.send(Event::StepFinished {
        op: stale_op,
        result: Err(StepFailure::Provider("slow failure".into())),
    });
    assert_eq!(h.m.state(), &before);
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.m.counters().stale_results, 1);
    assert_eq!(h.count("stale_result_ignored"), 1);
}

// ---- deadlines, backoff, breaker ----------------------------------------------------------

#[test]
fn provision_timeout_fails_the_cycle_and_retries_with_backoff() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.finish(Ok(())); // remove old
    h.advance(30 * SEC);
    assert_eq!(h.count("provision_failed"), 1);
    assert_eq!(h.count("backoff_scheduled"), 1);
    assert_eq!(h.m.phase(), Phase::Provisioning);
    assert!(h.m.cycle().is_none());
    h.advance(SEC);
    assert_eq!(h.m.cycle().map(|c| c.generation), Some(Generation(3)));
}

#[test]
fn repeated_failures_back_off_longer_then_park_in_failed() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    let mut delays = vec![];
    while h.m.phase() != Phase::Failed {
        h.finish(Err("boom".into()));
        if let Some(at) = h.m.retry_at() {
            delays.push(at.since(h.now).as_secs());
            h.advance(at.since(h.now));
        }
    }
    assert_eq!(delays, [1, 2, 4, 8, 16]);
    assert_eq!(
        h.m.state().failure.as_ref().map(|f| &f.reason),
        Some(&FailureReason::Parked(ParkReason::ProvisionFailed))
    );
    // Only a user intent revives it.
    h.advance(3600 * SEC);
    assert!(h.running.is_empty());
    assert!(matches!(
        h.send(Event::Restart),
        Outcome::Started(_)
    ));
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
    assert!(h.m.state().failure.is_none());
}

#[test]
fn a_user_intent_that_arrived_during_a_failing_cycle_runs_at_once() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.send(Event::ConfigChanged(ConfigChange::Secret));
    h.finish(Err("boom".into()));
    assert!(
        h.m.cycle().is_some(),
        "config intent must not wait for backoff"
    );
    assert!(h
        .m
        .cycle()
        .is_some_and(|c| c.causes.contains(Cause::Config)));
}

#[test]
fn agent_readiness_waits_for_registration_under_the_boot_deadline() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Starting);
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    });
    assert_eq!(h.m.phase(), Phase::Running);

    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish_all_ok();
    h.advance(20 * SEC);
    assert_eq!(h.m.phase(), Phase::Provisioning);
    assert_eq!(
        h.records.last().map(|r| r.kind.name()),
        Some("backoff_scheduled")
    );
    assert_eq!(
        h.count("boot_timeout"),
        1,
        "a boot timeout is its own event"
    );
    assert_eq!(
        h.count("provision_failed"),
        0,
        "the cycle itself had succeeded"
    );
}

#[test]
fn registration_of_another_generation_is_stale() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish_all_ok();
    h.send(Event::AgentRegistered {
        generation: Generation(7),
    });
    assert_eq!(h.m.phase(), Phase::Starting);
    assert_eq!(h.m.counters().stale_results, 1);
}

// ---- health --------------------------------------------------------------------------------

fn dropped(h: &Harness, reason: DropReason) -> u32 {
    let idx = DropReason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("known reason");
    h.m.counters().dropped[idx]
}

#[test]
fn health_reports_are_dropped_in_flight_in_debounce_and_for_other_generations() {
    let mut h = Harness::running();
    h.send(Event::ConfigChanged(ConfigChange::Secret));
    h.dead();
    assert_eq!(dropped(&h, DropReason::CycleInFlight), 1);
    h.finish_all_ok();
    h.dead();
    assert_eq!(dropped(&h, DropReason::Debounce), 1);
    h.advance(61 * SEC);
    h.send(Event::Health {
        generation: Generation(1),
        report: HealthReport::Dead,
    });
    assert_eq!(dropped(&h, DropReason::StaleGeneration), 1);
    h.send(Event::Health {
        generation: Generation(2),
        report: HealthReport::Pending,
    });
    assert_eq!(dropped(&h, DropReason::Pending), 1);
    assert!(h.running.is_empty());
    assert_eq!(h.count("restart_dropped"), 4);
}

#[test]
fn a_health_restart_needs_the_threshold_of_consecutive_dead_reports() {
    let mut h = Harness::running();
    h.advance(61 * SEC);
    h.dead();
    assert_eq!(h.m.health_failures(), 1);
    h.send(Event::Health {
        generation: Generation(1),
        report: HealthReport::Alive,
    });
    assert_eq!(h.m.health_failures(), 0);
    h.dead();
    assert!(h.m.retry_at().is_none());
    h.dead();
    assert!(
        h.m.retry_at().is_some(),
        "second consecutive dead report restarts (after backoff)"
    );
    h.advance(SEC);
    assert_eq!(
        h.m.cycle().map(|c| c.causes.contains(Cause::Health)),
        Some(true)
    );
}

#[test]
fn manual_and_config_restarts_are_never_debounced() {
    let mut h = Harness::running();
    assert!(matches!(
        h.send(Event::Restart),
        Outcome::Started(_)
    ));
    h.finish_all_ok();
    assert!(matches!(
        h.send(Event::ConfigChanged(ConfigChange::Secret)),
        Outcome::Started(_)
    ));
}

#[test]
fn an_instance_that_keeps_dying_ends_failed_with_crash_loop() {
    let mut h = Harness::running();
    for _ in 0..20 {
        if h.m.phase() == Phase::Failed {
            break;
        }
        h.advance(61 * SEC);
        h.dead();
        h.dead();
        if let Some(at) = h.m.retry_at() {
            h.advance(at.since(h.now));
        }
        h.finish_all_ok();
    }
    assert_eq!(h.m.phase(), Phase::Failed);
    assert_eq!(
        h.m.state().failure.as_ref().map(|f| &f.reason),
        Some(&FailureReason::Parked(ParkReason::CrashLoop))
    );
}

// ---- recovery ------------------------------------------------------------------------------

#[test]
fn recovery_adopts_a_live_instance_of_the_latest_generation() {
    let h = Harness::running();
    let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
    let (_, fx) = m.handle(
        Event::Recover {
            live: Some(Generation(1)),
        },
        Tick::at(h.now),
    );
    assert!(fx.is_empty());
    assert!(m.instance_up());
    assert_eq!(m.phase(), Phase::Running);
}

#[test]
fn recovery_replaces_a_missing_or_out_of_date_instance() {
    let h = Harness::running();
    for live in [None, Some(Generation(0))] {
        let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
        let (_, _) = m.handle(Event::Recover { live }, Tick::at(h.now));
        let cycle = m.cycle().expect("recovery cycle");
        assert!(cycle.causes.contains(Cause::Recovery));
        assert_eq!(cycle.generation, Generation(2));
    }
}

#[test]
fn recovery_honours_a_pending_intent_committed_before_the_crash() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.send(Event::ConfigChanged(ConfigChange::Secret)); // pending, committed
    let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
    m.handle(Event::Recover { live: None }, Tick::at(h.now));
    assert!(m.cycle().is_some_and(|c| c.causes.contains(Cause::Config)));
}

#[test]
fn a_restored_machine_re_arms_the_persisted_retry_instead_of_backing_off_again() {
    let mut h = Harness::running();
    h.send(Event::ConfigChanged(ConfigChange::Secret));
    h.finish(Err("boom".into()));
    let retry = h.m.state().retry.expect("retry scheduled");
    assert!(retry.causes.contains(Cause::Config));
    let attempt = h.m.state().backoff_attempt;

    let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
    let (_, fx) = m.handle(Event::Recover { live: None }, Tick::at(h.now));
    assert_eq!(m.state().backoff_attempt, attempt, "no second backoff step");
    assert!(!fx
        .iter()
        .any(|f| matches!(f, Effect::Record(r) if r.kind.name() == "backoff_scheduled")));
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::Schedule { at, timer: Timer::Retry(_) } if *at == retry.at)));
    assert_eq!(m.retry_at(), Some(retry.at));
}

#[test]
fn recovery_adopts_an_instance_whose_start_completed_but_was_never_recorded() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.finish(Ok(())); // remove old; the start of generation 2 is in flight when we "crash"
    let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
    let (_, fx) = m.handle(
        Event::Recover {
            live: Some(Generation(2)),
        },
        Tick::at(h.now),
    );
    assert!(
        !fx.iter().any(|f| matches!(f, Effect::Run { .. })),
        "nothing to re-provision"
    );
    assert_eq!(m.phase(), Phase::Running);
    assert_eq!(m.state().observed_generation, Generation(2));
}

#[test]
fn a_start_that_overrules_a_stop_during_a_cycle_shows_provisioning() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.send(Event::Stop);
    assert_eq!(h.m.phase(), Phase::Stopping);
    h.send(Event::Start);
    assert_eq!(h.m.phase(), Phase::Provisioning);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
}

#[test]
fn a_revived_failed_workspace_gets_a_fresh_failure_budget() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    while h.m.phase() != Phase::Failed {
        h.finish(Err("boom".into()));
        if let Some(at) = h.m.retry_at() {
            h.advance(at.since(h.now));
        }
    }
    h.send(Event::Restart);
    h.finish(Err("still broken".into()));
    assert_eq!(
        h.m.phase(),
        Phase::Provisioning,
        "backs off again instead of parking at once"
    );
    assert!(h.m.retry_at().is_some());
}

#[test]
fn nothing_is_observed_once_the_instance_is_stopped() {
    let mut h = Harness::running();
    h.send(Event::Stop);
    h.finish_all_ok();
    assert_eq!(h.m.state().observed_generation, Generation(0));
    assert_eq!(h.m.state().generation, Generation(1));
}

#[test]
fn reports_about_a_workspace_that_is_not_meant_to_run_are_counted_but_not_recorded() {
    let mut h = Harness::running();
    h.send(Event::Stop);
    h.finish_all_ok();
    let events = h.records.len();
    h.send(Event::Health {
        generation: Generation(1),
        report: HealthReport::Dead,
    });
    assert_eq!(h.records.len(), events);
    assert_eq!(dropped(&h, DropReason::NotRunning), 1);
}

#[test]
fn a_cycle_cut_short_by_a_crash_is_closed_and_its_causes_served_again() {
    let mut h = Harness::running();
    h.send(Event::ConfigChanged(ConfigChange::Secret)); // acknowledged, then the daemon dies mid-cycle
    let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
    let (_, fx) = m.handle(Event::Recover { live: None }, Tick::at(h.now));
    let kinds: Vec<&str> = fx
        .iter()
        .filter_map(|f| match f {
            Effect::Record(r) => Some(r.kind.name()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds[0], "provision_failed", "{kinds:?}");
    let cycle = m.cycle().expect("recovery cycle");
    assert!(cycle.causes.contains(Cause::Config) && cycle.causes.contains(Cause::Recovery));
    assert_eq!(cycle.generation, Generation(3));
}

#[test]
fn an_agent_that_stops_heartbeating_counts_as_dead() {
    let mut h = Harness::running();
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    });
    h.advance(61 * SEC); // past debounce; the instance itself still looks alive
    h.send(Event::AgentHeartbeat {
        generation: Generation(1),
    });
    let alive = Event::Health {
        generation: Generation(1),
        report: HealthReport::Alive,
    };
    h.send(alive.clone());
    assert_eq!(h.m.health_failures(), 0, "a fresh heartbeat keeps it alive");
    h.advance(31 * SEC);
    h.send(alive.clone());
    h.send(alive);
    assert!(h.m.retry_at().is_some(), "two silent reports restart it");
    assert!(h.records.iter().any(|r| r.kind
        == RecordKind::RestartRequested {
            cause: Cause::Health
        }));
}

#[test]
fn a_heartbeat_of_another_generation_is_stale() {
    let mut h = Harness::running();
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    });
    h.send(Event::AgentHeartbeat {
        generation: Generation(9),
    });
    assert_eq!(h.m.counters().stale_results, 1);
}

#[test]
fn the_new_agent_gets_exactly_one_restart_context_after_it_proves_fresh() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish_all_ok();
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    });
    h.send(Event::AgentHeartbeat {
        generation: Generation(1),
    });
    assert!(
        h.contexts.is_empty(),
        "the first provision is not a restart"
    );

    h.send(Event::ConfigChanged(ConfigChange::Secret));
    h.finish_all_ok();
    h.send(Event::AgentHeartbeat {
        generation: Generation(1),
    }); // the old agent: stale
    assert!(
        h.contexts.is_empty(),
        "never to an instance that has not proven fresh"
    );
    h.send(Event::AgentRegistered {
        generation: Generation(2),
    });
    assert!(
        h.contexts.is_empty(),
        "registration alone is not enough: wait for a heartbeat"
    );
    h.send(Event::AgentHeartbeat {
        generation: Generation(2),
    });
    h.send(Event::AgentHeartbeat {
        generation: Generation(2),
    });
    assert_eq!(
        h.contexts,
        [RestartContext {
            generation: Generation(2),
            previous_generation: Generation(1),
            causes: CauseSet::of(Cause::Config),
        }]
    );
    h.send(Event::ContextDelivery {
        generation: Generation(2),
        delivered: true,
    });
    assert_eq!(h.count("context_delivered"), 1);
    h.send(Event::ContextDelivery {
        generation: Generation(2),
        delivered: false,
    });
    assert_eq!(
        h.count("context_timeout"),
        1,
        "a delivery that gave up is recorded"
    );
}

#[test]
fn a_context_owed_by_a_failed_cycle_carries_over_to_its_retry() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish_all_ok();
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    });
    h.send(Event::Restart);
    h.finish(Ok(())); // old instance removed
    h.finish(Err("boom".into()));
    h.advance(2 * SEC); // retry: generation 3
    h.finish_all_ok();
    h.send(Event::AgentRegistered {
        generation: Generation(3),
    });
    h.send(Event::AgentHeartbeat {
        generation: Generation(3),
    });
    assert_eq!(h.contexts.len(), 1);
    assert_eq!(h.contexts[0].previous_generation, Generation(1));
    assert!(h.contexts[0].causes.contains(Cause::Manual));
}

#[test]
fn a_workspace_parked_after_boot_timeouts_stops_the_unregistered_instance() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    while h.m.phase() != Phase::Failed {
        h.finish_all_ok();
        h.advance(20 * SEC); // boot deadline
        if let Some(at) = h.m.retry_at() {
            h.advance(at.since(h.now));
        }
    }
    assert_eq!(
        h.m.state().failure.as_ref().map(|f| &f.reason),
        Some(&FailureReason::Parked(ParkReason::BootTimeout))
    );
    assert!(h.count("boot_timeout") >= 1);
    assert_eq!(
        h.running.first().map(|(_, step, _)| *step),
        Some(Step::Stop)
    );
    h.finish(Ok(()));
    assert_eq!(
        h.m.phase(),
        Phase::Failed,
        "still parked after the leftover is stopped"
    );
    assert!(h.running.is_empty());
}

#[test]
fn an_agent_that_registers_before_its_start_reports_back_makes_the_start_ready() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish(Ok(())); // remove old; the start of generation 1 is in flight
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    });
    assert_eq!(
        h.m.counters().stale_results,
        0,
        "not stale: its start is running"
    );
    h.finish(Ok(()));
    assert_eq!(
        h.m.phase(),
        Phase::Running,
        "no boot wait for an agent already registered"
    );
    h.advance(60 * SEC);
    assert_eq!(h.count("boot_timeout"), 0);
}

#[test]
fn after_a_restart_a_heartbeat_of_the_generation_up_stands_for_its_lost_registration() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    h.finish(Ok(())); // remove old; start of generation 1 in flight
    h.send(Event::AgentRegistered {
        generation: Generation(1),
    }); // early registration
        // The daemon dies before the start's completion is recorded; the instance is live.
    let mut m = Machine::restore(Arc::new(policy()), h.m.state().clone());
    m.handle(
        Event::Recover {
            live: Some(Generation(1)),
        },
        Tick::at(h.now),
    );
    assert_eq!(m.phase(), Phase::Starting);
    let (_, fx) = m.handle(
        Event::AgentHeartbeat {
            generation: Generation(1),
        },
        Tick::at(h.now),
    );
    assert_eq!(
        m.phase(),
        Phase::Running,
        "no boot-timeout restart of a healthy instance"
    );
    assert!(!fx
        .iter()
        .any(|f| matches!(f, Effect::Record(r) if r.kind.name() == "stale_result_ignored")));
}

#[test]
fn an_instance_pending_for_longer_than_the_boot_timeout_counts_as_dead() {
    let mut h = Harness::running();
    h.advance(61 * SEC);
    let pending = Event::Health {
        generation: Generation(1),
        report: HealthReport::Pending,
    };
    h.send(pending.clone());
    assert_eq!(dropped(&h, DropReason::Pending), 1);
    h.advance(21 * SEC); // boot_timeout is 20 s
    h.send(pending.clone());
    h.send(pending);
    assert!(h.m.retry_at().is_some(), "stuck booting is as dead as gone");
}

#[test]
fn only_the_latest_generation_up_or_starting_may_speak_as_the_agent() {
    let mut h = Harness::new(ReadyWhen::Agent);
    h.send(Event::Create);
    assert!(
        !h.m.accepts_agent(Generation(1)),
        "not before its start step"
    );
    h.finish(Ok(())); // remove old; start of generation 1 in flight
    assert!(
        h.m.accepts_agent(Generation(1)),
        "while it is being started"
    );
    h.finish(Ok(()));
    assert!(h.m.accepts_agent(Generation(1)), "while it is up");
    h.send(Event::ConfigChanged(ConfigChange::Secret));
    assert!(
        !h.m.accepts_agent(Generation(1)),
        "superseded once a new cycle starts"
    );
    assert!(
        !h.m.accepts_agent(Generation(2)),
        "the new one only from its start step"
    );
}

// ---- properties ----------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Action {
    Restart(Cause),
    Start,
    Stop,
    Delete,
    Health(u64, HealthReport),
    Finish(bool),
    FinishStale(u64),
    Register(u64),
    Advance(u64),
    /// The daemon dies and comes back: in-flight work and timers are lost, the machine is
    /// restored from its persisted state; `true` if the provider still has the instance of
    /// the latest generation.
    Crash(bool),
    /// A switch to provider `a` or `b`.
    Switch(bool),
}

fn action() -> impl Strategy<Value = Action> {
    let cause = prop_oneof![Just(Cause::Manual), Just(Cause::Config)];
    let report = prop_oneof![
        Just(HealthReport::Alive),
        Just(HealthReport::Pending),
        Just(HealthReport::Dead)
    ];
    prop_oneof![
        6 => cause.prop_map(Action::Restart),
        1 => Just(Action::Start),
        1 => Just(Action::Stop),
        1 => Just(Action::Delete),
        4 => (0u64..5, report).prop_map(|(g, r)| Action::Health(g, r)),
        8 => any::<bool>().prop_map(Action::Finish),
        1 => (0u64..50).prop_map(Action::FinishStale),
        1 => (0u64..5).prop_map(Action::Register),
                3 => (0u64..120_000).prop_map(Action::Advance),
        1 => any::<bool>().prop_map(Action::Crash),
        2 => any::<bool>().prop_map(Action::Switch),
    ]
}

impl Harness {
    fn apply(&mut self, a: &Action) -> Option<Outcome> {
        match a {
            Action::Restart(c) => return Some(self.send(intent(*c))),
            Action::Start => return Some(self.send(Event::Start)),
            Action::Stop => return Some(self.send(Event::Stop)),
            Action::Delete => return Some(self.send(Event::Delete)),
            Action::Health(g, report) => {
                self.send(Event::Health {
                    generation: Generation(*g),
                    report: *report,
                });
            }
            Action::Finish(ok) if !self.running.is_empty() => {
                self.finish(if *ok { Ok(()) } else { Err("x".into()) });
            }
            Action::Finish(_) => {}
            Action::FinishStale(id) => {
                if !self.running.iter().any(|(op, _, _)| op.0 == *id) {
                    self.send(Event::StepFinished {
                        op: OpId(*id),
                        result: Err(StepFailure::Provider("late".into())),
                    });
                }
            }
            Action::Register(g) => {
                self.send(Event::AgentRegistered {
                    generation: Generation(*g),
                });
            }
            Action::Advance(ms) => self.advance(Duration::from_millis(*ms)),
            Action::Crash(live) => {
                let state = self.m.state().clone();
                let live = live.then_some(state.generation);
                self.m = Machine::restore(Arc::new(policy()), state);
                self.running.clear();
                self.issued_on.clear();
                self.timers.clear();
                // The boot survey removes instances on any provider but the recorded one.
                let current = self.provider.clone();
                self.holding.retain(|p| *p == current);
                self.send(Event::Recover { live });
            }
            Action::Switch(to_b) => {
                return Some(self.switch(if *to_b { "b" } else { "a" }));
            }
        }
        None
    }

    /// Lets every operation finish successfully and every timer fire.
    fn settle(&mut self) {
        for _ in 0..1000 {
            if !self.running.is_empty() {
                self.finish(Ok(()));
            } else if !self.timers.is_empty() {
                self.advance(3600 * SEC);
            } else {
                return;
            }
        }
        panic!("the machine did not settle");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_two_operations_in_flight(actions in prop::collection::vec(action(), 0..200)) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
            prop_assert!(h.running.len() <= 1, "two operations in flight after {a:?}");
            let cycles_open = h.records.iter().fold(0i64, |open, r| match r.kind {
                RecordKind::ProvisionStarted { .. } => open + 1,
                RecordKind::ProvisionSucceeded | RecordKind::ProvisionFailed { .. } => open - 1,
                _ => open,
            });
            prop_assert!((0..=1).contains(&cycles_open));
        }
    }

    #[test]
    fn crashes_never_leave_a_cycle_open_in_the_record(actions in prop::collection::vec(action(), 0..200)) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
            let mut open: Option<u64> = None;
            for r in &h.records {
                match r.kind {
                    RecordKind::ProvisionStarted { .. } => {
                        prop_assert!(open.is_none(), "cycle {:?} still open when {} started", open, r.generation);
                        open = Some(r.generation.0);
                    }
                    RecordKind::ProvisionSucceeded | RecordKind::ProvisionFailed { .. } => {
                        prop_assert_eq!(open.take(), Some(r.generation.0), "a result closes the open cycle");
                    }
                    _ => {}
                }
            }
        }
        h.settle();
        let phase = h.m.phase();
        match h.m.state().desired {
            Desired::Running => prop_assert!(matches!(phase, Phase::Running | Phase::Starting | Phase::Failed), "{:?}", phase),
            Desired::Stopped => prop_assert!(matches!(phase, Phase::Stopped | Phase::Failed), "{:?}", phase),
            Desired::Deleted => prop_assert!(h.purged),
        }
    }

    #[test]
    fn n_restarts_during_a_cycle_cause_exactly_one_more(
        causes in prop::collection::vec(prop_oneof![Just(Cause::Manual), Just(Cause::Config)], 1..300),
    ) {
        let mut h = Harness::running();
        h.send(Event::Restart);
        let mark = h.count("provision_started");
        let distinct: std::collections::BTreeSet<Cause> = causes.iter().copied().collect();
        for c in &causes {
            prop_assert!(matches!(h.send(intent(*c)), Outcome::Coalesced(_)));
        }
        // One event per cause of the pending cycle; the rest are only counted.
        prop_assert_eq!(h.count("restart_coalesced"), distinct.len());
        prop_assert_eq!(h.silent_coalesces, causes.len() - distinct.len());
        prop_assert_eq!(h.m.counters().coalesced as usize, causes.len());
        h.settle();
        prop_assert_eq!(h.count("provision_started") - mark, 1);
        prop_assert_eq!(h.m.phase(), Phase::Running);
    }

    #[test]
    fn intents_are_never_dropped(actions in prop::collection::vec(action(), 0..150)) {
        // Every accepted manual/config restart is followed by a cycle that starts after it,
        // unless a later stop or delete cancelled it.
        let mut h = Harness::running();
        let mut owed: Option<usize> = None;
        for a in &actions {
            let before = h.records.len();
            let outcome = h.apply(a);
            let started_now = h.records[before..].iter().any(|r| r.kind.name() == "provision_started");
            match (a, outcome) {
                (Action::Stop | Action::Delete, _) => owed = None,
                (Action::Restart(Cause::Manual | Cause::Config), Some(Outcome::Coalesced(_))) => {
                    owed.get_or_insert(h.records.len());
                }
                _ if started_now => owed = None,
                _ => {}
            }
        }
        h.settle();
        if let Some(at) = owed {
            prop_assert!(
                h.records[at..].iter().any(|r| r.kind.name() == "provision_started"),
                "an accepted intent was never served"
            );
        }
    }

    #[test]
    fn stale_completions_never_change_state(
        actions in prop::collection::vec(action(), 0..100),
        stale in 1000u64..2000,
    ) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
        }
        let state = h.m.state().clone();
        let phase = h.m.phase();
        let cycle = h.m.cycle().copied();
        let op = h.m.op().copied();
        h.send(Event::StepFinished { op: OpId(stale), result: Err(StepFailure::Provider("late".into())) });
        prop_assert_eq!(h.m.state(), &state);
        prop_assert_eq!(h.m.phase(), phase);
        prop_assert_eq!(h.m.cycle().copied(), cycle);
        prop_assert_eq!(h.m.op().copied(), op);
    }

    #[test]
    fn generations_strictly_increase(actions in prop::collection::vec(action(), 0..200)) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
        }
        let started: Vec<u64> = h.records.iter()
            .filter(|r| r.kind.name() == "provision_started")
            .map(|r| r.generation.0)
            .collect();
        prop_assert!(started.windows(2).all(|w| w[0] < w[1]), "{:?}", started);
        prop_assert!(h.m.state().observed_generation <= h.m.state().generation);
    }

    #[test]
    fn every_sequence_converges_to_what_was_last_asked(actions in prop::collection::vec(action(), 0..150)) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
        }
        h.settle();
        let phase = h.m.phase();
        match h.m.state().desired {
            Desired::Running => prop_assert!(
                matches!(phase, Phase::Running | Phase::Starting | Phase::Failed), "{:?}", phase),
            Desired::Stopped => prop_assert!(matches!(phase, Phase::Stopped | Phase::Failed)),
            Desired::Deleted => prop_assert!(h.purged),
        }
    }
}

// ---- provider switch -------------------------------------------------------------------------

impl Harness {
    /// A workspace whose agent never registers, parked in `failed` by its boot timeouts; the
    /// stop of its last instance has just been issued.
    fn parked_by_boot_timeouts() -> Self {
        let mut h = Harness::new(ReadyWhen::Agent);
        h.send(Event::Create);
        for _ in 0..500 {
            if h.m.phase() == Phase::Failed {
                break;
            }
            if h.running.is_empty() {
                h.next_timer();
            } else {
                h.finish(Ok(()));
            }
        }
        assert_eq!(h.m.phase(), Phase::Failed);
        h
    }

    /// Moves the clock to the earliest timer and fires it (and any due with it).
    fn next_timer(&mut self) {
        let next = self
            .timers
            .iter()
            .map(|(at, _)| *at)
            .min()
            .expect("a timer");
        self.advance(next.since(self.now));
    }

    fn provisions(&self) -> usize {
        self.count("provision_started")
    }
}

#[test]
fn a_switch_of_a_running_workspace_moves_it_in_one_cycle() {
    let mut h = Harness::running();
    let mark = h.records.len();
    assert_eq!(h.switch("b"), Outcome::Accepted);
    assert_eq!(h.names_since(mark), ["switch_started", "provision_started"]);
    assert_eq!(
        h.issued_on,
        ["a"],
        "the old instance is removed where it runs"
    );
    assert_eq!(h.finish(Ok(())), Step::RemoveOld);
    assert_eq!(
        h.provider, "b",
        "recorded on the new provider once the old one is empty"
    );
    assert_eq!(h.issued_on, ["b"], "and started there");
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.holding, ["b".to_owned()].into());
    assert_eq!(h.count("switch_completed"), 1);
    assert_eq!(h.m.state().switch, None);
    assert_eq!(h.provisions(), 2, "create + the switch cycle, nothing more");
}

#[test]
fn a_second_switch_while_one_runs_is_refused_and_changes_nothing() {
    let mut h = Harness::running();
    h.switch("b");
    let state = h.m.state().clone();
    let (records, running, timers) = (h.records.len(), h.running.clone(), h.timers.len());
    for to in ["b", "c", "a"] {
        assert_eq!(h.switch(to), Outcome::Rejected(Rejection::AlreadySwitching));
    }
    assert_eq!(h.m.state(), &state);
    assert_eq!(
        (h.records.len(), h.running.clone(), h.timers.len()),
        (records, running, timers)
    );
}

#[test]
fn a_switch_to_the_provider_in_use_is_refused() {
    let mut h = Harness::running();
    let state = h.m.state().clone();
    assert_eq!(h.switch("a"), Outcome::Rejected(Rejection::SameProvider));
    assert_eq!(h.m.state(), &state);
    assert!(h.running.is_empty());
}

#[test]
fn a_switch_during_a_cycle_runs_after_it() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.finish(Ok(())); // the restart's start step is in flight on a
    assert_eq!(h.switch("b"), Outcome::Accepted);
    assert_eq!(h.running.len(), 1, "the cycle in flight is not disturbed");
    assert_eq!(h.issued_on, ["a"]);
    h.finish_all_ok();
    assert_eq!(h.provider, "b");
    assert_eq!(h.holding, ["b".to_owned()].into());
    assert_eq!(h.provisions(), 3, "create, the restart, the switch");
    assert_eq!(h.count("switch_completed"), 1);
}

#[test]
fn a_switch_claimed_before_the_remove_step_finishes_rides_on_that_cycle() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    h.switch("b");
    h.finish(Ok(())); // remove_old of the restart: the old provider is empty now
    assert_eq!(h.issued_on, ["b"]);
    h.finish_all_ok();
    assert_eq!(h.provisions(), 2, "no extra cycle for the switch");
    assert_eq!(h.count("switch_completed"), 1);
}

#[test]
fn a_failed_start_on_the_new_provider_rolls_back_to_the_old_one() {
    let mut h = Harness::running();
    h.switch("b");
    h.finish(Ok(())); // removed from a
    let mark = h.records.len();
    h.finish(Err("image missing".into())); // start on b fails
    assert_eq!(
        h.names_since(mark),
        [
            "provision_failed",
            "switch_rolled_back",
            "provision_started"
        ],
        "no backoff: the way back starts at once"
    );
    assert_eq!(
        h.issued_on,
        ["b"],
        "what the failed start left on b is removed first"
    );
    h.finish(Ok(()));
    assert_eq!(h.provider, "a");
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.holding, ["a".to_owned()].into());
    assert_eq!(h.count("switch_completed"), 0);
    assert_eq!(h.m.state().switch, None);
    assert_eq!(h.m.state().ready_when, ReadyWhen::Instance);
}

#[test]
fn a_rollback_that_fails_backs_off_on_the_old_provider_and_never_rolls_back_again() {
    let mut h = Harness::running();
    h.switch("b");
    h.finish(Ok(()));
    h.finish(Err("b is broken".into()));
    h.finish(Ok(())); // b emptied, back on a
    let mark = h.records.len();
    h.finish(Err("a hiccup".into()));
    assert_eq!(
        h.names_since(mark),
        ["provision_failed", "backoff_scheduled"]
    );
    let retry_at = h.m.retry_at().expect("a retry is scheduled");
    h.advance(retry_at.since(h.now));
    assert_eq!(h.issued_on, ["a"]);
    h.finish_all_ok();
    assert_eq!(h.provider, "a");
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.count("switch_rolled_back"), 1);
}

#[test]
fn an_agent_that_never_registers_on_the_new_provider_rolls_the_switch_back() {
    let mut h = Harness::running();
    h.send(Event::Switch {
        from: "a".into(),
        to: "b".into(),
        to_ready: ReadyWhen::Agent,
    });
    h.finish(Ok(()));
    h.finish(Ok(()));
    assert_eq!(h.m.phase(), Phase::Starting);
    assert_eq!(h.m.state().ready_when, ReadyWhen::Agent);
    h.advance(21 * SEC); // boot deadline
    assert_eq!(h.count("switch_rolled_back"), 1);
    h.finish_all_ok();
    assert_eq!(h.provider, "a");
    assert_eq!(
        h.m.state().ready_when,
        ReadyWhen::Instance,
        "the old rule comes back"
    );
    assert_eq!(h.m.phase(), Phase::Running);
}

#[test]
fn a_stopped_workspace_switches_by_releasing_its_old_instance() {
    let mut h = Harness::running();
    h.send(Event::Stop);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert_eq!(h.switch("b"), Outcome::Accepted);
    assert_eq!(h.running[0].1, Step::Release);
    assert_eq!(h.issued_on, ["a"]);
    h.finish_all_ok();
    assert_eq!(h.provider, "b");
    assert!(h.holding.is_empty());
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert_eq!(h.count("switch_completed"), 1);
    h.send(Event::Start);
    h.finish_all_ok();
    assert_eq!(
        h.holding,
        ["b".to_owned()].into(),
        "the next start runs on the new provider"
    );
}

#[test]
fn a_stop_during_a_switch_lets_the_switch_finish_as_a_release() {
    let mut h = Harness::running();
    h.switch("b");
    h.send(Event::Stop);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert_eq!(h.provider, "b");
    assert!(h.holding.is_empty());
    assert_eq!(h.count("switch_completed"), 1);
}

#[test]
fn a_delete_during_a_switch_removes_the_instance_wherever_it_is() {
    let mut h = Harness::running();
    h.switch("b");
    h.finish(Ok(()));
    h.send(Event::Delete);
    h.finish_all_ok();
    assert!(h.purged);
    assert!(h.holding.is_empty());
}

#[test]
fn a_switch_interrupted_by_a_crash_is_finished_after_recovery() {
    for steps_done in 0..3 {
        let mut h = Harness::running();
        h.switch("b");
        for _ in 0..steps_done {
            h.finish(Ok(()));
        }
        let live = (steps_done == 2).then_some(h.m.state().generation);
        h.apply(&Action::Crash(live.is_some()));
        h.settle();
        assert_eq!(h.m.phase(), Phase::Running, "after {steps_done} steps");
        assert_eq!(h.provider, "b", "after {steps_done} steps");
        assert_eq!(
            h.holding,
            ["b".to_owned()].into(),
            "after {steps_done} steps"
        );
        assert_eq!(h.count("switch_completed"), 1, "after {steps_done} steps");
        assert_eq!(h.m.state().switch, None);
    }
}

#[test]
fn a_switch_revives_a_parked_workspace_on_the_new_provider() {
    let mut h = Harness::running();
    h.send(Event::Restart);
    for _ in 0..10 {
        if h.m.phase() == Phase::Failed {
            break;
        }
        if h.running.is_empty() {
            h.advance(3600 * SEC);
        } else {
            h.finish(Err("broken".into()));
        }
    }
    assert_eq!(h.m.phase(), Phase::Failed);
    assert_eq!(h.switch("b"), Outcome::Accepted);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.holding, ["b".to_owned()].into());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_instance_never_lives_on_two_providers_and_switches_always_end(
        actions in prop::collection::vec(action(), 0..200),
    ) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
            prop_assert!(h.holding.len() <= 1, "instances on {:?} after {a:?}", h.holding);
        }
        h.settle();
        prop_assert!(h.holding.len() <= 1);
        if h.m.state().desired == Desired::Deleted {
            return Ok(());
        }
        if let Some(on) = h.holding.iter().next() {
            prop_assert_eq!(on, &h.provider, "the instance is on the provider recorded");
        }
        if h.m.phase() != Phase::Failed {
            prop_assert_eq!(h.m.state().switch.as_ref(), None);
            prop_assert_eq!(
                h.count("switch_started"),
                h.count("switch_completed") + h.count("switch_rolled_back"),
                "every claimed switch ends exactly once"
            );
        }
    }
}

#[test]
fn a_rollback_that_cannot_empty_the_failed_provider_keeps_trying_and_never_parks() {
    let mut h = Harness::running();
    h.switch("b");
    h.finish(Ok(())); // a emptied
    h.finish(Err("b: engine unreachable".into())); // start on b fails: way back
    for attempt in 0..20 {
        assert_eq!(
            h.issued_on,
            ["b"],
            "attempt {attempt}: b must be emptied first"
        );
        h.finish(Err("b: engine unreachable".into()));
        assert_ne!(h.m.phase(), Phase::Failed, "a rollback never parks");
        assert!(h.running.is_empty(), "nothing starts on a meanwhile");
        let at = h.m.retry_at().expect("a retry is scheduled");
        h.advance(at.since(h.now));
    }
    assert_eq!(
        h.switch("a"),
        Outcome::Rejected(Rejection::AlreadySwitching),
        "the way back is in progress"
    );
    h.finish_all_ok(); // b answers again
    assert_eq!(h.provider, "a");
    assert_eq!(h.m.phase(), Phase::Running);
    assert_eq!(h.holding, ["a".to_owned()].into());
    assert_eq!(h.m.state().switch, None);
}

#[test]
fn a_stop_while_the_new_provider_fails_to_start_ends_stopped_on_the_old_one() {
    let mut h = Harness::running();
    h.switch("b");
    h.finish(Ok(())); // a emptied, recorded on b, start on b in flight
    h.send(Event::Stop);
    h.finish(Err("b: image missing".into()));
    h.finish_all_ok(); // stop on b, then the release from b
    assert_eq!(h.m.phase(), Phase::Stopped);
    assert_eq!(h.provider, "a", "rolled back, not completed");
    assert!(h.holding.is_empty());
    assert_eq!(h.count("switch_completed"), 0);
    assert_eq!(h.count("switch_rolled_back"), 1);
    assert_eq!(h.m.state().switch, None);
}

#[test]
fn an_intent_acknowledged_while_parked_survives_a_crash() {
    // Boot timeouts until parked; the stop of the unregistered instance is in flight.
    let mut h = Harness::parked_by_boot_timeouts();
    assert_eq!(h.running.len(), 1, "the leftover's stop is in flight");
    h.send(Event::Restart); // acknowledged: pending
    let generation = h.m.state().generation;
    h.apply(&Action::Crash(true));
    assert!(
        h.m.state().generation > generation,
        "the acknowledged restart starts a cycle after the crash"
    );
    assert_ne!(h.m.phase(), Phase::Failed);
}

#[test]
fn a_parked_workspace_restored_with_a_live_leftover_stops_it_again() {
    let mut h = Harness::parked_by_boot_timeouts();
    let generation = h.m.state().generation;
    let state = h.m.state().clone();
    h.m = Machine::restore(Arc::new(policy()), state);
    h.running.clear();
    h.issued_on.clear();
    h.send(Event::Recover {
        live: Some(generation),
    });
    assert_eq!(h.running.len(), 1);
    assert_eq!(h.running[0].1, Step::Stop);
    h.finish_all_ok();
    assert_eq!(h.m.phase(), Phase::Failed, "it stays parked");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_broken_new_provider_never_strands_the_workspace(
        actions in prop::collection::vec(action(), 0..60),
        b_failures in 0usize..12,
    ) {
        let mut h = Harness::running();
        for a in &actions {
            h.apply(a);
        }
        h.settle();
        if h.m.state().desired == Desired::Deleted || h.m.phase() == Phase::Failed {
            return Ok(());
        }
        let home = h.provider.clone();
        let away = if home == "a" { "b" } else { "a" };
        prop_assert_eq!(h.switch(away), Outcome::Accepted);
        // The new provider fails its first `b_failures` operations, then recovers.
        let mut failures_left = b_failures;
        for _ in 0..2000 {
            if let Some(on) = h.issued_on.first().cloned() {
                let fail = on == away && failures_left > 0;
                if fail {
                    failures_left -= 1;
                }
                h.finish(if fail { Err("broken".into()) } else { Ok(()) });
            } else if !h.timers.is_empty() {
                h.next_timer();
            } else {
                break;
            }
            prop_assert!(h.holding.len() <= 1, "two instances: {:?}", h.holding);
        }
        prop_assert_eq!(h.m.state().switch.as_ref(), None);
        prop_assert!(h.holding.len() <= 1);
        if let Some(on) = h.holding.iter().next() {
            prop_assert_eq!(on, &h.provider);
        }
        if b_failures == 0 {
            prop_assert_eq!(h.provider.as_str(), away);
        }
        prop_assert_ne!(h.m.phase(), Phase::Failed, "{:?}", h.names_since(0));
    }
}
