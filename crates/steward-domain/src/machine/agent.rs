//! The agent inside an instance: its registration, its heartbeats, and the restart context
//! it is owed.
//!
//! Flow: the agent of the generation being started or up registers (`starting` → `running`
//! when readiness waits for it); each heartbeat is a sign of life (an agent silent for
//! `heartbeat_timeout` counts as dead, see `health`); the first heartbeat of a restarted
//! generation's registered agent proves it fresh, and the machine hands it the restart
//! context ([`Effect::DeliverContext`]). Guarantees: only the latest generation, up or being
//! started, may speak for the workspace; anything else is stale and changes nothing but a
//! counter; a context goes to exactly one agent, once.

use super::{Effect, Machine, RecordKind, StaleResult, Step};
use crate::{Generation, Phase, Timestamp};

impl Machine {
    /// A restored machine learns, without an event, that the agent of `generation` had
    /// registered before the restart; it gets a full heartbeat timeout from `now` to be heard
    /// from again. Ignored unless `generation` is the one up.
    pub fn agent_known(&mut self, generation: Generation, now: Timestamp) {
        if generation == self.state.observed_generation && generation.0 > 0 {
            self.agent = Some((generation, now));
        }
    }

    /// Whether the agent of `generation` may speak for the workspace: only the latest
    /// generation, while its instance is up or being started (an agent may register before
    /// its start step reports back). Once a new cycle starts, the replaced agent is
    /// superseded.
    pub fn accepts_agent(&self, generation: Generation) -> bool {
        generation == self.state.generation
            && (generation == self.state.observed_generation || self.starting(generation))
    }

    /// Whether the start step of `generation` is in flight.
    fn starting(&self, generation: Generation) -> bool {
        self.op
            .is_some_and(|op| op.step == Step::Start && op.generation == generation)
    }

    pub(super) fn on_agent_registered(
        &mut self,
        generation: Generation,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
        if self.starting(generation) {
            // The agent came up before its start step reported back: remember it; the
            // completed start goes straight to running.
            self.agent = Some((generation, now));
            self.record(fx, RecordKind::AgentRegistered);
            return;
        }
        if generation != self.state.observed_generation || !self.instance_up {
            self.stale(StaleResult::Registration(generation), fx);
            return;
        }
        self.agent = Some((generation, now));
        self.record(fx, RecordKind::AgentRegistered);
        if self.state.phase == Phase::Starting {
            self.become_running(now, fx);
        }
    }

    pub(super) fn on_agent_heartbeat(
        &mut self,
        generation: Generation,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
        let up = generation == self.state.observed_generation && self.instance_up;
        if self.agent.is_none() && up {
            // Its registration predates a restart of the daemon or actor: the authenticated
            // heartbeat of the generation up is proof enough.
            self.agent = Some((generation, now));
            if self.state.phase == Phase::Starting {
                self.become_running(now, fx);
            }
        }
        if let Some((registered, last)) = self.agent.as_mut() {
            if *registered == generation {
                *last = now;
                // Registered and heard from after the cycle started: it is fresh.
                if let Some(context) = self.context_due.filter(|c| c.generation == generation) {
                    self.context_due = None;
                    fx.push(Effect::DeliverContext(context));
                }
                return;
            }
        }
        self.stale(StaleResult::Heartbeat(generation), fx);
    }
}
