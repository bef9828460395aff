//! Example tests of provider switches.

use super::*;

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
