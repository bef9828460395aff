//! A fake Steward control plane for the agent's tests: records every request to
//! `/v1/agent/*` and answers with the status a test script chooses.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

pub const WORKSPACE_ID: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
pub const GENERATION: u64 = 7;
pub const TOKEN: &str = "tok-e8d1c0ffee-canary";
pub const REGISTER: &str = "/v1/agent/register";
pub const HEARTBEAT: &str = "/v1/agent/heartbeat";

/// Chooses the status for the `n`th (0-based) request to `path`.
pub type Script = dyn Fn(&str, usize) -> u16 + Send + Sync;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    per_path: HashMap<String, usize>,
}

pub struct FakeControl {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    handle: ServerHandle,
}

impl FakeControl {
    /// Starts on a fresh loopback port.
    pub fn start(script: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake control plane");
        Self::start_on(listener, script)
    }

    /// Starts on `listener`, e.g. one bound to an address the agent already knows.
    pub fn start_on(
        listener: TcpListener,
        script: impl Fn(&str, usize) -> u16 + Send + Sync + 'static,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let script: Data<Box<Script>> = Data::new(Box::new(script));
        let shared = Data::from(log.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(script.clone())
                .app_data(shared.clone())
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { addr, log, handle }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .calls
            .clone()
    }

    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn answer(
    req: HttpRequest,
    body: Bytes,
    script: Data<Box<Script>>,
    log: Data<Mutex<Log>>,
) -> HttpResponse {
    let path = req.path().to_owned();
    let nth = {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.calls.push(Call {
            path: path.clone(),
            authorization: req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let count = log.per_path.entry(path.clone()).or_default();
        *count += 1;
        *count - 1
    };
    let status = actix_web::http::StatusCode::from_u16(script(&path, nth)).expect("valid status");
    let body = match (status.as_u16(), path.as_str()) {
        (200, REGISTER) => json!({ "workspace_id": WORKSPACE_ID, "generation": GENERATION }),
        (200, _) => json!({}),
        _ => json!({ "error": "SCRIPTED", "message": format!("scripted {status}") }),
    };
    HttpResponse::build(status).json(body)
}

/// The agent's environment, pointed at `control_url`, with a fast heartbeat.
pub fn agent_env(control_url: &str) -> HashMap<String, String> {
    [
        ("STEWARD_WORKSPACE_ID", WORKSPACE_ID),
        ("STEWARD_GENERATION", "7"),
        ("STEWARD_AGENT_TOKEN", TOKEN),
        ("STEWARD_CONTROL_URL", control_url),
        ("STEWARD_MODEL", "small-1"),
        ("STEWARD_HEARTBEAT_INTERVAL", "50ms"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
