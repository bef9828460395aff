//! Property tests of the invariants, over random sequences of actions.

use super::*;

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
