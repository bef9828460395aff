//! The supervisor actor of one workspace: the imperative shell around its `Machine`.
//!
//! Flow of one message: feed the event to the machine → apply the configuration change the
//! intent carries (if the machine accepted it) → turn the effects into store writes, timers
//! and background provider operations → enqueue one commit → answer once it is durable.
//!
//! Guarantees:
//! - the mailbox is never blocked on I/O: commits and provider calls run as spawned
//!   futures whose results re-enter the actor through `ActorFuture::map`, serialized with
//!   messages;
//! - a provider operation starts only after the commit that decided it is durable;
//! - commits are enqueued synchronously in decision order, so the store sees this
//!   workspace's writes in the order they were decided;
//! - a panic in the machine or in a provider call, a failed commit, or a fenced write stops
//!   this actor and the registry restarts it from the persisted state (after the last
//!   commit settles), with the failure recorded;
//! - the actor never calls into the registry: what only its supervisor can do (follow a
//!   provider change, forget a purged workspace, restart a crashed actor) it says through
//!   its [`Supervisor`] handle.
//!
//! Split by concern: this file (the actor, deciding, intents), `effects` (the effects
//! runner: commits, operations, timers, purge, crash), `agent_channel` (tokens, instance
//! environment, agent calls, restart contexts), `inspection` (documents and inspection) and
//! `handlers` (probe reports, fault drill, shutdown, late completions).

mod agent_channel;
mod effects;
mod handlers;
mod inspection;

pub(crate) use handlers::live_generation;

use actix::prelude::*;
use futures::future::{BoxFuture, FutureExt, Shared};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use steward_domain::{
    CauseSet, ConfigChange, Effect, Event, Generation, Goal, LimitError, Machine, OpId, Outcome,
    Phase, Progress, ReadyWhen, Rejection, Tick, Timestamp, WorkspaceId, WorkspaceSpec,
};
use steward_provider::Provider;

use crate::log_summary::LogSummary;
use steward_store::{AgentRecord, WorkspaceRecord, Write};
use tokio::sync::{oneshot, watch};

use crate::messages::Submit;
use crate::supervisor::{Supervisor, SupervisorNote};
use crate::{failpoints, telemetry, ActorError, Deps, Intent, IntentReply};

/// A commit in flight, awaitable by several parties (the caller, the operations it gates,
/// the next respawn). `Err` carries a reason to record.
/// Actors restarting from the store (see [`crate::log_summary`]).
pub(crate) static ACTOR_RESTARTS: LogSummary = LogSummary::new(
    tracing::Level::WARN,
    "workspace actors restarting from the store",
);

pub(crate) type Commit = Shared<BoxFuture<'static, Result<(), String>>>;

/// The commit of an actor whose last commit has settled: one for all, so an idle actor keeps
/// no commit of its own and a decision that writes nothing allocates nothing.
static SETTLED: std::sync::LazyLock<Commit> =
    std::sync::LazyLock::new(|| futures::future::ready(Ok(())).boxed().shared());

/// How the actor came to life.
#[derive(Debug)]
pub(crate) enum Origin {
    /// Brand new: the registry sends `Intent::Create` next.
    New,
    /// Loaded from the store; `live` is the generation of the instance its provider has.
    Restored {
        /// The live instance's generation, if any.
        live: Option<Generation>,
    },
}

/// The supervisor actor of one workspace.
pub struct WorkspaceActor {
    id: WorkspaceId,
    machine: Machine,
    spec: WorkspaceSpec,
    secrets: BTreeMap<String, SecretString>,
    agent: AgentRecord,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_event_seq: i64,
    /// Whether the workspace row exists in the store (false until the create commits).
    inserted: bool,
    /// Generation of the state last handed to the store (the fence for the next write).
    persisted_generation: Generation,
    /// The operation running in the background, if any.
    running_op: Option<(OpId, SpawnHandle)>,
    /// The timers armed, one per kind (see `effects::timer_slot`); `SpawnHandle::default()` (which
    /// no spawn returns) when none is.
    timers: [SpawnHandle; 3],
    /// The last commit enqueued while it is in flight (`None` once it has settled): a
    /// respawn waits for it before reloading.
    last_commit: Option<Commit>,
    /// The commit that recorded the pending causes as they are now, while it is in flight
    /// (`None` once it has settled): what a restart folded into the pending cycle rests on.
    pending_commit: Option<Commit>,
    /// The pending causes in the last state handed to the store.
    committed_pending: CauseSet,
    origin: Option<Origin>,
    deps: Arc<Deps>,
    /// The way to the registry, which the actor never calls directly.
    supervisor: Supervisor,
    mailbox: Arc<AtomicUsize>,
    last_error: Option<String>,
    shutting_down: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Set when the actor stops to be restarted from the store.
    crashed: bool,
    /// How many predecessors crashed (0 for the first actor of this daemon run).
    restarts: u32,
    /// The phase this actor counts in `steward_workspaces{phase}` (None: not counted).
    counted_phase: Option<Phase>,
    /// Start of the cycle that was in flight before the event being handled (for the
    /// cycle-duration histogram, which is fed when that cycle ends).
    cycle_started_at: Option<Timestamp>,
    /// The random part of the agent token of the instance being started or up (memory only):
    /// the token is given to that instance and authenticates restart-context deliveries to
    /// its agent.
    agent_token: Option<(Generation, secrecy::SecretBox<[u8; 32]>)>,
    /// The progress cell of clients waiting for an intent to settle, while any does: made
    /// on the first subscription, updated after each event, dropped at the first event with
    /// no one left watching. An idle workspace no one waits on holds none.
    progress: Option<watch::Sender<Progress>>,
}

impl WorkspaceActor {
    pub(crate) fn new(
        record: WorkspaceRecord,
        origin: Origin,
        deps: Arc<Deps>,
        supervisor: Supervisor,
        mailbox: Arc<AtomicUsize>,
        restarts: u32,
    ) -> Self {
        let inserted = matches!(origin, Origin::Restored { .. });
        let mut machine = Machine::restore(deps.policy.clone(), record.state);
        if record.agent.url.is_some() {
            machine.agent_known(record.agent.generation, deps.clock.now());
        }
        Self {
            id: record.id,
            persisted_generation: machine.state().generation,
            committed_pending: machine.state().pending,
            machine,
            spec: record.spec,
            secrets: record.secrets,
            agent: record.agent,
            created_at: record.created_at,
            updated_at: record.updated_at,
            last_event_seq: record.last_event_seq,
            inserted,
            running_op: None,
            timers: [SpawnHandle::default(); 3],
            last_commit: None,
            pending_commit: None,
            origin: Some(origin),
            deps,
            supervisor,
            mailbox,
            last_error: None,
            shutting_down: false,
            idle_waiters: Vec::new(),
            crashed: false,
            restarts,
            counted_phase: None,
            cycle_started_at: None,
            agent_token: None,
            progress: None,
        }
    }

    /// Hands the machine's progress to the clients waiting on this workspace, if any; drops
    /// the cell once no one watches. Waiters are woken only when it changed.
    fn publish_progress(&mut self) {
        let Some(cell) = &self.progress else {
            return;
        };
        if cell.is_closed() {
            self.progress = None;
            return;
        }
        let now = self.machine.progress();
        cell.send_if_modified(|seen| {
            let changed = *seen != now;
            *seen = now;
            changed
        });
    }

    /// Keeps `steward_workspaces{phase}` in step with the machine.
    fn count_phase(&mut self, phase: Option<Phase>) {
        telemetry::phase_changed(self.counted_phase, phase);
        self.counted_phase = phase;
    }

    fn provider(&self) -> Option<Arc<dyn Provider>> {
        self.deps.providers.get(&self.spec.provider).cloned()
    }

    /// Feeds one event to the machine. A panic inside the machine is a bug: the actor
    /// restarts from the store and the event is lost, never half-applied.
    fn decide(&mut self, event: Event) -> Result<(Outcome, Vec<Effect>), ActorError> {
        let tick = Tick {
            now: self.deps.clock.now(),
            jitter: rand::random::<f64>(),
        };
        self.cycle_started_at = self.machine.cycle().map(|c| c.started_at);
        // No copy to fall back on: after a panic the machine is never used again (the actor
        // stops and its successor is restored from the store).
        let machine = &mut self.machine;
        match std::panic::catch_unwind(AssertUnwindSafe(|| machine.handle(event, tick))) {
            Ok(out) => Ok(out),
            Err(panic) => {
                let reason = format!("lifecycle machine panicked: {}", panic_message(&panic));
                tracing::error!(workspace = %self.id, %reason, "restarting actor");
                self.last_error = Some(reason);
                Err(ActorError::Restarting)
            }
        }
    }

    /// Handles an event that has no one waiting for an answer (completions, timers,
    /// recovery). Its commit is watched like any other: a failure restarts the actor.
    fn react(&mut self, event: Event, ctx: &mut Context<Self>) {
        match self.decide(event) {
            Ok((_, effects)) => drop(self.execute(effects, Vec::new(), ctx)),
            Err(_) => self.crash("lifecycle machine panicked".into(), ctx),
        }
    }

    /// Decides an intent, applies the configuration change it carries if accepted, and
    /// commits. Returns the outcome and the commit to await.
    fn submit(
        &mut self,
        intent: Intent,
        ctx: &mut Context<Self>,
    ) -> Result<(Outcome, Goal, Commit), ActorError> {
        if self.shutting_down {
            return Err(ActorError::ShuttingDown);
        }
        self.check_fits(&intent).map_err(ActorError::Limit)?;
        let event = match &intent {
            Intent::Create { .. } => Event::Create,
            Intent::Restart => Event::Restart,
            Intent::Start => Event::Start,
            Intent::Stop => Event::Stop,
            Intent::Delete => Event::Delete,
            Intent::SetSecret { .. } => Event::ConfigChanged(ConfigChange::Secret),
            Intent::SetModel { .. } => Event::ConfigChanged(ConfigChange::Model),
            Intent::SwitchProvider { to, to_ready } => Event::Switch {
                from: self.spec.provider.clone(),
                to: to.clone(),
                to_ready: ReadyWhen::at_switch(
                    self.machine.state().ready_when,
                    self.spec.command.is_some(),
                    *to_ready,
                ),
            },
            Intent::RemoveSecret { key } => {
                if !self.secrets.contains_key(key) {
                    return Err(ActorError::SecretNotFound(key.clone()));
                }
                Event::ConfigChanged(ConfigChange::Secret)
            }
        };
        let (outcome, effects) = match self.decide(event.clone()) {
            Ok(decided) => decided,
            Err(e) => {
                self.crash("lifecycle machine panicked".into(), ctx);
                return Err(e);
            }
        };
        match outcome {
            Outcome::Rejected(Rejection::Deleting) => return Err(ActorError::Deleting),
            Outcome::Rejected(Rejection::AlreadySwitching) => {
                return Err(ActorError::AlreadySwitching)
            }
            Outcome::Rejected(Rejection::SameProvider) => {
                return Err(ActorError::SameProvider(self.spec.provider.clone()))
            }
            _ => {}
        }
        // The machine accepted: apply the change before any effect runs, so the next Start
        // step (always issued by a later event) provisions from it.
        let extra = match intent {
            Intent::SetSecret { key, value } => {
                self.secrets.insert(key.clone(), value.clone());
                vec![Write::PutSecret {
                    id: self.id,
                    key,
                    value,
                }]
            }
            Intent::RemoveSecret { key } => {
                self.secrets.remove(&key);
                vec![Write::DeleteSecret { id: self.id, key }]
            }
            Intent::SetModel { model } => {
                self.spec.model = Some(model);
                vec![Write::SaveSpec {
                    id: self.id,
                    expected_generation: self.machine.state().generation,
                    spec: self.spec.clone(),
                }]
            }
            Intent::Create { idempotency } => {
                self.updated_at = self.deps.clock.now();
                vec![Write::InsertWorkspace {
                    record: Box::new(self.record()),
                    idempotency,
                }]
            }
            Intent::Restart
            | Intent::Start
            | Intent::Stop
            | Intent::Delete
            | Intent::SwitchProvider { .. } => Vec::new(),
        };
        // Every accepted intent has a goal (only refusals have none, and they returned above).
        let goal = Goal::after(&event, outcome, &self.machine.progress()).unwrap_or(Goal::Nothing);
        let commit = self.execute(effects, extra, ctx);
        self.inserted = true;
        Ok((outcome, goal, commit))
    }

    /// Refuses a secret or model change that would make the configuration too large to
    /// start (the domain's limits, the same as at create).
    fn check_fits(&self, intent: &Intent) -> Result<(), LimitError> {
        let secret_len = |v: &SecretString| v.expose_secret().len();
        match intent {
            Intent::SetSecret { key, value } => {
                let others = self.secrets.iter().filter(|(k, _)| *k != key);
                let secrets: Vec<(&str, usize)> = others
                    .map(|(k, v)| (k.as_str(), secret_len(v)))
                    .chain([(key.as_str(), secret_len(value))])
                    .collect();
                self.spec.check_fits(secrets.into_iter())
            }
            Intent::SetModel { model } => {
                let spec = WorkspaceSpec {
                    model: Some(model.clone()),
                    ..self.spec.clone()
                };
                spec.check_fits(
                    self.secrets
                        .iter()
                        .map(|(k, v)| (k.as_str(), secret_len(v))),
                )
            }
            _ => Ok(()),
        }
    }
}

/// Answers with the progress cell, made now if no one watched yet.
impl Handler<crate::messages::Subscribe> for WorkspaceActor {
    type Result = MessageResult<crate::messages::Subscribe>;

    fn handle(&mut self, _: crate::messages::Subscribe, _: &mut Self::Context) -> Self::Result {
        let now = self.machine.progress();
        let cell = self.progress.get_or_insert_with(|| watch::Sender::new(now));
        cell.send_if_modified(|seen| std::mem::replace(seen, now) != now);
        MessageResult(cell.subscribe())
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

impl Actor for WorkspaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.deps.mailbox_capacity.saturating_mul(2).max(16));
        self.count_phase(Some(self.machine.phase()));
        if let Some(Origin::Restored { live }) = self.origin.take() {
            self.react(Event::Recover { live }, ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.count_phase(None);
        for waiter in self.idle_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if self.crashed && !self.shutting_down {
            self.supervisor.tell(SupervisorNote::Crashed {
                id: self.id,
                restarts: self.restarts + 1,
                settled: self.last_commit(),
            });
        }
    }
}

/// Answers with the decision and, unless it has settled, the commit it rests on: the caller
/// awaits that commit, so the store's answer goes straight to it, not through the actor (an
/// intent that wrote nothing, such as a restart folded into a pending cycle whose commit is
/// durable, has nothing to wait for). A provider switch is answered from here once claimed.
impl Handler<Submit> for WorkspaceActor {
    type Result = Response<Result<(IntentReply, Option<Commit>), ActorError>>;

    fn handle(&mut self, Submit(intent): Submit, ctx: &mut Self::Context) -> Self::Result {
        let switch = matches!(intent, Intent::SwitchProvider { .. });
        let (outcome, goal, commit) = match self.submit(intent, ctx) {
            Ok(decided) => decided,
            Err(e) => return Response::reply(Err(e)),
        };
        let generation = match outcome {
            Outcome::Started(g) | Outcome::Coalesced(g) => g,
            _ => self.machine.state().generation,
        };
        let reply = IntentReply {
            outcome,
            generation,
            goal,
        };
        if switch {
            return Response::fut(async move {
                commit.await.map_err(ActorError::Store)?;
                failpoints::pass("switch.claimed");
                Ok((reply, None))
            });
        }
        Response::reply(match commit.peek() {
            Some(settled) => settled
                .clone()
                .map(|()| (reply, None))
                .map_err(ActorError::Store),
            None => Ok((reply, Some(commit))),
        })
    }
}
