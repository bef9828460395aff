//! Waiting for an intent's outcome: the `?wait=DURATION` of every intent route, and
//! `GET /v1/workspaces/{id}/wait?for=…&timeout=…`.
//!
//! A wait is parsed and checked before its intent is submitted, so a bad one applies
//! nothing. The intent is answered once it has settled (the registry wakes the request on
//! the workspace's own transitions), with its usual body plus `settled` and the workspace
//! document then; or, if the time runs out first, with the status it has without a wait and
//! `settled: false`. Nothing is cancelled either way.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use steward_actors::Waited;
use steward_domain::Phase;

use crate::dto::Workspace;
use crate::{workspace_id, ApiError, ApiState};

/// The query of an intent route.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer once the intent has settled, waiting at most this long: a whole number of
    /// `ms`, `s` or `m` (`250ms`, `30s`, `5m`), at most `http.wait_max`. Without it, the
    /// answer comes as soon as the intent is committed.
    pub wait: Option<String>,
}

impl WaitQuery {
    /// The wait asked for, checked (`None`: no wait).
    pub fn parse(
        query: Result<web::Query<WaitQuery>, actix_web::Error>,
        max: Duration,
    ) -> Result<Option<Duration>, ApiError> {
        let query = query.map_err(|e| ApiError::InvalidField(e.to_string()))?;
        query
            .wait
            .as_deref()
            .map(|raw| duration("wait", raw, max))
            .transpose()
    }
}

/// A duration of the wait parameters: `0` or a whole number without leading zeros, then
/// `ms`, `s` or `m`; at most `max`.
pub fn duration(field: &str, raw: &str, max: Duration) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::InvalidField(format!(
            "{field} must be a whole number of ms, s or m (such as 250ms, 30s, 5m), at most {}",
            humantime::format_duration(max)
        ))
    };
    let digits = raw.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = raw.split_at(digits);
    if number.is_empty() || (number.len() > 1 && number.starts_with('0')) || number.len() > 12 {
        return Err(invalid());
    }
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let wait = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(invalid()),
    };
    if wait > max {
        return Err(invalid());
    }
    Ok(wait)
}

/// The regular expression of exactly the durations [`duration`] accepts with `max`.
pub fn duration_pattern(max: Duration) -> String {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    format!(
        "^(?:(?:{})ms|(?:{})s|(?:{})m)$",
        up_to(ms),
        up_to(ms / 1000),
        up_to(ms / 60_000)
    )
}

/// A regular expression of the whole numbers `0..=n` written without leading zeros.
fn up_to(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let k = digits.len();
    let mut alternatives = vec!["0".to_owned()];
    if k >= 2 {
        alternatives.push(if k == 2 {
            "[1-9]".to_owned()
        } else {
            format!("[1-9][0-9]{{0,{}}}", k - 2)
        });
    }
    for (i, &d) in digits.iter().enumerate() {
        let low = u8::from(i == 0);
        if d > low {
            let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
            let rest = k - i - 1;
            let tail = if rest == 0 {
                String::new()
            } else {
                format!("[0-9]{{{rest}}}")
            };
            alternatives.push(format!("{prefix}[{low}-{}]{tail}", d - 1));
        }
    }
    if n > 0 {
        alternatives.push(n.to_string());
    }
    alternatives.join("|")
}

/// An answer after a wait: the usual body, whether the intent settled, and the workspace
/// then (`null` once it is gone).
#[derive(Serialize)]
pub struct WaitedAnswer<T: Serialize> {
    #[serde(flatten)]
    answer: T,
    settled: bool,
    workspace: Option<Workspace>,
}

impl<T: Serialize> WaitedAnswer<T> {
    pub fn new(answer: T, waited: Waited) -> Self {
        Self {
            answer,
            settled: waited.settled.is_some(),
            workspace: waited.workspace.map(Workspace::from),
        }
    }
}

/// Answers `answer` as it is (`plain`, the status without a wait), or after `waited`: `200`
/// (or `settled_status`) if the intent settled, else `plain`.
pub fn answer<T: Serialize>(
    plain: actix_web::http::StatusCode,
    settled_status: actix_web::http::StatusCode,
    answer: T,
    waited: Option<Waited>,
) -> HttpResponse {
    match waited {
        None => HttpResponse::build(plain).json(answer),
        Some(waited) => {
            let status = if waited.settled.is_some() {
                settled_status
            } else {
                plain
            };
            HttpResponse::build(status).json(WaitedAnswer::new(answer, waited))
        }
    }
}

/// What `GET …/wait` waits for.
#[derive(Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// The latest generation (or a later one) running by its readiness rule, or a cycle of
    /// it failed, or the workspace meant to stay stopped or deleted.
    Running,
    /// Stopped (or its stop failed, or the workspace meant to run).
    Stopped,
    /// Gone.
    Deleted,
}

/// The query of `GET …/wait`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitForQuery {
    /// What to wait for.
    #[serde(rename = "for")]
    #[param(rename = "for", inline)]
    pub goal: WaitFor,
    /// Wait at most this long (default and most: `http.wait_max`): a whole number of `ms`,
    /// `s` or `m`.
    pub timeout: Option<String>,
}

/// The answer of `GET …/wait`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WaitAnswer {
    /// Whether what was waited for happened (else the time ran out).
    pub settled: bool,
    /// The workspace then; `null` once it is gone.
    pub workspace: Option<Workspace>,
}

/// Wait for a workspace to be running, stopped or gone: answers once it is (or once it will
/// not be without another intent: a cycle of its latest generation failed, or it is meant
/// to stay stopped or to run), or when `timeout` runs out (`settled: false`). Always `200`.
#[utoipa::path(get, path = "/v1/workspaces/{id}/wait", tag = "lifecycle",
    params(("id" = String, Path, description = "Workspace id (UUID)"), WaitForQuery),
    responses((status = 200, body = WaitAnswer), (status = 404, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn wait(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: Result<web::Query<WaitForQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let query = query.map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let timeout = match &query.timeout {
        Some(raw) => duration("timeout", raw, state.wait_max)?,
        None => state.wait_max,
    };
    let phase = match query.goal {
        WaitFor::Running => Phase::Running,
        WaitFor::Stopped => Phase::Stopped,
        WaitFor::Deleted => Phase::Deleted,
    };
    let waited = state.registry.wait_for(id, phase, timeout).await?;
    Ok(HttpResponse::Ok().json(WaitAnswer {
        settled: waited.settled.is_some(),
        workspace: waited.workspace.map(Workspace::from),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn durations_are_whole_numbers_of_a_unit_up_to_the_maximum() {
        for (raw, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", MAX),
            ("0s", Duration::ZERO),
            ("300000ms", MAX),
        ] {
            assert_eq!(duration("wait", raw, MAX).ok(), Some(expected), "{raw}");
        }
        for raw in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "030s",
            " 30s",
            "30s ",
            "30S",
            "1h",
            "6m",
            "301s",
            "300001ms",
            "99999999999999999999s",
            "1m30s",
        ] {
            assert!(
                duration("wait", raw, MAX).is_err(),
                "{raw:?} must be refused"
            );
        }
    }

    #[test]
    fn the_pattern_accepts_exactly_what_the_parser_accepts() {
        let pattern = regex_lite::Regex::new(&duration_pattern(MAX)).expect("a regex");
        for n in (0..=400_000u64)
            .step_by(997)
            .chain([0, 1, 9, 10, 299, 300, 301, 300_000, 300_001])
        {
            for unit in ["ms", "s", "m"] {
                let raw = format!("{n}{unit}");
                assert_eq!(
                    pattern.is_match(&raw),
                    duration("wait", &raw, MAX).is_ok(),
                    "{raw}"
                );
            }
        }
        assert!(!pattern.is_match("030s"));
    }
}
