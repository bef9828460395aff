//! Everything a 2xx committed survives a graceful restart of the daemon on the same data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};
use steward_tests::{id_of, instance_processes, seq_of, sim_config, summarize, Api, Daemon};

/// What a user committed for one workspace, as read back over the API.
#[derive(Debug, PartialEq)]
struct Committed {
    name: Value,
    model: Value,
    provider: Value,
    secret_keys: BTreeSet<String>,
}

/// An event without its timestamp (whose rendering precision may legitimately differ between
/// the in-memory and the stored copy).
fn without_at(event: &Value) -> Value {
    let mut event = event.clone();
    if let Some(map) = event.as_object_mut() {
        map.remove("at");
    }
    event
}

async fn committed(api: &Api, id: &str) -> Committed {
    let doc = api.workspace(id).await;
    let keys = api
        .get(&format!("/v1/workspaces/{id}/secrets"))
        .await
        .expect(200);
    Committed {
        name: doc["name"].clone(),
        model: doc["model"].clone(),
        provider: doc["provider"].clone(),
        secret_keys: keys["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("`keys` is not an array: {keys}"))
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_workspaces_secrets_and_events() {
    let config = sim_config(30);
    let mut first = Daemon::start(&config).await;
    let token_path = first.data_dir().join("admin.token");
    let mode = std::fs::metadata(&token_path)
        .expect("admin.token exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "admin.token mode is {:o}",
        mode & 0o777
    );

    let api = first.client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let doc = api
            .create(&json!({
                "name": format!("durable-{i}"),
                "model": format!("model-{i}"),
                "env": { "GREETING": "hello" },
                "secrets": { "API_KEY": format!("durable-secret-{i}") },
            }))
            .await;
        ids.push(id_of(&doc));
    }
    for id in &ids {
        api.wait_settled(id).await;
    }
    // Some config changes and manual restarts.
    api.put(
        &format!("/v1/workspaces/{}/secrets/EXTRA", ids[0]),
        &json!({ "value": "extra-value" }),
    )
    .await
    .expect(202);
    api.put(
        &format!("/v1/workspaces/{}/model", ids[1]),
        &json!({ "model": "model-changed" }),
    )
    .await
    .expect(202);
    api.restart(&ids[2]).await;
    api.restart(&ids[3]).await;
    api.delete(&format!("/v1/workspaces/{}/secrets/API_KEY", ids[4]))
        .await
        .expect(202);
    let mut before = BTreeMap::new();
    let mut events_before = BTreeMap::new();
    for id in &ids {
        api.wait_settled(id).await;
        before.insert(id.clone(), committed(&api, id).await);
        events_before.insert(id.clone(), api.events(id).await);
    }
    assert_eq!(before[&ids[1]].model, "model-changed");
    assert!(before[&ids[0]].secret_keys.contains("EXTRA"));
    assert!(before[&ids[4]].secret_keys.is_empty());
    let token_before = first.token().to_owned();

    first.stop_gracefully().await;

    let second = Daemon::start_in(first.dir(), &config).await;
    assert_eq!(
        second.token(),
        token_before,
        "the admin token must be reused"
    );
    let mode = std::fs::metadata(&token_path)
        .expect("admin.token exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "admin.token mode is {:o}",
        mode & 0o777
    );
    let api = second.client();

    let listed: BTreeSet<String> = api.workspaces().await.iter().map(id_of).collect();
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(listed, expected, "the same workspaces after the restart");
    for id in &ids {
        assert_eq!(committed(&api, id).await, before[id], "workspace {id}");
        let events = api.events(id).await;
        let now: BTreeMap<u64, &Value> = events.iter().map(|e| (seq_of(e), e)).collect();
        for old in &events_before[id] {
            let seq = seq_of(old);
            let kept = now.get(&seq).unwrap_or_else(|| {
                panic!(
                    "event #{seq} of {id} lost; before: {}; after: {}",
                    summarize(&events_before[id]),
                    summarize(&events)
                )
            });
            assert_eq!(
                without_at(kept),
                without_at(old),
                "event #{seq} of {id} changed (ignoring `at`)"
            );
            assert!(kept["at"].is_string(), "event #{seq} of {id}: {kept}");
        }
        steward_tests::assert_no_overlapping_cycles(&events);
        api.wait_settled(id).await;
    }
    let logs = second.logs();
    for i in 0..5 {
        let canary = format!("durable-secret-{i}");
        assert!(
            !logs.contains(&canary),
            "secret {canary} leaked into the log"
        );
    }
}

/// A second `steward serve` on a data directory a daemon holds exits at once, non-zero, with
/// a message naming the holder — before it adopts the first daemon's processes, opens its
/// database or rewrites its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_exits_and_touches_nothing() {
    let config = r#"default_provider = "process"
[providers.process]
stop_grace = "2s"
[health]
interval = "200ms"
"#;
    let first = Daemon::start(config).await;
    let api = first.client();
    let created = api
        .create(&json!({ "name": "held", "command": ["sleep", "600"], "ready_when": "instance" }))
        .await;
    let id = id_of(&created);
    let before = api.wait_phase(&id, "running").await;
    let pids = instance_processes(&id);
    assert_eq!(pids.len(), 1, "one instance: {pids:?}");
    let events_before = api.events(&id).await;
    let listen_addr = std::fs::read_to_string(first.data_dir().join("listen.addr"))
        .expect("the first daemon's listen.addr");

    let second = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(steward_tests::steward_bin())
            .arg("serve")
            .arg("--config")
            .arg(first.dir().path().join("steward.toml"))
            .arg("--data-dir")
            .arg(first.data_dir())
            .args(["--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the second daemon exits at once")
    .expect("run the second daemon");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "stderr: {stderr}");
    let first_pid = first.pid().expect("the first daemon runs");
    assert!(
        stderr.contains(&format!(
            "another steward daemon (pid {first_pid}) is using the data directory"
        )),
        "{stderr}"
    );
    assert!(
        second.stdout.is_empty(),
        "it never listened: {}",
        String::from_utf8_lossy(&second.stdout)
    );

    // The first daemon's instance, workspace, events and files are as they were.
    assert_eq!(
        instance_processes(&id),
        pids,
        "the instance was not adopted or replaced"
    );
    assert_eq!(
        std::fs::read_to_string(first.data_dir().join("listen.addr")).expect("listen.addr"),
        listen_addr
    );
    let after = api.workspace(&id).await;
    assert_eq!(
        (&after["phase"], &after["generation"]),
        (&before["phase"], &before["generation"])
    );
    let events_after = api.events(&id).await;
    assert_eq!(
        events_after.len(),
        events_before.len(),
        "{}",
        summarize(&events_after)
    );
    assert_eq!(
        api.get(&format!("/v1/admin/actors/{id}")).await.expect(200)["restarts"],
        0
    );
}
