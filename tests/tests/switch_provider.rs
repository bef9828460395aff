//! `POST /v1/workspaces/{id}/switch-provider` against the real daemon: the switch is claimed
//! in the workspace's actor before any side effect, so concurrent switches have exactly one
//! winner and the losers change nothing; a switch that fails on the new provider rolls back.
//!
//! The workspaces start on `sim` and move to `process` (the real `steward-agent` as a local
//! process), so the instance on the new provider is a real process the test can count.

use futures::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;
use steward_tests::{
    eventually, id_of, instance_processes, metric, of_type, summarize, Api, Daemon,
};

const WAIT: Duration = Duration::from_secs(30);

fn config() -> &'static str {
    r#"default_provider = "sim"
[providers.sim]
start_delay = "300ms"
stop_delay = "200ms"
[providers.process]
stop_grace = "2s"
[restart]
settle_window = "0s"
boot_timeout = "20s"
[health]
interval = "1s"
agent_heartbeat_interval = "200ms"
[backoff]
initial = "100ms"
max = "1s"
"#
}

/// Removals and stops that ran on `provider` so far.
async fn removals(api: &Api, provider: &str) -> f64 {
    let text = api.get("/metrics").await.text;
    ["remove_old", "remove", "release", "stop"]
        .iter()
        .map(|step| {
            metric(
                &text,
                "steward_provider_operations_total",
                &[("provider", provider), ("step", step)],
            )
        })
        .sum()
}

/// The workspace's events, asserting they hold exactly one switch, completed.
async fn one_completed_switch(api: &Api, id: &str) -> Vec<Value> {
    let events = api.events(id).await;
    for kind in ["switch_started", "switch_completed"] {
        assert_eq!(
            of_type(&events, kind).len(),
            1,
            "{kind}: {}",
            summarize(&events)
        );
    }
    events
}

/// Waits until the workspace runs on `provider` with no switch in progress.
async fn settled_on(api: &Api, id: &str, provider: &str) -> Value {
    eventually(
        WAIT,
        &format!("the workspace to run on {provider}"),
        || async {
            let doc = api.workspace(id).await;
            let done = doc["provider"] == provider
                && doc["phase"] == "running"
                && doc["switch"].is_null()
                && !doc["restart"]["in_flight"].as_bool().unwrap_or(true);
            if done {
                Ok(doc)
            } else {
                Err(format!("{doc} / {}", summarize(&api.events(id).await)))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_switches_have_exactly_one_winner_and_one_stop() {
    let daemon = Daemon::start(config()).await;
    let api = daemon.client();
    let id = id_of(&api.create(&json!({ "name": "mover" })).await);
    api.wait_phase(&id, "running").await;
    let removed_before = removals(&api, "sim").await;

    let answers = join_all((0..20).map(|_| {
        let api = api.clone();
        let id = id.clone();
        async move {
            api.post(
                &format!("/v1/workspaces/{id}/switch-provider"),
                &json!({ "provider": "process" }),
            )
            .await
        }
    }))
    .await;
    let winners: Vec<_> = answers.iter().filter(|a| a.status == 202).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let winner: Value = serde_json::from_str(&winners[0].text).expect("json");
    assert_eq!(winner["status"], "switching");
    for loser in answers.iter().filter(|a| a.status != 202) {
        loser.expect_error(409, "ALREADY_SWITCHING");
    }

    let doc = settled_on(&api, &id, "process").await;
    assert_eq!(
        doc["ready_when"], "agent",
        "the new provider's readiness rule applies"
    );
    let events = one_completed_switch(&api, &id).await;
    assert!(of_type(&events, "switch_rolled_back").is_empty());
    let switch_cycles = of_type(&events, "provision_started")
        .into_iter()
        .filter(|e| {
            e["causes"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("switch")))
        })
        .count();
    assert_eq!(switch_cycles, 1, "{}", summarize(&events));
    assert_eq!(
        removals(&api, "sim").await - removed_before,
        1.0,
        "exactly one stop of the old instance"
    );
    assert_eq!(
        instance_processes(&id).len(),
        1,
        "one live instance on the new provider"
    );

    // A further switch to where it already is changes nothing.
    api.post(
        &format!("/v1/workspaces/{id}/switch-provider"),
        &json!({ "provider": "process" }),
    )
    .await
    .expect_error(409, "SAME_PROVIDER");
    // And back: the process is stopped, the workspace runs on sim again.
    api.post(
        &format!("/v1/workspaces/{id}/switch-provider"),
        &json!({ "provider": "sim" }),
    )
    .await
    .expect(202);
    settled_on(&api, &id, "sim").await;
    eventually(WAIT, "the process instance to be gone", || async {
        let pids = instance_processes(&id);
        if pids.is_empty() {
            Ok(())
        } else {
            Err(format!("{pids:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_cannot_provision_on_the_new_provider_rolls_back() {
    let daemon = Daemon::start(config()).await;
    let api = daemon.client();
    // sim ignores the command; the process provider cannot run it.
    let id = id_of(
        &api.create(&json!({ "name": "stuck", "command": ["/nonexistent/agent"] }))
            .await,
    );
    api.wait_phase(&id, "running").await;
    api.post(
        &format!("/v1/workspaces/{id}/switch-provider"),
        &json!({ "provider": "process" }),
    )
    .await
    .expect(202);
    let events = eventually(WAIT, "the switch to roll back", || async {
        let events = api.events(&id).await;
        if of_type(&events, "switch_rolled_back").is_empty() {
            Err(summarize(&events))
        } else {
            Ok(events)
        }
    })
    .await;
    let rolled_back = of_type(&events, "switch_rolled_back")[0];
    assert_eq!(rolled_back["from"], "sim");
    assert_eq!(rolled_back["to"], "process");
    assert!(
        rolled_back["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not found")),
        "{rolled_back}"
    );
    let doc = settled_on(&api, &id, "sim").await;
    assert_eq!(
        doc["ready_when"], "instance",
        "the old readiness rule is back"
    );
    let events = api.events(&id).await;
    assert!(
        of_type(&events, "switch_completed").is_empty(),
        "{}",
        summarize(&events)
    );
    assert!(instance_processes(&id).is_empty());
    // The switch is over: another may be claimed.
    api.post(
        &format!("/v1/workspaces/{id}/switch-provider"),
        &json!({ "provider": "process" }),
    )
    .await
    .expect(202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_switch_requests_are_refused_and_change_nothing() {
    let daemon = Daemon::start(config()).await;
    let api = daemon.client();
    let id = id_of(&api.create(&json!({ "name": "still" })).await);
    let doc = api.wait_phase(&id, "running").await;
    let path = format!("/v1/workspaces/{id}/switch-provider");

    api.post(&path, &json!({ "provider": "nowhere" }))
        .await
        .expect_error(422, "INVALID_FIELD");
    api.post(&path, &json!({ "provider": "" }))
        .await
        .expect_error(422, "INVALID_FIELD");
    api.post(&path, &json!({ "provider": "sim" }))
        .await
        .expect_error(409, "SAME_PROVIDER");
    api.post(&path, &json!({ "provider": "process", "extra": 1 }))
        .await
        .expect_error(422, "INVALID_FIELD");
    api.raw(steward_tests::Method::POST, &path, "{")
        .await
        .expect_error(400, "MALFORMED_JSON");
    api.post(
        "/v1/workspaces/00000000-0000-0000-0000-000000000000/switch-provider",
        &json!({ "provider": "process" }),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    daemon
        .anonymous()
        .post(&path, &json!({ "provider": "process" }))
        .await
        .expect_error(401, "UNAUTHORIZED");

    let after = api.workspace(&id).await;
    assert_eq!(after["provider"], "sim");
    assert_eq!(after["generation"], doc["generation"]);
    assert!(of_type(&api.events(&id).await, "switch_started").is_empty());

    api.delete(&format!("/v1/workspaces/{id}"))
        .await
        .expect(200);
    let refused = api.post(&path, &json!({ "provider": "process" })).await;
    assert!(
        refused.status == 409 || refused.status == 404,
        "a switch of a deleted workspace: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_right_after_asking_changes_nothing() {
    use tokio::io::AsyncWriteExt;
    let daemon = Daemon::start(config()).await;
    let api = daemon.client();
    let id = id_of(&api.create(&json!({ "name": "impatient" })).await);
    api.wait_phase(&id, "running").await;
    // The whole request is written, then the connection is closed without reading a byte
    // of the answer.
    let body = json!({ "provider": "process" }).to_string();
    let request = format!(
        "POST /v1/workspaces/{id}/switch-provider HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        addr = daemon.addr(),
        token = daemon.token(),
        len = body.len(),
    );
    let mut socket = tokio::net::TcpStream::connect(daemon.addr())
        .await
        .expect("connect");
    socket.write_all(request.as_bytes()).await.expect("send");
    socket.shutdown().await.expect("close the write side");
    drop(socket);
    // The switch was claimed and runs to its end: nothing is stranded half-way.
    let doc = settled_on(&api, &id, "process").await;
    one_completed_switch(&api, &id).await;
    assert_eq!(instance_processes(&id).len(), 1, "{doc}");
}
