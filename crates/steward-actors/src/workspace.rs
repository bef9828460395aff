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
//!   commit settles), with the failure recorded.

use actix::prelude::*;
use futures::future::{BoxFuture, FutureExt, Shared};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use steward_domain::{
    Cause, CauseSet, ConfigChange, Effect, Event, Generation, HealthReport, Machine, OpId, Outcome,
    Phase, RecordKind, Rejection, RestartContext, Step, StepFailure, Tick, Timer, Timestamp,
    WorkspaceId, WorkspaceSpec,
};
use steward_provider::{InstanceSpec, Liveness, Provider};
use steward_store::{AgentRecord, CommitOutcome, EventRecord, WorkspaceRecord, Write};
use tokio::sync::oneshot;

use crate::messages::{FromAgent, Get, Inspect, Kill, LateCompletion, Probe, Shutdown, Submit};
use crate::registry::Deps;
use crate::{
    failpoints, records, telemetry, ActorError, ActorView, AgentCall, Intent, IntentReply,
    Registry, WorkspaceView,
};

/// A commit in flight, awaitable by several parties (the caller, the operations it gates,
/// the next respawn). `Err` carries a reason to record.
pub(crate) type Commit = Shared<BoxFuture<'static, Result<(), String>>>;

/// The commit of an actor whose last commit has settled: one for all, so an idle actor keeps
/// no commit of its own and a decision that writes nothing allocates nothing.
static SETTLED: std::sync::LazyLock<Commit> =
    std::sync::LazyLock::new(|| futures::future::ready(Ok(())).boxed().shared());

/// One provider call, prepared inside the actor (the spec is read at decision time).
enum Call {
    Start(Box<InstanceSpec>),
    Remove,
    Stop,
}

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
    /// The timers armed, one per kind (see [`timer_slot`]); `SpawnHandle::default()` (which
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
    registry: Registry,
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
}

impl WorkspaceActor {
    pub(crate) fn new(
        record: WorkspaceRecord,
        origin: Origin,
        deps: Arc<Deps>,
        registry: Registry,
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
            registry,
            mailbox,
            last_error: None,
            shutting_down: false,
            idle_waiters: Vec::new(),
            crashed: false,
            restarts,
            counted_phase: None,
            cycle_started_at: None,
            agent_token: None,
        }
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

    /// Carries out `effects`: persists the new state, the records and `extra` writes in one
    /// commit, and arms timers and operations. Returns the commit to await.
    fn execute(
        &mut self,
        effects: Vec<Effect>,
        extra: Vec<Write>,
        ctx: &mut Context<Self>,
    ) -> Commit {
        let now = self.deps.clock.now();
        let cycle_started_at = self.cycle_started_at;
        let mut cycle_started = None;
        let mut writes = extra;
        let mut events = Vec::new();
        let mut runs = Vec::new();
        let mut purge = false;
        let mut folded = false;
        for effect in effects {
            match effect {
                Effect::Record(record) => {
                    if matches!(record.kind, RecordKind::ProvisionStarted { .. }) {
                        cycle_started = Some(record.generation);
                    }
                    telemetry::count(&record, cycle_started_at, now);
                    self.last_event_seq += 1;
                    events.push(records::to_event(
                        self.id,
                        self.last_event_seq,
                        now,
                        &record,
                    ));
                }
                Effect::Run {
                    op,
                    step,
                    generation,
                } => runs.push((op, step, generation)),
                Effect::Abort(op) => self.abort(op, ctx),
                Effect::Schedule { at, timer } => self.schedule(at, timer, ctx),
                Effect::Purge => purge = true,
                Effect::Coalesced(cause) => {
                    telemetry::coalesced(cause);
                    folded = true;
                }
                Effect::DeliverContext(context) => self.deliver_context(context, ctx),
                Effect::UseProvider(provider) => {
                    tracing::info!(workspace = %self.id, from = %self.spec.provider, to = %provider, "workspace recorded on a new provider");
                    self.spec.provider = provider;
                    self.registry.provider_changed(self.id, &self.spec.provider);
                    writes.push(Write::SaveSpec {
                        id: self.id,
                        expected_generation: self.machine.state().generation,
                        spec: self.spec.clone(),
                    });
                }
            }
        }
        if let Some(generation) = cycle_started {
            // The new generation's credential, in the commit that starts its cycle (no extra
            // commit per cycle): durable before its instance starts, and from now on the
            // replaced generation's token is refused.
            writes.push(Write::SaveAgent {
                id: self.id,
                agent: self.issue_agent_token(generation),
            });
        }
        if purge {
            // The delete is done: nothing of the workspace survives, not even its events;
            // live subscribers still hear the final ones.
            return self.purge(events, ctx);
        }
        // Pending causes are what folded restarts rest on: a change to them is always written.
        let state_changed = self.machine.state().generation != self.persisted_generation
            || self.machine.state().pending != self.committed_pending
            || !events.is_empty()
            || !writes.is_empty();
        if state_changed {
            self.updated_at = now;
            // Before the create commits, the InsertWorkspace write carries the state.
            if self.inserted {
                writes.insert(
                    0,
                    Write::SaveState {
                        id: self.id,
                        expected_generation: self.persisted_generation,
                        state: self.machine.state().clone(),
                        at: now,
                    },
                );
            }
            self.persisted_generation = self.machine.state().generation;
        }
        let commit = if !writes.is_empty() {
            let commit = self.commit(writes, events, ctx);
            let pending = self.machine.state().pending;
            if pending != self.committed_pending {
                self.committed_pending = pending;
                self.pending_commit = Some(commit.clone());
            }
            commit
        } else if folded {
            // A restart folded into the pending cycle wrote nothing: it needs only the commit
            // that recorded that cycle's causes to be durable, not whatever came after.
            self.pending_commit
                .clone()
                .unwrap_or_else(|| SETTLED.clone())
        } else {
            self.last_commit()
        };
        for (op, step, generation) in runs {
            self.run(op, step, generation, commit.clone(), ctx);
        }
        self.count_phase(Some(self.machine.phase()));
        if self.running_op.is_none() {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        commit
    }

    /// Enqueues `writes` + `events` now (in decision order) and watches the outcome: events
    /// are published once durable; a failure restarts the actor from the store.
    fn commit(
        &mut self,
        mut writes: Vec<Write>,
        events: Vec<EventRecord>,
        ctx: &mut Context<Self>,
    ) -> Commit {
        let events: Vec<Arc<EventRecord>> = events.into_iter().map(Arc::new).collect();
        writes.extend(
            events
                .iter()
                .map(|e| Write::AppendEvent(EventRecord::clone(e))),
        );
        let pending = self.deps.store.enqueue(writes);
        let bus = self.deps.bus.clone();
        let commit: Commit = async move {
            match pending.await {
                Ok(CommitOutcome::Committed) => {
                    for event in events {
                        bus.publish(event);
                    }
                    Ok(())
                }
                Ok(CommitOutcome::Fenced { expected, .. }) => Err(format!(
                    "write fenced: stored generation is no longer {expected}"
                )),
                Err(e) => Err(format!("store: {e}")),
            }
        }
        .boxed()
        .shared();
        self.last_commit = Some(commit.clone());
        let watched = commit.clone();
        ctx.spawn(
            commit
                .clone()
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Err(reason) => act.crash(reason, ctx),
                    Ok(()) => {
                        for slot in [&mut act.last_commit, &mut act.pending_commit] {
                            if slot.as_ref().is_some_and(|c| c.ptr_eq(&watched)) {
                                *slot = None;
                            }
                        }
                    }
                }),
        );
        commit
    }

    /// The last commit enqueued (settled or not).
    fn last_commit(&self) -> Commit {
        self.last_commit.clone().unwrap_or_else(|| SETTLED.clone())
    }

    /// Runs one provider operation in the background, after `commit` is durable.
    fn run(
        &mut self,
        op: OpId,
        step: Step,
        generation: Generation,
        commit: Commit,
        ctx: &mut Context<Self>,
    ) {
        let id = self.id;
        let provider = self.provider();
        let call = match step {
            Step::Start => Call::Start(Box::new(self.instance_spec(generation))),
            Step::RemoveOld | Step::Remove | Step::Release => Call::Remove,
            Step::Stop => Call::Stop,
        };
        // A rollback's start runs after its switch record is cleared: the cycle's causes
        // still say it belongs to a switch.
        let switching = self.machine.state().switch.is_some()
            || self
                .machine
                .cycle()
                .is_some_and(|c| c.causes.contains(Cause::Switch));
        let scope = if switching { "switch" } else { "cycle" };
        let provider_name = self.spec.provider.clone();
        let work = async move {
            if commit.await.is_err() {
                return None; // the actor restarts; the operation never ran
            }
            let Some(provider) = provider else {
                // A provider taken out of the configuration cannot be asked: there is nothing
                // of ours to stop or remove that we could reach. Say so, and let the workspace
                // move on (a switch away from it, a delete); only a start is an error.
                return Some(match call {
                    Call::Start(_) => Err(StepFailure::Provider(format!(
                        "provider {provider_name:?} is not configured"
                    ))),
                    Call::Remove | Call::Stop => {
                        tracing::warn!(workspace = %id, provider = %provider_name, step = step.as_str(), "provider not configured: nothing to stop or remove");
                        Ok(())
                    }
                });
            };
            failpoints::pass_step(scope, step.as_str(), "before");
            let result = match call {
                Call::Start(spec) => provider.start(&spec).await,
                Call::Remove => provider.remove(id).await,
                Call::Stop => provider.stop(id).await,
            };
            failpoints::pass_step(scope, step.as_str(), "after");
            metrics::counter!(
                "steward_provider_operations_total",
                "provider" => provider_name,
                "step" => step.as_str(),
                "result" => if result.is_ok() { "ok" } else { "error" }
            )
            .increment(1);
            Some(result.map_err(|e| StepFailure::Provider(e.to_string())))
        };
        let handle = ctx.spawn(AssertUnwindSafe(work).catch_unwind().into_actor(self).map(
            move |result, act, ctx| {
                if act
                    .running_op
                    .as_ref()
                    .is_some_and(|(running, _)| *running == op)
                {
                    act.running_op = None;
                    // Its deadline has nothing left to watch.
                    act.cancel_timer(timer_slot(Timer::StepDeadline(op)), ctx);
                }
                match result {
                    Ok(Some(result)) => act.react(Event::StepFinished { op, result }, ctx),
                    Ok(None) => {}
                    Err(panic) => {
                        let reason = format!(
                            "provider panicked during {}: {}",
                            step.as_str(),
                            panic_message(&panic)
                        );
                        tracing::error!(workspace = %act.id, %reason, "cycle panicked");
                        // Record the failure through the machine (backoff applies), then
                        // restart the actor from what was persisted.
                        act.react(
                            Event::StepFinished {
                                op,
                                result: Err(StepFailure::Provider(reason.clone())),
                            },
                            ctx,
                        );
                        act.crash(reason, ctx);
                    }
                }
            },
        ));
        self.running_op = Some((op, handle));
    }

    fn abort(&mut self, op: OpId, ctx: &mut Context<Self>) {
        if let Some((running, handle)) = self.running_op.take() {
            if running == op {
                ctx.cancel_future(handle);
            } else {
                self.running_op = Some((running, handle));
            }
        }
    }

    /// Arms `timer`. A newer timer of a kind supersedes the armed one, which is cancelled:
    /// the machine holds at most one operation, one boot deadline and one retry, so nothing
    /// is lost, and superseded timers do not pile up in the context (every message would poll
    /// them all: a restart storm used to leave hundreds of dead deadlines per actor).
    fn schedule(&mut self, at: Timestamp, timer: Timer, ctx: &mut Context<Self>) {
        let delay = at.since(self.deps.clock.now());
        let slot = timer_slot(timer);
        self.cancel_timer(slot, ctx);
        self.timers[slot] = ctx.run_later(delay, move |act, ctx| {
            act.timers[slot] = SpawnHandle::default();
            act.react(Event::Timer(timer), ctx);
        });
    }

    fn cancel_timer(&mut self, slot: usize, ctx: &mut Context<Self>) {
        let handle = std::mem::take(&mut self.timers[slot]);
        if handle != SpawnHandle::default() {
            ctx.cancel_future(handle);
        }
    }

    fn purge(&mut self, last_words: Vec<EventRecord>, ctx: &mut Context<Self>) -> Commit {
        self.count_phase(None);
        let commit = self.commit(
            vec![Write::DeleteWorkspace { id: self.id }],
            Vec::new(),
            ctx,
        );
        let registry = self.registry.clone();
        let bus = self.deps.bus.clone();
        let id = self.id;
        let addr = ctx.address();
        ctx.spawn(
            commit
                .clone()
                .into_actor(self)
                .map(move |result, _act, ctx| {
                    if result.is_ok() {
                        registry.forget(id, &addr);
                        last_words
                            .into_iter()
                            .for_each(|e| bus.publish(Arc::new(e)));
                        ctx.stop();
                    }
                }),
        );
        commit
    }

    /// Stops this actor and has the registry start a fresh one from the store once the
    /// last commit has settled.
    fn crash(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.crashed {
            return;
        }
        tracing::warn!(workspace = %self.id, %reason, "workspace actor restarting from the store");
        self.crashed = true;
        self.last_error = Some(reason);
        ctx.stop();
    }

    fn instance_spec(&self, generation: Generation) -> InstanceSpec {
        let mut env = self.spec.env.clone();
        env.insert("STEWARD_WORKSPACE_ID".into(), self.id.to_string());
        env.insert("STEWARD_GENERATION".into(), generation.to_string());
        env.insert("STEWARD_CONTROL_URL".into(), self.deps.control_url.clone());
        let interval = format!("{}ms", self.deps.heartbeat_interval.as_millis());
        env.insert("STEWARD_HEARTBEAT_INTERVAL".into(), interval);
        if let Some(model) = &self.spec.model {
            env.insert("STEWARD_MODEL".into(), model.clone());
        }
        let mut secrets = self.secrets.clone();
        if let Some(token) = self.agent_token(generation) {
            secrets.insert("STEWARD_AGENT_TOKEN".into(), token);
        }
        InstanceSpec {
            workspace_id: self.id,
            generation,
            image: self.spec.image.clone(),
            command: self.spec.command.clone(),
            env,
            secrets,
        }
    }

    /// The agent token of `generation`, if it is the one issued last.
    fn agent_token(&self, generation: Generation) -> Option<SecretString> {
        self.agent_token
            .as_ref()
            .filter(|(issued, _)| *issued == generation)
            .map(|(_, secret)| crate::agent::token(self.id, generation, secret))
    }

    /// Issues the agent token of `generation`; returns the agent record to persist (hash only).
    fn issue_agent_token(&mut self, generation: Generation) -> AgentRecord {
        let (token, hash) = crate::agent::issue_token(self.id, generation);
        self.agent_token = Some((generation, token));
        self.agent = AgentRecord {
            generation,
            token_hash: Some(hash),
            url: None,
            last_heartbeat_at: None,
        };
        self.agent.clone()
    }

    /// Delivers a restart context to the registered agent in the background; the result
    /// re-enters the machine as `ContextDelivery`.
    fn deliver_context(&mut self, context: RestartContext, ctx: &mut Context<Self>) {
        let url = self.agent.url.clone();
        let token = self.agent_token(context.generation);
        let (Some(url), Some(token)) = (url, token) else {
            // Not from inside `execute`: its commit must be enqueued before this one.
            let failed = Event::ContextDelivery {
                generation: context.generation,
                delivered: false,
            };
            ctx.spawn(ActorFutureExt::map(
                fut::ready(()),
                move |(), act: &mut Self, ctx| act.react(failed, ctx),
            ));
            return;
        };
        let delivery = crate::agent::deliver_context(
            self.deps.http.clone(),
            url,
            token,
            context,
            self.deps.context_timeout,
        );
        ctx.spawn(delivery.into_actor(self).map(move |delivered, act, ctx| {
            act.react(
                Event::ContextDelivery {
                    generation: context.generation,
                    delivered,
                },
                ctx,
            );
        }));
    }

    /// Checks an agent's token against the current generation's credential: the latest
    /// generation, and only while it is the one up. Once a new cycle starts, the agent it
    /// replaces is superseded (401) — its registration must not race the new generation.
    fn authenticate(&self, token: &SecretString) -> Result<Generation, ActorError> {
        let token = secrecy::ExposeSecret::expose_secret(token);
        let (_, generation) = crate::agent::token_claims(token).ok_or(ActorError::Unauthorized)?;
        let current = self.machine.accepts_agent(generation)
            && generation == self.agent.generation
            && self
                .agent
                .token_hash
                .as_ref()
                .is_some_and(|h| crate::agent::verify(token, h));
        if current {
            Ok(generation)
        } else {
            Err(ActorError::Unauthorized)
        }
    }

    fn record(&self) -> WorkspaceRecord {
        WorkspaceRecord {
            id: self.id,
            spec: self.spec.clone(),
            state: self.machine.state().clone(),
            secrets: self.secrets.clone(),
            agent: self.agent.clone(),
            last_event_seq: self.last_event_seq,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn view(&self) -> WorkspaceView {
        let state = self.machine.state();
        WorkspaceView {
            id: self.id,
            spec: self.spec.clone(),
            ready_when: state.ready_when,
            phase: state.phase,
            generation: state.generation,
            observed_generation: state.observed_generation,
            in_flight: self.machine.cycle().is_some(),
            pending: state.pending,
            agent: self.agent.clone(),
            failure: state.failure.clone(),
            switch: state.switch.as_deref().cloned(),
            secret_keys: self.secrets.keys().cloned().collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn inspect(&self) -> ActorView {
        let now = self.deps.clock.now();
        let state = self.machine.state();
        ActorView {
            id: self.id,
            phase: state.phase,
            generation: state.generation,
            observed_generation: state.observed_generation,
            cycle: self.machine.cycle().copied(),
            op: self.machine.op().copied(),
            pending: state.pending,
            switch: state.switch.as_deref().cloned(),
            debounce_until: self.machine.debounce_until(now),
            settle_until: self.machine.settle_until(now),
            health_failures: self.machine.health_failures(),
            last_probe: self.machine.last_report(),
            backoff_attempt: state.backoff_attempt,
            retry_at: self.machine.retry_at(),
            counters: self.machine.counters().clone(),
            mailbox_len: self.mailbox.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .clone()
                .or_else(|| state.failure.as_ref().map(|f| f.reason.to_string())),
            transitions: self.machine.transitions().copied().collect(),
            restarts: self.restarts,
        }
    }

    /// Decides an intent, applies the configuration change it carries if accepted, and
    /// commits. Returns the outcome and the commit to await.
    fn submit(
        &mut self,
        intent: Intent,
        ctx: &mut Context<Self>,
    ) -> Result<(Outcome, Commit), ActorError> {
        if self.shutting_down {
            return Err(ActorError::ShuttingDown);
        }
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
                to_ready: *to_ready,
            },
            Intent::RemoveSecret { key } => {
                if !self.secrets.contains_key(key) {
                    return Err(ActorError::SecretNotFound(key.clone()));
                }
                Event::ConfigChanged(ConfigChange::Secret)
            }
        };
        let (outcome, effects) = match self.decide(event) {
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
        let commit = self.execute(effects, extra, ctx);
        self.inserted = true;
        Ok((outcome, commit))
    }
}

/// Where [`WorkspaceActor::timers`] keeps a timer of this kind.
fn timer_slot(timer: Timer) -> usize {
    match timer {
        Timer::StepDeadline(_) => 0,
        Timer::BootDeadline(_) => 1,
        Timer::Retry(_) => 2,
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
            let last = self.last_commit();
            let registry = self.registry.clone();
            let id = self.id;
            let restarts = self.restarts + 1;
            actix::spawn(async move {
                let _ = last.await;
                registry.respawn(id, restarts).await;
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
        let (outcome, commit) = match self.submit(intent, ctx) {
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

impl Handler<FromAgent> for WorkspaceActor {
    type Result = ResponseFuture<Result<Generation, ActorError>>;

    fn handle(
        &mut self,
        FromAgent { token, call }: FromAgent,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        let generation = match self.authenticate(&token) {
            Ok(generation) => generation,
            Err(e) => {
                metrics::counter!("steward_agent_rejected_total").increment(1);
                return Box::pin(async move { Err(e) });
            }
        };
        let now = self.deps.clock.now();
        self.agent.last_heartbeat_at = Some(now);
        let (event, extra) = match call {
            AgentCall::Register { url } => {
                self.agent.url = Some(url);
                let save = Write::SaveAgent {
                    id: self.id,
                    agent: self.agent.clone(),
                };
                (Event::AgentRegistered { generation }, vec![save])
            }
            AgentCall::Heartbeat => (Event::AgentHeartbeat { generation }, Vec::new()),
        };
        let commit = match self.decide(event) {
            Ok((_, effects)) => self.execute(effects, extra, ctx),
            Err(e) => {
                self.crash("lifecycle machine panicked".into(), ctx);
                return Box::pin(async move { Err(e) });
            }
        };
        Box::pin(async move {
            commit.await.map_err(ActorError::Store)?;
            Ok(generation)
        })
    }
}

impl Handler<Probe> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, Probe { provider, liveness }: Probe, ctx: &mut Self::Context) {
        if self.shutting_down || *provider != *self.spec.provider {
            // The workspace moved off that provider: what it says is about nothing of ours.
            return;
        }
        // An instance the provider does not have is dead, whichever generation we think is up.
        let observed = self.machine.state().observed_generation;
        let (generation, report) = match liveness {
            Liveness::Alive(g) => (g, HealthReport::Alive),
            Liveness::Booting(g) => (g, HealthReport::Pending),
            Liveness::Dead(g) => (g, HealthReport::Dead),
            Liveness::Absent => (observed, HealthReport::Dead),
        };
        self.react(Event::Health { generation, report }, ctx);
    }
}

impl Handler<Kill> for WorkspaceActor {
    type Result = ResponseFuture<Result<(), ActorError>>;

    fn handle(&mut self, _: Kill, _: &mut Self::Context) -> Self::Result {
        let provider = self.provider();
        let id = self.id;
        tracing::info!(workspace = %id, "fault drill: killing the instance");
        Box::pin(async move {
            let provider = provider
                .ok_or_else(|| ActorError::Provider("provider is not configured".into()))?;
            provider
                .kill(id)
                .await
                .map_err(|e| ActorError::Provider(e.to_string()))
        })
    }
}

/// Reads answer once the last commit has settled, so a client never sees state (say,
/// `running`) before the events that explain it are durable.
impl Handler<Get> for WorkspaceActor {
    type Result = Response<WorkspaceView>;

    fn handle(&mut self, _: Get, _: &mut Self::Context) -> Self::Result {
        let view = self.view();
        after_last_commit(&self.last_commit(), view)
    }
}

/// Like `Get`: the snapshot is taken now and answered once the last commit has settled, so
/// counters never run ahead of the events that record them.
impl Handler<Inspect> for WorkspaceActor {
    type Result = Response<ActorView>;

    fn handle(&mut self, _: Inspect, _: &mut Self::Context) -> Self::Result {
        let view = self.inspect();
        after_last_commit(&self.last_commit(), view)
    }
}

/// Answers `value` once `last` has settled (whatever its outcome): at once if it has.
fn after_last_commit<T: 'static>(last: &Commit, value: T) -> Response<T> {
    if last.peek().is_some() {
        return Response::reply(value);
    }
    let settled = last.clone();
    Response::fut(async move {
        let _ = settled.await;
        value
    })
}

impl Handler<Shutdown> for WorkspaceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let last = self.last_commit();
        if self.running_op.is_none() {
            return Box::pin(async move {
                let _ = last.await;
            });
        }
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<LateCompletion> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, LateCompletion { op, result }: LateCompletion, ctx: &mut Self::Context) {
        let result = result.map_err(StepFailure::Provider);
        self.react(Event::StepFinished { op, result }, ctx);
    }
}

/// What the provider's liveness says about which generation is live.
pub(crate) fn live_generation(liveness: Liveness) -> Option<Generation> {
    match liveness {
        Liveness::Alive(g) | Liveness::Booting(g) => Some(g),
        Liveness::Dead(_) | Liveness::Absent => None,
    }
}
