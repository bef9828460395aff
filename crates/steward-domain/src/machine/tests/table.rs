//! The race rules as a decision table: in a given situation, an event gives this answer,
//! leaves this phase, and asks the shell for these effects.
//!
//! Effects read as a list: a record by its event name, `run:<step>` for a provider
//! operation, `at:<timer>` for a timer (`deadline`, `boot`, `retry`), `abort`, `purge`,
//! `use:<provider>`, `context`, and `folded` for a restart folded into a pending cycle that
//! already serves its cause (counted, nothing written).

use super::*;

/// Where the workspace is when the event arrives (generation 1 is up unless said).
#[derive(Clone, Copy, Debug)]
pub(super) enum Given {
    /// Running, its first cycle just ended (inside the debounce window).
    Running,
    /// Running, past the debounce and settle windows.
    Settled,
    /// Settled, one dead report already counted (threshold 2).
    OneDead,
    /// Generation 2's cycle in flight (removing generation 1).
    Cycling,
    /// Generation 2's cycle in flight, a manual restart pending.
    CyclingPending,
    /// Generation 1 up, its agent not registered yet (readiness waits for it).
    Starting,
    /// Generation 2's cycle failed; a retry is scheduled.
    BackingOff,
    /// A stop in flight.
    Stopping,
    /// Stopped; nothing up.
    Stopped,
    /// Parked in `failed` by boot timeouts; nothing in flight.
    Parked,
    /// A delete in flight.
    Deleting,
    /// A switch from `a` to `b` in flight (removing the instance from `a`).
    Switching,
}

impl Given {
    pub(super) fn harness(self) -> Harness {
        let mut h = Harness::running();
        match self {
            Given::Running => {}
            Given::Settled => h.advance(120 * SEC),
            Given::OneDead => {
                h.advance(120 * SEC);
                h.dead();
            }
            Given::Cycling => {
                h.send(Event::Restart);
            }
            Given::CyclingPending => {
                h.send(Event::Restart);
                h.send(Event::Restart);
            }
            Given::Starting => {
                h = Harness::new(ReadyWhen::Agent);
                h.send(Event::Create);
                h.finish_all_ok();
            }
            Given::BackingOff => {
                h.send(Event::Restart);
                h.finish(Err("engine unreachable".into()));
            }
            Given::Stopping => {
                h.send(Event::Stop);
            }
            Given::Stopped => {
                h.send(Event::Stop);
                h.finish_all_ok();
            }
            Given::Parked => {
                h = Harness::parked_by_boot_timeouts();
                h.finish_all_ok();
            }
            Given::Deleting => {
                h.send(Event::Delete);
            }
            Given::Switching => {
                h.switch("b");
            }
        }
        h
    }
}

/// What arrives.
#[derive(Clone, Copy, Debug)]
pub(super) enum On {
    Restart,
    Config,
    Start,
    Stop,
    Delete,
    /// A switch to `b`.
    SwitchToB,
    /// A probe sees the instance up dead.
    Dead,
    /// A completion of an operation that is not in flight.
    StaleCompletion,
    /// The agent of the latest generation registers.
    Registered,
}

impl On {
    pub(super) fn event(self, h: &Harness) -> Event {
        match self {
            On::Restart => Event::Restart,
            On::Config => Event::ConfigChanged(ConfigChange::Secret),
            On::Start => Event::Start,
            On::Stop => Event::Stop,
            On::Delete => Event::Delete,
            On::SwitchToB => Event::Switch {
                from: h.provider.clone(),
                to: "b".into(),
                to_ready: ReadyWhen::Instance,
            },
            On::Dead => Event::Health {
                generation: h.m.state().observed_generation,
                report: HealthReport::Dead,
            },
            On::StaleCompletion => Event::StepFinished {
                op: OpId(999),
                result: Err(StepFailure::Provider("late".into())),
            },
            On::Registered => Event::AgentRegistered {
                generation: h.m.state().generation,
            },
        }
    }
}

fn summary(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Record(record) => record.kind.name().to_owned(),
            Effect::Run { step, .. } => format!("run:{}", step.as_str()),
            Effect::Schedule { timer, .. } => match timer {
                Timer::StepDeadline(_) => "at:deadline".to_owned(),
                Timer::BootDeadline(_) => "at:boot".to_owned(),
                Timer::Retry(_) => "at:retry".to_owned(),
            },
            Effect::Abort(_) => "abort".to_owned(),
            Effect::Purge => "purge".to_owned(),
            Effect::Coalesced(_) => "folded".to_owned(),
            Effect::UseProvider(provider) => format!("use:{provider}"),
            Effect::DeliverContext(_) => "context".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn started(generation: u64) -> Outcome {
    Outcome::Started(Generation(generation))
}

fn coalesced(generation: u64) -> Outcome {
    Outcome::Coalesced(Generation(generation))
}

const ACCEPTED: Outcome = Outcome::Accepted;
const DEFERRED: Outcome = Outcome::Deferred;

fn rejected(why: Rejection) -> Outcome {
    Outcome::Rejected(why)
}

#[rustfmt::skip]
fn races() -> Vec<(Given, On, Outcome, &'static str, &'static str)> {
    use Given::*;
    use On::*;
    vec![
        // An idle workspace starts a cycle at once: generation n+1, the old instance first.
        (Running, Restart, started(2), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        (Running, Config, started(2), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        (Running, Start, ACCEPTED, "running", ""),
        (Starting, Start, ACCEPTED, "starting", ""),
        // During a cycle, restarts fold into one pending cycle; the first of each cause is
        // recorded, the rest only counted.
        (Cycling, Restart, coalesced(3), "provisioning", "restart_coalesced"),
        (Cycling, Config, coalesced(3), "provisioning", "restart_coalesced"),
        (CyclingPending, Restart, coalesced(3), "provisioning", "folded"),
        (CyclingPending, Config, coalesced(3), "provisioning", "restart_coalesced"),
        (Cycling, Start, ACCEPTED, "provisioning", ""),
        // Stop and delete win after the current step, and cancel what is pending.
        (CyclingPending, Stop, ACCEPTED, "stopping", "stop_started"),
        (CyclingPending, Delete, ACCEPTED, "deleting", "delete_started"),
        // A stopped workspace keeps a configuration change for its next start; a restart or
        // start brings it back.
        (Stopped, Config, DEFERRED, "stopped", "restart_deferred"),
        (Stopping, Config, DEFERRED, "stopping", "restart_deferred"),
        (Stopped, Restart, started(2), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        (Stopped, Start, started(2), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        (Stopped, Stop, ACCEPTED, "stopped", ""),
        // A restart overrules a stop in flight: it runs once the stop step ends.
        (Stopping, Restart, coalesced(2), "stopping", "restart_coalesced"),
        // A deleting workspace refuses every intent but a delete.
        (Deleting, Restart, rejected(Rejection::Deleting), "deleting", ""),
        (Deleting, Config, rejected(Rejection::Deleting), "deleting", ""),
        (Deleting, Stop, rejected(Rejection::Deleting), "deleting", ""),
        (Deleting, SwitchToB, rejected(Rejection::Deleting), "deleting", ""),
        (Deleting, Delete, ACCEPTED, "deleting", ""),
        // A user intent during backoff serves the retry's causes now; a stop cancels it.
        (BackingOff, Restart, started(3), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        (BackingOff, Stop, ACCEPTED, "stopping", "stop_started run:stop at:deadline"),
        // A parked workspace moves on only by a user intent.
        (Parked, Dead, ACCEPTED, "failed", ""),
        (Parked, Restart, started(7), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        (Parked, Config, started(7), "provisioning", "restart_requested provision_started run:remove_old at:deadline"),
        // Probes never decide alone: a dead report inside the debounce window, during a
        // cycle or while nothing is meant to run is dropped; past the windows it takes
        // `failure_threshold` reports in a row, then backoff (not an immediate cycle).
        (Running, Dead, ACCEPTED, "running", "restart_dropped"),
        (Cycling, Dead, ACCEPTED, "provisioning", "restart_dropped"),
        (Stopped, Dead, ACCEPTED, "stopped", ""),
        (Settled, Dead, ACCEPTED, "running", ""),
        (OneDead, Dead, ACCEPTED, "provisioning", "restart_requested backoff_scheduled at:retry"),
        // An agent that registers makes a starting instance ready; a stale completion
        // changes nothing but a counter.
        (Starting, Registered, ACCEPTED, "running", "agent_registered"),
        (Running, StaleCompletion, ACCEPTED, "running", "stale_result_ignored"),
        (Cycling, StaleCompletion, ACCEPTED, "provisioning", "stale_result_ignored"),
        // A switch is claimed before any side effect; a second one is refused and changes
        // nothing; a restart during it rides on its cycle.
        (Running, SwitchToB, ACCEPTED, "provisioning", "switch_started provision_started run:remove_old at:deadline"),
        (Cycling, SwitchToB, ACCEPTED, "provisioning", "switch_started"),
        (Stopped, SwitchToB, ACCEPTED, "stopped", "switch_started run:release at:deadline"),
        (Switching, SwitchToB, rejected(Rejection::AlreadySwitching), "provisioning", ""),
        (Switching, Restart, coalesced(3), "provisioning", "restart_coalesced"),
        (Switching, Delete, ACCEPTED, "deleting", "delete_started"),
    ]
}

#[test]
fn the_race_rules_read_as_a_decision_table() {
    let mut wrong = Vec::new();
    for (given, on, outcome, phase, effects) in races() {
        let mut h = given.harness();
        let event = on.event(&h);
        let (got_outcome, got_effects) = h.m.handle(event, Tick::at(h.now));
        let got = (got_outcome, h.m.phase().as_str(), summary(&got_effects));
        if got != (outcome, phase, effects.to_owned()) {
            wrong.push(format!(
                "{given:?} + {on:?}: expected {outcome:?}, {phase:?}, {effects:?}; got {got:?}"
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
fn a_rejected_intent_changes_nothing() {
    for (given, on, outcome, _, _) in races() {
        if !matches!(outcome, Outcome::Rejected(_)) {
            continue;
        }
        let mut h = given.harness();
        let before = h.m.state().clone();
        let event = on.event(&h);
        let (_, effects) = h.m.handle(event, Tick::at(h.now));
        assert!(effects.is_empty(), "{given:?} + {on:?}: {effects:?}");
        assert_eq!(h.m.state(), &before, "{given:?} + {on:?}");
    }
}
