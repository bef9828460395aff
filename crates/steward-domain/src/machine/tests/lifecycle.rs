//! Example tests of the lifecycle: coalescing, stop and delete, stale results, deadlines,
//! backoff and the breaker, health, recovery, the agent channel.

use super::*;

// ---- coalescing ----------------------------------------------------------------------------

#[test]
fn restart_when_idle_starts_a_cycle_with_the_next_generation() {
    let mut h = Harness::running();
    assert_eq!(h.send(Event::Restart), Outcome::Started(Generation(2)));
    assert_eq!(h.m.phase(), Phase::Provisioning);
    assert_eq!(h.m.cycle().map(|c| c.generation), Some(Generation(2)));
}

#[test]
fn restarts_during_a_cycle_coalesce_into_exactly_one_more_cycle() {
    let mut h = Harness::running();
    let mark = h.count("provision_started");
    h.send(Event::Restart);
    for _ in 0..49 {
        assert_eq!(h.send(Event::Restart), Outcome::Coalesced(Generation(3)));
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
    assert_eq!(
        h.send(Event::ConfigChanged(ConfigChange::Secret)),
        Outcome::Deferred
    );
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
    assert!(matches!(h.send(Event::Restart), Outcome::Coalesced(_)));
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
    assert!(matches!(h.send(Event::Restart), Outcome::Started(_)));
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
    assert!(matches!(h.send(Event::Restart), Outcome::Started(_)));
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

/// An agent-ready workspace whose agents never register, with a failure window too short to
/// ever hold more than `max_failures` boot timeouts (20 s each, plus backoff).
fn never_registering_with_a_short_window() -> Harness {
    let mut policy = policy();
    policy.backoff.failure_window = 30 * SEC;
    let mut h = Harness::with_policy(ReadyWhen::Agent, policy);
    h.send(Event::Create);
    h
}

impl Harness {
    /// Lets the instance up boot without its agent until the boot deadline, then the retry
    /// fire and its cycle finish: the next instance is booting.
    fn boot_timeout_and_retry(&mut self) {
        self.advance(20 * SEC); // boot deadline
        if let Some(at) = self.m.retry_at() {
            self.advance(at.since(self.now));
        }
        self.finish_all_ok();
    }
}

#[test]
fn a_boot_timeout_shows_as_the_failure_while_the_next_instance_boots() {
    let mut h = never_registering_with_a_short_window();
    h.finish_all_ok();
    h.boot_timeout_and_retry();
    assert_eq!(h.m.phase(), Phase::Starting);
    let failure =
        h.m.state()
            .failure
            .clone()
            .expect("the boot timeout is shown");
    assert_eq!(
        failure.reason,
        FailureReason::Step(StepFailure::BootTimeout)
    );
    assert_eq!(failure.reason.to_string(), "boot_timeout");
    assert_eq!(
        (failure.generation, failure.consecutive),
        (Generation(1), 1)
    );
}

#[test]
fn boot_timeouts_in_a_row_park_however_far_apart_they_are() {
    let mut h = never_registering_with_a_short_window();
    h.finish_all_ok();
    for _ in 0..10 {
        if h.m.phase() == Phase::Failed {
            break;
        }
        h.boot_timeout_and_retry();
    }
    assert_eq!(h.m.phase(), Phase::Failed);
    assert_eq!(h.count("boot_timeout"), 6, "parked after max_failures + 1");
    let failure = h.m.state().failure.clone().expect("parked");
    assert_eq!(failure.reason.to_string(), "boot_timeout");
    assert_eq!(failure.consecutive, 6);
    assert!(
        h.m.state().recent_failures.len() <= 5,
        "the window alone would not have parked it"
    );
}

#[test]
fn a_workspace_that_runs_between_failures_starts_a_new_streak() {
    let mut h = never_registering_with_a_short_window();
    h.finish_all_ok();
    for round in 0..3 {
        for _ in 0..4 {
            h.boot_timeout_and_retry();
        }
        assert_eq!(h.m.state().failure.as_ref().map(|f| f.consecutive), Some(4));
        let generation = h.m.state().generation;
        h.send(Event::AgentRegistered { generation });
        assert_eq!(h.m.phase(), Phase::Running, "round {round}");
        assert_eq!(
            h.m.state().failure,
            None,
            "a running workspace shows no failure"
        );
        h.send(Event::Restart);
        h.finish_all_ok();
    }
    assert_eq!(
        h.count("failed"),
        0,
        "twelve boot timeouts, never six in a row"
    );
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
