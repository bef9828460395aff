//! Log lines that can come in floods — a store failure answered to every request, actors
//! restarting under an overload, malformed requests from a client — are logged once, then
//! summarized: the first occurrence since the last summary is logged in full by its caller;
//! the others are counted, and [`flush_every`] logs one line per interval with their count
//! and the last example. A storm costs a few lines, and a client cannot fill the log.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::Level;

/// One kind of event whose floods are summarized. Meant to be a `static`.
pub struct LogSummary {
    level: Level,
    what: &'static str,
    tally: Mutex<Tally>,
}

struct Tally {
    /// An occurrence was logged in full since the last summary: the next ones are counted.
    logged: bool,
    since: Option<Instant>,
    counted: u64,
    last: String,
}

/// Longest example kept, in characters (examples come from clients too).
const EXAMPLE_MAX: usize = 200;

impl LogSummary {
    /// Summaries are logged at `level`, as "`what`: N more in the last …".
    pub const fn new(level: Level, what: &'static str) -> LogSummary {
        LogSummary {
            level,
            what,
            tally: Mutex::new(Tally {
                logged: false,
                since: None,
                counted: 0,
                last: String::new(),
            }),
        }
    }

    /// Records an occurrence. `true`: the caller logs it in full (the first since the last
    /// summary); `false`: it was counted, with `example` as the latest (never a secret).
    pub fn admit(&self, example: impl std::fmt::Display) -> bool {
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        if !tally.logged {
            tally.logged = true;
            tally.since = Some(Instant::now());
            return true;
        }
        tally.counted += 1;
        tally.last = example.to_string().chars().take(EXAMPLE_MAX).collect();
        false
    }

    /// Logs what was counted since the last call, if anything, and starts over; the number
    /// of occurrences it summarized.
    pub fn flush(&self) -> u64 {
        let (counted, last, since) = {
            let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            let since = tally.since.take();
            tally.logged = false;
            (
                std::mem::take(&mut tally.counted),
                std::mem::take(&mut tally.last),
                since,
            )
        };
        if counted == 0 {
            return 0;
        }
        let over = format!(
            "{:.1}s",
            since.map(|s| s.elapsed()).unwrap_or_default().as_secs_f64()
        );
        let what = self.what;
        match self.level {
            Level::ERROR => {
                tracing::error!(count = counted, within = over, last = %last, "{what}: {counted} more")
            }
            Level::WARN => {
                tracing::warn!(count = counted, within = over, last = %last, "{what}: {counted} more")
            }
            Level::INFO => {
                tracing::info!(count = counted, within = over, last = %last, "{what}: {counted} more")
            }
            _ => {
                tracing::debug!(count = counted, within = over, last = %last, "{what}: {counted} more")
            }
        }
        counted
    }
}

/// The summaries of this crate.
pub static SUMMARIES: &[&LogSummary] = &[&crate::workspace::ACTOR_RESTARTS];

/// Flushes `summaries` every `interval`, on a thread of its own, for the life of the process.
pub fn flush_every(interval: Duration, summaries: Vec<&'static LogSummary>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("steward-log-summaries".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            for summary in &summaries {
                summary.flush();
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_the_rest_counted_until_the_next_summary() {
        static FLOOD: LogSummary = LogSummary::new(Level::WARN, "test flood");
        assert!(FLOOD.admit("first"), "the first is logged in full");
        for i in 0..1000 {
            assert!(!FLOOD.admit(format!("example {i}")));
        }
        assert_eq!(FLOOD.flush(), 1000, "one summary line for the rest");
        assert_eq!(FLOOD.flush(), 0, "nothing to summarize");
        assert!(
            FLOOD.admit("again"),
            "after a summary, the next is logged in full"
        );
        assert!(!FLOOD.admit("x".repeat(10_000)));
        assert_eq!(FLOOD.tally.lock().expect("tally").last.len(), EXAMPLE_MAX);
    }
}
