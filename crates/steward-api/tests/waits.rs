//! `?wait=` on the intent routes and `GET …/wait`, in-process: a bad wait applies nothing; a
//! good one answers once the intent settled, with the document then, or unsettled when it
//! runs out.

mod common;

use std::time::Duration;

use actix_web::{test, App};
use common::*;
use serde_json::json;
use steward_provider::sim::SimConfig;
use steward_testkit::in_process::InProcess;
use steward_testkit::CreateBody;

#[actix_web::test]
async fn a_bad_wait_is_refused_and_nothing_is_applied() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core
        .create(steward_testkit::records::spec("existing"), &[])
        .await;
    let ws = format!("/v1/workspaces/{id}");
    let before = settled(&app, &id).await;
    let post = test::TestRequest::post;
    let put = test::TestRequest::put;
    let delete = test::TestRequest::delete;
    for bad in [
        "30", "1.5s", "030s", "1h", "6m", "301s", "-1s", "s", "", "1m30s",
    ] {
        let q = format!("?wait={bad}");
        for req in [
            with_json(
                post().uri(&format!("/v1/workspaces{q}")),
                &CreateBody::named("x").json(),
            ),
            admin(post().uri(&format!("{ws}/restart{q}"))).to_request(),
            admin(post().uri(&format!("{ws}/start{q}"))).to_request(),
            admin(post().uri(&format!("{ws}/stop{q}"))).to_request(),
            admin(delete().uri(&format!("{ws}{q}"))).to_request(),
            with_json(
                put().uri(&format!("{ws}/secrets/KEY{q}")),
                &json!({"value": "v"}),
            ),
            admin(delete().uri(&format!("{ws}/secrets/KEY{q}"))).to_request(),
            with_json(put().uri(&format!("{ws}/model{q}")), &json!({"model": "m"})),
            with_json(
                post().uri(&format!("{ws}/switch-provider{q}")),
                &json!({"provider": "sim"}),
            ),
        ] {
            send(&app, req).await.error(422, "INVALID_FIELD");
        }
    }
    // An unknown parameter too.
    send(
        &app,
        admin(post().uri(&format!("{ws}/restart?wiat=1s"))).to_request(),
    )
    .await
    .error(422, "INVALID_FIELD");
    assert_eq!(snapshot(&app, &id).await, before, "nothing was applied");
    assert_eq!(workspace_count(&app).await, 1, "nothing was created");
}

#[actix_web::test]
async fn an_intent_with_a_wait_answers_once_settled_with_the_document_then() {
    let core = InProcess::builder()
        .sim(SimConfig {
            start_delay: Duration::from_millis(100),
            stop_delay: Duration::ZERO,
            ..SimConfig::default()
        })
        .start()
        .await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let post = test::TestRequest::post;
    let created = send(
        &app,
        with_json(
            post().uri("/v1/workspaces?wait=30s"),
            &CreateBody::named("w").json(),
        ),
    )
    .await
    .ok(201);
    assert_eq!(created["settled"], true, "{created}");
    assert_eq!(created["workspace"]["phase"], "running", "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let ws = format!("/v1/workspaces/{id}");

    let restarted = send(
        &app,
        admin(post().uri(&format!("{ws}/restart?wait=30s"))).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(
        (
            &restarted["outcome"],
            &restarted["generation"],
            &restarted["settled"]
        ),
        (&json!("started"), &json!(2), &json!(true)),
        "{restarted}"
    );
    assert_eq!(restarted["workspace"]["phase"], "running");
    assert_eq!(restarted["workspace"]["observed_generation"], 2);

    // Runs out: the answer without a wait, unsettled, and the cycle goes on.
    let unsettled = send(
        &app,
        admin(post().uri(&format!("{ws}/restart?wait=0ms"))).to_request(),
    )
    .await
    .ok(202);
    assert_eq!(unsettled["settled"], false, "{unsettled}");
    assert_eq!(
        unsettled["workspace"]["phase"], "provisioning",
        "{unsettled}"
    );
    let waited = send(
        &app,
        admin(test::TestRequest::get().uri(&format!("{ws}/wait?for=running&timeout=30s")))
            .to_request(),
    )
    .await
    .ok(200);
    assert_eq!(
        (
            &waited["settled"],
            &waited["workspace"]["observed_generation"]
        ),
        (&json!(true), &json!(3)),
        "{waited}"
    );

    let stopped = send(
        &app,
        admin(post().uri(&format!("{ws}/stop?wait=30s"))).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(
        (&stopped["settled"], &stopped["workspace"]["phase"]),
        (&json!(true), &json!("stopped"))
    );
    // A stopped workspace's configuration change has nothing to wait for.
    let deferred = send(
        &app,
        with_json(
            test::TestRequest::put().uri(&format!("{ws}/model?wait=30s")),
            &json!({"model": "m2"}),
        ),
    )
    .await
    .ok(200);
    assert_eq!(
        (&deferred["outcome"], &deferred["settled"]),
        (&json!("deferred"), &json!(true))
    );

    let deleted = send(
        &app,
        admin(test::TestRequest::delete().uri(&format!("{ws}?wait=30s"))).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(
        (
            &deleted["outcome"],
            &deleted["settled"],
            &deleted["workspace"]
        ),
        (&json!("deleted"), &json!(true), &json!(null)),
        "{deleted}"
    );
    send(&app, admin(test::TestRequest::get().uri(&ws)).to_request())
        .await
        .error(404, "NOT_FOUND");
}

#[actix_web::test]
async fn waiting_for_a_phase_checks_its_query() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core.create(steward_testkit::records::spec("w"), &[]).await;
    let get = |q: &str| {
        admin(test::TestRequest::get().uri(&format!("/v1/workspaces/{id}/wait{q}"))).to_request()
    };
    for q in [
        "",
        "?for=starting",
        "?for=running&timeout=1h",
        "?for=running&timeout=5",
        "?for=running&x=1",
    ] {
        send(&app, get(q)).await.error(422, "INVALID_FIELD");
    }
    let stopped = send(&app, get("?for=stopped&timeout=0s")).await.ok(200);
    assert_eq!(
        stopped["settled"], true,
        "a running workspace is not going to stop: {stopped}"
    );
    let unknown = uuid::Uuid::new_v4();
    send(
        &app,
        admin(test::TestRequest::get().uri(&format!("/v1/workspaces/{unknown}/wait?for=running")))
            .to_request(),
    )
    .await
    .error(404, "NOT_FOUND");
}
