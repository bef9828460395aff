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
    #[param(minimum = 0, maximum = 10000)]
    pub tail: Option<u64>,
    /// Only lines written at or after this time (RFC 3339, e.g. `2026-12-08T10:00:00Z`).
    #[param(value_type = Option<String>, format = DateTime)]
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
    pub generation: Option<i64>,
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
        Some(g) if g < 1 => {
            return Err(ApiError::InvalidField(
                "generation must be at least 1".into(),
            ))
        }
        other => other.map(|g| Generation(g.unsigned_abs())),
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

/// An RFC 3339 time (`date-time`): `2026-12-08T10:00:00Z`, with optional fractional seconds
/// (nanoseconds kept), `Z` or a `±HH:MM` offset, `T`/`Z` in either case; any year from 0000.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let invalid = || format!("since: {text:?} is not an RFC 3339 time (e.g. 2026-12-08T10:00:00Z)");
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20 || separators.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't') {
        return Err(invalid());
    }
    let field = |from, len| digits(from, len).ok_or_else(invalid);
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (1..=12).contains(&month)
        && day >= 1
        && usize::try_from(month - 1).is_ok_and(|m| day <= month_days[m])
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !valid {
        return Err(invalid());
    }
    // Fractional seconds, then the offset.
    let mut at = 19;
    let mut nanos: i64 = 0;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(invalid());
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match &b[at..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (field(at + 1, 2)?, field(at + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(invalid());
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return Err(invalid()),
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // A leap second (:60) counts as the first instant of the next minute.
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    let whole = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)
    };
    at.and_then(|t| t.checked_add(Duration::from_nanos(nanos.unsigned_abs())))
        .ok_or_else(invalid)
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
        assert_eq!(parse_rfc3339("2026-12-08t10:00:00z"), Ok(utc));
        assert_eq!(
            parse_rfc3339("2026-12-08T10:00:00.123456789123Z"),
            Ok(utc + Duration::from_nanos(123_456_789))
        );
        assert_eq!(
            humantime::parse_rfc3339("2024-02-29T23:59:59Z").ok(),
            parse_rfc3339("2024-02-29T23:59:59Z").ok()
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            Ok(SystemTime::UNIX_EPOCH - Duration::from_secs(1))
        );
        assert!(parse_rfc3339("0000-01-01T00:00:00+23:59").is_ok());
        for bad in [
            "",
            "yesterday",
            "2026-12-08",
            "2026-12-08 10:00:00Z",
            "2026-12-08T10:00:00",
            "2026-12-08T10:00:00+25:00",
            "2026-13-08T10:00:00Z",
            "2025-02-29T10:00:00Z",
            "2026-12-08T10:00:00.Z",
            "2026-12-08T10:00:00+0200",
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
