//! The HTTP facade's error mapping and input validation, in-process (`actix_web::test`): the
//! routes of `steward_api::configure` over a real registry on a temporary store, no binary,
//! no port. Every rejected request answers `{"error": CODE, "message": text}` with the
//! documented status, and changes nothing.

mod common;

use std::time::Duration;

use actix_web::http::header;
use actix_web::{test, App};
use common::*;
use serde_json::{json, Value};
use steward_provider::sim::SimConfig;
use steward_testkit::in_process::InProcess;
use steward_testkit::CreateBody;

#[actix_web::test]
async fn malformed_invalid_oversized_and_unauthorized_requests_change_nothing() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core
        .create(steward_testkit::records::spec("existing"), &[])
        .await;
    let ws = format!("/v1/workspaces/{id}");
    let before = settled(&app, &id).await;
    let get = test::TestRequest::get;
    let post = test::TestRequest::post;
    let put = test::TestRequest::put;
    let delete = test::TestRequest::delete;

    // 400: not JSON at all.
    for (req, body) in [
        (post().uri("/v1/workspaces"), r#"{"name": "#),
        (post().uri("/v1/workspaces"), ""),
        (post().uri("/v1/workspaces"), "   "),
        (put().uri(&format!("{ws}/secrets/KEY")), "{value:"),
        (put().uri(&format!("{ws}/model")), "["),
        (post().uri(&format!("{ws}/switch-provider")), "{"),
    ] {
        send(&app, raw(req, body))
            .await
            .error(400, "MALFORMED_JSON");
    }
    // 400: an id that is not one, on every kind of route.
    for req in [
        get().uri("/v1/workspaces/not-a-uuid"),
        post().uri("/v1/workspaces/not-a-uuid/restart"),
        delete().uri("/v1/workspaces/123"),
        get().uri("/v1/workspaces/123/events"),
        get().uri("/v1/admin/actors/123"),
    ] {
        send(&app, admin(req).to_request())
            .await
            .error(400, "INVALID_ID");
    }

    // 422: JSON of the wrong shape, or values the rules refuse.
    let create = |body: Value| with_json(post().uri("/v1/workspaces"), &body);
    let named = || CreateBody::named("x").json();
    let mut invalid = vec![
        json!({}),
        json!({ "name": 5 }),
        json!({ "name": "" }),
        json!({ "name": "\u{7}bell" }),
        json!({ "name": "x".repeat(129) }),
        json!({ "name": "x", "env": "not-a-map" }),
        json!({ "name": "x", "ready_when": "sometimes" }),
        CreateBody::named("x").env("BAD KEY", "v").json(),
        CreateBody::named("x").env("", "v").json(),
        CreateBody::named("x").env("STEWARD_TOKEN", "v").json(),
        CreateBody::named("x").secret("BAD KEY", "v").json(),
        CreateBody::named("x").provider("no-such-provider").json(),
        CreateBody::named("x").model(" ").json(),
        CreateBody::named("x").command(&[]).json(),
        CreateBody::named("x").image("").json(),
    ];
    let mut unknown_field = named();
    unknown_field["bogus"] = json!(1);
    invalid.push(unknown_field);
    for body in invalid {
        send(&app, create(body)).await.error(422, "INVALID_FIELD");
    }
    for (req, body) in [
        (
            put().uri(&format!("{ws}/secrets/KEY")),
            json!({ "value": "v", "extra": 1 }),
        ),
        (
            put().uri(&format!("{ws}/secrets/BAD%20KEY")),
            json!({ "value": "v" }),
        ),
        (
            put().uri(&format!("{ws}/secrets/STEWARD_X")),
            json!({ "value": "v" }),
        ),
        (put().uri(&format!("{ws}/model")), json!({ "model": 5 })),
        (put().uri(&format!("{ws}/model")), json!({ "model": "" })),
        (
            post().uri(&format!("{ws}/switch-provider")),
            json!({ "provider": "no-such-provider" }),
        ),
    ] {
        send(&app, with_json(req, &body))
            .await
            .error(422, "INVALID_FIELD");
    }
    let long_key = admin(post().uri("/v1/workspaces"))
        .insert_header(("Idempotency-Key", "k".repeat(256)))
        .set_json(named())
        .to_request();
    send(&app, long_key).await.error(422, "INVALID_FIELD");

    // A rejected value is never echoed back: it may be a secret.
    let canary = 918_273_645_u64;
    for (req, body) in [
        (
            post().uri("/v1/workspaces"),
            json!({ "name": "x", "secrets": { "K": canary } }),
        ),
        (
            put().uri(&format!("{ws}/secrets/KEY")),
            json!({ "value": [canary] }),
        ),
    ] {
        let answer = send(&app, with_json(req, &body)).await;
        answer.error(422, "INVALID_FIELD");
        assert!(
            !answer.text.contains(&canary.to_string()),
            "{}",
            answer.text
        );
    }

    // 413: more than the limit, whatever the rest of the request.
    let huge = CreateBody::named(&"x".repeat(LIMIT)).json();
    send(&app, create(huge))
        .await
        .error(413, "PAYLOAD_TOO_LARGE");
    let big_secret = json!({ "value": "v".repeat(LIMIT) });
    send(
        &app,
        with_json(put().uri(&format!("{ws}/secrets/BIG")), &big_secret),
    )
    .await
    .error(413, "PAYLOAD_TOO_LARGE");

    // 401: no token, another token, another scheme — before anything is read or done.
    for authorization in [
        None,
        Some("Bearer not-the-admin-token".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer{TOKEN}")),
    ] {
        for req in [
            get().uri("/v1/workspaces"),
            post().uri("/v1/workspaces").set_json(named()),
            post().uri(&format!("{ws}/restart")),
            put()
                .uri(&format!("{ws}/secrets/KEY"))
                .set_json(json!({ "value": "v" })),
            delete().uri(&ws),
            get().uri("/v1/admin/actors"),
            post().uri(&format!("/v1/admin/workspaces/{id}/kill")),
        ] {
            let req = match &authorization {
                Some(value) => req.insert_header((header::AUTHORIZATION, value.as_str())),
                None => req,
            };
            let answer = send(&app, req.to_request()).await;
            answer.error(401, "UNAUTHORIZED");
            assert_eq!(
                answer
                    .headers
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
    }
    // The agent routes take an agent token, never the admin's; a malformed or unknown one
    // gets the same 401 as none.
    let unknown_agent = format!("{}.1.{}", uuid::Uuid::new_v4(), "ab".repeat(32));
    for token in [None, Some(TOKEN.to_owned()), Some(unknown_agent)] {
        for route in ["/v1/agent/register", "/v1/agent/heartbeat"] {
            let mut req = post()
                .uri(route)
                .set_json(json!({ "url": "http://127.0.0.1:1" }));
            if let Some(token) = &token {
                req = req.insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
            }
            send(&app, req.to_request())
                .await
                .error(401, "UNAUTHORIZED");
        }
    }

    // 404: no such workspace, actor or route; 405: no such method on a route.
    let gone = format!("/v1/workspaces/{}", uuid::Uuid::new_v4());
    for req in [
        get().uri(&gone),
        post().uri(&format!("{gone}/restart")),
        post().uri(&format!("{gone}/stop")),
        post().uri(&format!("{gone}/start")),
        get().uri(&format!("{gone}/secrets")),
        delete().uri(&format!("{gone}/secrets/KEY")),
        get().uri(&format!("{gone}/events")),
        delete().uri(&gone),
        get().uri(&format!("/v1/admin/actors/{}", uuid::Uuid::new_v4())),
        post().uri(&format!(
            "/v1/admin/workspaces/{}/kill",
            uuid::Uuid::new_v4()
        )),
        get().uri("/v1/no-such-route"),
    ] {
        send(&app, admin(req).to_request())
            .await
            .error(404, "NOT_FOUND");
    }
    for (req, body) in [
        (
            put().uri(&format!("{gone}/secrets/KEY")),
            json!({ "value": "v" }),
        ),
        (put().uri(&format!("{gone}/model")), json!({ "model": "m" })),
    ] {
        send(&app, with_json(req, &body))
            .await
            .error(404, "NOT_FOUND");
    }
    send(
        &app,
        admin(delete().uri(&format!("{ws}/secrets/NEVER_SET"))).to_request(),
    )
    .await
    .error(404, "NOT_FOUND");
    for req in [put().uri(&ws), post().uri(&format!("{ws}/events"))] {
        send(&app, admin(req).to_request())
            .await
            .error(405, "METHOD_NOT_ALLOWED");
    }

    // Nothing changed: no workspace, event, secret or generation was added.
    assert_eq!(workspace_count(&app).await, 1);
    assert_eq!(snapshot(&app, &id).await, before);
    let keys = send(
        &app,
        admin(get().uri(&format!("{ws}/secrets"))).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(keys["keys"], json!([]));
}

/// A provider that exists but is disabled is named as such (not as an unknown name), and a
/// create or a switch that the provider could never run (docker without an image) is refused
/// before anything happens: no workspace, no event, the old instance untouched.
#[actix_web::test]
async fn disabled_providers_and_workspaces_a_provider_cannot_run_are_refused_up_front() {
    use steward_provider::docker::{DockerConfig, DockerProvider};
    use steward_provider::Provider;
    // An engine nobody runs: nothing may reach it anyway.
    let docker = DockerProvider::connect(
        "docker",
        DockerConfig {
            socket: "/nonexistent/steward-api-test/docker.sock".into(),
            owner: "steward-api-test".into(),
            ..DockerConfig::default()
        },
    )
    .await
    .expect("a docker provider");
    let core = InProcess::builder()
        .provider(std::sync::Arc::new(docker))
        .disabled("process")
        .start()
        .await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let post = test::TestRequest::post;
    let create = |body: Value| with_json(post().uri("/v1/workspaces"), &body);

    let disabled = send(&app, create(json!({ "name": "p", "provider": "process" }))).await;
    disabled.error(422, "PROVIDER_DISABLED");
    assert!(
        disabled.json["message"]
            .as_str()
            .is_some_and(|m| m.contains("disabled")),
        "{}",
        disabled.text
    );
    send(&app, create(json!({ "name": "u", "provider": "nope" })))
        .await
        .error(422, "INVALID_FIELD");
    let imageless = send(&app, create(json!({ "name": "d", "provider": "docker" }))).await;
    imageless.error(422, "INVALID_FIELD");
    assert!(
        imageless.json["message"]
            .as_str()
            .is_some_and(|m| m.contains("image")),
        "{}",
        imageless.text
    );
    assert_eq!(workspace_count(&app).await, 0, "nothing was created");

    let stays = core
        .create(steward_testkit::records::spec("stays"), &[])
        .await;
    let before = settled(&app, &stays).await;
    let switch = |to: &str| {
        with_json(
            post().uri(&format!("/v1/workspaces/{stays}/switch-provider")),
            &json!({ "provider": to }),
        )
    };
    send(&app, switch("docker"))
        .await
        .error(422, "INVALID_FIELD");
    send(&app, switch("process"))
        .await
        .error(422, "PROVIDER_DISABLED");
    assert_eq!(
        snapshot(&app, &stays).await,
        before,
        "no switch started, no event"
    );
    let id = stays.parse().expect("a workspace id");
    assert!(
        matches!(
            core.sim.liveness(id).await,
            Ok(steward_provider::Liveness::Alive(_))
        ),
        "the instance on sim is untouched"
    );
}

#[actix_web::test]
async fn conflicting_intents_get_409_and_change_nothing() {
    let slow = SimConfig {
        start_delay: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let core = InProcess::builder()
        .sim(SimConfig {
            start_delay: Duration::ZERO,
            // A delete stays in progress for the whole test.
            stop_delay: Duration::from_secs(600),
            ..SimConfig::default()
        })
        .other_sim("slow", slow)
        .start()
        .await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let post = test::TestRequest::post;
    let switch = |id: &str, to: &str| {
        with_json(
            post().uri(&format!("/v1/workspaces/{id}/switch-provider")),
            &json!({ "provider": to }),
        )
    };

    // Already on that provider.
    let stays = core
        .create(steward_testkit::records::spec("stays"), &[])
        .await;
    let before = settled(&app, &stays).await;
    send(&app, switch(&stays, "sim"))
        .await
        .error(409, "SAME_PROVIDER");
    assert_eq!(snapshot(&app, &stays).await, before);

    // A second switch while the first runs (its start on `slow` takes ten minutes).
    let mover = core
        .create(steward_testkit::records::spec("mover"), &[])
        .await;
    settled(&app, &mover).await;
    let accepted = send(&app, switch(&mover, "slow")).await.ok(202);
    assert_eq!(accepted, json!({ "status": "switching", "to": "slow" }));
    let during = snapshot(&app, &mover).await;
    send(&app, switch(&mover, "sim"))
        .await
        .error(409, "ALREADY_SWITCHING");
    send(&app, switch(&mover, "slow"))
        .await
        .error(409, "ALREADY_SWITCHING");
    assert_eq!(snapshot(&app, &mover).await.1, during.1, "no event added");

    // Intents for a workspace being deleted (its removal takes ten minutes).
    let doomed = core
        .create(steward_testkit::records::spec("doomed"), &[])
        .await;
    settled(&app, &doomed).await;
    let path = format!("/v1/workspaces/{doomed}");
    send(
        &app,
        admin(test::TestRequest::delete().uri(&path)).to_request(),
    )
    .await
    .ok(202);
    let deleting = snapshot(&app, &doomed).await;
    assert_eq!(deleting.0["phase"], "deleting", "{}", deleting.0);
    for req in [
        admin(post().uri(&format!("{path}/restart"))).to_request(),
        admin(post().uri(&format!("{path}/start"))).to_request(),
        with_json(
            test::TestRequest::put().uri(&format!("{path}/model")),
            &json!({ "model": "m" }),
        ),
        switch(&doomed, "slow"),
    ] {
        send(&app, req).await.error(409, "WORKSPACE_DELETING");
    }
    assert_eq!(snapshot(&app, &doomed).await, deleting);
}

#[actix_web::test]
async fn an_idempotency_key_replays_its_create_and_refuses_another_body() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let create = |body: Value| {
        admin(test::TestRequest::post().uri("/v1/workspaces"))
            .insert_header(("Idempotency-Key", "key-1"))
            .set_json(body)
            .to_request()
    };
    // Thirty at once: one creates (201), the others are replays (200) of the same answer.
    let answers = futures::future::join_all(
        (0..30).map(|_| send(&app, create(CreateBody::named("idem").model("m1").json()))),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "exactly one 201: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 201)),
        "{statuses:?}"
    );
    assert!(
        answers.iter().all(|a| a.json == answers[0].json),
        "every replay has the created body"
    );
    let first = answers[0].json.clone();
    assert_eq!(workspace_count(&app).await, 1);
    // The database keeps a keyed digest of the body (which may hold secrets), never a bare
    // hash anyone reading the database could match against a guess.
    let (_, digest) = core
        .store
        .idempotency("key-1")
        .await
        .expect("read")
        .expect("stored");
    let body = CreateBody::named("idem").model("m1").json();
    let bare: String =
        <sha2::Sha256 as sha2::Digest>::digest(serde_json::to_vec(&body).expect("canonical"))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    assert!(digest.starts_with("hmac-sha256:"), "{digest}");
    assert!(!digest.contains(&bare), "{digest}");
    // The same request later (formatted differently): a replay of the same workspace.
    let again = send(&app, create(json!({ "model": "m1", "name": "idem" }))).await;
    assert_eq!(again.json["id"], first["id"], "{}", again.text);
    assert_eq!(again.status, 200, "{}", again.text);
    send(&app, create(CreateBody::named("idem").model("m2").json()))
        .await
        .error(422, "IDEMPOTENCY_KEY_REUSED");
    // Another key is another create: the same body again is refused by its name, another
    // name makes another workspace.
    let other = |name: &str| {
        admin(test::TestRequest::post().uri("/v1/workspaces"))
            .insert_header(("Idempotency-Key", "key-2"))
            .set_json(CreateBody::named(name).model("m1").json())
            .to_request()
    };
    send(&app, other("idem")).await.error(409, "NAME_TAKEN");
    let other = send(&app, other("idem-2")).await.ok(201);
    assert_ne!(other["id"], first["id"]);
    assert_eq!(workspace_count(&app).await, 2);
}
