//! `GET /v1/workspaces/{id}/events`: lifecycle events as JSON, or as a live SSE stream
//! (`Accept: text/event-stream`): history first, then committed events as they happen.
//! A subscriber that lags behind the bus catches up from the store; nothing is skipped. A
//! client that reconnects with `Last-Event-ID` (as a browser's `EventSource` does) gets only
//! the events after that one.

use actix_web::http::header::{self, ContentType};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use steward_actors::Registry;
use steward_domain::WorkspaceId;
use steward_store::EventRecord;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::dto::{event_json, EventList};
use crate::{workspace_id, ApiError, ApiState};

/// Default and largest page.
const PAGE_DEFAULT: i64 = 1000;
const PAGE_MAX: i64 = 10_000;
/// SSE comment interval that keeps idle connections (and proxies) alive.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Query of the events route.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with `seq` greater than this.
    #[serde(default)]
    pub after: i64,
    /// At most this many (default 1000, max 10000); ignored by the stream.
    pub limit: Option<i64>,
}

/// Lifecycle events of a workspace, oldest first.
#[utoipa::path(get, path = "/v1/workspaces/{id}/events", tag = "workspaces", params(("id" = String, Path, description = "Workspace id (UUID)"), EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The `seq` of the last event a reconnecting client got (what a browser's EventSource sends): only later events are sent. With `after` too, the larger wins.")),
    responses((status = 200, description = "The events as JSON, or a live stream of server-sent events when `Accept` asks for `text/event-stream`",
            content((EventList = "application/json"), (String = "text/event-stream"))),
        (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn events(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: Result<web::Query<EventsQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let query = query.map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let after = match last_event_id(&req)? {
        Some(last) => query.after.max(last),
        None => query.after,
    };
    let wants_stream = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        return stream(state.registry.clone(), id, after).await;
    }
    let limit = query.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let events = state.registry.events(id, after, limit).await?;
    Ok(HttpResponse::Ok().json(EventList {
        events: events.iter().map(event_json).collect(),
    }))
}

/// The `Last-Event-ID` a reconnecting client sends: the `seq` of the last event it got
/// (each frame's `id:`). Absent: `None`; not a sequence number: 422.
fn last_event_id(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(value) = req.headers().get("Last-Event-ID") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidField(
                "Last-Event-ID must be the seq of an event (an integer)".to_owned(),
            )
        })
}

struct Feed {
    registry: Registry,
    id: WorkspaceId,
    /// Stored events not yet sent.
    backlog: VecDeque<EventRecord>,
    /// Whether the store has nothing newer than `backlog` (else page on before going live).
    caught_up: bool,
    live: broadcast::Receiver<Arc<EventRecord>>,
    /// Ends the stream when the daemon shuts down.
    closing: watch::Receiver<bool>,
    last: i64,
    keepalive: tokio::time::Interval,
    done: bool,
}

fn frame(e: &EventRecord) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.seq,
        e.kind,
        event_json(e)
    ))
}

async fn stream(registry: Registry, id: WorkspaceId, after: i64) -> Result<HttpResponse, ApiError> {
    // Subscribe before reading history so nothing committed in between is missed.
    let live = registry.subscribe();
    let closing = registry.closing();
    let backlog: VecDeque<EventRecord> = registry.events(id, after, PAGE_MAX).await?.into();
    let caught_up = backlog.len() < page_len();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let feed = Feed {
        registry,
        id,
        backlog,
        caught_up,
        live,
        closing,
        last: after,
        keepalive,
        done: false,
    };
    let body = futures::stream::unfold(feed, |mut feed| async move {
        let bytes = next_frame(&mut feed).await?;
        Some((Ok::<_, actix_web::Error>(bytes), feed))
    });
    Ok(HttpResponse::Ok()
        .insert_header(ContentType(mime_event_stream()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

fn mime_event_stream() -> actix_web::mime::Mime {
    "text/event-stream"
        .parse()
        .unwrap_or(actix_web::mime::TEXT_PLAIN)
}

fn page_len() -> usize {
    usize::try_from(PAGE_MAX).unwrap_or(usize::MAX)
}

async fn next_frame(feed: &mut Feed) -> Option<Bytes> {
    if feed.done || *feed.closing.borrow() {
        return None;
    }
    loop {
        if let Some(event) = feed.backlog.pop_front() {
            if event.seq > feed.last {
                feed.last = event.seq;
                return Some(frame(&event));
            }
            continue;
        }
        if !feed.caught_up {
            let page = feed
                .registry
                .events(feed.id, feed.last, PAGE_MAX)
                .await
                .ok()?;
            feed.caught_up = page.len() < page_len();
            feed.backlog = page.into();
            continue;
        }
        tokio::select! {
            received = feed.live.recv() => match received {
                Ok(event) if event.workspace_id == feed.id && event.seq > feed.last => {
                    feed.last = event.seq;
                    feed.done = event.kind == "deleted";
                    return Some(frame(&event));
                }
                Ok(_) => {}
                                Err(RecvError::Lagged(_)) => feed.caught_up = false,
                Err(RecvError::Closed) => return None,
            },
                        _ = feed.closing.changed() => return None,
            _ = feed.keepalive.tick() => return Some(Bytes::from_static(b": keepalive\n\n")),
        }
    }
}
