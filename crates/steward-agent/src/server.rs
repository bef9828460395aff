//! The agent's own HTTP server: `GET /health`, `POST /context`, `GET /context`.
//!
//! Owns the routes, their DTOs and errors, and the small state they read and write
//! ([`AgentState`]). It does not talk to the daemon; `lib.rs` flips `registered` when the
//! registration succeeds.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use actix_web::dev::Server;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes, Data, Json};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Largest restart-context body accepted.
const MAX_CONTEXT_BYTES: usize = 64 * 1024;

/// What the HTTP handlers share: the agent's identity, the token, and what it has received.
#[derive(Debug)]
pub struct AgentState {
    workspace_id: Uuid,
    generation: u64,
    model: Option<String>,
    token: SecretString,
    registered: AtomicBool,
    /// Every restart context received, in arrival order, exactly as sent.
    contexts: Mutex<Vec<Value>>,
}

impl AgentState {
    /// State of an agent that has not registered yet and has received nothing.
    pub fn new(
        workspace_id: Uuid,
        generation: u64,
        model: Option<String>,
        token: SecretString,
    ) -> Self {
        Self {
            workspace_id,
            generation,
            model,
            token,
            registered: AtomicBool::new(false),
            contexts: Mutex::default(),
        }
    }

    /// Records that the daemon accepted this agent's registration.
    pub fn mark_registered(&self) {
        self.registered.store(true, Ordering::Release);
    }

    fn contexts(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        // A panic while pushing leaves the Vec valid, so a poisoned lock is still usable.
        self.contexts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorized(&self, req: &HttpRequest) -> bool {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        presented
            .as_bytes()
            .ct_eq(self.token.expose_secret().as_bytes())
            .into()
    }
}

/// Builds the server on an already-bound listener. It starts serving when the returned
/// future is first polled; it installs no signal handlers (the caller owns shutdown).
pub fn serve(state: Data<AgentState>, listener: TcpListener) -> std::io::Result<Server> {
    Ok(
        HttpServer::new(move || App::new().configure(routes(state.clone())))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(0)
            .listen(listener)?
            .run(),
    )
}

/// The agent's routes over `state`, mounted by [`serve`] and by the unit tests.
pub fn routes(state: Data<AgentState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .app_data(web::PayloadConfig::new(MAX_CONTEXT_BYTES))
            .route("/health", web::get().to(health))
            .route("/context", web::post().to(receive_context))
            .route("/context", web::get().to(list_contexts));
    }
}

#[derive(Serialize)]
struct HealthDto<'a> {
    status: &'static str,
    workspace_id: Uuid,
    generation: u64,
    pid: u32,
    registered: bool,
    model: Option<&'a str>,
}

async fn health(state: Data<AgentState>) -> HttpResponse {
    HttpResponse::Ok().json(HealthDto {
        status: "ok",
        workspace_id: state.workspace_id,
        generation: state.generation,
        pid: std::process::id(),
        registered: state.registered.load(Ordering::Acquire),
        model: state.model.as_deref(),
    })
}

/// The fields of a restart context the agent relies on; the rest is kept as sent.
#[derive(Deserialize)]
struct ContextHeader {
    generation: u64,
    previous_generation: Option<u64>,
    causes: Vec<String>,
}

async fn receive_context(
    state: Data<AgentState>,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<Json<Value>, ContextError> {
    if !state.authorized(&req) {
        tracing::warn!("restart context rejected: missing or invalid agent token");
        return Err(ContextError::Unauthorized);
    }
    let body = body.map_err(|e| ContextError::Payload(e.as_response_error().status_code()))?;
    let context: Value = serde_json::from_slice(&body)?;
    let header = ContextHeader::deserialize(&context)?;
    if header.generation != state.generation {
        tracing::warn!(
            context_generation = header.generation,
            "restart context is for another generation; recording it anyway"
        );
    }
    tracing::info!(
        generation = header.generation,
        previous_generation = header.previous_generation,
        causes = ?header.causes,
        "restart context received"
    );
    state.contexts().push(context);
    Ok(Json(json!({ "status": "received" })))
}

async fn list_contexts(state: Data<AgentState>) -> Json<Value> {
    Json(json!({ "contexts": *state.contexts() }))
}

/// Why `POST /context` was refused.
#[derive(Debug, thiserror::Error)]
enum ContextError {
    #[error("missing or invalid agent token")]
    Unauthorized,
    #[error("malformed restart context: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("could not read the request body")]
    Payload(StatusCode),
}

impl ResponseError for ContextError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Payload(status) => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Malformed(_) => "MALFORMED_JSON",
            Self::Payload(StatusCode::PAYLOAD_TOO_LARGE) => "PAYLOAD_TOO_LARGE",
            Self::Payload(_) => "BAD_REQUEST",
        };
        HttpResponse::build(self.status_code())
            .json(json!({ "error": code, "message": self.to_string() }))
    }
}

/// The address to register when none is configured: `http://<bound address>`, no trailing
/// slash, so the daemon can append `/context`.
pub fn default_url(bound: SocketAddr) -> String {
    format!("http://{bound}")
}

#[cfg(test)]
mod tests {
    use actix_web::test::{self, TestRequest};

    use super::*;

    const TOKEN: &str = "agent-token-7";

    fn state() -> Data<AgentState> {
        Data::new(AgentState::new(
            Uuid::nil(),
            7,
            Some("small-1".into()),
            SecretString::from(TOKEN),
        ))
    }

    fn post_context(token: Option<&str>, body: &str) -> TestRequest {
        let req = TestRequest::post()
            .uri("/context")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.to_owned());
        match token {
            Some(t) => req.insert_header((header::AUTHORIZATION, format!("Bearer {t}"))),
            None => req,
        }
    }

    #[actix_web::test]
    async fn context_needs_the_agent_token_and_is_listed_exactly_as_received() {
        let app = test::init_service(App::new().configure(routes(state()))).await;
        let first = r#"{"generation":7,"previous_generation":6,"causes":["manual","config"],"note":"extra"}"#;
        let second = r#"{"generation":7,"previous_generation":6,"causes":["health"]}"#;

        for (token, body, status, code) in [
            (None, first, 401, Some("UNAUTHORIZED")),
            (Some("wrong"), first, 401, Some("UNAUTHORIZED")),
            (Some("agent-token-7x"), first, 401, Some("UNAUTHORIZED")),
            (Some(TOKEN), "{not json", 400, Some("MALFORMED_JSON")),
            (Some(TOKEN), r#"{"causes":[]}"#, 400, Some("MALFORMED_JSON")),
            (Some(TOKEN), "[1,2]", 400, Some("MALFORMED_JSON")),
            (Some(TOKEN), first, 200, None),
            (Some(TOKEN), second, 200, None),
        ] {
            let resp = test::call_service(&app, post_context(token, body).to_request()).await;
            assert_eq!(resp.status().as_u16(), status, "{token:?} {body}");
            let json: Value = test::read_body_json(resp).await;
            match code {
                Some(code) => assert_eq!(json["error"], code),
                None => assert_eq!(json, json!({ "status": "received" })),
            }
        }

        let resp = test::call_service(&app, TestRequest::get().uri("/context").to_request()).await;
        let json: Value = test::read_body_json(resp).await;
        let expected: Vec<Value> = [first, second]
            .iter()
            .map(|b| serde_json::from_str(b).expect("valid json"))
            .collect();
        assert_eq!(json, json!({ "contexts": expected }));
    }

    #[actix_web::test]
    async fn oversized_context_is_refused() {
        let app = test::init_service(App::new().configure(routes(state()))).await;
        let body = format!(
            r#"{{"generation":7,"causes":[],"pad":"{}"}}"#,
            "x".repeat(MAX_CONTEXT_BYTES)
        );
        let resp = test::call_service(&app, post_context(Some(TOKEN), &body).to_request()).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[actix_web::test]
    async fn health_reports_identity_and_registration() {
        let state = state();
        let app = test::init_service(App::new().configure(routes(state.clone()))).await;
        let get = || TestRequest::get().uri("/health").to_request();

        let json: Value = test::call_and_read_body_json(&app, get()).await;
        assert_eq!(
            json,
            json!({
                "status": "ok",
                "workspace_id": Uuid::nil(),
                "generation": 7,
                "pid": std::process::id(),
                "registered": false,
                "model": "small-1",
            })
        );
        state.mark_registered();
        let json: Value = test::call_and_read_body_json(&app, get()).await;
        assert_eq!(json["registered"], true);
    }
}
