//! End-to-end test harness: runs the real `steward` binary on port 0 in a private temporary
//! directory and drives it over HTTP only.
//!
//! What it owns: starting/stopping daemon processes, an authorized JSON client, a single
//! `eventually` helper that polls a condition under a deadline, and checkers for the lifecycle
//! invariants a user can observe through the event log.
//!
//! What it must not do: reach into the daemon's crates, its database or its internals. Every
//! assertion is made through the public HTTP API (plus the files the daemon documents: the
//! listen address, the admin token and the log).
//!
//! Running: `cargo build -p steward && cargo test -p steward-tests` (set `STEWARD_BIN` to test
//! another binary). Each test gets its own temporary directory and port, so tests run in
//! parallel; when a test panics, the tail of its daemon's log is printed.

pub mod docker;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;

/// How long the harness waits for the daemon to come up or to exit.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Step between two polls of a condition.
const POLL_STEP: Duration = Duration::from_millis(20);
/// Upper bound for one ordinary HTTP request (streams are bounded by their readers instead).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for [`Daemon::wait_phase`] and [`Daemon::wait_settled`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The configuration most tests start from: the sim provider with the given start delay, no
/// settle window, short backoff. Tests with special needs write their own TOML.
pub fn sim_config(start_delay_ms: u64) -> String {
    format!(
        r#"default_provider = "sim"

[providers.sim]
start_delay = "{start_delay_ms}ms"
stop_delay = "10ms"
boot_pending = "0s"
fail_rate = 0.0

[restart]
debounce_window = "60s"
settle_window = "0s"
provision_timeout = "30s"
stop_timeout = "10s"
boot_timeout = "30s"

[backoff]
initial = "100ms"
max = "2s"

[http]
max_body_bytes = 65536
"#
    )
}

/// Path of the daemon binary: `$STEWARD_BIN`, else `<target>/debug/steward` of this workspace.
pub fn steward_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STEWARD_BIN") {
        return PathBuf::from(bin);
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    };
    target.join("debug").join("steward")
}

/// Polls `condition` every 20 ms until it returns `Ok`, and returns that value.
///
/// The condition returns `Err(description)` while it does not hold yet; when `timeout` passes,
/// this panics with `what` and the last description, so a failing test says what it was
/// waiting for and what it saw instead.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_every(POLL_STEP, timeout, what, condition).await
}

/// Like [`eventually`] with another polling step, for conditions that are expensive to
/// evaluate (such as listing thousands of workspaces) and would load the daemon under test.
pub async fn eventually_every<T, F, Fut>(
    step: Duration,
    timeout: Duration,
    what: &str,
    mut condition: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match condition().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        tokio::time::sleep(step).await;
    }
}

/// One HTTP answer, read completely.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The raw body text.
    pub text: String,
    /// The body parsed as JSON, `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Reply {
    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}: {}",
            self.status, self.text
        );
        self.json
    }

    /// Asserts an error answer: the status and the `error` code, and that `message` is a string.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected HTTP {status} {code}, got {}: {}",
            self.status, self.text
        );
        assert_eq!(
            self.json["error"].as_str(),
            Some(code),
            "expected error code {code} (HTTP {status}), body: {}",
            self.text
        );
        assert!(
            self.json["message"].is_string(),
            "error body has no string `message`: {}",
            self.text
        );
    }
}

/// A JSON client for one daemon, optionally carrying a bearer token.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// Absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The same client with another bearer token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.map(str::to_owned),
        }
    }

    /// A request builder with the bearer token set and no timeout (for streams).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request built with [`Api::request`] (bounded by a timeout) and reads the answer.
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        let response = builder
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|err| panic!("HTTP request failed: {err:?}"));
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .unwrap_or_else(|err| panic!("reading HTTP body failed: {err:?}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST path` without a body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(Method::POST, path)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `method path` with a raw body sent as `application/json` (for malformed input).
    pub async fn raw(&self, method: Method, path: &str, body: impl Into<String>) -> Reply {
        let body: String = body.into();
        self.send(
            self.request(method, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Creates a workspace from `body`, asserts 201 and returns the document.
    pub async fn create(&self, body: &Value) -> Value {
        self.post("/v1/workspaces", body).await.expect(201)
    }

    /// Creates a workspace with only a name and returns its id.
    pub async fn create_named(&self, name: &str) -> String {
        let doc = self.create(&serde_json::json!({ "name": name })).await;
        id_of(&doc)
    }

    /// `GET /v1/workspaces/{id}`, asserting 200.
    pub async fn workspace(&self, id: &str) -> Value {
        self.get(&format!("/v1/workspaces/{id}")).await.expect(200)
    }

    /// All workspace documents (`GET /v1/workspaces`).
    pub async fn workspaces(&self) -> Vec<Value> {
        let body = self.get("/v1/workspaces").await.expect(200);
        body["workspaces"]
            .as_array()
            .unwrap_or_else(|| panic!("`workspaces` is not an array: {body}"))
            .clone()
    }

    /// `POST /v1/workspaces/{id}/restart`, asserting 202; returns `{outcome, generation}`.
    pub async fn restart(&self, id: &str) -> Value {
        self.post_empty(&format!("/v1/workspaces/{id}/restart"))
            .await
            .expect(202)
    }

    /// Every event of a workspace, oldest first, fetched page by page.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.events_after(id, 0).await
    }

    /// Every event of a workspace with `seq > after`, oldest first.
    pub async fn events_after(&self, id: &str, after: u64) -> Vec<Value> {
        const PAGE: usize = 10_000;
        let mut all: Vec<Value> = Vec::new();
        let mut after = after;
        loop {
            let path = format!("/v1/workspaces/{id}/events?after={after}&limit={PAGE}");
            let body = self.get(&path).await.expect(200);
            let page = body["events"]
                .as_array()
                .unwrap_or_else(|| panic!("`events` is not an array: {body}"))
                .clone();
            let len = page.len();
            if let Some(last) = page.last() {
                after = seq_of(last);
            }
            all.extend(page);
            if len < PAGE {
                return all;
            }
        }
    }

    /// Waits until the workspace is in `phase`; returns its document.
    pub async fn wait_phase(&self, id: &str, phase: &str) -> Value {
        self.wait_phase_within(id, phase, DEFAULT_WAIT).await
    }

    /// Like [`Api::wait_phase`] with an explicit deadline.
    pub async fn wait_phase_within(&self, id: &str, phase: &str, timeout: Duration) -> Value {
        let what = format!("workspace {id} to be {phase}");
        eventually(timeout, &what, || async {
            let reply = self.get(&format!("/v1/workspaces/{id}")).await;
            if reply.status == 200 && reply.json["phase"] == phase {
                Ok(reply.json)
            } else {
                Err(format!("HTTP {}: {}", reply.status, reply.text))
            }
        })
        .await
    }

    /// Waits until the workspace's actor is outside its debounce window (health restarts
    /// possible again).
    pub async fn wait_debounce_passed(&self, id: &str) {
        eventually(DEFAULT_WAIT, "the debounce window to pass", || async {
            let actor = self
                .get(&format!("/v1/admin/actors/{id}"))
                .await
                .expect(200);
            if actor["debounce_until"].is_null() {
                Ok(())
            } else {
                Err(actor.to_string())
            }
        })
        .await;
    }

    /// Waits until the workspace is running and idle: no cycle in flight, nothing pending, the
    /// instance that is up is the latest generation, and the event log has caught up with the
    /// document (its last cycle is closed by a `provision_succeeded` of that generation).
    /// Returns the document.
    ///
    /// The event log is allowed to trail the document briefly (the daemon writes events in
    /// batches), so both are polled together.
    pub async fn wait_settled(&self, id: &str) -> Value {
        self.wait_settled_within(id, DEFAULT_WAIT).await
    }

    /// Like [`Api::wait_settled`] with an explicit deadline.
    pub async fn wait_settled_within(&self, id: &str, timeout: Duration) -> Value {
        let what = format!("workspace {id} to be running and idle, with its event log caught up");
        eventually(timeout, &what, || async {
            let reply = self.get(&format!("/v1/workspaces/{id}")).await;
            if reply.status != 200 || !is_settled(&reply.json) {
                return Err(format!("HTTP {}: {}", reply.status, reply.text));
            }
            let events = self.events(id).await;
            let last_cycle_event = events.iter().rev().find(|e| {
                e["type"] == "provision_started"
                    || e["type"] == "provision_succeeded"
                    || e["type"] == "provision_failed"
            });
            match last_cycle_event {
                Some(e)
                    if e["type"] == "provision_succeeded"
                        && e["generation"] == reply.json["observed_generation"] =>
                {
                    Ok(reply.json)
                }
                _ => Err(format!(
                    "document settled ({}) but the event log has not caught up: {}",
                    reply.text,
                    summarize(&events)
                )),
            }
        })
        .await
    }

    /// Waits until every workspace in `ids` is running and idle, polling the list endpoint.
    pub async fn wait_all_settled(&self, ids: &BTreeSet<String>, timeout: Duration) {
        let what = format!("{} workspaces to be running and idle", ids.len());
        eventually_every(Duration::from_millis(250), timeout, &what, || async {
            let docs = self.workspaces().await;
            let settled: BTreeSet<String> = docs
                .iter()
                .filter(|doc| is_settled(doc))
                .map(id_of)
                .collect();
            let missing: Vec<&Value> = docs
                .iter()
                .filter(|doc| ids.contains(&id_of(doc)) && !is_settled(doc))
                .take(3)
                .collect();
            let left = ids.difference(&settled).count();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} not settled yet, e.g. {missing:?}"))
            }
        })
        .await
    }
}

/// Whether a workspace document is running with no cycle in flight or pending, and the
/// instance that is up is the latest generation.
pub fn is_settled(doc: &Value) -> bool {
    doc["phase"] == "running"
        && doc["restart"]["in_flight"] == false
        && doc["restart"]["pending"] == false
        && doc["generation"] == doc["observed_generation"]
}

/// The `id` of a workspace document, as a string.
#[track_caller]
pub fn id_of(doc: &Value) -> String {
    doc["id"]
        .as_str()
        .unwrap_or_else(|| panic!("document has no string `id`: {doc}"))
        .to_owned()
}

/// The `seq` of an event.
#[track_caller]
pub fn seq_of(event: &Value) -> u64 {
    event["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event has no integer `seq`: {event}"))
}

/// The `generation` of an event or a document.
#[track_caller]
pub fn generation_of(value: &Value) -> u64 {
    value["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer `generation` in {value}"))
}

/// The events of a given type.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Compact one-line rendering of an event list for failure messages.
pub fn summarize(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "#{} {} g{}",
                e["seq"],
                e["type"].as_str().unwrap_or("?"),
                e["generation"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asserts that the event log never shows two provisioning cycles at once.
///
/// Also checks the log is ordered by strictly increasing `seq`, that every
/// `provision_started` is closed by a `provision_succeeded`/`provision_failed` of the same
/// generation before the next `provision_started`, and that cycle generations strictly
/// increase.
#[track_caller]
pub fn assert_no_overlapping_cycles(events: &[Value]) {
    let mut last_seq = 0;
    let mut open: Option<u64> = None;
    let mut last_started: Option<u64> = None;
    for event in events {
        let seq = seq_of(event);
        assert!(
            seq > last_seq,
            "event seq not strictly increasing at #{seq}: {}",
            summarize(events)
        );
        last_seq = seq;
        match event["type"].as_str() {
            Some("provision_started") => {
                let generation = generation_of(event);
                if let Some(open) = open {
                    panic!(
                        "overlapping cycles: provision_started g{generation} (#{seq}) while \
                         g{open} was still in flight: {}",
                        summarize(events)
                    );
                }
                if let Some(previous) = last_started {
                    assert!(
                        generation > previous,
                        "cycle generations not increasing: g{generation} (#{seq}) after \
                         g{previous}: {}",
                        summarize(events)
                    );
                }
                open = Some(generation);
                last_started = Some(generation);
            }
            Some("provision_succeeded") | Some("provision_failed") => {
                let generation = generation_of(event);
                if open == Some(generation) {
                    open = None;
                } else {
                    panic!(
                        "{} g{generation} (#{seq}) does not close the open cycle {open:?}: {}",
                        event["type"],
                        summarize(events)
                    );
                }
            }
            _ => {}
        }
    }
}

/// Asserts a workspace's log has no `failed` or `provision_failed` event.
#[track_caller]
pub fn assert_never_failed(events: &[Value]) {
    let failures: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "failed" || e["type"] == "provision_failed")
        .collect();
    assert!(
        failures.is_empty(),
        "unexpected failure events {failures:?} in {}",
        summarize(events)
    );
}

/// A running `steward serve` process in its own directory, killed on drop.
///
/// Layout of the directory: `steward.toml` (config), `data/` (data dir), `steward.log`
/// (stdout and stderr of every run, appended).
pub struct Daemon {
    /// Shared so a test can stop one daemon and start the next on the same directory.
    dir: Arc<TempDir>,
    child: Option<Child>,
    addr: SocketAddr,
    token: String,
    http: reqwest::Client,
}

impl Daemon {
    /// Starts a daemon with `config` (TOML) in a fresh temporary directory.
    pub async fn start(config: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("steward-e2e-")
            .tempdir()
            .expect("create a temporary directory");
        Daemon::start_in(Arc::new(dir), config).await
    }

    /// Starts a daemon with `config` in `dir`, reusing its data dir if one exists.
    pub async fn start_in(dir: Arc<TempDir>, config: &str) -> Daemon {
        Daemon::start_with(dir, config, None, &[]).await
    }

    /// Like [`Daemon::start_in`], listening on `listen` (default: a free port) with extra
    /// environment variables (e.g. `FAILPOINTS`). A crash test restarts a daemon on the port
    /// of the one it killed, so that the agents that outlived it reach the next one.
    pub async fn start_with(
        dir: Arc<TempDir>,
        config: &str,
        listen: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let bin = steward_bin();
        assert!(
            bin.is_file(),
            "steward binary not found at {}: run `cargo build -p steward` first (or set STEWARD_BIN)",
            bin.display()
        );
        let root = dir.path();
        let data = root.join("data");
        fs::create_dir_all(&data).expect("create the data dir");
        let config_path = root.join("steward.toml");
        fs::write(&config_path, config).expect("write the config file");
        let addr_file = data.join("listen.addr");
        match fs::remove_file(&addr_file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("remove stale {}: {err}", addr_file.display()),
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("steward.log"))
            .expect("open the log file");
        let log_err = log.try_clone().expect("clone the log file handle");
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", bin.display()));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(128)
            .build()
            .expect("build the HTTP client");
        let mut daemon = Daemon {
            dir,
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            http,
        };
        daemon.wait_until_up().await;
        daemon
    }

    /// Waits for `listen.addr`, `admin.token` and `GET /healthz` = 200.
    async fn wait_until_up(&mut self) {
        let data = self.data_dir();
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "steward exited during start-up with {status}; log tail:\n{}",
                    self.log_tail(200)
                );
            }
            if let Some(addr) = read_addr(&data.join("listen.addr")) {
                if let Ok(token) = fs::read_to_string(data.join("admin.token")) {
                    let token = token.trim();
                    if !token.is_empty() {
                        self.addr = addr;
                        self.token = token.to_owned();
                        let healthy = self
                            .http
                            .get(format!("http://{addr}/healthz"))
                            .timeout(Duration::from_secs(2))
                            .send()
                            .await
                            .map(|r| r.status().as_u16() == 200)
                            .unwrap_or(false);
                        if healthy {
                            return;
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "steward did not come up within {PROCESS_TIMEOUT:?} (listen.addr, admin.token, \
                     GET /healthz = 200); log tail:\n{}",
                    self.log_tail(200)
                );
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// Waits (at most `timeout`) for the daemon to exit on its own, e.g. at a kill point,
    /// and returns how it ended.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "steward did not exit within {timeout:?}; log tail:\n{}",
                self.log_tail(100)
            );
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("poll the steward process")
    }

    /// The temporary directory (config, data dir, log); pass it to [`Daemon::start_in`].
    pub fn dir(&self) -> Arc<TempDir> {
        Arc::clone(&self.dir)
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The address the daemon listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token read from `admin.token`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The process id (while the daemon runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client carrying the admin token.
    pub fn client(&self) -> Api {
        Api {
            http: self.http.clone(),
            base: format!("http://{}", self.addr),
            token: Some(self.token.clone()),
        }
    }

    /// A client with no token at all.
    pub fn anonymous(&self) -> Api {
        self.client().with_token(None)
    }

    /// Everything the daemon wrote to stdout and stderr so far (all runs in this directory).
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.dir.path().join("steward.log")) {
            use std::io::Read;
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).is_ok() {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        text
    }

    /// The last `lines` lines of [`Daemon::logs`].
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs();
        let all: Vec<&str> = logs.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends SIGTERM, waits (bounded) for the process to exit and asserts it exited with
    /// success.
    pub async fn stop_gracefully(&mut self) {
        let pid = self.pid().expect("the daemon is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
        let exit = eventually(PROCESS_TIMEOUT, "steward to exit after SIGTERM", || {
            let exit = self.try_wait();
            async move { exit.ok_or_else(|| "still running".to_owned()) }
        })
        .await;
        self.child = None;
        assert!(
            exit.success(),
            "steward exited with {exit} after SIGTERM; log tail:\n{}",
            self.log_tail(200)
        );
    }
}

impl Daemon {
    /// Kills the daemon with SIGKILL, as a crash would (no chance to flush anything), and
    /// waits for it to be gone.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Graceful first, so the daemon stops the instances it started (local processes
            // would otherwise outlive the test); SIGKILL if it does not exit in time.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let tail = self.log_tail(80);
            eprintln!(
                "---- steward log ({}), last 80 lines ----\n{tail}\n---- end of log ----",
                self.dir.path().join("steward.log").display()
            );
        }
    }
}

/// Reads a complete `IP:PORT` from the listen-address file, if it is there yet.
fn read_addr(path: &Path) -> Option<SocketAddr> {
    let text = fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

/// The value of the Prometheus sample `name{labels}` in `/metrics` text (0 if absent).
/// `labels` are `key="value"` pairs that must all appear in the sample's label set.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Pids of the live (non-zombie) processes that run as an instance of workspace `id`: those
/// whose environment holds `STEWARD_WORKSPACE_ID=<id>` (process provider instances).
pub fn instance_processes(id: &str) -> Vec<u32> {
    let needle = format!("STEWARD_WORKSPACE_ID={id}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let live = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat[stat.rfind(')')? + 1..]
                        .split_whitespace()
                        .next()?
                        .to_owned();
                    Some(state != "Z" && state != "X")
                })
                .unwrap_or(false);
            live && fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(kinds: &[(&str, u64)]) -> Vec<Value> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, (kind, generation))| {
                json!({ "seq": i + 1, "type": kind, "generation": generation, "at": "t" })
            })
            .collect()
    }

    #[test]
    fn sequential_cycles_pass() {
        assert_no_overlapping_cycles(&log(&[
            ("created", 0),
            ("provision_started", 1),
            ("restart_coalesced", 1),
            ("provision_succeeded", 1),
            ("provision_started", 2),
            ("provision_failed", 2),
            ("provision_started", 3),
        ]));
    }

    #[test]
    #[should_panic(expected = "overlapping cycles")]
    fn a_second_start_before_the_first_ends_fails() {
        assert_no_overlapping_cycles(&log(&[
            ("provision_started", 1),
            ("provision_started", 2),
            ("provision_succeeded", 1),
        ]));
    }

    #[test]
    #[should_panic(expected = "does not close")]
    fn a_result_of_another_generation_fails() {
        assert_no_overlapping_cycles(&log(&[
            ("provision_started", 2),
            ("provision_succeeded", 1),
        ]));
    }

    #[test]
    #[should_panic(expected = "not increasing")]
    fn a_reused_generation_fails() {
        assert_no_overlapping_cycles(&log(&[
            ("provision_started", 2),
            ("provision_succeeded", 2),
            ("provision_started", 2),
        ]));
    }

    #[test]
    fn settled_means_running_idle_and_current() {
        let doc = json!({
            "phase": "running", "generation": 2, "observed_generation": 2,
            "restart": { "in_flight": false, "pending": false },
        });
        assert!(is_settled(&doc));
        let mut pending = doc.clone();
        pending["restart"]["pending"] = json!(true);
        assert!(!is_settled(&pending));
        let mut behind = doc;
        behind["observed_generation"] = json!(1);
        assert!(!is_settled(&behind));
    }
}
