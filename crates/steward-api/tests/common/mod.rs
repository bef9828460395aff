//! What the in-process tests of the HTTP facade share: the app over an in-process registry,
//! requests with the admin token, answers read whole, and snapshots of what a client can see.

#![allow(dead_code)] // each test file uses its own part

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{test, web};
use serde_json::Value;
use steward_api::ApiState;
use steward_testkit::eventually;
use steward_testkit::in_process::InProcess;
use steward_testkit::is_settled;

/// The app under test (what `test::init_service` returns), as helpers take it.
pub trait TestApp<B>:
    Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>
{
}

impl<S, B> TestApp<B> for S where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>
{
}

pub const TOKEN: &str = "the-admin-token";
/// The body limit of these tests.
pub const LIMIT: usize = 4096;
/// How long these tests' deletes wait for the workspace to be gone.
pub const DELETE_WAIT: Duration = Duration::from_millis(500);
/// How long these tests' bodies may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_millis(300);
/// The largest `tail` of these tests' logs route.
pub const LOG_MAX_TAIL: usize = 100;
/// How many follows of the logs route these tests allow at once.
pub const LOG_MAX_FOLLOWERS: usize = 2;

/// One answer, read completely.
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub text: String,
    pub headers: header::HeaderMap,
    /// Whether the connection ends with this answer (`Connection: close`).
    pub closes: bool,
}

impl Answer {
    /// Asserts an error answer: status, code, a string message and nothing else.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.json["error"].as_str()),
            (status, Some(code)),
            "{}",
            self.text
        );
        let fields: Vec<&String> = self.json.as_object().expect("an object").keys().collect();
        assert_eq!(fields, ["error", "message"], "{}", self.text);
        assert!(self.json["message"].is_string(), "{}", self.text);
    }

    #[track_caller]
    pub fn ok(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        self.json
    }
}

pub fn state(core: &InProcess) -> web::Data<ApiState> {
    state_with_body_limit(core, LIMIT)
}

/// [`state`] with another body limit.
pub fn state_with_body_limit(core: &InProcess, max_bytes: usize) -> web::Data<ApiState> {
    web::Data::new(ApiState {
        registry: core.registry.clone(),
        admin_token_hash: steward_api::token_hash(TOKEN),
        metrics: None,
        body: steward_api::BodyLimits {
            max_bytes,
            timeout: BODY_TIMEOUT,
        },
        default_provider: "sim".to_owned(),
        delete_wait: DELETE_WAIT,
        wait_max: std::time::Duration::from_secs(300),
        logs: steward_api::LogLimits::new(LOG_MAX_TAIL, LOG_MAX_FOLLOWERS),
    })
}

pub async fn send<S, R, B>(app: &S, req: R) -> Answer
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, req).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let closes =
        response.response().head().connection_type() == actix_web::http::ConnectionType::Close;
    let bytes = test::read_body(response).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        headers,
        closes,
    }
}

/// A request with the admin token.
pub fn admin(req: test::TestRequest) -> test::TestRequest {
    req.insert_header((header::AUTHORIZATION, format!("Bearer {TOKEN}")))
}

/// `method path` with the admin token and `body` as raw JSON text.
pub fn raw(req: test::TestRequest, body: &str) -> actix_http::Request {
    admin(req)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_owned())
        .to_request()
}

/// `method path` with the admin token and a JSON body.
pub fn with_json(req: test::TestRequest, body: &Value) -> actix_http::Request {
    raw(req, &body.to_string())
}

/// Everything a client can see of a workspace: its document (minus the agent's heartbeat)
/// and its events.
pub async fn snapshot<S, B>(app: &S, id: &str) -> (Value, Value)
where
    S: TestApp<B>,
    B: MessageBody,
{
    let path = format!("/v1/workspaces/{id}");
    let doc = send(app, admin(test::TestRequest::get().uri(&path)).to_request())
        .await
        .ok(200);
    let events = send(
        app,
        admin(test::TestRequest::get().uri(&format!("{path}/events"))).to_request(),
    )
    .await
    .ok(200);
    (doc, events)
}

/// How many workspaces `GET /v1/workspaces` lists.
pub async fn workspace_count<S, B>(app: &S) -> usize
where
    S: TestApp<B>,
    B: MessageBody,
{
    let list = send(
        app,
        admin(test::TestRequest::get().uri("/v1/workspaces")).to_request(),
    )
    .await
    .ok(200);
    list["workspaces"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_else(|| panic!("no list of workspaces: {list}"))
}

/// Waits until the workspace is running and idle with its log caught up; its snapshot.
pub async fn settled<S, B>(app: &S, id: &str) -> (Value, Value)
where
    S: TestApp<B>,
    B: MessageBody,
{
    eventually(
        Duration::from_secs(10),
        "the workspace to settle",
        || async {
            let (doc, events) = snapshot(app, id).await;
            let last = events["events"].as_array().and_then(|e| e.last()).cloned();
            let caught_up = last.is_some_and(|e| e["type"] == "provision_succeeded");
            if is_settled(&doc) && caught_up {
                Ok((doc, events))
            } else {
                Err(format!("{doc} / {events}"))
            }
        },
    )
    .await
}
