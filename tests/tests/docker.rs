//! The docker provider against the real engine: the daemon runs `steward-agent:dev`
//! (built by `make image`) as containers. Each test uses its own owner label and name prefix
//! and removes its containers at the end, so it can run beside other containers and tests.

use futures::future::join_all;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use steward_tests::docker::{docker, docker_ok, engine_ready, ContainerWatch, Owner, IMAGE};
use steward_tests::{eventually, generation_of, of_type, summarize, Api, Daemon};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);

fn config(owner: &Owner, socket: &Path, debounce: &str, max_failures: u32) -> String {
    format!(
        r#"default_provider = "docker"
[providers.docker]
enabled = true
socket = "{socket}"
owner = "{owner}"
name_prefix = "{owner}-"
stop_timeout = "2s"
call_timeout = "10s"
[restart]
debounce_window = "{debounce}"
settle_window = "0s"
boot_timeout = "30s"
[health]
interval = "200ms"
agent_heartbeat_interval = "500ms"
[backoff]
initial = "200ms"
max = "2s"
jitter = 0.0
max_failures = {max_failures}
"#,
        socket = socket.display(),
        owner = owner.0,
    )
}

fn engine_socket() -> PathBuf {
    PathBuf::from("/var/run/docker.sock")
}

/// Waits until `generation` runs with its agent registered.
async fn registered(api: &Api, id: &str, generation: u64) -> Value {
    eventually(WAIT, "the containerised agent to register", || async {
        let doc = api.workspace(id).await;
        let events = api.events(id).await;
        let registered = events
            .iter()
            .any(|e| e["type"] == "agent_registered" && generation_of(e) == generation);
        if doc["phase"] == "running" && generation_of(&doc) == generation && registered {
            Ok(doc)
        } else {
            Err(format!("{doc} / {}", summarize(&events)))
        }
    })
    .await
}

/// The environment of the workspace's container.
fn container_env(owner: &Owner, id: &str) -> Vec<String> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &format!("{}-{id}", owner.0),
    ]);
    serde_json::from_str(&out).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_stop_start_delete() {
    if !engine_ready() {
        return;
    }
    let owner = Owner::new();
    let daemon = Daemon::start(&config(&owner, &engine_socket(), "60s", 5)).await;
    let api = daemon.client();
    let created = api
        .create(&json!({ "name": "boxed", "image": IMAGE, "secrets": { "TOKEN": "s1" } }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["provider"], "docker");
    registered(&api, &id, 1).await;
    assert_eq!(
        owner.containers(false),
        [format!("{}-{id} running", owner.0)]
    );
    let env = container_env(&owner, &id);
    assert!(
        env.contains(&"TOKEN=s1".to_owned()) && env.contains(&"STEWARD_GENERATION=1".to_owned()),
        "{env:?}"
    );
    let host = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Privileged}} {{json .HostConfig.Binds}}",
        &format!("{}-{id}", owner.0),
    ]);
    assert_eq!(host, "false null", "no privilege, no host mounts");

    api.post_empty(&format!("/v1/workspaces/{id}/stop"))
        .await
        .expect(202);
    api.wait_phase_within(&id, "stopped", WAIT).await;
    assert_eq!(
        owner.containers(true),
        [format!("{}-{id} exited", owner.0)],
        "stopped, kept"
    );

    api.post_empty(&format!("/v1/workspaces/{id}/start"))
        .await
        .expect(202);
    registered(&api, &id, 2).await;
    assert_eq!(owner.running(), 1);

    // 200 once gone, 202 if the engine takes longer than the daemon waits.
    let deleted = api.delete(&format!("/v1/workspaces/{id}")).await;
    assert!(matches!(deleted.status, 200 | 202), "{deleted:?}");
    eventually(
        WAIT,
        "the workspace and its container to be gone",
        || async {
            let gone = api.get(&format!("/v1/workspaces/{id}")).await.status == 404
                && owner.containers(true).is_empty();
            if gone {
                Ok(())
            } else {
                Err(format!("{:?}", owner.containers(true)))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_restarts_give_at_most_two_cycles_and_one_live_container() {
    if !engine_ready() {
        return;
    }
    let owner = Owner::new();
    let watch = ContainerWatch::start(&owner);
    let daemon = Daemon::start(&config(&owner, &engine_socket(), "60s", 5)).await;
    let api = daemon.client();
    let id = api
        .create(&json!({ "name": "storm", "image": IMAGE }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    registered(&api, &id, 1).await;
    let before = api.events(&id).await.len();

    let path = format!("/v1/workspaces/{id}/restart");
    let restarts = join_all((0..30).map(|_| api.post_empty(&path)));
    let secret_path = format!("/v1/workspaces/{id}/secrets/LATEST");
    let secret_body = json!({ "value": "after-the-storm" });
    let secret = api.put(&secret_path, &secret_body);
    let (replies, secret) = tokio::join!(restarts, secret);
    assert!(
        replies.iter().all(|r| r.status == 202),
        "every restart accepted"
    );
    secret.expect(202);
    let final_generation = api.wait_settled(&id).await;
    // Every container start and death the engine saw, from the create to now: never two
    // containers of the workspace running at once.
    watch.assert_never_two_running(&id).await;

    let events = api.events(&id).await;
    let storm = &events[before..];
    assert!(
        of_type(storm, "provision_started").len() <= 2,
        "{}",
        summarize(storm)
    );
    assert!(
        of_type(storm, "provision_failed").is_empty(),
        "no name conflict surfaced: {}",
        summarize(storm)
    );
    registered(&api, &id, generation_of(&final_generation)).await;
    let env = container_env(&owner, &id);
    assert!(
        env.contains(&"LATEST=after-the-storm".to_owned()),
        "the last container has the latest secrets: {env:?}"
    );
    assert_eq!(owner.running(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_immediately_followed_by_restart_ends_running_with_the_latest_token() {
    if !engine_ready() {
        return;
    }
    let owner = Owner::new();
    let watch = ContainerWatch::start(&owner);
    let daemon = Daemon::start(&config(&owner, &engine_socket(), "60s", 5)).await;
    let api = daemon.client();
    let id = api.create(&json!({ "name": "race", "image": IMAGE })).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let restart = api.restart(&id).await;
    let generation = generation_of(&restart);
    registered(&api, &id, generation).await;
    let env = container_env(&owner, &id);
    assert!(
        env.contains(&format!("STEWARD_GENERATION={generation}")),
        "{env:?}"
    );
    let events = api.events(&id).await;
    assert!(
        of_type(&events, "provision_failed").is_empty() && of_type(&events, "failed").is_empty(),
        "{}",
        summarize(&events)
    );
    watch.assert_never_two_running(&id).await;
    assert_eq!(owner.running(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_from_outside_restarts_once_and_a_second_kill_in_the_window_is_dropped() {
    if !engine_ready() {
        return;
    }
    let owner = Owner::new();
    let daemon = Daemon::start(&config(&owner, &engine_socket(), "5s", 5)).await;
    let api = daemon.client();
    let id = api
        .create(&json!({ "name": "killed", "image": IMAGE }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    registered(&api, &id, 1).await;
    api.wait_debounce_passed(&id).await;
    let name = format!("{}-{id}", owner.0);
    docker_ok(&["kill", &name]);
    registered(&api, &id, 2).await;
    let health = |events: &[Value]| {
        of_type(events, "provision_started")
            .into_iter()
            .filter(|e| {
                e["causes"]
                    .as_array()
                    .is_some_and(|c| c.contains(&json!("health")))
            })
            .count()
    };
    assert_eq!(health(&api.events(&id).await), 1);

    // Inside the new window: the death is dropped and counted, not acted on.
    docker_ok(&["kill", &name]);
    eventually(WAIT, "a debounce drop", || async {
        let a = api.get(&format!("/v1/admin/actors/{id}")).await.expect(200);
        let n = a["counters"]["dropped"]["health"]["debounce"]
            .as_u64()
            .unwrap_or(0);
        if n >= 1 {
            Ok(())
        } else {
            Err(a.to_string())
        }
    })
    .await;
    assert_eq!(
        health(&api.events(&id).await),
        1,
        "the kill inside the window did not restart"
    );
    let metrics = api.get("/metrics").await.text;
    assert!(metrics.contains(r#"steward_restart_dropped_total{cause="health",reason="debounce"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_ours_are_swept_and_foreign_containers_are_never_touched() {
    if !engine_ready() {
        return;
    }
    let owner = Owner::new();
    let foreign = format!("{}-foreign", owner.0);
    // Orphans exit at once (no agent env), which is fine: exited containers are listed too.
    let make_orphan = |name: &str| {
        let workspace = uuid::Uuid::new_v4().to_string();
        docker_ok(&[
            "create",
            "--name",
            name,
            "--label",
            &format!("io.steward.owner={}", owner.0),
            "--label",
            &format!("io.steward.workspace={workspace}"),
            "--label",
            "io.steward.generation=1",
            IMAGE,
        ]);
    };
    let before_boot = format!("{}-orphan-at-boot", owner.0);
    make_orphan(&before_boot);
    docker_ok(&[
        "create",
        "--name",
        &foreign,
        "--label",
        "someone.else=1",
        IMAGE,
    ]);
    let _cleanup_foreign = scopeguard(foreign.clone());

    let _daemon = Daemon::start(&config(&owner, &engine_socket(), "60s", 5)).await;
    // One left before the daemon started (boot survey), one appearing while it runs (probe
    // rounds): both are ours with no workspace, both go.
    let while_running = format!("{}-orphan-later", owner.0);
    make_orphan(&while_running);
    for orphan in [&before_boot, &while_running] {
        eventually(WAIT, "the orphan to be removed", || async {
            let left = docker(&["ps", "-aq", "--filter", &format!("name={orphan}")]);
            if left.is_empty() {
                Ok(())
            } else {
                Err(left)
            }
        })
        .await;
    }
    assert!(
        !docker(&["ps", "-aq", "--filter", &format!("name={foreign}")]).is_empty(),
        "a foreign container was touched"
    );
}

/// Removes the named container when dropped.
fn scopeguard(name: String) -> impl Drop {
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    Guard(name)
}

/// A Unix-socket proxy in front of the engine, which the test can take away and bring back.
struct EngineProxy {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl EngineProxy {
    fn start(path: PathBuf) -> Self {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind proxy socket");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    if let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        Self {
            path,
            task: Some(task),
        }
    }

    /// The engine goes away: no more connections (existing ones are cut as their tasks end).
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_fails_cycles_clearly_backs_off_and_recovers() {
    if !engine_ready() {
        return;
    }
    let owner = Owner::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("engine.sock");
    let mut proxy = EngineProxy::start(socket.clone());
    let daemon = Daemon::start(&config(&owner, &socket, "60s", 100)).await;
    let api = daemon.client();
    let id = api
        .create(&json!({ "name": "flaky-engine", "image": IMAGE }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    registered(&api, &id, 1).await;

    proxy.stop();
    api.restart(&id).await;
    let failing = eventually(WAIT, "a clear provision failure and a backoff", || async {
        let events = api.events(&id).await;
        let failed = of_type(&events, "provision_failed");
        let backoff = of_type(&events, "backoff_scheduled");
        let clear = failed.iter().any(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("unreachable"))
        });
        if clear && !backoff.is_empty() {
            Ok(events)
        } else {
            Err(summarize(&events))
        }
    })
    .await;
    assert!(
        of_type(&failing, "failed").is_empty(),
        "not parked: a later success must not be contradicted"
    );
    assert_ne!(api.workspace(&id).await["phase"], "failed");

    let _proxy = EngineProxy::start(socket);
    eventually(WAIT, "recovery once the engine is back", || async {
        let doc = api.workspace(&id).await;
        if doc["phase"] == "running" && generation_of(&doc) > 2 {
            Ok(())
        } else {
            Err(doc.to_string())
        }
    })
    .await;
    assert_eq!(owner.running(), 1);
}
