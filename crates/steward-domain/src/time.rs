//! Wall-clock instants as plain numbers, and the [`Tick`] that carries time and jitter in.

use std::time::Duration;

/// Milliseconds since the Unix epoch. The machine never reads a clock: every instant it sees
/// came in through a [`Tick`] or a persisted state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This instant moved forward by `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }
}

/// Everything from the outside world that one step of the machine may use.
#[derive(Clone, Copy, Debug)]
pub struct Tick {
    /// Now.
    pub now: Timestamp,
    /// A uniform random number in `[0, 1)`, used for backoff jitter.
    pub jitter: f64,
}

impl Tick {
    /// A tick at `now` with no jitter (handy in tests).
    pub fn at(now: Timestamp) -> Self {
        Self { now, jitter: 0.0 }
    }
}
