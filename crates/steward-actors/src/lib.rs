//! The imperative shell around the lifecycle machines: one supervisor actor per workspace,
//! the [`Registry`] that owns them, and the messages they answer.
//!
//! A [`WorkspaceActor`] owns one `steward_domain::Machine` by value. Every intent, probe
//! report and provider completion for the workspace is processed in its mailbox, one at a
//! time: the gate is structural, there is no lock. Provider calls run in the background and
//! their completions re-enter the actor tagged with the operation id they belong to.
//!
//! Dependencies run one way: the registry knows actors (through the `directory`), starts the
//! `probes` and drains what actors tell it; an actor knows only a `supervisor` handle (a
//! channel), never the registry.
//!
//! This crate decides nothing about lifecycles (the domain does) and knows nothing of HTTP
//! (the API crate maps its views to DTOs). It never awaits a reply from itself.

mod agent;
mod bus;
mod clock;
mod deps;
mod directory;
mod error;
pub mod failpoints;
pub mod log_summary;
mod messages;
mod probes;
mod records;
mod registry;
mod supervisor;
mod telemetry;
mod workspace;

pub use agent::token_claims;
pub use bus::EventBus;
pub use clock::Clock;
pub use deps::Deps;
pub use error::ActorError;
pub use messages::{
    ActorView, AgentCall, HealthView, Intent, IntentReply, LateCompletion, NewWorkspace, Waited,
    WorkspaceView,
};
pub use registry::{Registry, RegistryOptions};
pub use workspace::WorkspaceActor;
