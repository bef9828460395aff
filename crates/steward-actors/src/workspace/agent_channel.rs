//! The agent channel of the actor: the per-generation token, the instance's environment,
//! agent calls (register, heartbeat) and restart-context deliveries.

use actix::prelude::*;
use secrecy::SecretString;
use steward_domain::{Event, Generation, RestartContext};
use steward_provider::InstanceSpec;
use steward_store::{AgentRecord, Write};

use super::WorkspaceActor;
use crate::messages::FromAgent;
use crate::{ActorError, AgentCall};

impl WorkspaceActor {
    pub(super) fn instance_spec(&self, generation: Generation) -> InstanceSpec {
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
    pub(super) fn issue_agent_token(&mut self, generation: Generation) -> AgentRecord {
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
    pub(super) fn deliver_context(&mut self, context: RestartContext, ctx: &mut Context<Self>) {
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
        let (event, extra) = match call {
            AgentCall::Authenticate => return Box::pin(async move { Ok(generation) }),
            AgentCall::Register { url } => {
                self.agent.last_heartbeat_at = Some(self.deps.clock.now());
                self.agent.url = Some(url);
                let save = Write::SaveAgent {
                    id: self.id,
                    agent: self.agent.clone(),
                };
                (Event::AgentRegistered { generation }, vec![save])
            }
            AgentCall::Heartbeat => {
                self.agent.last_heartbeat_at = Some(self.deps.clock.now());
                (Event::AgentHeartbeat { generation }, Vec::new())
            }
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
