//! `[console]`: the console's knobs, read by the daemon's configuration layering.

use serde::Deserialize;
use std::time::Duration;

/// The console's configuration (`[console]` in the daemon's configuration).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether `/ui` is served at all.
    pub enabled: bool,
    /// How long a login lasts (absolute, from the login).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Login attempts allowed per minute from one client address, right or wrong.
    pub login_attempts_per_minute: u32,
    /// Workspaces per page of the list.
    pub page_size: usize,
    /// How often the overview samples the daemon's counters.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// How much sampled history the overview keeps (and charts).
    #[serde(with = "humantime_serde")]
    pub history: Duration,
}

impl Default for ConsoleConfig {
    /// The values of `config/default.toml`.
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: Duration::from_secs(12 * 3600),
            login_attempts_per_minute: 10,
            page_size: 50,
            sample_interval: Duration::from_secs(5),
            history: Duration::from_secs(15 * 60),
        }
    }
}

impl ConsoleConfig {
    /// Checks the values a daemon cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_ttl < Duration::from_secs(60) {
            return Err("console.session_ttl must be at least 1m".into());
        }
        if self.login_attempts_per_minute == 0 {
            return Err("console.login_attempts_per_minute must be at least 1".into());
        }
        if !(1..=500).contains(&self.page_size) {
            return Err("console.page_size must be between 1 and 500".into());
        }
        if self.sample_interval < Duration::from_secs(1) {
            return Err("console.sample_interval must be at least 1s".into());
        }
        if self.history < self.sample_interval * 2 {
            return Err("console.history must hold at least two samples".into());
        }
        Ok(())
    }

    /// Samples kept: `history / sample_interval`, at most 2 000.
    pub fn samples_kept(&self) -> usize {
        let n = self.history.as_millis() / self.sample_interval.as_millis().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).clamp(2, 2000)
    }
}
