//! Listing workspaces: filters, cursor pages, and names unique among live workspaces.

mod common;

use actix_web::{test, App};
use common::*;
use serde_json::Value;
use steward_provider::sim::SimConfig;
use steward_testkit::in_process::InProcess;
use steward_testkit::CreateBody;

fn names(list: &Value) -> Vec<&str> {
    list["workspaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {list}"))
        .iter()
        .map(|w| w["name"].as_str().expect("a name"))
        .collect()
}

#[actix_web::test]
async fn lists_are_filtered_and_paged_and_refuse_what_they_do_not_know() {
    let core = InProcess::builder()
        .other_sim("other", SimConfig::default())
        .start()
        .await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let post = test::TestRequest::post;
    let get = |uri: &str| admin(test::TestRequest::get().uri(uri)).to_request();
    let mut ids = Vec::new();
    for (name, provider) in [
        ("alpha-1", "sim"),
        ("alpha-2", "other"),
        ("beta", "sim"),
        ("alpha-3", "sim"),
    ] {
        let body = CreateBody::named(name).provider(provider).json();
        let doc = send(&app, with_json(post().uri("/v1/workspaces"), &body))
            .await
            .ok(201);
        ids.push(doc["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        settled(&app, id).await;
    }
    let stop = admin(post().uri(&format!("/v1/workspaces/{}/stop", ids[3]))).to_request();
    send(&app, stop).await.ok(202);
    eventually_stopped(&app, &ids[3]).await;

    let all = send(&app, get("/v1/workspaces")).await.ok(200);
    assert_eq!(names(&all), ["alpha-1", "alpha-2", "beta", "alpha-3"]);
    assert_eq!(all["next_cursor"], Value::Null);
    for (query, expected) in [
        ("provider=other", &["alpha-2"][..]),
        ("provider=sim&name=alpha", &["alpha-1", "alpha-3"]),
        ("phase=stopped", &["alpha-3"]),
        (
            "phase=running&phase=stopped&name=alpha-",
            &["alpha-1", "alpha-2", "alpha-3"],
        ),
        ("phase=running&provider=sim", &["alpha-1", "beta"]),
        ("name=gamma", &[]),
        ("provider=docker", &[]),
    ] {
        let list = send(&app, get(&format!("/v1/workspaces?{query}")))
            .await
            .ok(200);
        assert_eq!(names(&list), expected, "{query}");
    }

    // Pages of two: every workspace once, in order, then no cursor.
    let mut seen = Vec::new();
    let mut uri = "/v1/workspaces?limit=2".to_owned();
    for _ in 0..3 {
        let page = send(&app, get(&uri)).await.ok(200);
        seen.extend(names(&page).into_iter().map(str::to_owned));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/workspaces?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["alpha-1", "alpha-2", "beta", "alpha-3"]);
    // A cursor keeps its place with a filter too.
    let first = send(&app, get("/v1/workspaces?name=alpha&limit=1"))
        .await
        .ok(200);
    let cursor = first["next_cursor"].as_str().expect("more alphas");
    let rest = send(
        &app,
        get(&format!("/v1/workspaces?name=alpha&cursor={cursor}")),
    )
    .await
    .ok(200);
    assert_eq!(names(&rest), ["alpha-2", "alpha-3"]);

    for query in [
        "provder=sim",
        "phase=sleeping",
        "limit=0",
        "limit=10001",
        "limit=many",
        "cursor=abc",
        "provider=sim&provider=other",
    ] {
        send(&app, get(&format!("/v1/workspaces?{query}")))
            .await
            .error(400, "INVALID_QUERY");
    }
}

#[actix_web::test]
async fn a_name_belongs_to_one_live_workspace() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let post = test::TestRequest::post;
    let create = |name: &str| {
        with_json(
            post().uri("/v1/workspaces"),
            &CreateBody::named(name).json(),
        )
    };
    let first = send(&app, create("shared")).await.ok(201);
    let id = first["id"].as_str().expect("id").to_owned();
    let taken = send(&app, create("shared")).await;
    taken.error(409, "NAME_TAKEN");
    assert!(taken.json["message"]
        .as_str()
        .expect("message")
        .contains(&id));
    assert_eq!(workspace_count(&app).await, 1, "nothing was created");
    // Concurrent creates of one name: exactly one wins.
    let answers = futures::future::join_all((0..8).map(|_| send(&app, create("race")))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    // Once the workspace is gone, its name is free.
    let delete = admin(test::TestRequest::delete().uri(&format!("/v1/workspaces/{id}")));
    send(&app, delete.to_request()).await.ok(200);
    send(&app, create("shared")).await.ok(201);
}

async fn eventually_stopped<S: TestApp<B>, B: actix_web::body::MessageBody>(app: &S, id: &str) {
    steward_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the workspace to stop",
        || async {
            let (doc, _) = snapshot(app, id).await;
            if doc["phase"] == "stopped" {
                Ok(())
            } else {
                Err(doc.to_string())
            }
        },
    )
    .await
}
