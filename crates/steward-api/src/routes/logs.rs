//! `GET /v1/workspaces/{id}/logs`: the output of a workspace's instance, as plain text.
//!
//! The handler parses the query, asks the registry for the provider's lines, and writes them,
//! one per line (each after its RFC 3339 time with `timestamps=true`). A follow holds one of
//! a bounded number of permits for as long as it streams ([`LogLimits`]); it goes on across
//! restarts (a provider whose stream ends with its instance, like Docker's, is asked again
//! from the last line once the workspace's next instance is up) and ends when the client
//! leaves, the workspace is deleted, or the daemon shuts down.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use steward_actors::Registry;
use steward_domain::{Generation, WorkspaceId};
use steward_provider::{LogLine, LogQuery, LogStream};
use steward_store::EventRecord;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use crate::{workspace_id, ApiError, ApiState};

/// The bounds of the logs route.
#[derive(Clone, Debug)]
pub struct LogLimits {
    /// Largest `tail`, and the most lines of kept output one answer carries.
    pub max_tail: usize,
    /// Follows in progress at once, beyond which a follow is refused with 429.
    followers: Arc<Semaphore>,
    max_followers: usize,
}

impl LogLimits {
    /// At most `max_tail` lines of kept output per answer and `max_followers` follows at once.
    pub fn new(max_tail: usize, max_followers: usize) -> Self {
        Self {
            max_tail,
            followers: Arc::new(Semaphore::new(max_followers)),
            max_followers,
        }
    }
}

impl Default for LogLimits {
    /// The defaults of `config/default.toml` (`[logs]`).
    fn default() -> Self {
        Self::new(10_000, 64)
    }
}

/// Query of the logs route.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only the last this many lines of the output kept (at most `logs.max_tail`, 10000 by
    /// default, which is also how many an answer carries without it).
    #[param(minimum = 0)]
    pub tail: Option<u64>,
    /// Only lines written at or after this time (RFC 3339, e.g. `2026-12-08T10:00:00Z`).
    pub since: Option<String>,
    /// Begin each line with its RFC 3339 time (UTC, nanoseconds) and a space.
    #[serde(default)]
    pub timestamps: bool,
    /// After the output kept, stream new lines as they are written, until the client leaves
    /// or the workspace is deleted (at most `logs.max_followers` at once: 429 beyond).
    #[serde(default)]
    pub follow: bool,
    /// Only the output of this generation, while the provider still has it (404
    /// `OUTPUT_GONE` once it does not).
    #[param(minimum = 1)]
    pub generation: Option<u64>,
}

/// The output of a workspace's instance: stdout and stderr interleaved in order, oldest first.
#[utoipa::path(get, path = "/v1/workspaces/{id}/logs", tag = "workspaces",
    params(("id" = String, Path, description = "Workspace id (UUID)"), LogsQuery),
    responses(
        (status = 200, description = "The lines, one per line of text (`follow=true`: streamed as they are written)",
            content_type = "text/plain; charset=utf-8", body = String),
        (status = 404, description = "No such workspace (`NOT_FOUND`), or the generation's output is no longer kept (`OUTPUT_GONE`)", body = crate::ErrorBody),
        (status = 429, description = "Too many follows at once (`TOO_MANY_FOLLOWERS`)", body = crate::ErrorBody),
        (status = 502, description = "The provider could not be read", body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn logs(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: Result<web::Query<LogsQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let query = query.map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let limits = &state.logs;
    let tail = match query.tail {
        Some(tail) if tail > limits.max_tail as u64 => {
            return Err(ApiError::InvalidField(format!(
                "tail must be at most {}",
                limits.max_tail
            )))
        }
        Some(tail) => usize::try_from(tail).unwrap_or(limits.max_tail),
        None => limits.max_tail,
    };
    let since = query
        .since
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(ApiError::InvalidField)?;
    let generation = match query.generation {
        Some(0) => {
            return Err(ApiError::InvalidField(
                "generation must be at least 1".into(),
            ))
        }
        other => other.map(Generation),
    };
    let wanted = LogQuery {
        tail: Some(tail),
        since,
        generation,
        follow: query.follow,
    };
    let permit = if query.follow {
        let permit = Arc::clone(&limits.followers)
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::TooManyFollowers(format!(
                    "{} logs are followed already, the most this daemon serves; retry later",
                    limits.max_followers
                ))
            })?;
        Some(permit)
    } else {
        None
    };
    // Subscribed before the first read, so that no transition of the workspace is missed.
    let events = state.registry.subscribe();
    let lines = state.registry.logs(id, wanted).await?;
    let timestamps = query.timestamps;
    let response = HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header(("Cache-Control", "no-cache"))
        .take();
    let mut response = response;
    let Some(permit) = permit else {
        let body = lines.map(move |line| Ok::<_, actix_web::Error>(render(&line, timestamps)));
        return Ok(response.streaming(body));
    };
    let follow = Follow {
        registry: state.registry.clone(),
        id,
        generation,
        since,
        lines: Some(lines),
        last: None,
        events,
        closing: state.registry.closing(),
        _permit: permit,
    };
    let body = futures::stream::unfold(follow, move |mut follow| async move {
        let line = follow.next().await?;
        Some((Ok::<_, actix_web::Error>(render(&line, timestamps)), follow))
    });
    Ok(response.streaming(body))
}

/// One line of the answer.
fn render(line: &LogLine, timestamps: bool) -> Bytes {
    let mut text = String::with_capacity(line.text.len() + 32);
    if timestamps {
        text.push_str(&humantime::format_rfc3339_nanos(line.at).to_string());
        text.push(' ');
    }
    text.push_str(&line.text);
    text.push('\n');
    Bytes::from(text)
}

/// A follow in progress.
struct Follow {
    registry: Registry,
    id: WorkspaceId,
    generation: Option<Generation>,
    since: Option<SystemTime>,
    /// The provider's stream, while it lasts.
    lines: Option<LogStream>,
    /// Time of the last line sent.
    last: Option<SystemTime>,
    /// The daemon's events: when the workspace's next instance is up, or it is deleted.
    events: broadcast::Receiver<Arc<EventRecord>>,
    closing: watch::Receiver<bool>,
    /// Held for as long as the follow streams.
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    async fn next(&mut self) -> Option<LogLine> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if let Some(lines) = self.lines.as_mut() {
                tokio::select! {
                    line = lines.next() => match line {
                        Some(line) => {
                            self.last = Some(line.at);
                            return Some(line);
                        }
                        None => self.lines = None,
                    },
                    _ = self.closing.changed() => return None,
                }
                continue;
            }
            // The provider's stream ended: the workspace is gone, or its instance is (a
            // container stopped); then it is read again once the next instance is up.
            if !self.registry.contains(self.id) {
                return None;
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) if event.workspace_id == self.id => match event.kind.as_str() {
                        "deleted" => return None,
                        "provision_succeeded" => self.reopen().await?,
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.reopen().await?,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.closing.changed() => return None,
            }
        }
    }

    /// Asks the provider again, from just after the last line sent.
    async fn reopen(&mut self) -> Option<()> {
        let since = match (self.last, self.since) {
            (Some(last), _) => Some(last + Duration::from_nanos(1)),
            (None, since) => since,
        };
        let query = LogQuery {
            tail: None,
            since,
            generation: self.generation,
            follow: true,
        };
        match self.registry.logs(self.id, query).await {
            Ok(lines) => {
                self.lines = Some(lines);
                Some(())
            }
            Err(error) => {
                tracing::debug!(workspace = %self.id, %error, "a followed log ends");
                None
            }
        }
    }
}

/// An RFC 3339 time: `2026-12-08T10:00:00Z`, with optional fractional seconds, and `Z` or a
/// `±HH:MM` offset.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let invalid = || format!("since: {text:?} is not an RFC 3339 time (e.g. 2026-12-08T10:00:00Z)");
    let bytes = text.as_bytes();
    let (utc, offset) = match bytes.len().checked_sub(6).map(|i| (i, bytes[i])) {
        Some((i, sign @ (b'+' | b'-'))) if bytes[i + 3] == b':' && i > 10 => {
            let hours: u64 = text[i + 1..i + 3].parse().map_err(|_| invalid())?;
            let minutes: u64 = text[i + 4..].parse().map_err(|_| invalid())?;
            if hours > 23 || minutes > 59 {
                return Err(invalid());
            }
            let offset = Duration::from_secs(hours * 3600 + minutes * 60);
            (format!("{}Z", &text[..i]), Some((sign, offset)))
        }
        _ => (text.to_owned(), None),
    };
    if !utc.ends_with(['Z', 'z']) || utc.as_bytes().get(10) != Some(&b'T') {
        return Err(invalid());
    }
    let at = humantime::parse_rfc3339(&utc.replace('z', "Z")).map_err(|_| invalid())?;
    // Local time minus its offset is UTC.
    Ok(match offset {
        Some((b'+', offset)) => at.checked_sub(offset).ok_or_else(invalid)?,
        Some((_, offset)) => at.checked_add(offset).ok_or_else(invalid)?,
        None => at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_times_with_z_or_an_offset() {
        let utc = parse_rfc3339("2026-12-08T10:00:00Z").expect("Z");
        assert_eq!(parse_rfc3339("2026-12-08T12:30:00+02:30"), Ok(utc));
        assert_eq!(parse_rfc3339("2026-12-08T09:00:00-01:00"), Ok(utc));
        assert_eq!(
            parse_rfc3339("2026-12-08T10:00:00.5Z"),
            Ok(utc + Duration::from_millis(500))
        );
        for bad in [
            "",
            "yesterday",
            "2026-12-08",
            "2026-12-08 10:00:00Z",
            "2026-12-08T10:00:00",
            "2026-12-08T10:00:00+25:00",
            "2026-13-08T10:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_line_is_its_text_or_its_time_then_its_text() {
        let line = LogLine {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
            generation: Generation(1),
            text: "hello".to_owned(),
        };
        assert_eq!(render(&line, false), Bytes::from("hello\n"));
        assert_eq!(
            render(&line, true),
            Bytes::from("1970-01-01T00:00:01.500000000Z hello\n")
        );
    }
}
