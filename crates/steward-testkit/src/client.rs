//! A JSON client of one daemon's HTTP API, and the waits on workspace states that the tests
//! and benches share.
//!
//! Two faces again: `get`, `post`, … read the whole answer and fail the test on a transport
//! error (a test step); `try_get`, `try_send` return the error (a bench decides).

use std::collections::BTreeSet;
use std::time::Duration;

pub use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::json::{id_of, is_settled, seq_of, summarize};
use crate::wait::{eventually, Wait};

/// Upper bound of one ordinary request (event streams are bounded by their readers instead).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline of the waits on a workspace ([`Api::wait_phase`], [`Api::wait_settled`]).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// One HTTP answer, read completely.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The raw body text.
    pub text: String,
    /// The body parsed as JSON, `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Reply {
    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}: {}",
            self.status, self.text
        );
        self.json
    }

    /// Asserts an error answer in the API's shape: the status, the `error` code, and a string
    /// `message`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected HTTP {status} {code}, got {}: {}",
            self.status, self.text
        );
        assert_eq!(
            self.json["error"].as_str(),
            Some(code),
            "expected error code {code} (HTTP {status}), body: {}",
            self.text
        );
        assert!(
            self.json["message"].is_string(),
            "error body has no string `message`: {}",
            self.text
        );
    }
}

/// A JSON client of one daemon, optionally carrying a bearer token.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client of the daemon at `base` (`http://127.0.0.1:PORT`).
    pub fn new(http: reqwest::Client, base: String, token: Option<String>) -> Api {
        Api { http, base, token }
    }

    /// Absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The same client with another bearer token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.map(str::to_owned),
        }
    }

    /// A request builder with the bearer token set and no timeout (for streams).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request built with [`Api::request`] (bounded by [`REQUEST_TIMEOUT`]) and reads
    /// the whole answer.
    pub async fn try_send(&self, builder: reqwest::RequestBuilder) -> reqwest::Result<Reply> {
        let response = builder.timeout(REQUEST_TIMEOUT).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, text, json })
    }

    /// [`Api::try_send`], failing the test on a transport error.
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        self.try_send(builder)
            .await
            .unwrap_or_else(|err| panic!("HTTP request failed: {err:?}"))
    }

    /// `GET path`, returning a transport error.
    pub async fn try_get(&self, path: &str) -> reqwest::Result<Reply> {
        self.try_send(self.request(Method::GET, path)).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &impl Serialize) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST path` without a body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(Method::POST, path)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &impl Serialize) -> Reply {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `method path` with a raw body sent as `application/json` (for malformed input).
    pub async fn raw(&self, method: Method, path: &str, body: impl Into<String>) -> Reply {
        let body: String = body.into();
        self.send(
            self.request(method, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Creates a workspace from `body` (a [`crate::CreateBody`] or any JSON), asserts 201
    /// and returns the document.
    pub async fn create(&self, body: &impl Serialize) -> Value {
        self.post("/v1/workspaces", body).await.expect(201)
    }

    /// Creates a workspace with only a name and returns its id.
    pub async fn create_named(&self, name: &str) -> String {
        id_of(&self.create(&crate::CreateBody::named(name)).await)
    }

    /// `GET /v1/workspaces/{id}`, asserting 200.
    pub async fn workspace(&self, id: &str) -> Value {
        self.get(&format!("/v1/workspaces/{id}")).await.expect(200)
    }

    /// All workspace documents (`GET /v1/workspaces`, page after page).
    pub async fn workspaces(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut uri = "/v1/workspaces".to_owned();
        loop {
            let body = self.get(&uri).await.expect(200);
            all.extend(
                body["workspaces"]
                    .as_array()
                    .unwrap_or_else(|| panic!("`workspaces` is not an array: {body}"))
                    .iter()
                    .cloned(),
            );
            match body["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/v1/workspaces?cursor={cursor}"),
                None => return all,
            }
        }
    }

    /// `POST /v1/workspaces/{id}/restart`, asserting 202; returns `{outcome, generation}`.
    pub async fn restart(&self, id: &str) -> Value {
        self.post_empty(&format!("/v1/workspaces/{id}/restart"))
            .await
            .expect(202)
    }

    /// Every event of a workspace, oldest first, fetched page by page.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.events_after(id, 0).await
    }

    /// Every event of a workspace with `seq > after`, oldest first.
    pub async fn events_after(&self, id: &str, after: u64) -> Vec<Value> {
        const PAGE: usize = 10_000;
        let mut all: Vec<Value> = Vec::new();
        let mut after = after;
        loop {
            let path = format!("/v1/workspaces/{id}/events?after={after}&limit={PAGE}");
            let body = self.get(&path).await.expect(200);
            let page = body["events"]
                .as_array()
                .unwrap_or_else(|| panic!("`events` is not an array: {body}"))
                .clone();
            let len = page.len();
            if let Some(last) = page.last() {
                after = seq_of(last);
            }
            all.extend(page);
            if len < PAGE {
                return all;
            }
        }
    }

    /// Waits until the workspace is in `phase`; returns its document.
    pub async fn wait_phase(&self, id: &str, phase: &str) -> Value {
        self.wait_phase_within(id, phase, DEFAULT_WAIT).await
    }

    /// Like [`Api::wait_phase`] with an explicit deadline.
    pub async fn wait_phase_within(&self, id: &str, phase: &str, timeout: Duration) -> Value {
        let what = format!("workspace {id} to be {phase}");
        eventually(timeout, &what, || async {
            let reply = self.get(&format!("/v1/workspaces/{id}")).await;
            if reply.status == 200 && reply.json["phase"] == phase {
                Ok(reply.json)
            } else {
                Err(format!("HTTP {}: {}", reply.status, reply.text))
            }
        })
        .await
    }

    /// Waits until the workspace's actor is outside its debounce window (health restarts
    /// possible again).
    pub async fn wait_debounce_passed(&self, id: &str) {
        eventually(DEFAULT_WAIT, "the debounce window to pass", || async {
            let actor = self
                .get(&format!("/v1/admin/actors/{id}"))
                .await
                .expect(200);
            if actor["debounce_until"].is_null() {
                Ok(())
            } else {
                Err(actor.to_string())
            }
        })
        .await;
    }

    /// Waits until the workspace is running and idle: no cycle in flight, nothing pending, the
    /// instance that is up is the latest generation, and the event log has caught up with the
    /// document (its last cycle is closed by a `provision_succeeded` of that generation).
    /// Returns the document.
    ///
    /// The event log may trail the document briefly (the daemon writes events in batches), so
    /// both are polled together.
    pub async fn wait_settled(&self, id: &str) -> Value {
        self.wait_settled_within(id, DEFAULT_WAIT).await
    }

    /// Like [`Api::wait_settled`] with an explicit deadline.
    pub async fn wait_settled_within(&self, id: &str, timeout: Duration) -> Value {
        let what = format!("workspace {id} to be running and idle, with its event log caught up");
        eventually(timeout, &what, || async {
            let reply = self.get(&format!("/v1/workspaces/{id}")).await;
            if reply.status != 200 || !is_settled(&reply.json) {
                return Err(format!("HTTP {}: {}", reply.status, reply.text));
            }
            let events = self.events(id).await;
            let last_cycle_event = events.iter().rev().find(|e| {
                e["type"] == "provision_started"
                    || e["type"] == "provision_succeeded"
                    || e["type"] == "provision_failed"
            });
            match last_cycle_event {
                Some(e)
                    if e["type"] == "provision_succeeded"
                        && e["generation"] == reply.json["observed_generation"] =>
                {
                    Ok(reply.json)
                }
                _ => Err(format!(
                    "document settled ({}) but the event log has not caught up: {}",
                    reply.text,
                    summarize(&events)
                )),
            }
        })
        .await
    }

    /// Waits until every workspace in `ids` is running and idle, polling the list endpoint
    /// every 250 ms (listing thousands of workspaces more often would load the daemon under
    /// test).
    pub async fn wait_all_settled(&self, ids: &BTreeSet<String>, timeout: Duration) {
        let what = format!("{} workspaces to be running and idle", ids.len());
        Wait::up_to(timeout)
            .every(Duration::from_millis(250))
            .eventually(&what, || async {
                let docs = self.workspaces().await;
                let settled: BTreeSet<String> = docs
                    .iter()
                    .filter(|doc| is_settled(doc))
                    .map(id_of)
                    .collect();
                let missing: Vec<&Value> = docs
                    .iter()
                    .filter(|doc| ids.contains(&id_of(doc)) && !is_settled(doc))
                    .take(3)
                    .collect();
                let left = ids.difference(&settled).count();
                if left == 0 {
                    Ok(())
                } else {
                    Err(format!("{left} not settled yet, e.g. {missing:?}"))
                }
            })
            .await
    }
}
