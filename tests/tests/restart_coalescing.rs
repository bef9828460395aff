//! Many concurrent manual restarts during one cycle coalesce into exactly one extra cycle.

use futures::future::join_all;
use steward_tests::{
    assert_no_overlapping_cycles, generation_of, of_type, sim_config, summarize, Daemon,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_restarts_run_exactly_one_extra_cycle() {
    let daemon = Daemon::start(&sim_config(200)).await;
    let api = daemon.client();
    let id = api.create_named("coalesce").await;
    let before = api.wait_settled(&id).await;
    let created_generation = generation_of(&before);

    let path = format!("/v1/workspaces/{id}/restart");
    let replies = join_all((0..50).map(|_| api.post_empty(&path))).await;

    let mut started = 0;
    let mut coalesced = 0;
    for reply in &replies {
        assert_eq!(reply.status, 202, "restart answer: {}", reply.text);
        assert!(
            reply.json["generation"].is_u64(),
            "restart answer has no generation: {}",
            reply.text
        );
        match reply.json["outcome"].as_str() {
            Some("started") => started += 1,
            Some("coalesced") => coalesced += 1,
            other => panic!("unexpected restart outcome {other:?}: {}", reply.text),
        }
    }
    assert_eq!(
        (started, coalesced),
        (1, 49),
        "expected one restart to start a cycle and the other 49 to coalesce"
    );

    let after = api.wait_settled(&id).await;
    let events = api.events(&id).await;
    assert_no_overlapping_cycles(&events);
    let new_cycles: Vec<u64> = of_type(&events, "provision_started")
        .into_iter()
        .map(generation_of)
        .filter(|g| *g > created_generation)
        .collect();
    assert_eq!(
        new_cycles.len(),
        2,
        "50 restarts during one cycle must give that cycle plus exactly one more: {}",
        summarize(&events)
    );
    for cycle in of_type(&events, "provision_started")
        .into_iter()
        .filter(|e| generation_of(e) > created_generation)
    {
        assert!(
            cycle["causes"]
                .as_array()
                .is_some_and(|c| c.contains(&"manual".into())),
            "a restart cycle must carry cause manual: {cycle}"
        );
    }
    assert_eq!(
        generation_of(&after),
        new_cycles[1],
        "the workspace must end on the last cycle's generation: {after}"
    );
    assert_eq!(after["observed_generation"], after["generation"]);
}
