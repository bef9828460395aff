//! A restart sent right after a create never overlaps the create's provisioning and never
//! wedges the workspace.

use futures::future::join_all;
use steward_tests::{
    assert_never_failed, assert_no_overlapping_cycles, id_of, of_type, seq_of, sim_config,
    summarize, Daemon,
};

const WORKSPACES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_immediately_after_create_converges_to_running() {
    let daemon = Daemon::start(&sim_config(100)).await;
    let api = daemon.client();

    let ids = join_all((0..WORKSPACES).map(|i| {
        let api = api.clone();
        async move {
            let doc = api
                .create(&serde_json::json!({ "name": format!("ctr-{i}") }))
                .await;
            let id = id_of(&doc);
            let reply = api.restart(&id).await;
            let outcome = reply["outcome"].as_str().unwrap_or_default();
            assert!(
                outcome == "started" || outcome == "coalesced",
                "unexpected restart outcome: {reply}"
            );
            id
        }
    }))
    .await;

    for id in &ids {
        api.wait_settled(id).await;
        let events = api.events(id).await;
        assert_never_failed(&events);
        assert_no_overlapping_cycles(&events);
        // The manual restart was not lost: a cycle started after it was recorded.
        let restart_seq = events
            .iter()
            .filter(|e| {
                (e["type"] == "restart_requested" || e["type"] == "restart_coalesced")
                    && e["cause"] == "manual"
            })
            .map(seq_of)
            .max()
            .unwrap_or_else(|| panic!("no manual restart event: {}", summarize(&events)));
        let last_cycle_seq = of_type(&events, "provision_started")
            .into_iter()
            .map(seq_of)
            .max()
            .unwrap_or_else(|| panic!("no provision_started: {}", summarize(&events)));
        assert!(
            last_cycle_seq > restart_seq,
            "no cycle started after the manual restart: {}",
            summarize(&events)
        );
    }
}
