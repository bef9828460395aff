//! The lifecycle semantics, as example tests (here), a decision table of the race rules
//! (`table.rs`) and property tests of the invariants (`properties.rs`).

use super::*;
use crate::{BackoffPolicy, Cause, CauseSet, Desired, Generation, OpId, ReadyWhen, Timestamp};
use proptest::prelude::*;
use std::time::Duration;

mod lifecycle;
mod progress;
mod properties;
mod switch;
mod table;

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
        Self::with_policy(ready_when, policy())
    }

    fn with_policy(ready_when: ReadyWhen, policy: Policy) -> Self {
        let m = Machine::restore(Arc::new(policy), MachineState::new(ready_when));
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

// ---- random actions (property tests) -------------------------------------------------------

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

// ---- scenario helpers ------------------------------------------------------------------------

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
