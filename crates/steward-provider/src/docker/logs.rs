//! A workspace's output from the engine: the log of its container (stdout and stderr, with
//! the engine's timestamps), read through the engine's log endpoint.
//!
//! The engine keeps a container's log as long as the container: a stopped workspace's
//! container still has its last output, a restart's new container starts a new log (the old
//! generation's output is gone with its container). A followed log is the engine's stream;
//! it ends when the container stops.

use super::{short, DockerProvider};
use crate::logs::{pieces, LogLine, LogQuery, LogStream};
use crate::ProviderError;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::{Stream, StreamExt};
use std::time::SystemTime;
use steward_domain::{Generation, WorkspaceId};

impl DockerProvider {
    /// See [`crate::Provider::logs`]. Flow: find the workspace's container (one list call),
    /// read its log with timestamps (the kept lines: `since` to the engine in whole seconds,
    /// then exactly here, then `tail`), and, when following, a second request that follows
    /// from the last line read (lines at or before it are skipped).
    pub(super) async fn container_logs(
        &self,
        id: WorkspaceId,
        query: LogQuery,
    ) -> Result<LogStream, ProviderError> {
        let Some((container, generation)) = self.ours(id, "logs").await? else {
            if query.generation.is_some() {
                return Err(gone(query.generation));
            }
            return Ok(Box::pin(futures::stream::empty()));
        };
        if query.generation.is_some_and(|g| g != generation) {
            return Err(gone(query.generation));
        }
        let docker = self
            .host
            .engine
            .client_for_stream()
            .await
            .map_err(|f| self.host.engine.error(f, "reading a container's log"))?;
        let options = |follow: bool, since: Option<SystemTime>| LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            since: since.map_or(0, unix_seconds),
            until: 0,
            timestamps: true,
            tail: "all".to_owned(),
        };
        // The kept lines: read whole (the engine's `tail` counts before our exact `since`).
        let mut kept = Vec::new();
        let mut read = std::pin::pin!(lines(
            docker.logs(&container, Some(options(false, query.since))),
            generation
        ));
        while let Some(line) = read.next().await {
            match line {
                Ok(line) => kept.push(line),
                Err(error) => {
                    return Err(ProviderError::Engine(format!(
                        "reading the log of container {}: {error}",
                        short(&container)
                    )))
                }
            }
        }
        // The engine copies stdout and stderr apart: its timestamps order them.
        kept.sort_by_key(|l| l.at);
        let last = kept.last().map(|l| l.at);
        let kept = futures::stream::iter(query.select(kept));
        if !query.follow {
            return Ok(Box::pin(kept));
        }
        let after = last.or(query.since);
        let followed = lines(
            docker.logs(&container, Some(options(true, after))),
            generation,
        )
        .take_while(move |line| {
            if let Err(error) = line {
                tracing::debug!(workspace = %id, %error, "the followed log of a container ended");
            }
            std::future::ready(line.is_ok())
        })
        .filter_map(move |line| {
            let line = line.ok().filter(|l| {
                last.is_none_or(|last| l.at > last) && query.since.is_none_or(|s| l.at >= s)
            });
            std::future::ready(line)
        });
        Ok(Box::pin(kept.chain(followed)))
    }
}

fn gone(generation: Option<Generation>) -> ProviderError {
    let generation = generation.map_or_else(String::new, |g| format!(" of generation {g}"));
    ProviderError::OutputGone(format!(
        "the output{generation} is no longer kept (its container is gone)"
    ))
}

/// Whole seconds since the epoch, rounded down (what the engine's `since` takes).
fn unix_seconds(at: SystemTime) -> i32 {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// The engine's log frames as lines: each frame is `<RFC 3339 time> <text>\n` (one line, cut
/// by the engine at 16 KiB); a frame with no readable time gets the time it was read.
fn lines(
    frames: impl Stream<Item = Result<LogOutput, bollard::errors::Error>>,
    generation: Generation,
) -> impl Stream<Item = Result<LogLine, String>> {
    frames.flat_map(move |frame| {
        let lines = match frame {
            Ok(frame) => {
                let bytes = frame.into_bytes();
                let text = String::from_utf8_lossy(&bytes);
                parse(&text, generation).into_iter().map(Ok).collect()
            }
            Err(error) => vec![Err(error.to_string())],
        };
        futures::stream::iter(lines)
    })
}

fn parse(frame: &str, generation: Generation) -> Vec<LogLine> {
    let mut out = Vec::new();
    for raw in frame.split_inclusive('\n') {
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (at, text) = match raw.split_once(' ') {
            Some((time, text)) => match humantime::parse_rfc3339(time) {
                Ok(at) => (at, text),
                Err(_) => (SystemTime::now(), raw),
            },
            None => match humantime::parse_rfc3339(raw) {
                Ok(at) => (at, ""),
                Err(_) => (SystemTime::now(), raw),
            },
        };
        out.extend(pieces(text).map(|piece| LogLine {
            at,
            generation,
            text: piece.to_owned(),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn engine_frames_become_lines_with_their_times() {
        let lines = parse(
            "2026-12-08T01:02:03.123456789Z hello world\n",
            Generation(3),
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "hello world");
        assert_eq!(lines[0].generation, Generation(3));
        let at = lines[0]
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch");
        assert_eq!(at.subsec_nanos(), 123_456_789);
        assert_eq!(parse("2026-12-08T01:02:03Z \n", Generation(1))[0].text, "");
        assert_eq!(
            parse("no time here\n", Generation(1))[0].text,
            "no time here"
        );
        assert_eq!(
            unix_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(2500)),
            2
        );
    }
}
