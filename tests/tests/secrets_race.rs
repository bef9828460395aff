//! Close secret writes are never lost: the last cycle starts after the last of them, and the
//! new instance therefore sees all values. Values never come back out of the API or the log.

use futures::future::join_all;
use serde_json::json;
use steward_tests::{assert_no_overlapping_cycles, of_type, seq_of, sim_config, summarize, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_secret_writes_all_land_in_the_last_cycle() {
    let daemon = Daemon::start(&sim_config(150)).await;
    let api = daemon.client();
    let id = api.create_named("secrets").await;
    api.wait_settled(&id).await;

    let secrets = [
        ("ALPHA", "canary-alpha-6f1c0e2a"),
        ("BRAVO", "canary-bravo-93d47b51"),
        ("CHARLIE", "canary-charlie-2c8e9f70"),
    ];
    let replies = join_all(secrets.iter().map(|(key, value)| {
        let api = api.clone();
        let path = format!("/v1/workspaces/{id}/secrets/{key}");
        async move { api.put(&path, &json!({ "value": value })).await }
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply.status, 202, "secret PUT answer: {}", reply.text);
        let outcome = reply.json["outcome"].as_str().unwrap_or_default();
        assert!(
            ["started", "coalesced", "deferred"].contains(&outcome),
            "unexpected outcome: {}",
            reply.text
        );
    }

    let doc = api.wait_settled(&id).await;
    let events = api.events(&id).await;
    assert_no_overlapping_cycles(&events);
    let last_config_intent = events
        .iter()
        .filter(|e| {
            ((e["type"] == "restart_requested" || e["type"] == "restart_coalesced")
                && e["cause"] == "config")
                || e["type"] == "restart_deferred"
        })
        .map(seq_of)
        .max()
        .unwrap_or_else(|| panic!("no config restart event: {}", summarize(&events)));
    let last_started = *of_type(&events, "provision_started")
        .last()
        .unwrap_or_else(|| panic!("no provision_started: {}", summarize(&events)));
    let last_cycle = seq_of(last_started);
    assert!(
        last_started["causes"]
            .as_array()
            .is_some_and(|c| c.contains(&"config".into())),
        "the last cycle must carry cause config: {last_started}"
    );
    assert!(
        last_cycle > last_config_intent,
        "the last cycle (#{last_cycle}) must start after the last config intent \
         (#{last_config_intent}): {}",
        summarize(&events)
    );

    let listed = api
        .get(&format!("/v1/workspaces/{id}/secrets"))
        .await
        .expect(200);
    let mut keys: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("`keys` is not an array: {listed}"))
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ALPHA", "BRAVO", "CHARLIE"]);

    let mut seen = vec![
        doc.to_string(),
        listed.to_string(),
        api.get("/v1/workspaces").await.text,
        api.get(&format!("/v1/workspaces/{id}/events")).await.text,
        api.get(&format!("/v1/admin/actors/{id}")).await.text,
        api.get("/v1/admin/actors").await.text,
    ];
    seen.push(daemon.logs());
    for (_, value) in secrets {
        for (i, text) in seen.iter().enumerate() {
            assert!(
                !text.contains(value),
                "secret value {value} leaked in output #{i} (the last one is the log)"
            );
        }
    }
}
