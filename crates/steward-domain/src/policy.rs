//! The knobs of the lifecycle, as the machine sees them (config parsing lives elsewhere).

use crate::BackoffPolicy;
use std::time::Duration;

/// Timing and threshold policy shared by every machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Health restarts are dropped within this long after a cycle *started*.
    pub debounce_window: Duration,
    /// Health restarts are dropped within this long after a cycle *ended*.
    pub settle_window: Duration,
    /// A start step that takes longer than this fails with `provision_timeout`.
    pub provision_timeout: Duration,
    /// A stop or remove step that takes longer than this fails with `stop_timeout`.
    pub stop_timeout: Duration,
    /// A `starting` instance whose agent does not register within this long fails with
    /// `boot_timeout`.
    pub boot_timeout: Duration,
    /// Consecutive dead reports needed for a health restart.
    pub failure_threshold: u32,
    /// An agent that registered but has not sent a heartbeat for this long counts as dead.
    pub heartbeat_timeout: Duration,
    /// Retry and breaker policy.
    pub backoff: BackoffPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            debounce_window: Duration::from_secs(60),
            settle_window: Duration::from_secs(10),
            provision_timeout: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(60),
            boot_timeout: Duration::from_secs(120),
            failure_threshold: 2,
            heartbeat_timeout: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
        }
    }
}
