//! The effects runner: turns a decision's effects into one commit, timers and background
//! provider operations, and stops the actor when something it cannot vouch for happens.

use actix::prelude::*;
use futures::future::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use steward_domain::{
    Cause, Effect, Event, Generation, OpId, RecordKind, Step, StepFailure, Timer, Timestamp,
};
use steward_provider::InstanceSpec;
use steward_store::{CommitOutcome, EventRecord, Write};

use super::{panic_message, Commit, WorkspaceActor, SETTLED};
use crate::supervisor::SupervisorNote;
use crate::{failpoints, records, telemetry};

/// One provider call, prepared inside the actor (the spec is read at decision time).
enum Call {
    Start(Box<InstanceSpec>),
    Remove,
    Stop,
}

impl WorkspaceActor {
    /// Carries out `effects`: persists the new state, the records and `extra` writes in one
    /// commit, and arms timers and operations. Returns the commit to await.
    pub(super) fn execute(
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
                    self.spec.provider = provider.clone();
                    self.supervisor.tell(SupervisorNote::ProviderChanged {
                        id: self.id,
                        provider,
                    });
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
        self.publish_progress();
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
    pub(super) fn last_commit(&self) -> Commit {
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
        let bus = self.deps.bus.clone();
        let id = self.id;
        let addr = ctx.address();
        ctx.spawn(
            commit
                .clone()
                .into_actor(self)
                .map(move |result, act, ctx| {
                    if result.is_ok() {
                        act.supervisor.tell(SupervisorNote::Purged { id, addr });
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
    pub(super) fn crash(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.crashed {
            return;
        }
        // An overloaded or failing store restarts many actors at once: summarized.
        if super::ACTOR_RESTARTS.admit(format_args!("workspace {}: {reason}", self.id)) {
            tracing::warn!(workspace = %self.id, %reason, "workspace actor restarting from the store");
        }
        self.crashed = true;
        self.last_error = Some(reason);
        ctx.stop();
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
