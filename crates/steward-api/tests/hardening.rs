//! What an outside attack run found, in-process (`actix_web::test`): requests are
//! authenticated before their body is read, bodies have a deadline, the bearer scheme is
//! case-insensitive everywhere, and a 405 says which methods exist.

mod common;

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{test, App};
use common::*;
use futures::StreamExt;
use serde_json::json;
use steward_testkit::in_process::InProcess;

/// A request body that sends `first` and then nothing, never ending: a slow client.
fn trickle(first: &'static [u8]) -> actix_http::Payload {
    let stream = futures::stream::once(async move { Ok(Bytes::from_static(first)) })
        .chain(futures::stream::pending());
    actix_http::Payload::from(Box::pin(stream) as actix_http::BoxedPayloadStream)
}

/// `req` with a body that never completes (it announces 64 bytes and sends one).
fn slow(req: test::TestRequest) -> actix_http::Request {
    let req = req
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CONTENT_LENGTH, "64"))
        .to_request();
    req.replace_payload(trickle(b"{")).0
}

/// The answer to `req`, or a failed test if there is none within `within` (a handler
/// waiting for a body that never comes).
async fn answered<S, B>(app: &S, req: actix_http::Request, within: Duration) -> Answer
where
    S: TestApp<B>,
    B: actix_web::body::MessageBody,
{
    tokio::time::timeout(within, send(app, req))
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}: the request waits for its body"))
}

#[track_caller]
fn closes(answer: &Answer) {
    assert!(
        answer.closes,
        "the connection must end with this answer: {}",
        answer.text
    );
}

/// A settled workspace named `name`, and the agent token of its instance (the sim keeps the
/// environment it started it with).
async fn agent_workspace<S, B>(core: &InProcess, app: &S, name: &str) -> (String, String)
where
    S: TestApp<B>,
    B: actix_web::body::MessageBody,
{
    let id = core.create(steward_testkit::records::spec(name), &[]).await;
    settled(app, &id).await;
    let workspace: steward_domain::WorkspaceId = id.parse().expect("an id");
    let token = core
        .sim
        .instance_env(workspace)
        .and_then(|env| env.get("STEWARD_AGENT_TOKEN").cloned())
        .expect("a settled workspace's instance has an agent token");
    (id, token)
}

#[actix_web::test]
async fn bodies_are_read_only_after_authentication_and_within_a_deadline() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let (id, token) = agent_workspace(&core, &app, "agent").await;
    let post = test::TestRequest::post;
    // Far above BODY_TIMEOUT: an answer only comes this late if the body is awaited.
    let patience = Duration::from_secs(5);

    // A token of the right shape that is not the workspace's: 401 at once, body unread, and
    // the connection ends with the answer.
    let (workspace, generation) = token.split_once('.').expect("<id>.<generation>.<secret>");
    let generation = generation.split('.').next().expect("a generation");
    let forged = format!("{workspace}.{generation}.{}", "ab".repeat(32));
    for route in ["/v1/agent/register", "/v1/agent/heartbeat"] {
        let req = post()
            .uri(route)
            .insert_header((header::AUTHORIZATION, format!("Bearer {forged}")));
        let answer = answered(&app, slow(req), patience).await;
        answer.error(401, "UNAUTHORIZED");
        closes(&answer);
    }
    // The same on the admin routes, without a token or with another one.
    for authorization in [None, Some("Bearer not-the-token")] {
        let mut req = post().uri("/v1/workspaces");
        if let Some(value) = authorization {
            req = req.insert_header((header::AUTHORIZATION, value));
        }
        let answer = answered(&app, slow(req), patience).await;
        answer.error(401, "UNAUTHORIZED");
        closes(&answer);
    }

    // Authenticated, but the body never completes: 408 after the deadline, connection closed.
    let slow_agent = post()
        .uri("/v1/agent/register")
        .insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
    let answer = answered(&app, slow(slow_agent), patience).await;
    answer.error(408, "REQUEST_TIMEOUT");
    closes(&answer);
    for req in [
        post().uri("/v1/workspaces"),
        test::TestRequest::put().uri(&format!("/v1/workspaces/{id}/model")),
    ] {
        let answer = answered(&app, slow(admin(req)), patience).await;
        answer.error(408, "REQUEST_TIMEOUT");
        closes(&answer);
    }
    let doc = send(
        &app,
        admin(test::TestRequest::get().uri(&format!("/v1/workspaces/{id}"))).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(doc["agent"]["url"], json!(null), "nothing was registered");
    assert_eq!(doc["model"], json!(null), "nothing was changed");

    // A body that arrives is served as ever.
    let register = post()
        .uri("/v1/agent/register")
        .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
        .set_json(json!({ "url": "http://127.0.0.1:9" }))
        .to_request();
    send(&app, register).await.ok(200);
}

#[actix_web::test]
async fn the_bearer_scheme_is_case_insensitive_on_every_route() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let (_, token) = agent_workspace(&core, &app, "schemes").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let list = test::TestRequest::get()
            .uri("/v1/workspaces")
            .insert_header((header::AUTHORIZATION, format!("{scheme} {TOKEN}")))
            .to_request();
        send(&app, list).await.ok(200);
        let heartbeat = test::TestRequest::post()
            .uri("/v1/agent/heartbeat")
            .insert_header((header::AUTHORIZATION, format!("{scheme} {token}")))
            .to_request();
        send(&app, heartbeat).await.ok(200);
    }
    // Still the same 401 for another scheme or a missing separator.
    for authorization in [format!("Basic {TOKEN}"), format!("bearer{TOKEN}")] {
        let list = test::TestRequest::get()
            .uri("/v1/workspaces")
            .insert_header((header::AUTHORIZATION, authorization))
            .to_request();
        send(&app, list).await.error(401, "UNAUTHORIZED");
    }
}

#[actix_web::test]
async fn a_method_not_allowed_lists_the_allowed_ones() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let ws = format!("/v1/workspaces/{}", uuid::Uuid::new_v4());
    for (method, path, allow) in [
        ("PUT", "/v1/workspaces".to_owned(), "POST, GET"),
        ("POST", ws.clone(), "GET, DELETE"),
        ("GET", format!("{ws}/restart"), "POST"),
        ("POST", format!("{ws}/events"), "GET"),
        ("GET", format!("{ws}/secrets/KEY"), "PUT, DELETE"),
        ("DELETE", "/healthz".to_owned(), "GET"),
        ("TRACE", "/openapi.json".to_owned(), "GET"),
    ] {
        let req = admin(
            test::TestRequest::default()
                .method(method.parse().expect("a method"))
                .uri(&path),
        )
        .to_request();
        let answer = send(&app, req).await;
        answer.error(405, "METHOD_NOT_ALLOWED");
        assert_eq!(
            answer.headers.get(header::ALLOW).map(|v| v.as_bytes()),
            Some(allow.as_bytes()),
            "{method} {path}"
        );
    }
}

#[actix_web::test]
async fn secrets_and_the_environment_have_the_same_limits_on_every_path() {
    use steward_domain::limits::{ENTRIES_MAX, VALUE_MAX};
    let core = InProcess::start().await;
    // Bodies large enough for the largest values: the limits under test are the workspace's.
    let state = state_with_body_limit(&core, 1 << 20);
    let app = test::init_service(App::new().configure(steward_api::configure(state))).await;
    let put_secret = |id: &str, key: &str, value: &str| {
        with_json(
            test::TestRequest::put().uri(&format!("/v1/workspaces/{id}/secrets/{key}")),
            &json!({ "value": value }),
        )
    };

    // As many secrets as allowed, at create; one more is refused by PUT as it is by create.
    let mut full = steward_testkit::CreateBody::named("full");
    for i in 0..ENTRIES_MAX {
        full = full.secret(&format!("K{i}"), "v");
    }
    let too_many = full.clone().secret("ONE_MORE", "v").json();
    let create =
        |body: &serde_json::Value| with_json(test::TestRequest::post().uri("/v1/workspaces"), body);
    send(&app, create(&too_many))
        .await
        .error(422, "INVALID_FIELD");
    let id = steward_testkit::id_of(&send(&app, create(&full.json())).await.ok(201)).to_owned();
    let before = settled(&app, &id).await;
    let refused = send(&app, put_secret(&id, "ONE_MORE", "v")).await;
    refused.error(422, "INVALID_FIELD");
    assert!(refused.text.contains("more than 256"), "{}", refused.text);
    assert_eq!(
        snapshot(&app, &id).await,
        before,
        "a refused secret changes nothing"
    );
    // Replacing one is no new entry; once one is removed, another fits.
    send(&app, put_secret(&id, "K0", "w")).await.ok(202);
    let remove = admin(test::TestRequest::delete().uri(&format!("/v1/workspaces/{id}/secrets/K1")));
    send(&app, remove.to_request()).await.ok(202);
    send(&app, put_secret(&id, "ONE_MORE", "v")).await.ok(202);

    // The instance's total environment: secrets, env and the model count together.
    let big = "x".repeat(VALUE_MAX);
    let id = core
        .create(steward_testkit::records::spec("big"), &[])
        .await;
    settled(&app, &id).await;
    let mut accepted = 0;
    let refusal = loop {
        let answer = send(&app, put_secret(&id, &format!("BIG{accepted}"), &big)).await;
        if answer.status != 202 || accepted > 16 {
            break answer;
        }
        accepted += 1;
    };
    refusal.error(422, "INVALID_FIELD");
    assert!(refusal.text.contains("environment"), "{}", refusal.text);
    assert_eq!(
        accepted, 7,
        "seven values of {VALUE_MAX} bytes fit, the eighth does not"
    );
    let model = with_json(
        test::TestRequest::put().uri(&format!("/v1/workspaces/{id}/model")),
        &json!({ "model": big }),
    );
    send(&app, model).await.error(422, "INVALID_FIELD");
    let oversized = steward_testkit::CreateBody::named("oversized")
        .env("A", &big)
        .env("B", &big)
        .env("C", &big)
        .env("D", &big)
        .secret("E", &big)
        .secret("F", &big)
        .secret("G", &big)
        .secret("H", &big)
        .json();
    send(&app, create(&oversized))
        .await
        .error(422, "INVALID_FIELD");
    // The workspace still starts with what it holds.
    let restart = admin(test::TestRequest::post().uri(&format!("/v1/workspaces/{id}/restart")));
    send(&app, restart.to_request()).await.ok(202);
    settled(&app, &id).await;
}

/// Whatever part of a request the daemon cannot use — a path segment that does not decode,
/// a query of the wrong type — is answered in the API's JSON error shape.
#[actix_web::test]
async fn undecodable_paths_and_queries_get_json_errors() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = uuid::Uuid::new_v4();
    for (method, path, status, code) in [
        ("GET", "/v1/workspaces/%FF".to_owned(), 400, "INVALID_ID"),
        (
            "GET",
            "/v1/workspaces/%FF/secrets".to_owned(),
            400,
            "INVALID_ID",
        ),
        ("GET", "/v1/admin/actors/%C0".to_owned(), 400, "INVALID_ID"),
        (
            "DELETE",
            format!("/v1/workspaces/{id}/secrets/%FF%FE"),
            422,
            "INVALID_FIELD",
        ),
        (
            "GET",
            format!("/v1/workspaces/{id}/events?after=x"),
            422,
            "INVALID_FIELD",
        ),
        (
            "GET",
            format!("/v1/workspaces/{id}/events?limit=99999999999999999999"),
            422,
            "INVALID_FIELD",
        ),
        (
            "GET",
            format!("/v1/workspaces/{id}/events?after=1&bogus=2"),
            422,
            "INVALID_FIELD",
        ),
        ("GET", "/v1/%00".to_owned(), 404, "NOT_FOUND"),
    ] {
        let req = test::TestRequest::default()
            .method(method.parse().expect("a method"))
            .uri(&path);
        let answer = send(&app, admin(req).to_request()).await;
        answer.error(status, code);
        assert_eq!(
            answer
                .headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "{method} {path}"
        );
    }
}

/// A delete answers once the workspace is gone (200), so that what a client reads next is
/// a 404; one that takes longer than the daemon waits answers 202 and goes on.
#[actix_web::test]
async fn a_delete_answers_once_the_workspace_is_gone() {
    let core = InProcess::builder()
        .other_sim(
            "slow",
            steward_provider::sim::SimConfig {
                start_delay: Duration::ZERO,
                stop_delay: Duration::from_secs(600),
                ..steward_provider::sim::SimConfig::default()
            },
        )
        .start()
        .await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core
        .create(steward_testkit::records::spec("quick"), &[("K", "v")])
        .await;
    settled(&app, &id).await;
    let path = format!("/v1/workspaces/{id}");
    let deleted = send(
        &app,
        admin(test::TestRequest::delete().uri(&path)).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(deleted["outcome"], "deleted", "{deleted}");
    for read in [
        path.clone(),
        format!("{path}/secrets"),
        format!("{path}/events"),
    ] {
        send(
            &app,
            admin(test::TestRequest::get().uri(&read)).to_request(),
        )
        .await
        .error(404, "NOT_FOUND");
    }

    let mut spec = steward_testkit::records::spec("slow");
    spec.provider = "slow".into();
    let id = core.create(spec, &[]).await;
    let path = format!("/v1/workspaces/{id}");
    eventually_running(&app, &path).await;
    let accepted = send(
        &app,
        admin(test::TestRequest::delete().uri(&path)).to_request(),
    )
    .await
    .ok(202);
    assert_eq!(accepted["outcome"], "accepted", "{accepted}");
    let doc = send(
        &app,
        admin(test::TestRequest::get().uri(&path)).to_request(),
    )
    .await
    .ok(200);
    assert_eq!(doc["phase"], "deleting", "{doc}");
}

async fn eventually_running<S, B>(app: &S, path: &str)
where
    S: TestApp<B>,
    B: actix_web::body::MessageBody,
{
    steward_testkit::eventually(Duration::from_secs(10), "the workspace to run", || async {
        let doc = send(app, admin(test::TestRequest::get().uri(path)).to_request())
            .await
            .ok(200);
        if doc["phase"] == "running" {
            Ok(())
        } else {
            Err(doc.to_string())
        }
    })
    .await
}
