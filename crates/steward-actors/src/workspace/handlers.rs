//! The actor's other messages: probe reports, the fault drill, shutdown, late completions.

use actix::prelude::*;
use steward_domain::{Event, Generation, HealthReport, StepFailure};
use steward_provider::Liveness;
use tokio::sync::oneshot;

use super::WorkspaceActor;
use crate::messages::{Kill, LateCompletion, Probe, Shutdown};
use crate::ActorError;

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
