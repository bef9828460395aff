//! A 2xx means the intent is committed: what the daemon acknowledged survives a SIGKILL (no
//! flush, no graceful shutdown), and every workspace converges after the restart.

use futures::future::join_all;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use steward_tests::{assert_no_overlapping_cycles, generation_of, id_of, sim_config, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_intents_survive_sigkill_and_every_workspace_converges() {
    // Long cycles: the kill lands while cycles are in flight and restarts are pending.
    let config = sim_config(500);
    let mut daemon = Daemon::start(&config).await;
    let api = daemon.client();

    let created = join_all((0..20).map(|i| {
        let api = api.clone();
        async move {
            id_of(
                &api.create(&json!({ "name": format!("crash-{i}"), "model": "m1" }))
                    .await,
            )
        }
    }))
    .await;
    // Acknowledged intents: a secret and a model change on every workspace, and a restart.
    let acknowledged = join_all(created.iter().map(|id| {
        let api = api.clone();
        let id = id.clone();
        async move {
            api.put(
                &format!("/v1/workspaces/{id}/secrets/ACK"),
                &json!({ "value": "yes" }),
            )
            .await
            .expect(202);
            api.put(
                &format!("/v1/workspaces/{id}/model"),
                &json!({ "model": "m2" }),
            )
            .await
            .expect(202);
            let restart = api.restart(&id).await;
            (id, generation_of(&restart))
        }
    }))
    .await;

    daemon.kill_hard().await;
    let mut daemon = Daemon::start_in(daemon.dir(), &config).await;
    let api = daemon.client();

    let listed: BTreeSet<String> = api.workspaces().await.iter().map(id_of).collect();
    for (id, acked_generation) in &acknowledged {
        assert!(listed.contains(id), "acknowledged workspace {id} lost");
        let doc = api.workspace(id).await;
        assert_eq!(doc["model"], "m2", "acknowledged model change lost: {doc}");
        assert!(
            generation_of(&doc) >= *acked_generation,
            "acknowledged restart (generation {acked_generation}) lost: {doc}"
        );
        let keys = api
            .get(&format!("/v1/workspaces/{id}/secrets"))
            .await
            .expect(200);
        assert!(
            keys["keys"]
                .as_array()
                .is_some_and(|k| k.contains(&json!("ACK"))),
            "secret lost: {keys}"
        );
    }
    let ids: BTreeSet<String> = acknowledged.iter().map(|(id, _)| id.clone()).collect();
    api.wait_all_settled(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        assert_no_overlapping_cycles(&api.events(id).await);
    }
    daemon.stop_gracefully().await;
}
