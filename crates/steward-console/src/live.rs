//! `GET /ui/live`: the one live stream of a console tab (Server-Sent Events). Browsers allow
//! few connections per host over HTTP/1.1, so a page never opens more than this one: the
//! page says what it shows in the query, and everything live travels here, multiplexed —
//! the rows of a list page (`rows=ID,ID,…`), a workspace's summary, inspection and timeline
//! (`ws=ID&events=FILTER&after=SEQ`) and its instance's output after the last line the page
//! shows (`logs=UNIX_NANOS`: followed from its provider, appended in batches every tick),
//! the overview (`overview=1`).
//!
//! What is sent is HTML rendered by the same functions as the page, wrapped in a small JSON
//! patch (see `assets/console.js`). Updates are driven by the registry's committed events
//! and coalesced: a row or summary is re-rendered at most every `ROW_GAP` however many
//! events arrive, and sent only if it changed; the timeline gets new events in batches. Rows
//! and the summary are also re-read every `REFRESH` (heartbeats are not events), the
//! inspection every `INSPECT` (probe results are not either).
//!
//! Guarantees: only rows of the page are watched; nothing is missed when the page was
//! rendered before the stream opened (everything is re-read at the start) or when the stream
//! lags behind the event bus (everything is re-read, the timeline from the store); a
//! reconnecting browser resumes the timeline after the last event it got (`Last-Event-ID`).
//! The stream ends when the tab goes, the session ends (a `bye` first) or the daemon stops.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::future::join_all;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use steward_actors::{ActorError, Registry};
use steward_api::dto::{ActorDto, Workspace};
use steward_domain::WorkspaceId;
use steward_provider::{LogLine, LogQuery, LogStream};
use steward_store::EventRecord;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::pages::timeline::{self, Filter};
use crate::pages::{list, overview, workspace};
use crate::session::{self, Operator};
use crate::{parse_id, Console, ConsoleError};

/// How often pending updates are sent.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two updates of one row (or summary): bursts are coalesced.
const ROW_GAP: Duration = Duration::from_millis(500);
/// Rows and the summary are re-read this often even without events.
const REFRESH: Duration = Duration::from_secs(5);
/// The inspection is re-read this often.
const INSPECT: Duration = Duration::from_secs(1);
/// A comment is sent after this much silence, so proxies keep the connection.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Most rows one stream watches.
const MAX_ROWS: usize = 500;
/// Most live streams open at once (every tab of every operator).
pub const MAX_STREAMS: usize = 256;

/// What a page watches.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Comma-separated ids of the rows of a list page.
    rows: Option<String>,
    /// A workspace page's workspace.
    ws: Option<String>,
    /// Its timeline's filter.
    events: Option<String>,
    /// Its timeline shows events up to this `seq`: newer ones are sent (absent: the page
    /// shows an older page of the timeline, which stays as it is).
    after: Option<i64>,
    /// The overview.
    overview: Option<u8>,
    /// A workspace page's output is followed after this time (Unix nanoseconds).
    logs: Option<u64>,
}

/// Most characters of output waiting for the next tick; beyond, the oldest are dropped.
const LOG_PENDING: usize = 256 * 1024;

/// A workspace's output, followed.
struct LogWatch {
    /// The provider's stream, while it lasts.
    stream: Option<LogStream>,
    /// Lines written up to this time were sent (or shown by the page).
    after: SystemTime,
    /// Ask the provider (again): at the start, and once the next instance is up after the
    /// stream ended with the previous one.
    reopen: bool,
    /// Text not sent yet.
    pending: String,
}

/// Something re-rendered from time to time and sent when it changed.
struct Watched {
    dirty: bool,
    sent_at: Option<Instant>,
    read_at: Instant,
    last: u64,
}

impl Watched {
    fn new() -> Watched {
        Watched {
            dirty: true,
            sent_at: None,
            read_at: Instant::now(),
            last: 0,
        }
    }

    /// Whether it should be read again now: changed (and not updated in the last
    /// `ROW_GAP`) or not read for `REFRESH`.
    fn due(&self, now: Instant) -> bool {
        let rested = self.sent_at.is_none_or(|at| now >= at + ROW_GAP);
        (self.dirty && rested) || now >= self.read_at + REFRESH
    }

    /// Records a fresh rendering; whether it differs from the last one sent.
    fn changed(&mut self, now: Instant, html: &str) -> bool {
        let mut hasher = DefaultHasher::new();
        html.hash(&mut hasher);
        let hash = hasher.finish();
        self.dirty = false;
        self.read_at = now;
        if hash == self.last {
            return false;
        }
        self.last = hash;
        self.sent_at = Some(now);
        true
    }
}

struct Timeline {
    filter: Filter,
    /// Events up to this `seq` have been considered.
    after: i64,
    /// Admitted events not sent yet.
    pending: Vec<Arc<EventRecord>>,
    /// The bus dropped events: re-read from the store.
    lagged: bool,
}

struct WorkspaceWatch {
    id: WorkspaceId,
    summary: Watched,
    inspection: Watched,
    timeline: Option<Timeline>,
    logs: Option<LogWatch>,
    gone: bool,
}

struct Live {
    console: web::Data<Console>,
    operator: Operator,
    rows: Vec<(WorkspaceId, Watched)>,
    workspace: Option<WorkspaceWatch>,
    /// Samples version last sent to an overview.
    overview: Option<u64>,
    /// Workspaces created since a list page was rendered (not on it).
    created: usize,
    created_told: usize,
}

/// Frees a stream's slot when the stream ends.
struct Slot(web::Data<Console>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn frame(event: &str, id: Option<i64>, data: &serde_json::Value) -> Bytes {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {event}\ndata: {data}\n\n"))
}

fn replace(id: &str, html: String) -> Bytes {
    frame(
        "patch",
        None,
        &json!({"op": "replace", "id": id, "html": html}),
    )
}

fn bye(text: &str) -> Bytes {
    frame("bye", None, &json!({ "text": text }))
}

/// `GET /ui/live`.
pub async fn live(
    console: web::Data<Console>,
    req: HttpRequest,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let Some(operator) = session::operator(&req) else {
        return Ok(HttpResponse::Unauthorized().body("log in first"));
    };
    let query = query.into_inner();
    let resume = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let mut live = Live::new(console.clone(), operator, query, resume)?;
    if console.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        console.streams.fetch_sub(1, Ordering::AcqRel);
        return Err(ConsoleError::Unavailable(
            "too many live streams are open; close some console tabs".into(),
        ));
    }
    let slot = Slot(console.clone());
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    actix_web::rt::spawn(async move {
        let _slot = slot;
        live.run(tx).await;
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>)))
}

impl Live {
    fn new(
        console: web::Data<Console>,
        operator: Operator,
        query: LiveQuery,
        resume: Option<i64>,
    ) -> Result<Live, ConsoleError> {
        let mut rows = Vec::new();
        for raw in query
            .rows
            .iter()
            .flat_map(|r| r.split(','))
            .filter(|r| !r.is_empty())
        {
            rows.push((parse_id(raw)?, Watched::new()));
        }
        if rows.len() > MAX_ROWS {
            return Err(ConsoleError::BadRequest(format!(
                "a live stream watches at most {MAX_ROWS} rows"
            )));
        }
        let workspace = match &query.ws {
            Some(raw) => Some(WorkspaceWatch {
                id: parse_id(raw)?,
                summary: Watched::new(),
                inspection: Watched::new(),
                timeline: query.after.map(|after| Timeline {
                    filter: Filter::parse(query.events.as_deref()),
                    after: after.max(resume.unwrap_or(0)),
                    pending: Vec::new(),
                    // Events committed between the page's rendering and now are read back.
                    lagged: true,
                }),
                logs: query.logs.map(|nanos| LogWatch {
                    stream: None,
                    after: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
                    reopen: true,
                    pending: String::new(),
                }),
                gone: false,
            }),
            None => None,
        };
        // Without metrics the overview has nothing that changes.
        let overview = query
            .overview
            .filter(|_| console.samples.enabled())
            .map(|_| u64::MAX);
        if rows.is_empty() && workspace.is_none() && query.overview.is_none() {
            return Err(ConsoleError::BadRequest(
                "say what to watch: rows, ws or overview".into(),
            ));
        }
        Ok(Live {
            console,
            operator,
            rows,
            workspace,
            overview,
            created: 0,
            created_told: 0,
        })
    }

    async fn run(&mut self, tx: mpsc::Sender<Bytes>) {
        let registry = self.console.registry.clone();
        let mut bus = registry.subscribe();
        let mut closing = registry.closing();
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut quiet_since = Instant::now();
        loop {
            if *closing.borrow() {
                let _ = tx.send(bye("the daemon is stopping")).await;
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                changed = closing.changed() => {
                    if changed.is_err() {
                        return; // the registry is gone
                    }
                }
                line = next_line(&mut self.workspace) => self.log_line(line),
                received = bus.recv() => match received {
                    Ok(event) => self.note(event),
                    Err(RecvError::Lagged(_)) => self.lagged(),
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if !self.console.sessions.alive(&self.operator) {
                        let _ = tx.send(bye("your session ended: log in again")).await;
                        return;
                    }
                    let mut frames = self.flush(&registry).await;
                    if frames.is_empty() && quiet_since.elapsed() >= KEEPALIVE {
                        frames.push(Bytes::from_static(b": keepalive\n\n"));
                    }
                    for frame in frames {
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                        quiet_since = Instant::now();
                    }
                }
            }
        }
    }

    /// Takes note of a committed event.
    fn note(&mut self, event: Arc<EventRecord>) {
        let id = event.workspace_id;
        let mut on_page = false;
        for (_, watched) in self.rows.iter_mut().filter(|(row, _)| *row == id) {
            watched.dirty = true;
            on_page = true;
        }
        if !on_page && !self.rows.is_empty() && event.kind == "created" {
            self.created += 1;
        }
        let Some(ws) = self.workspace.as_mut().filter(|ws| ws.id == id) else {
            return;
        };
        ws.summary.dirty = true;
        ws.inspection.dirty = true;
        if let Some(logs) = ws.logs.as_mut() {
            // A stream that ended with its instance (a container) resumes with the next.
            if logs.stream.is_none() && event.kind == "provision_succeeded" {
                logs.reopen = true;
            }
        }
        // While lagging, the timeline is read back from the store instead.
        if let Some(timeline) = ws.timeline.as_mut().filter(|t| !t.lagged) {
            if event.seq > timeline.after {
                timeline.after = event.seq;
                if timeline.filter.admits(&event.kind) {
                    timeline.pending.push(event);
                }
            }
        }
    }

    /// A line of the followed output (`None`: its stream ended).
    fn log_line(&mut self, line: Option<LogLine>) {
        let Some(logs) = self.workspace.as_mut().and_then(|ws| ws.logs.as_mut()) else {
            return;
        };
        let Some(line) = line else {
            logs.stream = None;
            return;
        };
        logs.after = logs.after.max(line.at);
        logs.pending.push_str(&line.text);
        logs.pending.push('\n');
        if logs.pending.len() > LOG_PENDING {
            let mut cut = logs.pending.len() - LOG_PENDING;
            while !logs.pending.is_char_boundary(cut) {
                cut += 1;
            }
            logs.pending.drain(..cut);
        }
    }

    /// The bus went on without us: everything may have changed.
    fn lagged(&mut self) {
        for (_, watched) in &mut self.rows {
            watched.dirty = true;
        }
        if let Some(ws) = self.workspace.as_mut() {
            ws.summary.dirty = true;
            ws.inspection.dirty = true;
            if let Some(timeline) = ws.timeline.as_mut() {
                timeline.lagged = true;
            }
            if let Some(logs) = ws.logs.as_mut().filter(|l| l.stream.is_none()) {
                logs.reopen = true;
            }
        }
    }

    /// Renders what is due; the frames to send.
    async fn flush(&mut self, registry: &Registry) -> Vec<Bytes> {
        let now = Instant::now();
        let mut frames = Vec::new();
        let due: Vec<usize> = (0..self.rows.len())
            .filter(|i| self.rows[*i].1.due(now))
            .collect();
        let views = join_all(due.iter().map(|i| registry.get(self.rows[*i].0))).await;
        for (i, view) in due.into_iter().zip(views) {
            let (id, watched) = &mut self.rows[i];
            let html = match view {
                Ok(view) => list::row(&self.operator, &Workspace::from(view)).into_string(),
                Err(ActorError::NotFound(_)) => list::gone_row(&id.to_string()).into_string(),
                Err(_) => continue,
            };
            if watched.changed(now, &html) {
                frames.push(replace(&list::row_id(&id.to_string()), html));
            }
        }
        if self.created > self.created_told {
            self.created_told = self.created;
            let text = format!(
                "{} workspace(s) created since this page was loaded: reload to see them.",
                self.created
            );
            frames.push(frame(
                "patch",
                None,
                &json!({"op": "text", "id": "notice", "text": text}),
            ));
        }
        if let Some(ws) = self.workspace.as_mut() {
            watch_workspace(ws, &self.operator, registry, now, &mut frames).await;
        }
        if let Some(sent) = self.overview {
            let samples = &self.console.samples;
            let version = samples.version();
            if version != sent {
                self.overview = Some(version);
                let html = overview::body(samples, None);
                frames.push(replace(overview::BODY, html.into_string()));
            }
        }
        frames
    }
}

async fn watch_workspace(
    ws: &mut WorkspaceWatch,
    operator: &Operator,
    registry: &Registry,
    now: Instant,
    frames: &mut Vec<Bytes>,
) {
    if ws.gone {
        ws.logs = None;
        return;
    }
    if let Some(logs) = ws.logs.as_mut() {
        follow_logs(ws.id, logs, registry, frames).await;
    }
    if ws.summary.due(now) {
        match registry.get(ws.id).await {
            Ok(view) => {
                let html = workspace::summary(operator, &Workspace::from(view)).into_string();
                if ws.summary.changed(now, &html) {
                    frames.push(replace(workspace::SUMMARY, html));
                }
            }
            Err(ActorError::NotFound(_)) => {
                ws.gone = true;
                let html = workspace::gone_summary().into_string();
                frames.push(replace(workspace::SUMMARY, html));
            }
            Err(_) => {}
        }
    }
    let inspect_due =
        now >= ws.inspection.read_at + INSPECT || (ws.inspection.dirty && ws.inspection.due(now));
    if inspect_due && !ws.gone {
        if let Ok(view) = registry.inspect(ws.id).await {
            let html = workspace::inspection(&ActorDto::from(view)).into_string();
            if ws.inspection.changed(now, &html) {
                frames.push(replace(workspace::INSPECTION, html));
            }
        }
    }
    let Some(timeline) = ws.timeline.as_mut() else {
        return;
    };
    if timeline.lagged {
        if let Ok(events) = registry
            .events(
                ws.id,
                timeline.after,
                i64::try_from(timeline::PAGE).unwrap_or(50),
            )
            .await
        {
            timeline.lagged = events.len() >= timeline::PAGE;
            for event in events {
                timeline.after = timeline.after.max(event.seq);
                if timeline.filter.admits(&event.kind) {
                    timeline.pending.push(Arc::new(event));
                }
            }
        }
    }
    if timeline.pending.is_empty() {
        return;
    }
    let mut events = std::mem::take(&mut timeline.pending);
    events.sort_by_key(|e| std::cmp::Reverse(e.seq));
    events.dedup_by_key(|e| e.seq);
    events.truncate(timeline::PAGE);
    let html: String = events
        .iter()
        .map(|e| timeline::entry(e).into_string())
        .collect();
    frames.push(frame(
        "patch",
        Some(timeline.after),
        &json!({"op": "prepend", "id": workspace::TIMELINE, "html": html, "keep": timeline::PAGE}),
    ));
}

/// The next line of the followed output, if a stream is open (else never).
async fn next_line(workspace: &mut Option<WorkspaceWatch>) -> Option<LogLine> {
    let stream = workspace
        .as_mut()
        .and_then(|ws| ws.logs.as_mut())
        .and_then(|logs| logs.stream.as_mut());
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Opens the followed output when due, and sends what came since the last tick.
async fn follow_logs(
    id: WorkspaceId,
    logs: &mut LogWatch,
    registry: &Registry,
    frames: &mut Vec<Bytes>,
) {
    if logs.reopen && logs.stream.is_none() {
        logs.reopen = false;
        let query = LogQuery {
            tail: Some(workspace::LOG_LINES),
            since: Some(logs.after + Duration::from_nanos(1)),
            generation: None,
            follow: true,
        };
        match registry.logs(id, query).await {
            Ok(stream) => logs.stream = Some(stream),
            Err(error) => {
                tracing::debug!(workspace = %id, %error, "the console cannot follow a workspace's output");
            }
        }
    }
    if !logs.pending.is_empty() {
        let text = std::mem::take(&mut logs.pending);
        frames.push(frame(
            "patch",
            None,
            &json!({"op": "append", "id": workspace::LOGS, "text": text, "keep": workspace::LOG_KEEP}),
        ));
    }
}
