//! A counting proxy of the engine's Unix socket: the daemon's `[providers.docker] socket`
//! points at it, it forwards bytes both ways unchanged, and it records every HTTP request it
//! sees — its kind (method and normalized path), when it started, when the first and the last
//! byte of its answer came back, and how large the answer was.
//!
//! It parses only request framing (request line, `Content-Length`, chunked bodies), enough to
//! find where each request starts on a kept-alive connection; answers are not parsed: HTTP/1.1
//! without pipelining has at most one request outstanding per connection, so every answer
//! byte belongs to the last request sent on it.
//!
//! It never changes a byte, and it only ever listens on a socket file in the bench's
//! temporary directory.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct Call {
    /// `METHOD /normalized/path [filter keys]`.
    pub kind: String,
    /// When its request line arrived.
    pub started: Instant,
    /// Time to the first byte of the answer.
    pub first_byte: Option<Duration>,
    /// Time to the last byte of the answer seen so far.
    pub last_byte: Option<Duration>,
    /// Answer bytes.
    pub bytes: u64,
}

impl Call {
    /// Whether the call is about one container or one workspace (an inspect, a per-container
    /// action, or a list narrowed to one name or one workspace) rather than about all.
    pub fn per_container(&self) -> bool {
        self.kind.contains("{id}")
            || self.kind.contains("[name")
            || self.kind.contains("io.steward.workspace")
    }
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// A running proxy. Stops when dropped.
pub struct Proxy {
    /// The socket it listens on.
    pub path: PathBuf,
    calls: Calls,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on `path` and forwards every connection to `upstream`.
    pub fn start(path: &Path, upstream: &Path) -> Result<Proxy> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
        let calls: Calls = Arc::default();
        let upstream = upstream.to_owned();
        let task = tokio::spawn({
            let calls = calls.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let calls = calls.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = UnixStream::connect(&upstream).await {
                            relay(client, server, calls).await;
                        }
                    });
                }
            }
        });
        Ok(Proxy {
            path: path.to_owned(),
            calls,
            task,
        })
    }

    /// Every call seen so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the calls seen so far.
    pub fn reset(&self) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Calls per kind, among those started at or after `from` and before `until`.
pub fn count_by_kind(calls: &[Call], from: Instant, until: Instant) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls
        .iter()
        .filter(|c| c.started >= from && c.started < until)
    {
        *counts.entry(call.kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// Calls per kind: how many, how many per cycle, and their latency (to the last answer byte).
pub fn by_kind(calls: &[Call], cycles: usize) -> serde_json::Value {
    let mut by: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in calls {
        by.entry(&call.kind).or_default().push(call);
    }
    serde_json::Value::Object(
        by.into_iter()
            .map(|(kind, calls)| {
                let done: Vec<Duration> = calls.iter().filter_map(|c| c.last_byte).collect();
                (
                    kind.to_owned(),
                    serde_json::json!({
                        "count": calls.len(),
                        "per_cycle": crate::report::num(calls.len() as f64 / cycles.max(1) as f64),
                        "latency": crate::report::Summary::of(&done).json(),
                    }),
                )
            })
            .collect(),
    )
}

/// The idle time between consecutive calls (end of one answer → start of the next
/// request), median per pair of kinds, for a client that makes one call at a time: time the
/// client spent elsewhere (for the daemon: actor hops, commits, scheduling).
pub fn gaps(calls: &[Call]) -> serde_json::Value {
    let mut sorted: Vec<&Call> = calls.iter().collect();
    sorted.sort_by_key(|c| c.started);
    let mut by: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let Some(done) = a.last_byte.map(|d| a.started + d) else {
            continue;
        };
        if b.started >= done {
            by.entry(format!("{} → {}", a.kind, b.kind))
                .or_default()
                .push(b.started - done);
        }
    }
    serde_json::Value::Object(
        by.into_iter()
            .map(|(pair, gaps)| {
                let summary = crate::report::Summary::of(&gaps);
                (
                    pair,
                    serde_json::json!({
                        "count": summary.n,
                        "p50_ms": crate::report::num(summary.p50),
                        "mean_ms": crate::report::num(summary.mean),
                    }),
                )
            })
            .collect(),
    )
}

async fn relay(client: UnixStream, server: UnixStream, calls: Calls) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Index (in `calls`) of the request outstanding on this connection.
    let current: Arc<Mutex<Option<usize>>> = Arc::default();
    let upstream = {
        let calls = calls.clone();
        let current = current.clone();
        async move {
            let mut parser = RequestParser::default();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for (method, target) in parser.feed(&buffer[..n]) {
                    let mut calls = calls.lock().unwrap_or_else(PoisonError::into_inner);
                    calls.push(Call {
                        kind: kind(&method, &target),
                        started: Instant::now(),
                        first_byte: None,
                        last_byte: None,
                        bytes: 0,
                    });
                    *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(calls.len() - 1);
                }
                if server_write.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            let _ = server_write.shutdown().await;
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            if let Some(index) = *current.lock().unwrap_or_else(PoisonError::into_inner) {
                let mut calls = calls.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(call) = calls.get_mut(index) {
                    let elapsed = now.saturating_duration_since(call.started);
                    call.first_byte.get_or_insert(elapsed);
                    call.last_byte = Some(elapsed);
                    call.bytes += n as u64;
                }
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Where the parser is in the request stream of one connection.
#[derive(Debug, Default)]
enum State {
    /// Reading a request head.
    #[default]
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping this many chunk bytes, plus the CRLF after them.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk, until an empty one.
    Trailer,
}

/// Finds request boundaries in the bytes a client sends.
#[derive(Debug, Default)]
struct RequestParser {
    state: State,
    pending: Vec<u8>,
}

impl RequestParser {
    /// Consumes `bytes`; returns `(method, target)` of every request head completed in them.
    fn feed(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.pending.extend_from_slice(bytes);
        let mut heads = Vec::new();
        loop {
            match self.state {
                State::Head => {
                    let Some(end) = position(&self.pending, b"\r\n\r\n") else {
                        break;
                    };
                    let head: Vec<u8> = self.pending.drain(..end + 4).collect();
                    let text = String::from_utf8_lossy(&head);
                    let mut lines = text.split("\r\n");
                    let mut parts = lines.next().unwrap_or_default().split(' ');
                    let method = parts.next().unwrap_or_default().to_owned();
                    let target = parts.next().unwrap_or_default().to_owned();
                    let mut length = 0u64;
                    let mut chunked = false;
                    for line in lines {
                        let Some((name, value)) = line.split_once(':') else {
                            continue;
                        };
                        let value = value.trim();
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.parse().unwrap_or(0);
                        } else if name.eq_ignore_ascii_case("transfer-encoding")
                            && value.to_ascii_lowercase().contains("chunked")
                        {
                            chunked = true;
                        }
                    }
                    if !method.is_empty() {
                        heads.push((method, target));
                    }
                    self.state = if chunked {
                        State::ChunkSize
                    } else if length > 0 {
                        State::Body(length)
                    } else {
                        State::Head
                    };
                }
                State::Body(left) | State::ChunkData(left) => {
                    if self.pending.is_empty() {
                        break;
                    }
                    let take = left.min(self.pending.len() as u64);
                    self.pending.drain(..take as usize);
                    let left = left - take;
                    self.state = match (&self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), n) => State::Body(n),
                        (_, 0) => State::ChunkSize,
                        (_, n) => State::ChunkData(n),
                    };
                }
                State::ChunkSize => {
                    let Some(end) = position(&self.pending, b"\r\n") else {
                        break;
                    };
                    let line: Vec<u8> = self.pending.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&line[..end]);
                    let size = u64::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size + 2)
                    };
                }
                State::Trailer => {
                    let Some(end) = position(&self.pending, b"\r\n") else {
                        break;
                    };
                    self.pending.drain(..end + 2);
                    if end == 0 {
                        self.state = State::Head;
                    }
                }
            }
        }
        heads
    }
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD path` with the API version prefix dropped, container and image references
/// replaced by `{id}` / `{image}`, and the list's `filters` reduced to their keys (and label
/// keys), e.g. `GET /containers/json [label:io.steward.owner]`.
fn kind(method: &str, target: &str) -> String {
    let url = reqwest::Url::parse(&format!("http://engine{target}"));
    let (path, filters) = match &url {
        Ok(url) => (
            url.path().to_owned(),
            url.query_pairs()
                .find(|(k, _)| k == "filters")
                .map(|(_, v)| v.into_owned()),
        ),
        Err(_) => (target.to_owned(), None),
    };
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .first()
        .is_some_and(|s| s.starts_with('v') && s[1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        segments.remove(0);
    }
    match segments.as_slice() {
        ["containers", "json"] | ["containers", "create"] | ["containers", "prune"] => {}
        ["containers", _, ..] => segments[1] = "{id}",
        ["images", "json"] => {}
        ["images", ..] if segments.len() >= 3 => {
            let last = segments.len() - 1;
            segments.splice(1..last, ["{image}"]);
        }
        _ => {}
    }
    let mut kind = format!("{method} /{}", segments.join("/"));
    if let Some(filters) = filters {
        kind.push_str(&format!(" [{}]", filter_keys(&filters)));
    }
    kind
}

/// `label:io.steward.owner,io.steward.workspace name` for a filters document.
fn filter_keys(filters: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(filters) else {
        return "?".to_owned();
    };
    map.iter()
        .map(|(key, values)| {
            if key != "label" {
                return key.clone();
            }
            let mut labels: Vec<String> = match values {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|l| l.split('=').next().unwrap_or(l).to_owned())
                    .collect(),
                // Older clients send {"label": {"k=v": true}}.
                serde_json::Value::Object(o) => o
                    .keys()
                    .map(|l| l.split('=').next().unwrap_or(l).to_owned())
                    .collect(),
                _ => Vec::new(),
            };
            labels.sort();
            format!("label:{}", labels.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_found_across_bodies_and_chunks() {
        let mut parser = RequestParser::default();
        let stream =
            b"POST /v1.41/containers/create?name=x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
GET /v1.41/containers/json?all=true HTTP/1.1\r\nHost: d\r\n\r\n\
POST /v1.41/build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
DELETE /v1.41/containers/abc?force=true HTTP/1.1\r\n\r\n";
        // Fed in awkward pieces, the result is the same.
        let mut heads = Vec::new();
        for piece in stream.chunks(7) {
            heads.extend(parser.feed(piece));
        }
        let methods: Vec<&str> = heads.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(methods, ["POST", "GET", "POST", "DELETE"]);
    }

    #[test]
    fn kinds_are_normalized() {
        assert_eq!(
            kind("DELETE", "/v1.41/containers/0123abcd?force=true&v=true"),
            "DELETE /containers/{id}"
        );
        assert_eq!(
            kind("POST", "/v1.41/containers/x/start"),
            "POST /containers/{id}/start"
        );
        assert_eq!(
            kind("POST", "/v1.41/containers/create?name=a"),
            "POST /containers/create"
        );
        assert_eq!(
            kind("GET", "/v1.41/images/steward-agent:dev/json"),
            "GET /images/{image}/json"
        );
        let owner = "/v1.41/containers/json?all=true&filters=%7B%22label%22%3A%5B%22io.steward.owner%3Dx%22%5D%7D";
        assert_eq!(
            kind("GET", owner),
            "GET /containers/json [label:io.steward.owner]"
        );
        let name = "/containers/json?all=true&filters=%7B%22name%22%3A%5B%22%5E%2Fx%24%22%5D%7D";
        let call = Call {
            kind: kind("GET", name),
            started: Instant::now(),
            first_byte: None,
            last_byte: None,
            bytes: 0,
        };
        assert_eq!(call.kind, "GET /containers/json [name]");
        assert!(call.per_container());
        assert_eq!(kind("GET", "/_ping"), "GET /_ping");
        assert_eq!(kind("GET", "/version"), "GET /version");
    }
}
