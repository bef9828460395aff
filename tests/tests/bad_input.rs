//! Bad requests get the documented status and error code, and change nothing.

use serde_json::json;
use steward_tests::{sim_config, Daemon, Method};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected_and_change_nothing() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let api = daemon.client();
    let id = api.create_named("existing").await;
    let before = api.wait_settled(&id).await;
    let workspaces_before = api.workspaces().await.len();
    let events_before = api.events(&id).await.len();
    let unknown = uuid::Uuid::new_v4();
    let ws = format!("/v1/workspaces/{id}");

    // Malformed JSON.
    api.raw(Method::POST, "/v1/workspaces", r#"{"name": "#)
        .await
        .expect_error(400, "MALFORMED_JSON");
    api.raw(Method::POST, "/v1/workspaces", "")
        .await
        .expect_error(400, "MALFORMED_JSON");
    api.raw(Method::PUT, &format!("{ws}/secrets/KEY"), "{value:")
        .await
        .expect_error(400, "MALFORMED_JSON");
    api.raw(Method::PUT, &format!("{ws}/model"), "[")
        .await
        .expect_error(400, "MALFORMED_JSON");

    // Invalid fields.
    let invalid = [
        json!({ "name": "x", "bogus": 1 }),
        json!({ "name": 5 }),
        json!({ "name": "" }),
        json!({}),
        json!({ "name": "x", "env": { "BAD KEY": "v" } }),
        json!({ "name": "x", "env": { "": "v" } }),
        json!({ "name": "x", "secrets": { "BAD KEY": "v" } }),
        json!({ "name": "x", "provider": "no-such-provider" }),
        json!({ "name": "x", "env": "not-a-map" }),
    ];
    for body in &invalid {
        let reply = api.post("/v1/workspaces", body).await;
        assert_eq!(reply.status, 422, "body {body} → {}", reply.text);
        reply.expect_error(422, "INVALID_FIELD");
    }
    api.put(
        &format!("{ws}/secrets/KEY"),
        &json!({ "value": "v", "extra": 1 }),
    )
    .await
    .expect_error(422, "INVALID_FIELD");
    api.put(&format!("{ws}/secrets/BAD%20KEY"), &json!({ "value": "v" }))
        .await
        .expect_error(422, "INVALID_FIELD");
    api.put(&format!("{ws}/model"), &json!({ "model": 5 }))
        .await
        .expect_error(422, "INVALID_FIELD");

    // A rejected value is never echoed back: it may be a secret.
    let canary = 918_273_645_u64;
    let reply = api
        .post(
            "/v1/workspaces",
            &json!({ "name": "x", "secrets": { "K": canary } }),
        )
        .await;
    reply.expect_error(422, "INVALID_FIELD");
    assert!(
        !reply.text.contains(&canary.to_string()),
        "secret echoed: {}",
        reply.text
    );
    let reply = api
        .put(&format!("{ws}/secrets/KEY"), &json!({ "value": [canary] }))
        .await;
    reply.expect_error(422, "INVALID_FIELD");
    assert!(
        !reply.text.contains(&canary.to_string()),
        "secret echoed: {}",
        reply.text
    );

    // A known route with the wrong method.
    api.raw(Method::PUT, &ws, "{}")
        .await
        .expect_error(405, "METHOD_NOT_ALLOWED");
    api.raw(Method::POST, &format!("{ws}/events"), "")
        .await
        .expect_error(405, "METHOD_NOT_ALLOWED");

    // Too large.
    let huge = json!({ "name": "x".repeat(70_000) });
    api.post("/v1/workspaces", &huge)
        .await
        .expect_error(413, "PAYLOAD_TOO_LARGE");
    api.put(
        &format!("{ws}/secrets/BIG"),
        &json!({ "value": "v".repeat(70_000) }),
    )
    .await
    .expect_error(413, "PAYLOAD_TOO_LARGE");

    // Bad ids.
    api.get("/v1/workspaces/not-a-uuid")
        .await
        .expect_error(400, "INVALID_ID");
    api.post_empty("/v1/workspaces/not-a-uuid/restart")
        .await
        .expect_error(400, "INVALID_ID");
    api.delete("/v1/workspaces/123")
        .await
        .expect_error(400, "INVALID_ID");

    // Missing and wrong tokens, on reads and on writes.
    let anonymous = daemon.anonymous();
    let wrong = api.with_token(Some("not-the-admin-token"));
    for client in [&anonymous, &wrong] {
        client
            .get("/v1/workspaces")
            .await
            .expect_error(401, "UNAUTHORIZED");
        client
            .post("/v1/workspaces", &json!({ "name": "sneaky" }))
            .await
            .expect_error(401, "UNAUTHORIZED");
        client
            .post_empty(&format!("{ws}/restart"))
            .await
            .expect_error(401, "UNAUTHORIZED");
        client
            .put(&format!("{ws}/secrets/KEY"), &json!({ "value": "v" }))
            .await
            .expect_error(401, "UNAUTHORIZED");
        client.delete(&ws).await.expect_error(401, "UNAUTHORIZED");
        client
            .get("/v1/admin/actors")
            .await
            .expect_error(401, "UNAUTHORIZED");
        client
            .post_empty(&format!("/v1/admin/workspaces/{id}/kill"))
            .await
            .expect_error(401, "UNAUTHORIZED");
    }

    // Unknown workspace.
    let gone = format!("/v1/workspaces/{unknown}");
    api.get(&gone).await.expect_error(404, "NOT_FOUND");
    api.post_empty(&format!("{gone}/restart"))
        .await
        .expect_error(404, "NOT_FOUND");
    api.post_empty(&format!("{gone}/stop"))
        .await
        .expect_error(404, "NOT_FOUND");
    api.put(&format!("{gone}/secrets/KEY"), &json!({ "value": "v" }))
        .await
        .expect_error(404, "NOT_FOUND");
    api.put(&format!("{gone}/model"), &json!({ "model": "m" }))
        .await
        .expect_error(404, "NOT_FOUND");
    api.get(&format!("{gone}/events"))
        .await
        .expect_error(404, "NOT_FOUND");
    api.delete(&gone).await.expect_error(404, "NOT_FOUND");

    // Nothing changed.
    assert_eq!(api.workspaces().await.len(), workspaces_before);
    let events_after = api.events(&id).await;
    assert_eq!(
        events_after.len(),
        events_before,
        "rejected requests must not add events: {}",
        steward_tests::summarize(&events_after)
    );
    let after = api.workspace(&id).await;
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["model"], before["model"]);
    assert_eq!(after["phase"], "running");
    let keys = api.get(&format!("{ws}/secrets")).await.expect(200);
    assert_eq!(keys["keys"], json!([]), "no secret may have been stored");
    // The daemon is still healthy.
    assert_eq!(anonymous.get("/healthz").await.status, 200);
}
