//! The daemon's clock: wall time anchored once, advanced by tokio's monotonic clock, so that
//! tests with paused tokio time drive every timer and timestamp deterministically.

use std::time::{SystemTime, UNIX_EPOCH};
use steward_domain::Timestamp;
use tokio::time::Instant;

/// Source of `now` for the machines.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_start: i64,
    mono_at_start: Instant,
}

impl Clock {
    /// A clock anchored at the current wall time.
    pub fn system() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Self {
            wall_at_start: i64::try_from(wall).unwrap_or(i64::MAX),
            mono_at_start: Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.mono_at_start.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.wall_at_start.saturating_add(elapsed))
    }
}
