//! What every workspace actor shares: the store, the providers, the policy, the clock, the
//! event bus, and the settings of the agent channel. Built once by the daemon.

use std::sync::Arc;
use std::time::Duration;
use steward_domain::Policy;
use steward_provider::Providers;
use steward_store::Store;

use crate::{Clock, EventBus};

/// What every workspace actor shares.
pub struct Deps {
    /// Durable state.
    pub store: Store,
    /// Configured providers.
    pub providers: Providers,
    /// Lifecycle policy.
    pub policy: Arc<Policy>,
    /// Source of `now`.
    pub clock: Clock,
    /// Committed events for live subscribers.
    pub bus: EventBus,
    /// Most messages waiting for one actor.
    pub mailbox_capacity: usize,
    /// The URL agents call back (`STEWARD_CONTROL_URL`).
    pub control_url: String,
    /// HTTP client for calls to agents (restart contexts).
    pub http: reqwest::Client,
    /// How long a restart context delivery may take before `context_timeout`.
    pub context_timeout: Duration,
    /// How often agents heartbeat (`STEWARD_HEARTBEAT_INTERVAL`).
    pub heartbeat_interval: Duration,
}
