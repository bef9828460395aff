//! When a waiter's intent settles: a table of situations, intents and what follows them, and
//! a property over random sequences.

use super::table::{Given, On};
use super::*;

/// What happens after the intent, before the waiter looks.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Nothing yet.
    Nothing,
    /// Every operation succeeds (agents do not register).
    AllOk,
    /// The next operation fails.
    Fails,
    /// The two steps of one cycle succeed.
    OneCycle,
    /// The agent of the latest generation registers.
    Registers,
    /// The boot deadline passes.
    BootTimeout,
    /// A later intent.
    Later(On),
}

/// The goal the intent `on` gives a waiter, once sent to `h`.
fn wait_for(h: &mut Harness, on: On) -> Goal {
    let event = on.event(h);
    let outcome = h.send(event.clone());
    Goal::after(&event, outcome, &h.m.progress()).expect("an intent")
}

fn drive(h: &mut Harness, then: Then) {
    match then {
        Then::Nothing => {}
        Then::AllOk => h.finish_all_ok(),
        Then::Fails => {
            h.finish(Err("engine unreachable".into()));
        }
        Then::OneCycle => {
            h.finish(Ok(()));
            h.finish(Ok(()));
        }
        Then::Registers => {
            h.finish_all_ok();
            let generation = h.m.state().generation;
            h.send(Event::AgentRegistered { generation });
        }
        Then::BootTimeout => {
            h.finish_all_ok();
            h.advance(21 * SEC);
        }
        Then::Later(on) => {
            let event = on.event(h);
            h.send(event);
        }
    }
}

#[rustfmt::skip]
fn settles() -> Vec<(Given, On, Then, Option<Settled>)> {
    use Given::{BackingOff, Cycling, Parked, Switching};
    use On::*;
    let (running, failed, stopped, overruled) =
        (Some(Settled::Running), Some(Settled::Failed), Some(Settled::Stopped), Some(Settled::Overruled));
    vec![
        // An intent that runs the workspace settles when its generation runs, a cycle of it
        // fails, or a later stop or delete overrules it.
        (Given::Running, Restart, Then::Nothing, None),
        (Given::Running, Restart, Then::AllOk, running),
        (Given::Running, Restart, Then::Fails, failed),
        (Given::Running, Restart, Then::Later(Stop), overruled),
        (Given::Running, Restart, Then::Later(Delete), overruled),
        // A switch settles once the workspace runs on the new provider.
        (Given::Running, SwitchToB, Then::Nothing, None),
        (Switching, Restart, Then::AllOk, running),
        (Given::Running, Config, Then::AllOk, running),
        (Given::Running, SwitchToB, Then::AllOk, running),
        (Given::Running, SwitchToB, Then::Fails, failed),
        // A restart folded into the pending cycle waits for that cycle, not the current one.
        (Cycling, Restart, Then::OneCycle, None),
        (Cycling, Restart, Then::AllOk, running),
        (Cycling, SwitchToB, Then::Nothing, None),
        (Cycling, SwitchToB, Then::AllOk, running),
        // A failure of an earlier generation does not settle a later one.
        (BackingOff, Restart, Then::Nothing, None),
        (BackingOff, Restart, Then::AllOk, running),
        // Readiness is the workspace's rule: with `agent`, running once the agent registered.
        (Given::Starting, Start, Then::Nothing, None),
        (Given::Starting, Start, Then::Registers, running),
        (Given::Running, Start, Then::Nothing, running),
        (Parked, Restart, Then::Nothing, None),
        (Parked, Restart, Then::AllOk, None),
        (Parked, Restart, Then::BootTimeout, failed),
        (Parked, Restart, Then::Registers, running),
        // A stop settles when stopped, or overruled by a later start; a stopped workspace's
        // configuration change has nothing to wait for.
        (Given::Running, Stop, Then::Nothing, None),
        (Given::Running, Stop, Then::AllOk, stopped),
        (Given::Running, Stop, Then::Later(Restart), overruled),
        (Given::Running, Stop, Then::Later(Delete), overruled),
        (Given::Stopped, Stop, Then::Nothing, stopped),
        (Given::Stopped, Config, Then::Nothing, Some(Settled::Applied)),
        // A stopped workspace's switch settles once its instance is released.
        (Given::Stopped, SwitchToB, Then::Nothing, None),
        (Given::Stopped, SwitchToB, Then::AllOk, stopped),
        (Given::Stopped, SwitchToB, Then::Later(Start), overruled),
        // A delete settles only when the shell says the workspace is gone.
        (Given::Running, Delete, Then::AllOk, None),
    ]
}

#[test]
fn when_an_intent_settles_reads_as_a_table() {
    let mut wrong = Vec::new();
    for (given, on, then, expected) in settles() {
        let mut h = given.harness();
        let goal = wait_for(&mut h, on);
        drive(&mut h, then);
        let got = goal.settled(&h.m.progress());
        if got != expected {
            wrong.push(format!(
                "{given:?} + {on:?} then {then:?}: expected {expected:?}, got {got:?} ({goal:?}, {:?})",
                h.m.progress()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "rows that do not hold:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn waiting_for_a_phase_without_an_intent() {
    let mut h = Harness::running();
    let progress = h.m.progress();
    let running = Goal::reach(Phase::Running, &progress).expect("a goal");
    assert_eq!(running.settled(&progress), Some(Settled::Running));
    let stopped = Goal::reach(Phase::Stopped, &progress).expect("a goal");
    assert_eq!(stopped.settled(&progress), Some(Settled::Overruled));
    h.send(Event::Restart);
    let running = Goal::reach(Phase::Running, &h.m.progress()).expect("a goal");
    assert_eq!(running, Goal::Run(Generation(2)));
    assert_eq!(running.settled(&h.m.progress()), None);
    assert_eq!(Goal::reach(Phase::Starting, &h.m.progress()), None);
}

#[test]
fn a_restored_machine_shows_what_its_state_shows() {
    let mut h = Harness::parked_by_boot_timeouts();
    h.finish_all_ok();
    let state = h.m.state().clone();
    let restored = Machine::restore(Arc::new(policy()), state.clone());
    let failure = state.failure.as_ref().expect("parked with a failure");
    assert_eq!(restored.progress().failed, failure.generation);
    assert_eq!(restored.progress().ran, Generation(0));
    let running = Harness::running();
    let restored = Machine::restore(Arc::new(policy()), running.m.state().clone());
    assert_eq!(restored.progress().ran, Generation(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Looked at after every event, a waiter of a restart settles exactly when its rule says
    /// (running: that generation or a later one is up and ready; failed: a failure of such a
    /// generation is shown; overruled: a stop or delete came later), stays settled by
    /// `ran`/`failed` once they say so, and always settles once every operation succeeds.
    #[test]
    fn a_restart_waiter_settles_when_and_only_when_its_rule_holds(
        before in prop::collection::vec(action(), 0..60),
        after in prop::collection::vec(action(), 0..60),
    ) {
        let mut h = Harness::running();
        for a in &before {
            h.apply(a);
        }
        let event = Event::Restart;
        let outcome = h.send(event.clone());
        let Some(goal) = Goal::after(&event, outcome, &h.m.progress()) else {
            // Refused (the workspace is being deleted): nothing to wait for.
            prop_assert!(matches!(outcome, Outcome::Rejected(_)));
            return Ok(());
        };
        let Goal::Run(target) = goal else {
            return Err(TestCaseError::fail(format!("a restart waits for a generation, not {goal:?}")));
        };
        let mut settled = goal.settled(&h.m.progress());
        let check = |h: &Harness, settled: &mut Option<Settled>| -> Result<(), TestCaseError> {
            let now = goal.settled(&h.m.progress());
            match (*settled, now) {
                (None, Some(Settled::Running)) => {
                    prop_assert_eq!(h.m.phase(), Phase::Running);
                    prop_assert!(h.m.state().observed_generation >= target);
                }
                (None, Some(Settled::Failed)) => {
                    let failure = h.m.state().failure.as_ref();
                    prop_assert!(failure.is_some_and(|f| f.generation >= target), "{:?}", failure);
                }
                (None, Some(Settled::Overruled)) => {
                    prop_assert_ne!(h.m.state().desired, Desired::Running);
                }
                (Some(Settled::Running | Settled::Failed), later) => {
                    prop_assert!(later.is_some(), "a settled waiter came unsettled");
                }
                _ => {}
            }
            *settled = settled.or(now);
            Ok(())
        };
        for a in &after {
            if matches!(a, Action::Crash(_)) {
                // A restored machine starts its progress afresh; the shell re-subscribes.
                continue;
            }
            h.apply(a);
            check(&h, &mut settled)?;
        }
        // Every operation succeeds and every agent registers: the waiter hears.
        for _ in 0..50 {
            if settled.is_some() {
                break;
            }
            h.settle();
            let generation = h.m.state().generation;
            h.send(Event::AgentRegistered { generation });
            check(&h, &mut settled)?;
        }
        prop_assert!(settled.is_some(), "a restart waiter never settled: {:?}", h.m.progress());
    }
}
