//! The daemon under test: the release `steward` binary started as a child process on
//! 127.0.0.1 with a private data dir, the way the end-to-end harness starts it
//! (`steward serve --config <toml> --data-dir <dir>/data --listen 127.0.0.1:0`; it writes
//! `listen.addr` and `admin.token` once up), and an HTTP client for its API, including the
//! SSE event stream of a workspace.
//!
//! It only drives the daemon from outside — its HTTP API, its documented files and its log —
//! and never reaches into its crates or its database.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Upper bound of one ordinary API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon's configuration for a Docker benchmark. Everything not set here keeps the
/// compiled-in default (`config/default.toml`): probes, debounce, backoff, store.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Engine socket (the real one, or a counting proxy in front of it).
    pub socket: PathBuf,
    /// Owner label of the daemon's containers; also their name prefix (`<owner>-`).
    pub owner: String,
    /// `[providers.docker] max_concurrent_ops`.
    pub max_concurrent_ops: usize,
    /// `[health] agent_heartbeat_interval`, when not the default.
    pub heartbeat: Option<String>,
}

impl DaemonConfig {
    /// The TOML file given to `--config`.
    pub fn toml(&self) -> String {
        let mut text = format!(
            r#"default_provider = "docker"
log_format = "json"

[providers.docker]
enabled = true
socket = "{socket}"
owner = "{owner}"
name_prefix = "{owner}-"
max_concurrent_ops = {cap}
"#,
            socket = self.socket.display(),
            owner = self.owner,
            cap = self.max_concurrent_ops,
        );
        if let Some(heartbeat) = &self.heartbeat {
            // The timeout must stay at least twice the interval (the daemon checks).
            let secs = humantime::parse_duration(heartbeat)
                .map(|d| d.as_secs().max(1))
                .unwrap_or(5);
            text.push_str(&format!(
                "\n[health]\nagent_heartbeat_interval = \"{heartbeat}\"\nheartbeat_timeout = \"{}s\"\n",
                (secs * 6).max(30)
            ));
        }
        text
    }
}

/// One daemon process. Dropping it kills the process (SIGKILL) if it still runs; the
/// orderly way out is [`Daemon::terminate`].
pub struct Daemon {
    child: Option<Child>,
    /// Its directory: `steward.toml`, `steward.log`, `data/`.
    pub dir: PathBuf,
    /// When the process was spawned (monotonic).
    pub spawned: Instant,
    /// When the process was spawned (wall clock, to compare with its log's timestamps).
    pub spawned_wall: SystemTime,
    /// The address it listens on, once up.
    pub addr: Option<SocketAddr>,
    /// The admin token, once up.
    pub token: String,
}

impl Daemon {
    /// Spawns `bin serve` in `dir` (reusing `dir/data` if it exists) with `config`, on
    /// `listen` (default: a free port). Returns at once; see [`Daemon::wait_up`].
    pub fn spawn(
        bin: &Path,
        dir: &Path,
        config: &str,
        listen: Option<SocketAddr>,
    ) -> Result<Daemon> {
        let data = dir.join("data");
        fs::create_dir_all(&data).context("create the data dir")?;
        let config_path = dir.join("steward.toml");
        fs::write(&config_path, config).context("write the daemon config")?;
        match fs::remove_file(data.join("listen.addr")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("remove a stale listen.addr"),
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("steward.log"))
            .context("open the daemon log")?;
        let log_err = log.try_clone().context("clone the log handle")?;
        let listen = listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let spawned_wall = SystemTime::now();
        let spawned = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(listen)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Daemon {
            child: Some(child),
            dir: dir.to_owned(),
            spawned,
            spawned_wall,
            addr: None,
            token: String::new(),
        })
    }

    /// Its data dir.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its log file (JSON lines from `tracing`, plus two plain lines on stdout).
    pub fn log(&self) -> PathBuf {
        self.dir.join("steward.log")
    }

    /// Waits (polling every `step`) until `listen.addr` and `admin.token` are there, and
    /// returns when `listen.addr` was first seen. It does not call the API: the caller decides
    /// what "up" means.
    pub async fn wait_listening(&mut self, step: Duration, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let data = self.data();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("poll the daemon")? {
                    bail!(
                        "the daemon exited during start-up with {status}; log tail:\n{}",
                        self.log_tail(30)
                    );
                }
            }
            let addr = fs::read_to_string(data.join("listen.addr"))
                .ok()
                .and_then(|t| t.trim().parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                let seen = Instant::now();
                let token = fs::read_to_string(data.join("admin.token")).unwrap_or_default();
                if !token.trim().is_empty() {
                    self.addr = Some(addr);
                    self.token = token.trim().to_owned();
                    return Ok(seen);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the daemon did not write listen.addr within {timeout:?}; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(step).await;
        }
    }

    /// Waits until the daemon listens and `GET /healthz` answers 200.
    pub async fn wait_up(&mut self, timeout: Duration) -> Result<Api> {
        let deadline = Instant::now() + timeout;
        self.wait_listening(Duration::from_millis(10), timeout)
            .await?;
        let api = self.api()?;
        loop {
            if api.healthz().await {
                return Ok(api);
            }
            if Instant::now() >= deadline {
                bail!("GET /healthz did not answer 200 within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client of its API (once it listens).
    pub fn api(&self) -> Result<Api> {
        let addr = self.addr.context("the daemon is not listening yet")?;
        Api::new(addr, &self.token)
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after that). Returns the exit
    /// status and how long the orderly shutdown took.
    pub async fn terminate(&mut self, grace: Duration) -> Result<(ExitStatus, Duration)> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon was already stopped");
        };
        let started = Instant::now();
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid")?);
            // ESRCH (already gone) is fine: the wait below reaps it.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => Ok((status.context("wait for the daemon")?, started.elapsed())),
            Err(_) => {
                let _ = child.start_kill();
                let status = child.wait().await.context("wait for the killed daemon")?;
                eprintln!("warning: the daemon ignored SIGTERM for {grace:?}; killed it");
                Ok((status, started.elapsed()))
            }
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// One line of the daemon's JSON log.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Its timestamp.
    pub at: SystemTime,
    /// `fields.message`.
    pub message: String,
    /// Every field, as logged.
    pub fields: Value,
}

/// The JSON lines of a daemon log (other lines are skipped).
pub fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let at = humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok()?;
            let message = v["fields"]["message"].as_str()?.to_owned();
            Some(LogLine {
                at,
                message,
                fields: v["fields"].clone(),
            })
        })
        .collect())
}

/// A log field holding a number, logged as a number or as a string.
pub fn field_u64(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
pub fn wall_ms(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// A committed lifecycle event as the SSE stream delivers it.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    /// When the bench read it (monotonic).
    pub received: Instant,
    /// Event type (`provision_succeeded`, ...).
    pub kind: String,
    /// Generation it is about.
    pub generation: u64,
    /// The whole event.
    pub data: Value,
}

/// An authorized client of one daemon.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(addr: SocketAddr, token: &str) -> Result<Api> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()
            .context("build the HTTP client")?;
        Ok(Api {
            http,
            base: format!("http://{addr}"),
            token: token.to_owned(),
        })
    }

    async fn healthz(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .with_context(|| format!("read the answer to {method} {path}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `POST /v1/workspaces`: a Docker workspace running `image`, ready when its container
    /// runs. Returns its id.
    pub async fn create(&self, name: &str, image: &str) -> Result<String> {
        let body = json!({
            "name": name,
            "image": image,
            "provider": "docker",
            "ready_when": "instance",
        });
        let (status, doc) = self
            .call(reqwest::Method::POST, "/v1/workspaces", Some(&body))
            .await?;
        if status != 201 {
            bail!("create answered {status}: {doc}");
        }
        if doc["ready_when"] != "instance" || doc["provider"] != "docker" {
            bail!("the workspace is not a docker one ready when its instance runs: {doc}");
        }
        doc["id"]
            .as_str()
            .map(str::to_owned)
            .context("create answered without an id")
    }

    /// `POST /v1/workspaces/{id}/restart`; returns the outcome and the generation that will
    /// carry the restart.
    pub async fn restart(&self, id: &str) -> Result<(String, u64)> {
        let (status, doc) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/workspaces/{id}/restart"),
                None,
            )
            .await?;
        if status != 202 {
            bail!("restart of {id} answered {status}: {doc}");
        }
        let outcome = doc["outcome"].as_str().unwrap_or_default().to_owned();
        let generation = doc["generation"]
            .as_u64()
            .context("restart answered without a generation")?;
        Ok((outcome, generation))
    }

    /// `GET /v1/workspaces/{id}`.
    pub async fn get(&self, id: &str) -> Result<Value> {
        let (status, doc) = self
            .call(reqwest::Method::GET, &format!("/v1/workspaces/{id}"), None)
            .await?;
        if status != 200 {
            bail!("GET workspace {id} answered {status}: {doc}");
        }
        Ok(doc)
    }

    /// `GET /v1/workspaces`: every workspace.
    pub async fn list(&self) -> Result<Vec<Value>> {
        let (status, doc) = self
            .call(reqwest::Method::GET, "/v1/workspaces", None)
            .await?;
        if status != 200 {
            bail!("GET /v1/workspaces answered {status}: {doc}");
        }
        Ok(doc["workspaces"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> Result<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .context("GET /metrics")?;
        response.text().await.context("read /metrics")
    }

    /// Follows `GET /v1/workspaces/{id}/events` as an SSE stream (events after `after`):
    /// each event is sent to the returned channel, stamped with when it was read. The stream
    /// ends when the daemon closes it or the receiver is dropped.
    pub async fn follow(
        &self,
        id: &str,
        after: i64,
    ) -> Result<mpsc::UnboundedReceiver<StreamEvent>> {
        let response = self
            .http
            .get(format!(
                "{}/v1/workspaces/{id}/events?after={after}",
                self.base
            ))
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .context("open the event stream")?;
        if !response.status().is_success() {
            bail!("the event stream answered {}", response.status());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut body = response.bytes_stream();
        tokio::spawn(async move {
            let mut buffer: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                let received = Instant::now();
                buffer.extend_from_slice(&chunk);
                while let Some(end) = find(&buffer, b"\n\n") {
                    let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_frame(&frame, received) {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One SSE frame (`id:`, `event:`, `data:` lines); comments (keep-alives) give `None`.
fn parse_frame(frame: &[u8], received: Instant) -> Option<StreamEvent> {
    let text = std::str::from_utf8(frame).ok()?;
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    let data: Value = serde_json::from_str(data).ok()?;
    Some(StreamEvent {
        received,
        kind: data["type"].as_str()?.to_owned(),
        generation: data["generation"].as_u64()?,
        data,
    })
}

/// Waits on `events` for `kind` of `generation`; `None` when `timeout` passes or the stream
/// ends first. Other events are skipped.
pub async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<StreamEvent>,
    kind: &str,
    generation: u64,
    timeout: Duration,
) -> Option<StreamEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if event.kind == kind && event.generation == generation => {
                return Some(event)
            }
            Ok(Some(event))
                if event.kind == "provision_failed" && event.generation == generation =>
            {
                eprintln!("warning: generation {generation} failed: {}", event.data);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_parse_and_keepalives_do_not() {
        let now = Instant::now();
        let frame = b"id: 7\nevent: provision_succeeded\ndata: {\"type\":\"provision_succeeded\",\"generation\":3,\"seq\":7}\n\n";
        let event = parse_frame(frame, now).expect("an event");
        assert_eq!(
            (event.kind.as_str(), event.generation),
            ("provision_succeeded", 3)
        );
        assert!(parse_frame(b": keepalive\n\n", now).is_none());
    }

    #[test]
    fn the_config_keeps_the_heartbeat_timeout_above_twice_the_interval() {
        let config = DaemonConfig {
            socket: PathBuf::from("/var/run/docker.sock"),
            owner: "o".to_owned(),
            max_concurrent_ops: 4,
            heartbeat: Some("30s".to_owned()),
        };
        let text = config.toml();
        assert!(text.contains("heartbeat_timeout = \"180s\""), "{text}");
        assert!(text.contains("max_concurrent_ops = 4"));
    }
}
