//! What the actor shows: the workspace document, the operator's inspection, and the record
//! handed to the store at create.

use actix::prelude::*;
use std::sync::atomic::Ordering;
use steward_store::WorkspaceRecord;

use super::{Commit, WorkspaceActor};
use crate::messages::{Get, Inspect};
use crate::{ActorView, HealthView, WorkspaceView};

impl WorkspaceActor {
    pub(super) fn record(&self) -> WorkspaceRecord {
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
        let mut view = WorkspaceView::of(
            self.id,
            self.spec.clone(),
            state,
            self.agent.clone(),
            self.secrets.keys().cloned().collect(),
            self.last_event_seq,
            (self.created_at, self.updated_at),
        );
        view.health = HealthView {
            last_report: self
                .machine
                .last_report()
                .filter(|(generation, _, _)| *generation == state.observed_generation)
                .map(|(_, report, at)| (report, at)),
            dead_in_a_row: self.machine.health_failures(),
        };
        view
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
            // Not counting this inspection, which holds a slot until it is answered.
            mailbox_len: self.mailbox.load(Ordering::Relaxed).saturating_sub(1),
            last_error: self
                .last_error
                .clone()
                .or_else(|| state.failure.as_ref().map(|f| f.reason.to_string())),
            transitions: self.machine.transitions().copied().collect(),
            restarts: self.restarts,
        }
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
