//! What providers tell of an instance's output: lines of its stdout and stderr, in order,
//! each with the time it was written and the generation that wrote it.
//!
//! A provider answers [`crate::Provider::logs`] with the lines it still has that a
//! [`LogQuery`] selects and, when asked to follow, the lines written after them, as one
//! [`LogStream`]. It keeps what its engine keeps (docker: the current container's log),
//! or what it stores itself (process: a rotated file per workspace; sim: a short ring of
//! synthetic lines), and forgets a workspace's output when told the workspace is gone
//! ([`crate::Provider::forget_logs`]).

use futures::stream::BoxStream;
use std::collections::VecDeque;
use std::time::SystemTime;
use steward_domain::Generation;

/// Longest line kept, in bytes: a longer line is cut into pieces of at most this size (as
/// Docker's own log drivers do).
pub const MAX_LINE: usize = 16 * 1024;

/// One line of an instance's output, without its line break.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When it was written (as its provider saw it).
    pub at: SystemTime,
    /// The generation of the instance that wrote it.
    pub generation: Generation,
    /// The text (invalid UTF-8 replaced).
    pub text: String,
}

/// Which lines a caller wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last this many of the lines selected (after `since` and `generation`).
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Only lines of this generation (an error if the provider no longer has its output).
    pub generation: Option<Generation>,
    /// After the lines kept, go on with new lines as they are written, until the workspace's
    /// output ends (deleted; docker: its container is gone).
    pub follow: bool,
}

impl LogQuery {
    /// Whether `line` passes the query's filters (not `tail`).
    pub fn admits(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|since| line.at >= since)
            && self.generation.is_none_or(|g| line.generation == g)
    }

    /// The lines of `lines` (oldest first) that the query selects, `tail` included.
    pub fn select(&self, lines: impl IntoIterator<Item = LogLine>) -> Vec<LogLine> {
        let mut kept = VecDeque::new();
        for line in lines {
            if !self.admits(&line) {
                continue;
            }
            if self.tail == Some(0) {
                continue;
            }
            kept.push_back(line);
            if self.tail.is_some_and(|tail| kept.len() > tail) {
                kept.pop_front();
            }
        }
        kept.into()
    }
}

/// The lines a provider answers with: what it has, then (when following) new lines; it ends
/// when there is nothing more (not following: at once after the kept lines).
pub type LogStream = BoxStream<'static, LogLine>;

/// `kept`, then the lines `live` brings that `query` admits, until its sender is gone. A
/// follower that falls behind the channel skips what it missed.
pub(crate) fn kept_then_live(
    kept: Vec<LogLine>,
    live: tokio::sync::broadcast::Receiver<LogLine>,
    query: LogQuery,
) -> LogStream {
    use tokio::sync::broadcast::error::RecvError;
    let new = futures::stream::unfold(live, move |mut live| async move {
        loop {
            match live.recv().await {
                Ok(line) if query.admits(&line) => return Some((line, live)),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Box::pin(futures::StreamExt::chain(futures::stream::iter(kept), new))
}

/// Splits `text` into pieces of at most [`MAX_LINE`] bytes, on character boundaries.
pub(crate) fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    let mut first = true;
    std::iter::from_fn(move || {
        if rest.is_empty() && !std::mem::take(&mut first) {
            return None;
        }
        first = false;
        let mut end = rest.len().min(MAX_LINE);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, after) = rest.split_at(end);
        rest = after;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(secs: u64, generation: u64, text: &str) -> LogLine {
        LogLine {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            generation: Generation(generation),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_query_filters_by_time_and_generation_then_keeps_the_tail() {
        let lines = vec![
            line(1, 1, "a"),
            line(2, 1, "b"),
            line(3, 2, "c"),
            line(4, 2, "d"),
            line(5, 2, "e"),
        ];
        let texts = |q: LogQuery| {
            q.select(lines.clone())
                .into_iter()
                .map(|l| l.text)
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(LogQuery::default()), ["a", "b", "c", "d", "e"]);
        let tail = |n| LogQuery {
            tail: Some(n),
            ..LogQuery::default()
        };
        assert_eq!(texts(tail(2)), ["d", "e"]);
        assert!(texts(tail(0)).is_empty());
        assert_eq!(texts(tail(9)).len(), 5);
        let since = LogQuery {
            since: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2)),
            tail: Some(3),
            ..LogQuery::default()
        };
        assert_eq!(texts(since), ["c", "d", "e"]);
        let first = LogQuery {
            generation: Some(Generation(1)),
            ..LogQuery::default()
        };
        assert_eq!(texts(first), ["a", "b"]);
    }

    #[test]
    fn long_lines_are_cut_on_character_boundaries() {
        assert_eq!(pieces("").collect::<Vec<_>>(), [""]);
        assert_eq!(pieces("short").collect::<Vec<_>>(), ["short"]);
        let long = "é".repeat(MAX_LINE);
        let cut: Vec<&str> = pieces(&long).collect();
        assert!(cut.iter().all(|p| p.len() <= MAX_LINE && !p.is_empty()));
        assert_eq!(cut.concat(), long);
    }
}
