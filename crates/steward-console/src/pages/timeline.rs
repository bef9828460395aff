//! A workspace's lifecycle timeline: its events newest first, a page at a time, optionally
//! only failures or only dropped restarts. Pages are found by walking back from the
//! workspace's last event through the registry (events are numbered 1, 2, … per workspace);
//! a filtered page reads at most `SCAN_BUDGET` events and says how far it looked.

use maud::{html, Markup};
use serde_json::Value;
use steward_actors::Registry;
use steward_api::dto::event_json;
use steward_domain::WorkspaceId;
use steward_store::EventRecord;

use super::time;
use crate::ConsoleError;

/// Events per page.
pub const PAGE: usize = 50;
/// Most events a filtered page reads before it stops looking.
const SCAN_BUDGET: i64 = 5000;
/// Events read at a time by a filtered page.
const CHUNK: i64 = 500;

/// Which events the timeline shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every event.
    All,
    /// Failed steps and what follows them: failed provisions, boot timeouts, parking, switch
    /// rollbacks, undelivered restart contexts.
    Failures,
    /// Health restarts that were dropped (and why).
    Dropped,
}

impl Filter {
    /// Every filter, in the order of the tabs.
    pub const ALL: [Filter; 3] = [Filter::All, Filter::Failures, Filter::Dropped];

    /// Parses the `events` query value (absent or unknown: all).
    pub fn parse(value: Option<&str>) -> Filter {
        match value {
            Some("failures") => Filter::Failures,
            Some("dropped") => Filter::Dropped,
            _ => Filter::All,
        }
    }

    /// The `events` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Failures => "failures",
            Filter::Dropped => "dropped",
        }
    }

    /// The tab's label.
    pub fn label(self) -> &'static str {
        match self {
            Filter::All => "All events",
            Filter::Failures => "Failures",
            Filter::Dropped => "Dropped restarts",
        }
    }

    /// Whether an event of this kind is shown.
    pub fn admits(self, kind: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Failures => is_failure(kind),
            Filter::Dropped => kind == "restart_dropped",
        }
    }
}

fn is_failure(kind: &str) -> bool {
    matches!(
        kind,
        "provision_failed" | "boot_timeout" | "failed" | "switch_rolled_back" | "context_timeout"
    )
}

/// One page of the timeline.
pub struct TimelinePage {
    /// Events, newest first.
    pub events: Vec<EventRecord>,
    /// Where the next (older) page starts, if there are older events to look at.
    pub older: Option<i64>,
    /// For a filtered page that ran out of budget: the oldest event it looked at.
    pub searched_to: Option<i64>,
}

/// The page of events with `seq < before` (newest first) that `filter` admits, the
/// workspace's last event being `last`.
pub async fn load(
    registry: &Registry,
    id: WorkspaceId,
    last: i64,
    filter: Filter,
    before: Option<i64>,
) -> Result<TimelinePage, ConsoleError> {
    let page = i64::try_from(PAGE).unwrap_or(50);
    // Events with seq < upper are still to be looked at.
    let mut upper = before.unwrap_or(last + 1).clamp(1, last + 1);
    let mut events = Vec::new();
    let mut scanned = 0;
    while upper > 1 && events.len() < PAGE && scanned < SCAN_BUDGET {
        let want = match filter {
            Filter::All => page - i64::try_from(events.len()).unwrap_or(0),
            _ => CHUNK,
        };
        let after = (upper - 1 - want).max(0);
        let chunk = registry.events(id, after, upper - 1 - after).await?;
        scanned += upper - 1 - after;
        let mut cut = None;
        for event in chunk.into_iter().rev().filter(|e| e.seq < upper) {
            if filter.admits(&event.kind) {
                let seq = event.seq;
                events.push(event);
                if events.len() == PAGE {
                    cut = Some(seq);
                    break;
                }
            }
        }
        upper = cut.unwrap_or(after + 1);
    }
    let more = upper > 1;
    Ok(TimelinePage {
        events,
        older: more.then_some(upper),
        searched_to: (more && filter != Filter::All && scanned >= SCAN_BUDGET).then_some(upper),
    })
}

/// One entry of the timeline (the page renders it, the live stream sends new ones).
pub fn entry(event: &EventRecord) -> Markup {
    let json = event_json(event);
    let details: Vec<(String, String)> = match &json {
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "seq" | "type" | "generation" | "at"))
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        _ => Vec::new(),
    };
    let at = json["at"].as_str().unwrap_or_default().to_owned();
    let class = if is_failure(&event.kind) {
        Some("fail")
    } else if event.kind == "restart_dropped" {
        Some("drop")
    } else {
        None
    };
    html! {
        li id={ "ev-" (event.seq) } class=[class] data-kind=(event.kind) {
            span.muted.mono { "#" (event.seq) }
            span { (time(&at)) }
            span.kind { (event.kind) }
            span.muted { "gen " (event.generation.0) }
            span {
                @for (k, v) in &details { span.chip { (k) ": " (v) } }
            }
        }
    }
}
