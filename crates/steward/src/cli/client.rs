//! A small typed HTTP client for Steward's API (v1): one method per route, the admin bearer
//! token on every request, and every failure mapped to a [`CliError`] that knows its exit
//! code. It knows nothing about terminals or output formats (that is `render`), nor where
//! the URL and token come from (that is `target`).
//!
//! Every answer keeps its raw JSON next to its type, so `--json` prints exactly what the
//! daemon said even when this client's reading of it ([`super::wire`]) is older than the
//! daemon.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use super::sse;
use super::wire;

/// Bound on establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one ordinary request (not on an event stream, which lasts until it ends).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a wait whose duration the client cannot read may take: the daemon's default
/// maximum (`http.wait_max`).
const WAIT_UNKNOWN: Duration = Duration::from_secs(300);
/// Events asked for per page (the API's default page).
const EVENTS_PAGE: usize = 1000;
/// Longest excerpt of an unexpected body quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// Everything that can make a CLI command fail, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad invocation or local configuration (a malformed flag value, an unreadable
    /// `listen.addr`, an unsupported URL).
    #[error("{0}")]
    Usage(String),
    /// No admin token was given and the token file could not be read.
    #[error(
        "no admin token: cannot read {}: {reason}; pass --token, set STEWARD_ADMIN_TOKEN, \
         or point --data-dir at the daemon's data directory",
        path.display()
    )]
    Token {
        /// The file that was tried.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// The daemon could not be reached (connection refused, DNS, reset before an answer).
    #[error("cannot reach steward at {url}: is the daemon running? ({cause})")]
    Unreachable {
        /// Base URL tried.
        url: String,
        /// Innermost cause.
        cause: String,
    },
    /// The daemon accepted the connection but did not answer in time.
    #[error("steward at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// Base URL tried.
        url: String,
    },
    /// The connection broke while an answer (or an event stream) was being read.
    #[error("connection to steward at {url} broke: {cause}")]
    Broken {
        /// Base URL.
        url: String,
        /// Innermost cause.
        cause: String,
    },
    /// The API answered with its error shape.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code, e.g. `NOT_FOUND`.
        code: String,
        /// Human-readable explanation from the daemon.
        message: String,
    },
    /// The answer was not what the API promises (not JSON, not the documented shape).
    #[error("unexpected answer from steward (HTTP {status}): {detail}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// What was wrong, with a short excerpt of the body.
        detail: String,
    },
    /// Reading the secret value from standard input failed.
    #[error("cannot read the secret value from stdin: {0}")]
    Stdin(std::io::Error),
    /// Writing to standard output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// `--wait`: the wait ran out before the intent settled (it goes on).
    #[error("the wait ran out before {0}; it goes on (see `steward ws get`)")]
    WaitRanOut(String),
    /// `--wait`: the intent settled without reaching what it asked for (a cycle failed, the
    /// stop failed, or a later intent overruled it).
    #[error("{0}")]
    NotReached(String),
}

impl CliError {
    /// A code for scripts (`--json`): the daemon's own for an API error, else one naming
    /// what failed on this side.
    pub fn code(&self) -> &str {
        match self {
            CliError::Usage(_) => "USAGE",
            CliError::Token { .. } => "NO_TOKEN",
            CliError::Unreachable { .. } => "UNREACHABLE",
            CliError::Timeout { .. } => "TIMEOUT",
            CliError::Broken { .. } => "CONNECTION_BROKEN",
            CliError::Api { code, .. } => code,
            CliError::Protocol { .. } => "UNEXPECTED_ANSWER",
            CliError::Stdin(_) => "STDIN",
            CliError::Output(_) => "OUTPUT",
            CliError::WaitRanOut(_) => "WAIT_RAN_OUT",
            CliError::NotReached(_) => "NOT_REACHED",
        }
    }

    /// The error as `--json` prints it: `{"error": CODE, "message": text}` like the API's,
    /// plus `status` when the daemon answered.
    pub fn to_json(&self) -> Value {
        let message = match self {
            CliError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut body = json!({ "error": self.code(), "message": message });
        if let CliError::Api { status, .. } | CliError::Protocol { status, .. } = self {
            body["status"] = json!(status);
        }
        body
    }

    /// The process exit code: 1 = the daemon refused or answered oddly, 2 = usage or local
    /// configuration, 3 = the daemon could not be reached, 4 = a wait ran out, 5 = what was
    /// waited for failed (or a later intent overruled it).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::WaitRanOut(_) => 4,
            CliError::NotReached(_) => 5,
            CliError::Usage(_) | CliError::Token { .. } => 2,
            CliError::Unreachable { .. } | CliError::Timeout { .. } | CliError::Broken { .. } => 3,
            CliError::Api { .. }
            | CliError::Protocol { .. }
            | CliError::Stdin(_)
            | CliError::Output(_) => 1,
        }
    }
}

/// One successful answer: its status, its raw JSON, and the type it is read as.
#[derive(Debug)]
pub struct Reply<T> {
    /// HTTP status (e.g. 201 for a new workspace, 200 for an idempotent replay).
    pub status: u16,
    /// The body as the daemon sent it.
    pub raw: Value,
    kind: PhantomData<T>,
}

impl<T: DeserializeOwned> Reply<T> {
    /// Reads the body as `T`.
    pub fn parse(&self) -> Result<T, CliError> {
        T::deserialize(&self.raw).map_err(|e| CliError::Protocol {
            status: self.status,
            detail: format!("{e}: {}", excerpt(&self.raw.to_string())),
        })
    }
}

/// What `POST /v1/workspaces` sends.
pub struct CreateRequest {
    /// The JSON body (secrets included: never print it).
    pub body: Value,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

/// An authorized client for one daemon.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
    /// The `?wait=` intents are sent with (`--wait`), and how long it may take.
    wait: Option<(String, Duration)>,
}

impl Client {
    /// A client for the API under `base` (scheme `http`), presenting `token`.
    pub fn new(base: Url, token: SecretString) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("steward-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token,
            wait: None,
        })
    }

    /// This client, sending its intents with `?wait=DURATION`: the daemon answers once the
    /// intent has settled, or when the duration runs out.
    pub fn waiting(mut self, wait: Option<String>) -> Client {
        self.wait = wait.map(|raw| {
            // The daemon checks the syntax; this only bounds how long the answer may take.
            let longest = humantime::parse_duration(&raw).unwrap_or(WAIT_UNKNOWN);
            (raw, longest)
        });
        self
    }

    /// `GET /v1/workspaces/{id}/wait?for=…&timeout=…`.
    pub async fn wait_for(
        &self,
        id: &str,
        goal: &str,
        timeout: Option<&str>,
    ) -> Result<Reply<Value>, CliError> {
        let mut builder = self
            .request(Method::GET, &["workspaces", id, "wait"])?
            .query(&[("for", goal)]);
        let mut longest = WAIT_UNKNOWN;
        if let Some(timeout) = timeout {
            builder = builder.query(&[("timeout", timeout)]);
            longest = humantime::parse_duration(timeout).unwrap_or(WAIT_UNKNOWN);
        }
        self.send_within(builder, REQUEST_TIMEOUT + longest).await
    }

    /// A request for an intent: [`Client::request`], with `?wait=` if this client waits.
    fn intent(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, CliError> {
        let builder = self.request(method, segments)?;
        Ok(match &self.wait {
            Some((raw, _)) => builder.query(&[("wait", raw)]),
            None => builder,
        })
    }

    /// The base URL as shown in messages (no trailing slash).
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `POST /v1/workspaces`.
    pub async fn create(&self, request: CreateRequest) -> Result<Reply<wire::Workspace>, CliError> {
        let mut builder = self
            .intent(Method::POST, &["workspaces"])?
            .json(&request.body);
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.send(builder).await
    }

    /// `GET /v1/workspaces` with `filters` (query pairs), page after page until `limit`
    /// workspaces or the last page; the answer holds them all (`next_cursor` of the last
    /// page read).
    pub async fn list(
        &self,
        filters: &[(&str, String)],
        limit: Option<usize>,
    ) -> Result<Reply<wire::WorkspaceList>, CliError> {
        let mut all: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = filters.to_vec();
            if let Some(limit) = limit {
                query.push(("limit", limit.saturating_sub(all.len()).max(1).to_string()));
            }
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page: Reply<wire::WorkspaceList> = self
                .send(self.request(Method::GET, &["workspaces"])?.query(&query))
                .await?;
            all.extend(
                page.raw["workspaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            cursor = page.raw["next_cursor"].as_str().map(str::to_owned);
            let full = limit.is_some_and(|limit| all.len() >= limit);
            if cursor.is_none() || full {
                let raw = serde_json::json!({ "workspaces": all, "next_cursor": cursor });
                return Ok(Reply {
                    status: page.status,
                    raw,
                    kind: PhantomData,
                });
            }
        }
    }

    /// The id of the workspace `target` names: `target` itself if it is an id, else the id of
    /// the live workspace with that name.
    pub async fn resolve(&self, target: &str) -> Result<String, CliError> {
        if uuid::Uuid::try_parse(target).is_ok() {
            return Ok(target.to_owned());
        }
        let listed = self.list(&[("name", target.to_owned())], None).await?;
        let named: Vec<wire::Workspace> = listed
            .parse()?
            .workspaces
            .into_iter()
            .filter(|w| w.name == target)
            .collect();
        match named.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(CliError::Api {
                status: 404,
                code: "NOT_FOUND".into(),
                message: format!("no workspace has the id or name {target:?}"),
            }),
            several => Err(CliError::Usage(format!(
                "{} workspaces are named {target:?}; use an id",
                several.len()
            ))),
        }
    }

    /// `GET /v1/workspaces/{id}`.
    pub async fn get(&self, id: &str) -> Result<Reply<wire::Workspace>, CliError> {
        self.send(self.request(Method::GET, &["workspaces", id])?)
            .await
    }

    /// `POST /v1/workspaces/{id}/{restart|stop|start}`.
    pub async fn lifecycle(
        &self,
        id: &str,
        action: Lifecycle,
    ) -> Result<Reply<wire::IntentAnswer>, CliError> {
        let segment = match action {
            Lifecycle::Restart => "restart",
            Lifecycle::Stop => "stop",
            Lifecycle::Start => "start",
        };
        self.send(self.intent(Method::POST, &["workspaces", id, segment])?)
            .await
    }

    /// `DELETE /v1/workspaces/{id}`.
    pub async fn delete(&self, id: &str) -> Result<Reply<wire::IntentAnswer>, CliError> {
        self.send(self.intent(Method::DELETE, &["workspaces", id])?)
            .await
    }

    /// `PUT /v1/workspaces/{id}/secrets/{key}`.
    pub async fn set_secret(
        &self,
        id: &str,
        key: &str,
        value: &SecretString,
    ) -> Result<Reply<wire::IntentAnswer>, CliError> {
        let body = json!({ "value": value.expose_secret() });
        let builder = self
            .intent(Method::PUT, &["workspaces", id, "secrets", key])?
            .json(&body);
        self.send(builder).await
    }

    /// `DELETE /v1/workspaces/{id}/secrets/{key}`.
    pub async fn remove_secret(
        &self,
        id: &str,
        key: &str,
    ) -> Result<Reply<wire::IntentAnswer>, CliError> {
        self.send(self.intent(Method::DELETE, &["workspaces", id, "secrets", key])?)
            .await
    }

    /// `GET /v1/workspaces/{id}/secrets`.
    pub async fn secret_keys(&self, id: &str) -> Result<Reply<wire::SecretKeys>, CliError> {
        self.send(self.request(Method::GET, &["workspaces", id, "secrets"])?)
            .await
    }

    /// `POST /v1/workspaces/{id}/switch-provider`.
    pub async fn switch_provider(
        &self,
        id: &str,
        provider: &str,
    ) -> Result<Reply<Value>, CliError> {
        let builder = self
            .intent(Method::POST, &["workspaces", id, "switch-provider"])?
            .json(&json!({ "provider": provider }));
        self.send(builder).await
    }

    /// `PUT /v1/workspaces/{id}/model`.
    pub async fn set_model(
        &self,
        id: &str,
        model: &str,
    ) -> Result<Reply<wire::IntentAnswer>, CliError> {
        let builder = self
            .intent(Method::PUT, &["workspaces", id, "model"])?
            .json(&json!({ "model": model }));
        self.send(builder).await
    }

    /// Every event with `seq > after`, oldest first, fetched page by page; the raw answer is
    /// `{"events": [...]}` with all pages joined.
    pub async fn events(&self, id: &str, after: u64) -> Result<Reply<wire::EventPage>, CliError> {
        let mut all: Vec<Value> = Vec::new();
        let mut after = after;
        loop {
            let builder = self
                .request(Method::GET, &["workspaces", id, "events"])?
                .query(&[
                    ("after", after.to_string()),
                    ("limit", EVENTS_PAGE.to_string()),
                ]);
            let reply: Reply<wire::EventPage> = self.send(builder).await?;
            let page = reply.parse()?.events;
            let full = page.len() >= EVENTS_PAGE;
            if let Some(last) = page.last() {
                after = last["seq"].as_u64().ok_or_else(|| CliError::Protocol {
                    status: reply.status,
                    detail: format!(
                        "event without an integer seq: {}",
                        excerpt(&last.to_string())
                    ),
                })?;
            }
            all.extend(page);
            if !full {
                return Ok(Reply {
                    status: reply.status,
                    raw: json!({ "events": all }),
                    kind: PhantomData,
                });
            }
        }
    }

    /// Opens the live stream of a workspace's events (`Accept: text/event-stream`): the
    /// events with `seq > after`, then each new one as it is committed.
    pub async fn follow(&self, id: &str, after: u64) -> Result<EventStream, CliError> {
        let builder = self
            .request(Method::GET, &["workspaces", id, "events"])?
            .query(&[("after", after.to_string())])
            .header(ACCEPT, "text/event-stream");
        let response = builder.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.map_err(|e| self.transport(e))?;
            return Err(api_error(status, &text));
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_stream {
            return Err(CliError::Protocol {
                status: status.as_u16(),
                detail: "asked for text/event-stream, got another content type".into(),
            });
        }
        Ok(EventStream {
            response,
            decoder: sse::Decoder::default(),
            ready: VecDeque::new(),
            base: self.base(),
        })
    }

    /// `POST /v1/admin/workspaces/{id}/kill`.
    pub async fn kill(&self, id: &str) -> Result<Reply<Value>, CliError> {
        self.send(self.request(Method::POST, &["admin", "workspaces", id, "kill"])?)
            .await
    }

    /// Opens `GET /v1/workspaces/{id}/logs` with `query` (its parameters as given): the
    /// answer's text, read chunk by chunk ([`LogStream`]). Not bounded in time when
    /// following; otherwise as an ordinary request.
    pub async fn logs(
        &self,
        id: &str,
        query: &[(&str, String)],
        follow: bool,
    ) -> Result<LogStream, CliError> {
        let mut builder = self
            .request(Method::GET, &["workspaces", id, "logs"])?
            .query(query);
        if !follow {
            builder = builder.timeout(REQUEST_TIMEOUT);
        }
        let response = builder.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.map_err(|e| self.transport(e))?;
            return Err(api_error(status, &text));
        }
        Ok(LogStream {
            response,
            base: self.base(),
        })
    }

    /// `GET /v1/admin/actors`.
    pub async fn actors(&self) -> Result<Reply<wire::ActorList>, CliError> {
        self.send(self.request(Method::GET, &["admin", "actors"])?)
            .await
    }

    /// `GET /v1/admin/actors/{id}`.
    pub async fn actor(&self, id: &str) -> Result<Reply<wire::Actor>, CliError> {
        self.send(self.request(Method::GET, &["admin", "actors", id])?)
            .await
    }

    /// A request for `/v1/<segments...>` with the bearer token. Each segment is
    /// percent-encoded, so an id or key can never change the route.
    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, CliError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| CliError::Usage(format!("{} cannot be a base URL", self.base())))?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        Ok(self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose_secret()))
    }

    /// Sends an ordinary request (bounded by [`REQUEST_TIMEOUT`], plus the wait of a waiting
    /// client) and reads its JSON answer.
    async fn send<T>(&self, builder: RequestBuilder) -> Result<Reply<T>, CliError> {
        let within = REQUEST_TIMEOUT + self.wait.as_ref().map_or(Duration::ZERO, |w| w.1);
        self.send_within(builder, within).await
    }

    /// [`Client::send`], bounded by `within`.
    async fn send_within<T>(
        &self,
        builder: RequestBuilder,
        within: Duration,
    ) -> Result<Reply<T>, CliError> {
        let response = builder
            .timeout(within)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(api_error(status, &text));
        }
        let raw = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| CliError::Protocol {
                status: status.as_u16(),
                detail: format!("not JSON ({e}): {}", excerpt(&text)),
            })?
        };
        Ok(Reply {
            status: status.as_u16(),
            raw,
            kind: PhantomData,
        })
    }

    /// Maps a transport failure (no HTTP answer) to its error.
    fn transport(&self, error: reqwest::Error) -> CliError {
        transport_error(self.base(), &error)
    }
}

/// Which lifecycle intent to send.
#[derive(Clone, Copy, Debug)]
pub enum Lifecycle {
    /// `POST .../restart`.
    Restart,
    /// `POST .../stop`.
    Stop,
    /// `POST .../start`.
    Start,
}

/// A live event stream; ends when the daemon closes it (workspace deleted, shutdown).
pub struct EventStream {
    response: Response,
    decoder: sse::Decoder,
    ready: VecDeque<sse::Message>,
    base: String,
}

impl EventStream {
    /// The next event as JSON, or `None` when the stream has ended.
    pub async fn next(&mut self) -> Result<Option<Value>, CliError> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return serde_json::from_str(&message.data).map(Some).map_err(|e| {
                    CliError::Protocol {
                        status: StatusCode::OK.as_u16(),
                        detail: format!(
                            "stream event is not JSON ({e}): {}",
                            excerpt(&message.data)
                        ),
                    }
                });
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.ready.extend(self.decoder.push(&bytes)),
                Ok(None) => return Ok(None),
                Err(e) => return Err(transport_error(self.base.clone(), &e)),
            }
        }
    }
}

/// The text of a logs answer, as it arrives; ends when the daemon ends it.
pub struct LogStream {
    response: Response,
    base: String,
}

impl LogStream {
    /// The next chunk of text, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, CliError> {
        let chunk = self.response.chunk().await;
        chunk
            .map(|c| c.map(|bytes| bytes.to_vec()))
            .map_err(|e| transport_error(self.base.clone(), &e))
    }
}

/// Maps a reqwest failure that carries no HTTP answer.
fn transport_error(url: String, error: &reqwest::Error) -> CliError {
    let cause = root_cause(error);
    if error.is_timeout() {
        CliError::Timeout { url }
    } else if error.is_connect() || error.is_request() {
        CliError::Unreachable { url, cause }
    } else {
        CliError::Broken { url, cause }
    }
}

/// The innermost error of a chain ("Connection refused (os error 111)"), which says more than
/// reqwest's outer "error sending request for url (...)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Maps an error status to [`CliError::Api`] when the body has the API's error shape, else to
/// [`CliError::Protocol`] (a proxy's HTML page, an empty body).
fn api_error(status: StatusCode, text: &str) -> CliError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        message: String,
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => CliError::Api {
            status: status.as_u16(),
            code: body.error,
            message: body.message,
        },
        Err(_) => CliError::Protocol {
            status: status.as_u16(),
            detail: if text.trim().is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no error body")
                    .to_owned()
            } else {
                excerpt(text)
            },
        },
    }
}

/// The first characters of `text` on one line, for error messages.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        format!("{one_line}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_api_errors_with_exit_code_1() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error":"NOT_FOUND","message":"workspace x not found"}"#,
        );
        assert_eq!(e.to_string(), "workspace x not found (NOT_FOUND, HTTP 404)");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn errors_as_json_carry_a_code_a_message_and_the_status_if_any() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error":"NOT_FOUND","message":"workspace x not found"}"#,
        );
        assert_eq!(
            e.to_json(),
            json!({ "error": "NOT_FOUND", "message": "workspace x not found", "status": 404 })
        );
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            cause: "Connection refused".into(),
        };
        let body = unreachable.to_json();
        assert_eq!(body["error"], "UNREACHABLE");
        assert_eq!(body["message"], unreachable.to_string());
        assert!(body.get("status").is_none(), "{body}");
    }

    #[test]
    fn other_error_bodies_are_quoted_briefly() {
        let e = api_error(StatusCode::BAD_GATEWAY, "<html>\nbad gateway</html>");
        assert_eq!(
            e.to_string(),
            "unexpected answer from steward (HTTP 502): <html> bad gateway</html>"
        );
        let e = api_error(StatusCode::BAD_GATEWAY, "");
        assert_eq!(
            e.to_string(),
            "unexpected answer from steward (HTTP 502): Bad Gateway"
        );
        let long = "x".repeat(1000);
        assert!(excerpt(&long).len() < 210);
    }

    #[test]
    fn exit_codes_separate_usage_refusal_and_unreachable() {
        let token = CliError::Token {
            path: PathBuf::from("data/admin.token"),
            reason: "No such file or directory".into(),
        };
        assert_eq!(token.exit_code(), 2);
        assert!(token.to_string().contains("data/admin.token"));
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            cause: "Connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 3);
        assert_eq!(
            unreachable.to_string(),
            "cannot reach steward at http://127.0.0.1:1: is the daemon running? (Connection refused)"
        );
    }

    #[test]
    fn ids_and_keys_are_encoded_as_single_path_segments() {
        let base = Url::parse("http://127.0.0.1:7878/prefix/").expect("a valid URL");
        let client = Client::new(base, SecretString::from("t")).expect("a client");
        let request = client
            .request(Method::GET, &["workspaces", "a/../b", "secrets", "K Y"])
            .expect("a request")
            .build()
            .expect("a built request");
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:7878/prefix/v1/workspaces/a%2F..%2Fb/secrets/K%20Y"
        );
    }
}
