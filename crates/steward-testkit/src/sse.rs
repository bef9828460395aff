//! Following a workspace's lifecycle events live: `GET /v1/workspaces/{id}/events` with
//! `Accept: text/event-stream`, parsed frame by frame and stamped with when each was read.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::Api;

/// One event as the stream delivered it.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    /// When it was read (monotonic clock).
    pub received: Instant,
    /// The frame's `id:` (the event's `seq`).
    pub id: Option<String>,
    /// The frame's `event:` (the event's type).
    pub event: Option<String>,
    /// The frame's `data:`, the event itself.
    pub data: Value,
}

impl StreamEvent {
    /// The event's `type` (`provision_succeeded`, ...).
    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap_or_default()
    }

    /// The generation it is about (0 if it names none).
    pub fn generation(&self) -> u64 {
        self.data["generation"].as_u64().unwrap_or_default()
    }
}

/// Splits the complete frames (each ends with a blank line) off the front of `buffer`;
/// frames without data (keep-alive comments) are skipped. `\r\n` line ends are accepted.
pub fn take_frames(buffer: &mut Vec<u8>, received: Instant) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    loop {
        let end = [&b"\n\n"[..], &b"\r\n\r\n"[..]]
            .iter()
            .filter_map(|sep| find(buffer, sep).map(|at| at + sep.len()))
            .min();
        let Some(end) = end else {
            return events;
        };
        let frame: Vec<u8> = buffer.drain(..end).collect();
        if let Some(event) = parse_frame(&String::from_utf8_lossy(&frame), received) {
            events.push(event);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_frame(frame: &str, received: Instant) -> Option<StreamEvent> {
    let mut id = None;
    let mut event = None;
    let mut data = String::new();
    for line in frame.lines() {
        let field = |name: &str| line.strip_prefix(name).map(|v| v.trim().to_owned());
        if let Some(v) = field("id:") {
            id = Some(v);
        } else if let Some(v) = field("event:") {
            event = Some(v);
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
    Some(StreamEvent {
        received,
        id,
        event,
        data,
    })
}

/// A failure to open an event stream.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The request failed.
    #[error("open the event stream: {0}")]
    Http(#[from] reqwest::Error),
    /// The daemon answered something else than a stream.
    #[error("the event stream answered HTTP {status} ({content_type:?})")]
    NotAStream {
        /// The status.
        status: u16,
        /// The content type.
        content_type: String,
    },
}

/// The events of one workspace as they arrive; the stream is read by a task of its own,
/// which ends when the daemon closes the stream or this is dropped.
pub struct EventStream {
    events: mpsc::UnboundedReceiver<StreamEvent>,
}

impl EventStream {
    /// The next event, or `None` once `timeout` passes or the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Option<StreamEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first event (others are skipped) for which `wanted` holds, or `None` once
    /// `timeout` passes or the stream ends.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&StreamEvent) -> bool,
    ) -> Option<StreamEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if wanted(&event) => return Some(event),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Api {
    /// Follows the events of workspace `id` with `seq > after`: history first, then live.
    pub async fn follow(&self, id: &str, after: u64) -> Result<EventStream, FollowError> {
        self.follow_with(id, after, None).await
    }

    /// Follows the events of workspace `id` as a client reconnecting after event
    /// `last_event_id` does (`Last-Event-ID`), with `after=0`.
    pub async fn resume(&self, id: &str, last_event_id: u64) -> Result<EventStream, FollowError> {
        self.follow_with(id, 0, Some(last_event_id)).await
    }

    async fn follow_with(
        &self,
        id: &str,
        after: u64,
        last_event_id: Option<u64>,
    ) -> Result<EventStream, FollowError> {
        let mut request = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/workspaces/{id}/events?after={after}"),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request.send().await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !response.status().is_success() || !content_type.starts_with("text/event-stream") {
            return Err(FollowError::NotAStream {
                status: response.status().as_u16(),
                content_type,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut body = response.bytes_stream();
        tokio::spawn(async move {
            let mut buffer: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.extend_from_slice(&chunk);
                for event in take_frames(&mut buffer, Instant::now()) {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(EventStream { events: rx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_split_anywhere_and_keepalives_do_not() {
        let now = Instant::now();
        let stream = b": keepalive\n\nid: 7\nevent: provision_succeeded\ndata: {\"type\":\"provision_succeeded\",\"generation\":3,\"seq\":7}\r\n\r\nid: 8\n";
        let mut buffer = stream[..20].to_vec();
        assert!(
            take_frames(&mut buffer, now).is_empty(),
            "only a keep-alive so far"
        );
        buffer.extend_from_slice(&stream[20..]);
        let events = take_frames(&mut buffer, now);
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(
            (event.kind(), event.generation()),
            ("provision_succeeded", 3)
        );
        assert_eq!(event.id.as_deref(), Some("7"));
        assert_eq!(event.event.as_deref(), Some("provision_succeeded"));
        assert_eq!(buffer, b"id: 8\n", "the incomplete frame stays");
    }
}
