//! The daemon under test: the release `steward` binary, launched the way the end-to-end
//! tests launch theirs (`steward_testkit::Launch`: a child process on 127.0.0.1 with a private
//! data dir), its configuration for a Docker benchmark, the calls the benches make on its API,
//! and the reading of its JSON log.
//!
//! It only drives the daemon from outside — its HTTP API, its documented files and its log —
//! and never reaches into its crates or its database.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use steward_testkit::{CreateBody, EventStream, Launch, StreamEvent, Workdir};

pub use steward_testkit::{Api, Daemon};

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

/// Spawns `bin serve` in `dir` (reusing `dir/data` if it exists) with `config`, on `listen`
/// (default: a free port). Returns at once; see [`Daemon::wait_up`].
pub fn spawn(bin: &Path, dir: &Path, config: &str, listen: Option<SocketAddr>) -> Result<Daemon> {
    Ok(Launch::new(config)
        .bin(bin)
        .dir(Workdir::at(dir))
        .listen(listen)
        .spawn()?)
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

/// The calls the benches make, each an error (never a panic) when the daemon answers
/// something else than expected.
pub trait BenchApi {
    /// `POST /v1/workspaces`: a Docker workspace running `image`, ready when its container
    /// runs. Returns its id.
    async fn create_docker(&self, name: &str, image: &str) -> Result<String>;
    /// `POST /v1/workspaces/{id}/restart`; returns the outcome and the generation that will
    /// carry the restart.
    async fn try_restart(&self, id: &str) -> Result<(String, u64)>;
    /// `GET /v1/workspaces/{id}`.
    async fn document(&self, id: &str) -> Result<Value>;
    /// `GET /v1/workspaces`: every workspace.
    async fn list(&self) -> Result<Vec<Value>>;
    /// `GET /metrics` as text.
    async fn metrics(&self) -> Result<String>;
}

impl BenchApi for Api {
    async fn create_docker(&self, name: &str, image: &str) -> Result<String> {
        let body = CreateBody::named(name)
            .image(image)
            .provider("docker")
            .ready_when("instance");
        let reply = self
            .try_send(
                self.request(reqwest::Method::POST, "/v1/workspaces")
                    .json(&body),
            )
            .await
            .context("POST /v1/workspaces")?;
        let doc = reply.json;
        if reply.status != 201 {
            bail!("create answered {}: {doc}", reply.status);
        }
        if doc["ready_when"] != "instance" || doc["provider"] != "docker" {
            bail!("the workspace is not a docker one ready when its instance runs: {doc}");
        }
        doc["id"]
            .as_str()
            .map(str::to_owned)
            .context("create answered without an id")
    }

    async fn try_restart(&self, id: &str) -> Result<(String, u64)> {
        let path = format!("/v1/workspaces/{id}/restart");
        let reply = self
            .try_send(self.request(reqwest::Method::POST, &path))
            .await
            .with_context(|| format!("POST {path}"))?;
        if reply.status != 202 {
            bail!("restart of {id} answered {}: {}", reply.status, reply.text);
        }
        let outcome = reply.json["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let generation = reply.json["generation"]
            .as_u64()
            .context("restart answered without a generation")?;
        Ok((outcome, generation))
    }

    async fn document(&self, id: &str) -> Result<Value> {
        let path = format!("/v1/workspaces/{id}");
        let reply = self
            .try_get(&path)
            .await
            .with_context(|| format!("GET {path}"))?;
        if reply.status != 200 {
            bail!(
                "GET workspace {id} answered {}: {}",
                reply.status,
                reply.text
            );
        }
        Ok(reply.json)
    }

    async fn list(&self) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut uri = "/v1/workspaces".to_owned();
        loop {
            let reply = self.try_get(&uri).await.context("GET /v1/workspaces")?;
            if reply.status != 200 {
                bail!("GET {uri} answered {}: {}", reply.status, reply.text);
            }
            all.extend(
                reply.json["workspaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            match reply.json["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/v1/workspaces?cursor={cursor}"),
                None => return Ok(all),
            }
        }
    }

    async fn metrics(&self) -> Result<String> {
        Ok(self.try_get("/metrics").await.context("GET /metrics")?.text)
    }
}

/// Waits on `events` for `kind` of `generation`; `None` when `timeout` passes or the stream
/// ends first. Other events are skipped; a failure of that generation is reported on stderr.
pub async fn wait_event(
    events: &mut EventStream,
    kind: &str,
    generation: u64,
    timeout: Duration,
) -> Option<StreamEvent> {
    events
        .next_matching(timeout, |event| {
            if event.kind() == "provision_failed" && event.generation() == generation {
                eprintln!("warning: generation {generation} failed: {}", event.data);
            }
            event.kind() == kind && event.generation() == generation
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
