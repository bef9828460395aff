//! `GET /v1/workspaces/{id}/logs`, in-process over the sim provider (whose instances write a
//! few lines around their cycles): the parameters, their errors, and follows — new lines as
//! they are written, across a restart, the end at a delete, the bound on how many at once.

mod common;

use std::pin::Pin;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::{test, App};
use common::*;
use steward_testkit::in_process::InProcess;

/// How long a followed line may take to come (a bound on a wait, not a measurement).
const FOLLOW_BOUND: Duration = Duration::from_secs(5);

fn get(path: &str) -> actix_http::Request {
    admin(test::TestRequest::get().uri(path)).to_request()
}

/// A streaming answer, read as it comes.
struct Follow {
    body: Pin<Box<BoxBody>>,
    pending: String,
}

impl Follow {
    fn new(response: ServiceResponse) -> Self {
        assert_eq!(response.status().as_u16(), 200);
        Self {
            body: Box::pin(response.into_body()),
            pending: String::new(),
        }
    }

    /// The next line, within [`FOLLOW_BOUND`]; `None` once the stream has ended.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.find('\n') {
                let line = self.pending[..end].to_owned();
                self.pending.drain(..=end);
                return Some(line);
            }
            let chunk = tokio::time::timeout(
                FOLLOW_BOUND,
                std::future::poll_fn(|cx| self.body.as_mut().poll_next(cx)),
            )
            .await
            .expect("a line or the end within the bound");
            match chunk {
                Some(Ok(bytes)) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(error)) => panic!("the stream failed: {error}"),
                None => return None,
            }
        }
    }
}

#[actix_web::test]
async fn the_output_is_plain_text_selected_by_tail_since_generation_and_timestamps() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core
        .create(steward_testkit::records::spec("talker"), &[])
        .await;
    settled(&app, &id).await;
    let logs = format!("/v1/workspaces/{id}/logs");

    let answer = send(&app, get(&logs)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"text/plain; charset=utf-8"[..])
    );
    assert_eq!(
        answer.text,
        "sim: generation 1 starting\nsim: generation 1 up, serving\n"
    );

    let stamped = send(&app, get(&format!("{logs}?timestamps=true&tail=1"))).await;
    assert_eq!(stamped.status, 200, "{}", stamped.text);
    let (time, text) = stamped
        .text
        .trim_end()
        .split_once(' ')
        .expect("time, then text");
    assert_eq!(text, "sim: generation 1 up, serving");
    let at = humantime::parse_rfc3339(time).expect("an RFC 3339 time");

    // A restart: generation 2 writes more; `generation` and `since` select.
    send(
        &app,
        admin(test::TestRequest::post().uri(&format!("/v1/workspaces/{id}/restart"))).to_request(),
    )
    .await
    .ok(202);
    steward_testkit::eventually(FOLLOW_BOUND, "generation 2 up", || async {
        let text = send(&app, get(&logs)).await.text;
        if text.ends_with("sim: generation 2 up, serving\n") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let first = send(&app, get(&format!("{logs}?generation=1"))).await.text;
    assert_eq!(
        first,
        "sim: generation 1 starting\nsim: generation 1 up, serving\nsim: generation 1 stopping (SIGTERM)\n"
    );
    let after = humantime::format_rfc3339_nanos(at + Duration::from_nanos(1));
    let since = send(&app, get(&format!("{logs}?since={after}&tail=2")))
        .await
        .text;
    assert_eq!(
        since,
        "sim: generation 2 starting\nsim: generation 2 up, serving\n"
    );

    // A stopped workspace still serves its last output.
    send(
        &app,
        admin(test::TestRequest::post().uri(&format!("/v1/workspaces/{id}/stop"))).to_request(),
    )
    .await
    .ok(202);
    steward_testkit::eventually(FOLLOW_BOUND, "the stop", || async {
        let text = send(&app, get(&format!("{logs}?tail=1"))).await.text;
        if text == "sim: generation 2 stopping (SIGTERM)\n" {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
}

#[actix_web::test]
async fn bad_parameters_are_refused_with_the_json_error() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core
        .create(steward_testkit::records::spec("quiet"), &[])
        .await;
    settled(&app, &id).await;
    let logs = format!("/v1/workspaces/{id}/logs");
    for query in [
        format!("tail={}", LOG_MAX_TAIL + 1),
        "tail=-1".to_owned(),
        "tail=many".to_owned(),
        "since=yesterday".to_owned(),
        "since=2026-12-08".to_owned(),
        "timestamps=maybe".to_owned(),
        "follow=1x".to_owned(),
        "generation=0".to_owned(),
        "generation=x".to_owned(),
        "lines=5".to_owned(),
    ] {
        send(&app, get(&format!("{logs}?{query}")))
            .await
            .error(422, "INVALID_FIELD");
    }
    assert_eq!(
        send(&app, get(&format!("{logs}?tail={LOG_MAX_TAIL}")))
            .await
            .status,
        200
    );
    send(&app, get("/v1/workspaces/not-a-uuid/logs"))
        .await
        .error(400, "INVALID_ID");
    let unknown = uuid::Uuid::new_v4();
    send(&app, get(&format!("/v1/workspaces/{unknown}/logs")))
        .await
        .error(404, "NOT_FOUND");
    let unauthenticated = test::TestRequest::get().uri(&logs).to_request();
    send(&app, unauthenticated).await.error(401, "UNAUTHORIZED");

    // Generation 1's lines are rotated out of the sim's short ring by later cycles.
    for _ in 0..4 {
        send(
            &app,
            admin(test::TestRequest::post().uri(&format!("/v1/workspaces/{id}/restart")))
                .to_request(),
        )
        .await
        .ok(202);
        settled(&app, &id).await;
    }
    send(&app, get(&format!("{logs}?generation=1")))
        .await
        .error(404, "OUTPUT_GONE");
}

#[actix_web::test]
async fn a_follow_streams_new_lines_across_restarts_until_the_workspace_is_deleted() {
    let core = InProcess::start().await;
    let app = test::init_service(App::new().configure(steward_api::configure(state(&core)))).await;
    let id = core
        .create(steward_testkit::records::spec("followed"), &[])
        .await;
    settled(&app, &id).await;
    let logs = format!("/v1/workspaces/{id}/logs");

    let mut follow =
        Follow::new(test::call_service(&app, get(&format!("{logs}?follow=true&tail=1"))).await);
    assert_eq!(
        follow.line().await.as_deref(),
        Some("sim: generation 1 up, serving")
    );
    send(
        &app,
        admin(test::TestRequest::post().uri(&format!("/v1/workspaces/{id}/restart"))).to_request(),
    )
    .await
    .ok(202);
    for expected in [
        "sim: generation 1 stopping (SIGTERM)",
        "sim: generation 2 starting",
        "sim: generation 2 up, serving",
    ] {
        assert_eq!(follow.line().await.as_deref(), Some(expected));
    }

    // The bound: a third follow is refused while two stream; a finished one frees its place.
    let second = test::call_service(&app, get(&format!("{logs}?follow=true"))).await;
    assert_eq!(second.status().as_u16(), 200);
    send(&app, get(&format!("{logs}?follow=true")))
        .await
        .error(429, "TOO_MANY_FOLLOWERS");
    assert_eq!(send(&app, get(&logs)).await.status, 200);
    drop(second);
    let third = test::call_service(&app, get(&format!("{logs}?follow=true"))).await;
    assert_eq!(third.status().as_u16(), 200);
    drop(third);

    // Deleted: the follow ends.
    send(
        &app,
        admin(test::TestRequest::delete().uri(&format!("/v1/workspaces/{id}"))).to_request(),
    )
    .await;
    while let Some(line) = follow.line().await {
        assert!(line.starts_with("sim: generation 2"), "{line}");
    }
}
