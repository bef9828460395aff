//! Client of the daemon's agent channel: `POST /v1/agent/register` and `/v1/agent/heartbeat`.
//!
//! Owns the wire format and the classification of replies into [`CallError`]s. It does not
//! retry, sleep, or decide what a failure means for the process: that is `lib.rs`'s job.
//! Errors never carry the token or the daemon's URL.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon's answer to a successful registration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Registration {
    /// Workspace the token belongs to.
    pub workspace_id: Uuid,
    /// Generation the token belongs to.
    pub generation: u64,
}

/// The daemon's JSON error body, `{"error", "message"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `NOT_FOUND`.
    pub error: String,
    /// Human-readable text.
    pub message: String,
}

/// Why a call to the daemon did not succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// Worth retrying: no connection, timeout, 429 or 5xx.
    #[error("control plane unavailable: {0}")]
    Transient(String),
    /// 401: the token belongs to a generation that has been superseded.
    #[error("agent token rejected (401): this generation has been superseded")]
    Superseded,
    /// Any other non-success status: retrying the same request will not help.
    #[error("control plane rejected the request ({status}): {} {}", body.error, body.message)]
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// The daemon's explanation.
        body: ErrorBody,
    },
    /// A success status whose body is not what the contract promises.
    #[error("control plane sent an invalid reply: {0}")]
    InvalidReply(String),
}

/// Calls the daemon on behalf of one agent generation.
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    register_url: Url,
    heartbeat_url: Url,
    token: SecretString,
}

impl ControlClient {
    /// A client for the daemon at `control_url` (its base URL; a path prefix is kept).
    pub fn new(control_url: &Url, token: SecretString) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // The daemon is reached directly; an inherited HTTP_PROXY must not reroute the token.
            .no_proxy()
            .build()?;
        let endpoint = |path: &str| {
            let mut url = control_url.clone();
            url.set_path(&format!(
                "{}{path}",
                control_url.path().trim_end_matches('/')
            ));
            url
        };
        Ok(Self {
            http,
            register_url: endpoint("/v1/agent/register"),
            heartbeat_url: endpoint("/v1/agent/heartbeat"),
            token,
        })
    }

    /// Registers `agent_url` as the address where the daemon reaches this agent.
    pub async fn register(&self, agent_url: &str) -> Result<Registration, CallError> {
        let body = self
            .post(&self.register_url, json!({ "url": agent_url }))
            .await?;
        serde_json::from_slice(&body).map_err(|e| CallError::InvalidReply(e.to_string()))
    }

    /// Tells the daemon this agent is alive.
    pub async fn heartbeat(&self) -> Result<(), CallError> {
        self.post(&self.heartbeat_url, json!({})).await.map(drop)
    }

    async fn post(&self, url: &Url, body: serde_json::Value) -> Result<Vec<u8>, CallError> {
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(self.token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        classify(status, &body).map(|()| body.to_vec())
    }
}

/// Maps a reply status (and, for failures, its body) to the contract's outcome.
pub fn classify(status: StatusCode, body: &[u8]) -> Result<(), CallError> {
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::UNAUTHORIZED {
        Err(CallError::Superseded)
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(CallError::Transient(status.to_string()))
    } else {
        let body = serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
            error: String::new(),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        });
        Err(CallError::Rejected { status, body })
    }
}

/// Describes a failure to talk to the daemon, with its causes but without the URL.
fn transport_error(err: reqwest::Error) -> CallError {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    CallError::Transient(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_as_the_contract_says() {
        let error = br#"{"error":"NOT_FOUND","message":"no such workspace"}"#;
        let cases: [(u16, &[u8], Result<(), CallError>); 7] = [
            (200, b"{}", Ok(())),
            (204, b"", Ok(())),
            (401, b"{}", Err(CallError::Superseded)),
            (
                429,
                b"",
                Err(CallError::Transient("429 Too Many Requests".into())),
            ),
            (
                503,
                b"",
                Err(CallError::Transient("503 Service Unavailable".into())),
            ),
            (
                404,
                error,
                Err(CallError::Rejected {
                    status: StatusCode::NOT_FOUND,
                    body: ErrorBody {
                        error: "NOT_FOUND".into(),
                        message: "no such workspace".into(),
                    },
                }),
            ),
            (
                400,
                b"not json",
                Err(CallError::Rejected {
                    status: StatusCode::BAD_REQUEST,
                    body: ErrorBody {
                        error: String::new(),
                        message: "not json".into(),
                    },
                }),
            ),
        ];
        for (status, body, expected) in cases {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(classify(status, body), expected, "{status}");
        }
    }

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let token = SecretString::from("t");
        let base = Url::parse("http://127.0.0.1:7878/steward/").expect("url");
        let client = ControlClient::new(&base, token.clone()).expect("client");
        assert_eq!(
            client.register_url.as_str(),
            "http://127.0.0.1:7878/steward/v1/agent/register"
        );
        let base = Url::parse("http://127.0.0.1:7878").expect("url");
        let client = ControlClient::new(&base, token).expect("client");
        assert_eq!(
            client.heartbeat_url.as_str(),
            "http://127.0.0.1:7878/v1/agent/heartbeat"
        );
    }
}
