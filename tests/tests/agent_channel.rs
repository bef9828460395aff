//! The agent channel end to end: the real daemon runs the real `steward-agent` as a local
//! process (process provider), which registers, heartbeats and receives restart contexts.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use steward_tests::{
    eventually, generation_of, instance_processes, of_type, seq_of, summarize, Api, Daemon,
};

const WAIT: Duration = Duration::from_secs(30);

fn config(boot_timeout: &str, max_failures: u32) -> String {
    format!(
        r#"default_provider = "process"
[providers.process]
stop_grace = "2s"
[restart]
boot_timeout = "{boot_timeout}"
context_timeout = "10s"
[health]
interval = "1s"
agent_heartbeat_interval = "200ms"
[backoff]
initial = "100ms"
max = "1s"
jitter = 0.0
max_failures = {max_failures}
"#
    )
}

/// The environment of a running process, from /proc.
fn environ(pid: u64) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/<pid>/environ");
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Waits until generation `generation` is running with its agent registered; returns the
/// agent's URL and its `/health` answer.
async fn registered(api: &Api, id: &str, generation: u64) -> (String, Value) {
    let url = eventually(WAIT, "the agent to register", || async {
        let doc = api.workspace(id).await;
        let events = api.events(id).await;
        let registered = events
            .iter()
            .any(|e| e["type"] == "agent_registered" && generation_of(e) == generation);
        match (doc["phase"].as_str(), doc["agent"]["url"].as_str()) {
            (Some("running"), Some(url)) if registered && generation_of(&doc) == generation => {
                Ok(url.to_owned())
            }
            _ => Err(format!("{doc} / {}", summarize(&events))),
        }
    })
    .await;
    let health: Value = reqwest::get(format!("{url}/health"))
        .await
        .expect("agent health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["generation"], generation, "{health}");
    (url, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_generation_gets_fresh_credentials_and_exactly_one_restart_context() {
    let daemon = Daemon::start(&config("30s", 5)).await;
    let api = daemon.client();
    let created = api
        .create(&json!({ "name": "agent", "secrets": { "API_KEY": "v1" } }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["provider"], "process");
    assert_eq!(created["ready_when"], "agent");

    let (_, first) = registered(&api, &id, 1).await;
    let old_pid = first["pid"].as_u64().expect("pid");
    let old_env = environ(old_pid);
    assert_eq!(old_env.get("API_KEY").map(String::as_str), Some("v1"));
    assert_eq!(
        old_env.get("STEWARD_GENERATION").map(String::as_str),
        Some("1")
    );
    assert_eq!(old_env.get("STEWARD_WORKSPACE_ID"), Some(&id));
    let old_token = old_env
        .get("STEWARD_AGENT_TOKEN")
        .expect("agent token")
        .clone();
    assert!(
        !old_env.contains_key("HOME"),
        "the daemon's own environment does not leak"
    );

    // A secret write: a config restart to generation 2.
    api.put(
        &format!("/v1/workspaces/{id}/secrets/API_KEY"),
        &json!({ "value": "v2" }),
    )
    .await
    .expect(202);
    let (new_url, second) = registered(&api, &id, 2).await;
    let new_env = environ(second["pid"].as_u64().expect("pid"));
    assert_eq!(
        new_env.get("API_KEY").map(String::as_str),
        Some("v2"),
        "the new process has the new value"
    );
    assert_eq!(
        new_env.get("STEWARD_GENERATION").map(String::as_str),
        Some("2")
    );
    assert_ne!(
        new_env.get("STEWARD_AGENT_TOKEN"),
        Some(&old_token),
        "a fresh token per generation"
    );
    assert!(
        !Path::new(&format!("/proc/{old_pid}")).exists(),
        "the old process is gone"
    );

    // The previous generation's token is refused.
    let old_agent = api.with_token(Some(&old_token));
    old_agent
        .post("/v1/agent/heartbeat", &json!({}))
        .await
        .expect_error(401, "UNAUTHORIZED");
    old_agent
        .post(
            "/v1/agent/register",
            &json!({ "url": "http://127.0.0.1:9" }),
        )
        .await
        .expect_error(401, "UNAUTHORIZED");

    // Exactly one restart context, for generation 2, after its agent proved fresh.
    let contexts = eventually(WAIT, "the restart context", || async {
        let answer: Value = reqwest::get(format!("{new_url}/context"))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let contexts = answer["contexts"].as_array().cloned().unwrap_or_default();
        if contexts.is_empty() {
            Err(answer.to_string())
        } else {
            Ok(contexts)
        }
    })
    .await;
    let events = api.events(&id).await;
    assert_eq!(contexts.len(), 1, "{contexts:?}");
    assert_eq!(contexts[0]["generation"], 2);
    assert_eq!(contexts[0]["previous_generation"], 1);
    assert_eq!(contexts[0]["causes"], json!(["config"]));
    let delivered = of_type(&events, "context_delivered");
    assert_eq!(delivered.len(), 1, "{}", summarize(&events));
    let registered_at = events
        .iter()
        .find(|e| e["type"] == "agent_registered" && generation_of(e) == 2)
        .map(seq_of)
        .expect("agent_registered g2");
    assert!(
        seq_of(delivered[0]) > registered_at,
        "delivered only after the new agent registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_registers_times_out_backs_off_and_is_parked() {
    let daemon = Daemon::start(&config("500ms", 2)).await;
    let api = daemon.client();
    // A command that runs but never registers, though told to (a unique argument to find it
    // later).
    let marker = "777.25";
    let created = api
        .create(&json!({ "name": "silent", "command": ["sleep", marker], "ready_when": "agent" }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let parked = api.wait_phase_within(&id, "failed", WAIT).await;
    assert_eq!(parked["failure"]["reason"], "boot_timeout", "{parked}");
    let inspected = api.get(&format!("/v1/admin/actors/{id}")).await.expect(200);
    assert_eq!(inspected["last_error"], "boot_timeout", "{inspected}");

    let events = api.events(&id).await;
    assert!(
        of_type(&events, "boot_timeout").len() >= 3,
        "{}",
        summarize(&events)
    );
    let delays: Vec<u64> = of_type(&events, "backoff_scheduled")
        .into_iter()
        .filter_map(|e| e["delay_ms"].as_u64())
        .collect();
    assert!(
        delays.len() >= 2 && delays.windows(2).all(|w| w[0] < w[1]),
        "growing backoff: {delays:?}"
    );
    assert!(
        of_type(&events, "failed").len() == 1,
        "{}",
        summarize(&events)
    );
    // Parked: its unregistered process does not linger.
    eventually(WAIT, "the silent process to be stopped", || async {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output();
        match out {
            Ok(o) if o.stdout.is_empty() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// A stopped workspace shows no agent: its URL and last heartbeat belonged to an instance
/// that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_workspace_shows_no_agent_as_if_live() {
    let daemon = Daemon::start(&config("30s", 5)).await;
    let api = daemon.client();
    let created = api.create(&json!({ "name": "stopping" })).await;
    let id = created["id"].as_str().expect("id").to_owned();
    registered(&api, &id, 1).await;
    assert!(api.workspace(&id).await["agent"]["last_heartbeat_at"].is_string());
    api.post_empty(&format!("/v1/workspaces/{id}/stop"))
        .await
        .expect(202);
    let stopped = api.wait_phase_within(&id, "stopped", WAIT).await;
    assert_eq!(
        stopped["agent"],
        json!({ "url": null, "last_heartbeat_at": null }),
        "{stopped}"
    );
}

/// A workspace that names its own command (not the agent) is ready once its process runs:
/// without `ready_when`, a command means `instance`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_command_runs_without_an_agent() {
    let daemon = Daemon::start(&config("1s", 2)).await;
    let api = daemon.client();
    let created = api
        .create(&json!({ "name": "plain", "command": ["sleep", "600"] }))
        .await;
    assert_eq!(created["ready_when"], "instance", "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let running = api.wait_phase_within(&id, "running", WAIT).await;
    assert!(running["failure"].is_null(), "{running}");
    assert_eq!(instance_processes(&id).len(), 1, "its process runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_in_any_log_line() {
    let canary = format!("canary-{}", uuid::Uuid::new_v4());
    let rotated = format!("canary-{}", uuid::Uuid::new_v4());
    let mut daemon = Daemon::start(&config("30s", 5)).await;
    let api = daemon.client();
    let created = api
        .create(&json!({ "name": "canary", "secrets": { "CANARY": canary } }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    registered(&api, &id, 1).await;
    api.put(
        &format!("/v1/workspaces/{id}/secrets/CANARY"),
        &json!({ "value": rotated }),
    )
    .await
    .expect(202);
    registered(&api, &id, 2).await;
    // A second workspace still running when the daemon stops: its process must go with it.
    let other = api.create(&json!({ "name": "survivor?" })).await;
    let other = other["id"].as_str().expect("id").to_owned();
    let (_, health) = registered(&api, &other, 1).await;
    let pid = health["pid"].as_u64().expect("pid");
    api.delete(&format!("/v1/workspaces/{id}"))
        .await
        .expect(200);
    daemon.stop_gracefully().await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon stops its children on exit"
    );

    let mut logs = daemon.logs();
    for entry in std::fs::read_dir(daemon.data_dir().join("logs")).expect("workspace logs") {
        logs.push_str(&std::fs::read_to_string(entry.expect("entry").path()).expect("log"));
    }
    assert!(logs.contains("registered"), "the logs were captured");
    assert!(
        !logs.contains(&canary) && !logs.contains(&rotated),
        "a secret value was logged"
    );
}
