//! The console in-process (`actix_web::test`): its routes over a real registry on a
//! temporary store, no binary, no port, no browser (the browser test is
//! `tests/browser/console.py`). Logging in and out, the rate limit, the session cookie, the
//! CSRF and origin checks, the security headers, what pages show and never show, actions with
//! and without the script, paging and filters, and the live stream.

use std::pin::Pin;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use steward_actors::Intent;
use steward_console::{Console, ConsoleConfig, CSP};
use steward_domain::{WorkspaceId, WorkspaceSpec};
use steward_testkit::eventually;
use steward_testkit::in_process::InProcess;
use steward_testkit::records::spec;

const TOKEN: &str = "the-admin-token";
/// The origin of `actix_web::test` requests (their default host).
const ORIGIN: &str = "http://localhost:8080";
const WAIT: Duration = Duration::from_secs(10);

/// What the overview reads instead of a daemon's `/metrics`.
const METRICS: &str =
    "steward_workspaces{phase=\"running\"} 2\nsteward_restart_requests_total{cause=\"manual\"} 3\n";

fn console(core: &InProcess, config: ConsoleConfig) -> web::Data<Console> {
    web::Data::new(Console::new(
        core.registry.clone(),
        steward_api::token_hash(TOKEN),
        config,
        Some(std::sync::Arc::new(|| METRICS.to_owned())),
    ))
}

/// The console's routes, in-process.
async fn serve(
    console: web::Data<Console>,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(App::new().configure(steward_console::configure(console))).await
}

/// Waits until the workspace runs.
async fn running(core: &InProcess, id: &str) {
    eventually(WAIT, "the workspace to run", || async {
        phase(core, id).await == "running"
    })
    .await;
}

/// One answer, read completely.
struct Page {
    status: u16,
    headers: header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("closing quote")].to_owned()
    }
}

async fn send<S, B>(app: &S, req: actix_http::Request) -> Page
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, req).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = String::from_utf8_lossy(&test::read_body(response).await).into_owned();
    Page {
        status,
        headers,
        body,
    }
}

/// A logged-in operator: the session cookie and the CSRF token of its forms.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn get(&self, uri: &str) -> TestRequest {
        TestRequest::get()
            .uri(uri)
            .insert_header((header::COOKIE, self.cookie.clone()))
    }

    /// A form POST as a console page sends it (same origin, the CSRF token).
    fn post(&self, uri: &str, fields: &[(&str, &str)]) -> TestRequest {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        TestRequest::post()
            .uri(uri)
            .insert_header((header::COOKIE, self.cookie.clone()))
            .insert_header((header::ORIGIN, ORIGIN))
            .set_form(form)
    }
}

fn login_request(token: &str, peer: &str) -> TestRequest {
    TestRequest::post()
        .uri("/ui/login")
        .peer_addr(peer.parse().expect("an address"))
        .insert_header((header::ORIGIN, ORIGIN))
        .set_form([("token", token), ("next", "/ui/workspaces")])
}

async fn login<S, B>(app: &S) -> Session
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let answer = send(app, login_request(TOKEN, "127.0.0.1:40000").to_request()).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let cookie = answer.header(header::SET_COOKIE);
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let page = send(
        app,
        TestRequest::get()
            .uri("/ui/workspaces")
            .insert_header((header::COOKIE, pair.clone()))
            .to_request(),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    Session {
        cookie: pair,
        csrf: page.csrf(),
    }
}

async fn generation(core: &InProcess, id: &str) -> u64 {
    let id: WorkspaceId = id.parse().expect("an id");
    core.registry.get(id).await.expect("exists").generation.0
}

async fn phase(core: &InProcess, id: &str) -> &'static str {
    let id: WorkspaceId = id.parse().expect("an id");
    core.registry.get(id).await.expect("exists").phase.as_str()
}

#[actix_web::test]
async fn a_wrong_token_is_refused_on_the_page_and_the_right_one_opens_a_session() {
    let core = InProcess::start().await;
    let console = console(&core, ConsoleConfig::default());
    let app = serve(console.clone()).await;

    let wrong = send(
        &app,
        login_request("not-it", "127.0.0.1:40000").to_request(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("That is not the admin token."),
        "{}",
        wrong.body
    );
    assert!(
        !wrong.body.contains("not-it"),
        "the typed token is not echoed"
    );
    assert!(wrong.header(header::SET_COOKIE).is_empty());

    let right = send(&app, login_request(TOKEN, "127.0.0.1:40000").to_request()).await;
    assert_eq!(right.status, 303);
    assert_eq!(right.header(header::LOCATION), "/ui/workspaces");
    let cookie = right.header(header::SET_COOKIE);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag ({cookie})"
    );
    assert!(!cookie.contains(TOKEN));
    assert_eq!(console.sessions(), 1);
}

#[actix_web::test]
async fn login_attempts_are_limited_per_address_and_the_limit_is_shown() {
    let core = InProcess::start().await;
    let config = ConsoleConfig {
        login_attempts_per_minute: 3,
        ..ConsoleConfig::default()
    };
    let app = serve(console(&core, config)).await;
    for _ in 0..3 {
        let answer = send(&app, login_request("guess", "10.0.0.1:1").to_request()).await;
        assert_eq!(answer.status, 401);
    }
    // Over the limit, even the right token waits.
    let limited = send(&app, login_request(TOKEN, "10.0.0.1:2").to_request()).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(
        limited.body.contains("Too many login attempts"),
        "{}",
        limited.body
    );
    assert!(!limited.header(header::RETRY_AFTER).is_empty());
    // Another address has its own allowance.
    let other = send(&app, login_request(TOKEN, "10.0.0.2:1").to_request()).await;
    assert_eq!(other.status, 303);
}

#[actix_web::test]
async fn pages_need_a_session_and_every_answer_carries_a_strict_csp() {
    let core = InProcess::start().await;
    let id = core.create(spec("alpha"), &[]).await;
    let app = serve(console(&core, ConsoleConfig::default())).await;

    let anonymous = send(
        &app,
        TestRequest::get()
            .uri(&format!("/ui/workspaces/{id}"))
            .to_request(),
    )
    .await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(
        anonymous.header(header::LOCATION),
        format!("/ui/login?next=%2Fui%2Fworkspaces%2F{id}")
    );
    let stream = send(
        &app,
        TestRequest::get().uri("/ui/live?overview=1").to_request(),
    )
    .await;
    assert_eq!(stream.status, 401, "a stream without a session is refused");

    let session = login(&app).await;
    let pages = [
        "/ui/workspaces".to_owned(),
        format!("/ui/workspaces/{id}"),
        format!("/ui/workspaces/{id}/delete"),
        "/ui/overview".to_owned(),
        "/ui/login".to_owned(),
        "/ui/no-such-page".to_owned(),
    ];
    for uri in &pages {
        let request = if uri == "/ui/login" {
            TestRequest::get().uri(uri)
        } else {
            session.get(uri)
        };
        let page = send(&app, request.to_request()).await;
        assert!(matches!(page.status, 200 | 404), "{uri}: {}", page.status);
        assert_eq!(page.header(header::CONTENT_SECURITY_POLICY), CSP, "{uri}");
        assert_eq!(
            page.header(header::X_CONTENT_TYPE_OPTIONS),
            "nosniff",
            "{uri}"
        );
        assert_eq!(page.header(header::X_FRAME_OPTIONS), "DENY", "{uri}");
        assert_eq!(page.header(header::CACHE_CONTROL), "no-store", "{uri}");
        // Nothing the CSP would block: no inline script, style or handler.
        assert!(!page.body.contains("<script>"), "{uri}: inline script");
        assert!(!page.body.contains(" style="), "{uri}: inline style");
        assert!(!page.body.contains("<style"), "{uri}: style element");
        assert!(
            !page.body.contains(" onclick=") && !page.body.contains(" onsubmit="),
            "{uri}"
        );
        assert!(!page.body.contains(TOKEN), "{uri}: the admin token");
    }
    // Assets are embedded, hashed and cached for good.
    let list = send(&app, session.get("/ui/workspaces").to_request()).await;
    let at = list
        .body
        .find("/ui/assets/console.")
        .expect("the stylesheet");
    let href: String = list.body[at..].chars().take_while(|c| *c != '"').collect();
    let asset = send(&app, TestRequest::get().uri(&href).to_request()).await;
    assert_eq!(asset.status, 200);
    assert!(asset.header(header::CACHE_CONTROL).contains("immutable"));
    let stale = send(
        &app,
        TestRequest::get()
            .uri("/ui/assets/console.0000.css")
            .to_request(),
    )
    .await;
    assert_eq!(stale.status, 404);
}

#[actix_web::test]
async fn forms_without_the_session_token_or_from_another_origin_change_nothing() {
    let core = InProcess::start().await;
    let id = core.create(spec("alpha"), &[]).await;
    let app = serve(console(&core, ConsoleConfig::default())).await;
    let session = login(&app).await;
    running(&core, &id).await;
    let before = generation(&core, &id).await;
    let restart = format!("/ui/workspaces/{id}/restart");

    let forged = TestRequest::post()
        .uri(&restart)
        .insert_header((header::COOKIE, session.cookie.clone()))
        .insert_header((header::ORIGIN, ORIGIN))
        .set_form([("csrf", "guessed")]);
    assert_eq!(send(&app, forged.to_request()).await.status, 403);
    let cross_site = session
        .post(&restart, &[])
        .insert_header((header::ORIGIN, "https://evil.example"));
    assert_eq!(send(&app, cross_site.to_request()).await.status, 403);
    let no_origin = TestRequest::post()
        .uri(&restart)
        .insert_header((header::COOKIE, session.cookie.clone()))
        .set_form([("csrf", session.csrf.as_str())]);
    assert_eq!(send(&app, no_origin.to_request()).await.status, 403);
    let no_session = TestRequest::post()
        .uri(&restart)
        .insert_header((header::ORIGIN, ORIGIN))
        .set_form([("csrf", session.csrf.as_str())]);
    assert_eq!(
        send(&app, no_session.to_request()).await.status,
        303,
        "to the login page"
    );
    assert_eq!(
        generation(&core, &id).await,
        before,
        "nothing was restarted"
    );

    let answer = send(&app, session.post(&restart, &[]).to_request()).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(generation(&core, &id).await, before + 1);
}

#[actix_web::test]
async fn actions_redirect_back_with_a_message_and_answer_json_to_the_script() {
    let core = InProcess::start().await;
    let id = core.create(spec("alpha"), &[]).await;
    let app = serve(console(&core, ConsoleConfig::default())).await;
    let session = login(&app).await;
    running(&core, &id).await;

    // Without the script: a redirect to the page the form was on, and the message there.
    let back = format!("{ORIGIN}/ui/workspaces?phase=running");
    let plain = session
        .post(&format!("/ui/workspaces/{id}/stop"), &[])
        .insert_header((header::REFERER, back.as_str()));
    let answer = send(&app, plain.to_request()).await;
    assert_eq!(answer.status, 303);
    assert_eq!(
        answer.header(header::LOCATION),
        "/ui/workspaces?phase=running"
    );
    let page = send(&app, session.get("/ui/workspaces").to_request()).await;
    assert!(page.body.contains("alpha: stop: "), "{}", page.body);
    let again = send(&app, session.get("/ui/workspaces").to_request()).await;
    assert!(
        !again.body.contains("alpha: stop: "),
        "a message is shown once"
    );
    eventually(WAIT, "alpha to stop", || async {
        phase(&core, &id).await == "stopped"
    })
    .await;

    // With the script: JSON, no message left for later.
    let fetched = session
        .post(&format!("/ui/workspaces/{id}/start"), &[])
        .insert_header(("X-Console-Fetch", "1"));
    let answer = send(&app, fetched.to_request()).await;
    assert_eq!(answer.status, 200);
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(json["ok"], true);
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("alpha: start: ")),
        "{json}"
    );

    // A refused action: its error, the status the API would give, nothing changed.
    let bad = session
        .post(
            &format!("/ui/workspaces/{id}/secrets"),
            &[("key", "STEWARD_X"), ("value", "v")],
        )
        .insert_header(("X-Console-Fetch", "1"));
    let answer = send(&app, bad.to_request()).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(json["ok"], false);
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("reserved")),
        "{json}"
    );

    // Delete goes to the list, from the confirmation page.
    let delete = session
        .post(&format!("/ui/workspaces/{id}/delete"), &[])
        .insert_header((
            header::REFERER,
            format!("{ORIGIN}/ui/workspaces/{id}/delete"),
        ));
    let answer = send(&app, delete.to_request()).await;
    assert_eq!(answer.header(header::LOCATION), "/ui/workspaces");
    let id: WorkspaceId = id.parse().expect("an id");
    eventually(WAIT, "alpha to be gone", || async {
        !core.registry.contains(id)
    })
    .await;
}

#[actix_web::test]
async fn the_workspace_page_shows_keys_never_values_and_escapes_what_users_typed() {
    let core = InProcess::start().await;
    let hostile = WorkspaceSpec {
        env: [("PLAIN".to_owned(), "env-value-7f3a".to_owned())].into(),
        model: Some("m-1".into()),
        ..spec("<script>alert(1)</script>")
    };
    let id = core
        .create(hostile, &[("API_KEY", "secret-value-9c1d")])
        .await;
    let app = serve(console(&core, ConsoleConfig::default())).await;
    let session = login(&app).await;
    let set = session.post(
        &format!("/ui/workspaces/{id}/secrets"),
        &[("key", "OTHER"), ("value", "typed-secret-5e2b")],
    );
    assert_eq!(send(&app, set.to_request()).await.status, 303);

    let page = send(
        &app,
        session.get(&format!("/ui/workspaces/{id}")).to_request(),
    )
    .await;
    for shown in [
        "API_KEY",
        "OTHER",
        "PLAIN",
        "m-1",
        "secret OTHER set, restart",
    ] {
        assert!(page.body.contains(shown), "{shown} missing");
    }
    let list = send(&app, session.get("/ui/workspaces").to_request()).await;
    for page in [&page, &list] {
        assert_eq!(page.status, 200);
        for never in [
            "secret-value-9c1d",
            "typed-secret-5e2b",
            "env-value-7f3a",
            "<script>alert",
        ] {
            assert!(!page.body.contains(never), "shows {never}: {}", page.body);
        }
        assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}

#[actix_web::test]
async fn the_list_is_paged_and_filtered_on_the_server() {
    let core = InProcess::start().await;
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(core.create(spec(&format!("ws-{n}")), &[]).await);
    }
    // The list's order: oldest first, ties (creates in one millisecond) by id.
    let ordered: Vec<String> = core
        .registry
        .list()
        .await
        .iter()
        .map(|v| v.id.to_string())
        .collect();
    let config = ConsoleConfig {
        page_size: 3,
        ..ConsoleConfig::default()
    };
    let app = serve(console(&core, config)).await;
    let session = login(&app).await;
    let rows = |page: &Page| page.body.matches("<tr id=\"row-").count();

    let first = send(&app, session.get("/ui/workspaces").to_request()).await;
    assert_eq!(rows(&first), 3);
    assert!(
        first.body.contains("1–3 of 7 · page 1 of 3"),
        "{}",
        first.body
    );
    assert!(first.body.contains("href=\"/ui/workspaces?page=2\""));
    assert!(first.body.contains(&format!(
        "/ui/live?rows={},{},{}",
        ordered[0], ordered[1], ordered[2]
    )));
    let last = send(&app, session.get("/ui/workspaces?page=3").to_request()).await;
    assert_eq!(rows(&last), 1);
    assert!(last.body.contains(&ordered[6]));

    let named = send(&app, session.get("/ui/workspaces?q=WS-4").to_request()).await;
    assert_eq!(rows(&named), 1);
    assert!(named.body.contains(&ids[4]));

    core.registry
        .submit(ids[5].parse().expect("an id"), Intent::Stop)
        .await
        .expect("stop");
    eventually(WAIT, "ws-5 to stop", || async {
        phase(&core, &ids[5]).await == "stopped"
    })
    .await;
    let stopped = send(
        &app,
        session
            .get("/ui/workspaces?phase=stopped&provider=sim")
            .to_request(),
    )
    .await;
    assert_eq!(rows(&stopped), 1);
    assert!(stopped.body.contains(&ids[5]));
    let none = send(
        &app,
        session
            .get("/ui/workspaces?provider=elsewhere")
            .to_request(),
    )
    .await;
    assert!(none.body.contains("No workspace matches these filters."));
    let bad = send(&app, session.get("/ui/workspaces?page=x").to_request()).await;
    assert_eq!(bad.status, 400);
}

#[actix_web::test]
async fn the_timeline_pages_back_newest_first_and_filters() {
    let core = InProcess::start().await;
    let id = core.create(spec("busy"), &[]).await;
    let app = serve(console(&core, ConsoleConfig::default())).await;
    let session = login(&app).await;
    let wid: WorkspaceId = id.parse().expect("an id");
    // Enough restarts for more than one page of events.
    for _ in 0..20 {
        running(&core, &id).await;
        core.registry
            .submit(wid, Intent::Restart)
            .await
            .expect("restart");
    }
    running(&core, &id).await;
    let last = core.registry.get(wid).await.expect("exists").last_event_seq;
    assert!(last > 50, "{last} events");

    let page = send(
        &app,
        session.get(&format!("/ui/workspaces/{id}")).to_request(),
    )
    .await;
    let seqs: Vec<i64> = page
        .body
        .match_indices("id=\"ev-")
        .map(|(at, m)| {
            let rest = &page.body[at + m.len()..];
            rest[..rest.find('"').expect("quote")]
                .parse()
                .expect("a seq")
        })
        .collect();
    assert_eq!(seqs.len(), 50);
    assert_eq!(seqs[0], last, "newest first");
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    let older = format!("/ui/workspaces/{id}?before={}", last - 49);
    assert!(page.body.contains(&older), "a link to the older page");
    assert!(page
        .body
        .contains(&format!("/ui/live?ws={id}&amp;events=all&amp;after={last}")));

    let second = send(&app, session.get(&older).to_request()).await;
    assert!(second.body.contains(&format!("id=\"ev-{}\"", last - 50)));
    assert!(
        second.body.contains("id=\"ev-1\""),
        "down to the first event"
    );
    assert!(!second.body.contains(&format!("id=\"ev-{last}\"")));

    let failures = send(
        &app,
        session
            .get(&format!("/ui/workspaces/{id}?events=failures"))
            .to_request(),
    )
    .await;
    assert!(
        failures.body.contains("No events here."),
        "no failure happened"
    );
}

/// Reads a live stream until `done` holds for what it sent, at most `WAIT`.
async fn read_stream<B>(body: &mut Pin<Box<B>>, text: &mut String, done: impl Fn(&str) -> bool)
where
    B: MessageBody,
{
    let read = async {
        while !done(text) {
            match futures::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
                Some(Ok(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(e)) => panic!("stream failed: {}", e.into()),
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, read).await;
    assert!(
        done(text),
        "the stream did not send what was expected; it sent:\n{text}"
    );
}

#[actix_web::test]
async fn one_stream_carries_rows_and_the_workspace_page_and_ends_at_logout() {
    let core = InProcess::start().await;
    let alpha = core.create(spec("alpha"), &[]).await;
    let beta = core.create(spec("beta"), &[]).await;
    let console = console(&core, ConsoleConfig::default());
    console.samples().take();
    let app = serve(console.clone()).await;
    let session = login(&app).await;
    running(&core, &alpha).await;
    let after = core
        .registry
        .get(alpha.parse().expect("id"))
        .await
        .expect("alpha")
        .last_event_seq;

    let uri = format!("/ui/live?rows={alpha}&ws={alpha}&events=all&after={after}&overview=1");
    let response = test::call_service(&app, session.get(&uri).to_request()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut body = Box::pin(response.into_body());
    let mut text = String::new();
    // First everything on the page, as it is now.
    let row = format!("\"id\":\"row-{alpha}\"");
    read_stream(&mut body, &mut text, |t| {
        t.contains(&row)
            && t.contains("\"id\":\"ws-summary\"")
            && t.contains("\"id\":\"ws-inspect\"")
            && t.contains("\"id\":\"overview-body\"")
    })
    .await;
    assert!(
        !text.contains(&format!("row-{beta}")),
        "only the rows of the page"
    );

    // A restart: the row and the summary follow it, new events are prepended with their seq.
    text.clear();
    core.registry
        .submit(alpha.parse().expect("id"), Intent::Restart)
        .await
        .expect("restart");
    read_stream(&mut body, &mut text, |t| {
        t.contains("\"op\":\"prepend\"") && t.contains("restart_requested") && t.contains(&row)
    })
    .await;
    let resume_at = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|n| n.parse::<i64>().ok())
        .max();
    assert!(
        resume_at.is_some_and(|n| n > after),
        "a reconnect resumes after the events sent: {text}"
    );
    assert!(
        !text.contains(&format!("ev-{after}\\\"")),
        "events already on the page are not sent again"
    );

    // Logging out ends the stream with a word to the page.
    let logout = session.post("/ui/logout", &[]);
    assert_eq!(send(&app, logout.to_request()).await.status, 303);
    text.clear();
    read_stream(&mut body, &mut text, |t| t.contains("event: bye")).await;
    assert_eq!(console.sessions(), 0);
    let gone = send(&app, session.get("/ui/workspaces").to_request()).await;
    assert_eq!(gone.status, 303, "the session is over");
}

#[actix_web::test]
async fn the_workspace_page_shows_the_last_output_and_the_stream_appends_new_lines() {
    let core = InProcess::start().await;
    let id = core.create(spec("talker"), &[]).await;
    let console = console(&core, ConsoleConfig::default());
    let app = serve(console.clone()).await;
    let session = login(&app).await;
    running(&core, &id).await;

    let page = send(
        &app,
        session.get(&format!("/ui/workspaces/{id}")).to_request(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("sim: generation 1 starting\nsim: generation 1 up, serving\n"),
        "the last lines, in order: {}",
        page.body
    );
    assert!(!page.body.contains("logs-unavailable"));
    // The page's stream asks for the lines after the last one shown.
    let logs_after = page
        .body
        .split("&amp;logs=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the live URL names where the output resumes");

    let uri = format!("/ui/live?ws={id}&logs={logs_after}");
    let response = test::call_service(&app, session.get(&uri).to_request()).await;
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.into_body());
    let mut text = String::new();
    read_stream(&mut body, &mut text, |t| {
        t.contains("\"id\":\"ws-summary\"")
    })
    .await;
    assert!(
        !text.contains("\"op\":\"append\""),
        "nothing new yet: {text}"
    );
    core.registry
        .submit(id.parse().expect("id"), Intent::Restart)
        .await
        .expect("restart");
    text.clear();
    read_stream(&mut body, &mut text, |t| {
        t.contains("sim: generation 2 up, serving")
    })
    .await;
    let appended: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|p| p["op"] == "append" && p["id"] == "ws-logs")
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        appended,
        "sim: generation 1 stopping (SIGTERM)\nsim: generation 2 starting\nsim: generation 2 up, serving\n",
        "each new line once, in order, none already on the page"
    );
}
