//! Two thousand workspaces, each created and restarted concurrently, all converge to running
//! without a single overlapping cycle.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use steward_tests::{assert_never_failed, assert_no_overlapping_cycles, id_of, sim_config, Daemon};

const WORKSPACES: usize = 2000;
const IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_workspaces_created_and_restarted_all_run() {
    let daemon = Daemon::start(&sim_config(5)).await;
    let api = daemon.client();
    let began = Instant::now();

    let ids: BTreeSet<String> = stream::iter(0..WORKSPACES)
        .map(|i| {
            let api = api.clone();
            async move {
                let doc = api
                    .create(&serde_json::json!({ "name": format!("scale-{i}") }))
                    .await;
                let id = id_of(&doc);
                let reply = api.restart(&id).await;
                assert!(
                    reply["outcome"] == "started" || reply["outcome"] == "coalesced",
                    "unexpected restart outcome: {reply}"
                );
                id
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    assert_eq!(ids.len(), WORKSPACES, "ids must be unique");
    let requested = began.elapsed();

    api.wait_all_settled(&ids, Duration::from_secs(120)).await;
    let settled = began.elapsed();

    let checked = stream::iter(ids.iter().cloned())
        .map(|id| {
            let api = api.clone();
            async move {
                api.wait_settled(&id).await;
                let events = api.events(&id).await;
                assert_no_overlapping_cycles(&events);
                assert_never_failed(&events);
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .count()
        .await;
    assert_eq!(checked, WORKSPACES);
    eprintln!(
        "scale: {WORKSPACES} created+restarted in {requested:?}, all running at {settled:?}, \
         events checked at {:?}",
        began.elapsed()
    );
}
