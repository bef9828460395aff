//! The rest of the public surface through the real binary: live event streams, actor
//! inspection, metrics, the open routes, stop/start/delete and the kill drill. Error mapping,
//! validation and idempotency keys are checked in-process (`crates/steward-api/tests`).

use std::time::Duration;

use serde_json::Value;
use steward_tests::{
    eventually, generation_of, id_of, metric, of_type, seq_of, sim_config, summarize, CreateBody,
    Daemon, StreamEvent,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_paged_and_streamed_live() {
    let daemon = Daemon::start(&sim_config(50)).await;
    let api = daemon.client();
    let id = api.create_named("stream").await;
    let doc = api.wait_settled(&id).await;
    let history = api.events(&id).await;
    assert!(!history.is_empty());
    assert_eq!(history[0]["type"], "created", "{}", summarize(&history));
    for event in &history {
        assert!(
            event["at"].is_string() && event["generation"].is_u64(),
            "{event}"
        );
    }
    // Paging.
    let page = api
        .get(&format!("/v1/workspaces/{id}/events?after=1&limit=1"))
        .await
        .expect(200);
    let page = page["events"].as_array().expect("events array").clone();
    assert_eq!(page.len(), 1);
    assert!(seq_of(&page[0]) > 1);

    // The stream: the history first, in order, then a restart triggered once all of it
    // arrived, live.
    let mut stream = api.follow(&id, 0).await.expect("open the event stream");
    let mut received: Vec<StreamEvent> = Vec::new();
    let old_generation = generation_of(&doc);
    while received.len() < history.len() {
        let next = stream.next(Duration::from_secs(20)).await;
        received.push(next.unwrap_or_else(|| {
            panic!(
                "the history did not arrive: {}",
                summarize(&datas(&received))
            )
        }));
    }
    api.restart(&id).await;
    let live = stream
        .next_matching(Duration::from_secs(20), |e| {
            received.push(e.clone());
            e.kind() == "provision_started" && e.generation() > old_generation
        })
        .await;
    assert!(
        live.is_some(),
        "no live provision_started within 20 s; received: {}",
        summarize(&datas(&received))
    );
    for (i, old) in history.iter().enumerate() {
        assert_eq!(
            received[i].data["seq"], old["seq"],
            "history first, in order"
        );
        assert_eq!(received[i].data["type"], old["type"]);
    }
    for event in &received {
        assert_eq!(
            event.id.as_deref(),
            Some(seq_of(&event.data).to_string().as_str())
        );
        assert_eq!(event.event.as_deref(), Some(event.kind()));
    }
    drop(stream);

    // A client that reconnects with the id of the last event it got (Last-Event-ID) gets
    // what came after it, not the history again.
    let last = received[history.len() - 2].id.clone().expect("an id");
    let last: u64 = last.parse().expect("ids are seqs");
    let mut resumed = api
        .resume(&id, last)
        .await
        .expect("reopen the event stream");
    let first = resumed
        .next(Duration::from_secs(20))
        .await
        .expect("the events after Last-Event-ID");
    assert_eq!(seq_of(&first.data), last + 1, "{:?}", first.data);
    let bad = api
        .request(reqwest::Method::GET, &format!("/v1/workspaces/{id}/events"))
        .header("Last-Event-ID", "yesterday");
    api.send(bad).await.expect_error(422, "INVALID_FIELD");
}

fn datas(events: &[StreamEvent]) -> Vec<Value> {
    events.iter().map(|e| e.data.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_inspection_shows_the_cycle_and_counters() {
    // Cycles long enough to inspect the actor while one runs, with a wide margin for a slow
    // fsync on a loaded machine (the second restart must land inside the first cycle).
    let daemon = Daemon::start(&sim_config(1500)).await;
    let api = daemon.client();
    let id = api.create_named("inspect").await;
    api.wait_settled(&id).await;
    assert_eq!(api.restart(&id).await["outcome"], "started");
    assert_eq!(api.restart(&id).await["outcome"], "coalesced");

    // While the cycle runs, the actor shows it.
    let actor = api.get(&format!("/v1/admin/actors/{id}")).await.expect(200);
    for field in [
        "id",
        "phase",
        "generation",
        "observed_generation",
        "cycle",
        "pending",
        "pending_causes",
        "debounce_until",
        "settle_until",
        "health_failures",
        "backoff",
        "counters",
        "mailbox_len",
        "last_error",
        "transitions",
    ] {
        assert!(
            actor.get(field).is_some(),
            "actor has no `{field}`: {actor}"
        );
    }
    for field in [
        "cycles",
        "cycles_failed",
        "coalesced",
        "dropped",
        "stale_results",
    ] {
        assert!(
            actor["counters"].get(field).is_some(),
            "actor counters have no `{field}`: {actor}"
        );
    }
    assert_eq!(actor["id"], id.as_str());
    assert!(actor["cycle"].is_object(), "a cycle is in flight: {actor}");
    assert_eq!(actor["pending"], true, "{actor}");
    assert!(actor["mailbox_len"].is_u64(), "{actor}");

    api.wait_settled(&id).await;
    let actor = api.get(&format!("/v1/admin/actors/{id}")).await.expect(200);
    assert!(actor["cycle"].is_null(), "no cycle in flight: {actor}");
    assert_eq!(
        actor["mailbox_len"], 0,
        "an idle actor's mailbox is empty (the inspection does not count itself): {actor}"
    );
    assert_eq!(
        actor["counters"]["cycles"], 3,
        "create + restart + coalesced: {actor}"
    );
    assert!(
        actor["counters"]["coalesced"].as_u64() >= Some(1),
        "{actor}"
    );
    let transitions = actor["transitions"].as_array().expect("transitions array");
    assert!(!transitions.is_empty());
    for t in transitions {
        assert!(
            t["from"].is_string() && t["to"].is_string() && t["at"].is_string(),
            "{t}"
        );
    }
    let actors = api.get("/v1/admin/actors").await.expect(200);
    assert!(actors["actors"].is_array(), "{actors}");
    assert!(
        actors.to_string().contains(&id),
        "actor list lacks {id}: {actors}"
    );
    api.get(&format!("/v1/admin/actors/{}", uuid::Uuid::new_v4()))
        .await
        .expect_error(404, "NOT_FOUND");
}

/// The binary's wiring of what the in-process API tests check in detail
/// (`crates/steward-api/tests/errors.rs`): the open operational routes, the admin token it
/// wrote, the body limit from its configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_routes_the_admin_token_and_the_configured_body_limit() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let anonymous = daemon.anonymous();
    let openapi = anonymous.get("/openapi.json").await.expect(200);
    assert!(
        openapi["paths"].get("/v1/workspaces").is_some(),
        "/openapi.json lacks /v1/workspaces: {openapi}"
    );
    assert_eq!(anonymous.get("/healthz").await.status, 200);
    assert_eq!(anonymous.get("/readyz").await.status, 200);
    anonymous
        .get("/v1/workspaces")
        .await
        .expect_error(401, "UNAUTHORIZED");
    // sim_config: http.max_body_bytes = 65536.
    let api = daemon.client();
    api.post("/v1/workspaces", &CreateBody::named(&"x".repeat(65_536)))
        .await
        .expect_error(413, "PAYLOAD_TOO_LARGE");
    assert!(api.workspaces().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_delete_and_kill() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let api = daemon.client();
    let id = api.create_named("lifecycle").await;
    let ws = format!("/v1/workspaces/{id}");
    api.wait_settled(&id).await;

    let stop = api.post_empty(&format!("{ws}/stop")).await.expect(202);
    assert!(
        stop["outcome"].is_string() && stop["generation"].is_u64(),
        "{stop}"
    );
    api.wait_phase(&id, "stopped").await;
    let events = api.events(&id).await;
    assert!(
        !of_type(&events, "stop_started").is_empty(),
        "{}",
        summarize(&events)
    );
    assert!(
        !of_type(&events, "stopped").is_empty(),
        "{}",
        summarize(&events)
    );

    let start = api.post_empty(&format!("{ws}/start")).await.expect(202);
    assert!(
        start["outcome"].is_string() && start["generation"].is_u64(),
        "{start}"
    );
    api.wait_settled(&id).await;

    api.post_empty(&format!("/v1/admin/workspaces/{id}/kill"))
        .await
        .expect(202);
    api.post_empty(&format!(
        "/v1/admin/workspaces/{}/kill",
        uuid::Uuid::new_v4()
    ))
    .await
    .expect_error(404, "NOT_FOUND");

    // Answered once the workspace is gone.
    let deleted = api.delete(&ws).await.expect(200);
    assert_eq!(deleted["outcome"], "deleted", "{deleted}");
    api.get(&ws).await.expect_error(404, "NOT_FOUND");
    api.get(&format!("{ws}/secrets"))
        .await
        .expect_error(404, "NOT_FOUND");
    let restart = api.post_empty(&format!("{ws}/restart")).await;
    restart.expect_error(404, "NOT_FOUND");
    assert!(
        !api.workspaces().await.iter().any(|w| id_of(w) == id),
        "deleted workspace still listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_traffic_and_phases() {
    // Long enough cycles that the second restart always lands inside the first.
    let daemon = Daemon::start(&sim_config(1500)).await;
    let api = daemon.client();
    let id = api.create_named("metered").await;
    api.wait_settled(&id).await;
    assert_eq!(api.restart(&id).await["outcome"], "started");
    assert_eq!(api.restart(&id).await["outcome"], "coalesced");
    api.wait_settled(&id).await;

    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    for name in [
        "steward_restart_requests_total",
        "steward_restart_coalesced_total",
        "steward_workspaces{",
        "steward_http_requests_total",
        "steward_cycle_duration_seconds_count",
        "steward_store_queue_seconds_count",
        "steward_store_commit_seconds{quantile=\"0.99\"}",
    ] {
        assert!(
            metrics.text.contains(name),
            "/metrics lacks {name}:\n{}",
            metrics.text
        );
    }
    // Cycle durations are measured: three cycles of a 1.5 s start took well over a second.
    let sum: f64 = metrics
        .text
        .lines()
        .find_map(|l| l.strip_prefix("steward_cycle_duration_seconds_sum "))
        .and_then(|v| v.trim().parse().ok())
        .expect("cycle duration sum");
    assert!(sum > 1.0, "cycle durations not measured: sum {sum}");
    // Every commit is timed from its queue to its answer: at least the create and the two
    // restarts' commits (the coalesced one recorded its pending cycle), each taking some time.
    let commits = metric(&metrics.text, "steward_store_commit_seconds_count", &[]);
    assert!(commits >= 3.0, "commits not timed: {commits}");
    let queued = metric(&metrics.text, "steward_store_queue_seconds_count", &[]);
    assert!(queued >= 3.0, "queue waits not timed: {queued}");
    assert!(metric(&metrics.text, "steward_store_commit_seconds_sum", &[]) > 0.0);
    // Every metric says what it is; the daemon tells its version and when it started.
    let types: Vec<&str> = metrics
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(types.len() >= 10, "{}", metrics.text);
    for name in &types {
        let help = format!("# HELP {name} ");
        assert!(
            metrics
                .text
                .lines()
                .any(|l| l.starts_with(&help) && l.len() > help.len()),
            "{name} has no # HELP:\n{}",
            metrics.text
        );
    }
    assert_eq!(
        metric(
            &metrics.text,
            "steward_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{}",
        metrics.text
    );
    let started = metric(&metrics.text, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        started > now - 600.0 && started <= now + 1.0,
        "start time {started}, now {now}"
    );
    // The gauge follows phase changes: with the one workspace settled, it counts it running.
    eventually(
        Duration::from_secs(5),
        "steward_workspaces{phase=\"running\"} to be 1",
        || async {
            let text = api.get("/metrics").await.text;
            let running = text
                .lines()
                .find(|l| l.starts_with("steward_workspaces{") && l.contains("phase=\"running\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            if running == Some(1.0) {
                Ok(())
            } else {
                Err(text
                    .lines()
                    .filter(|l| l.starts_with("steward_workspaces"))
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        },
    )
    .await;
}
