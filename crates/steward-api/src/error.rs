//! `ApiError`: every failure an HTTP client can see, with one status mapping and the JSON
//! shape `{"error": "CODE", "message": "human text"}`. Internals never leak into messages.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use steward_actors::log_summary::LogSummary;
use steward_actors::ActorError;

/// Store failures answered as 503 (see [`steward_actors::log_summary`]).
pub(crate) static STORE_FAILURES: LogSummary =
    LogSummary::new(tracing::Level::ERROR, "store failures answered as 503");

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// A field is invalid, unknown or of the wrong type.
    #[error("{0}")]
    InvalidField(String),
    /// The body is larger than allowed.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// A path id is not a UUID.
    #[error("{0:?} is not a valid workspace id")]
    InvalidId(String),
    /// Missing or wrong credentials.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The workspace is being deleted.
    #[error("workspace is being deleted")]
    Deleting,
    /// A provider switch is already in progress.
    #[error("a provider switch is already in progress for this workspace")]
    AlreadySwitching,
    /// The workspace is already on that provider.
    #[error("{0}")]
    SameProvider(String),
    /// The idempotency key was used with another body.
    #[error("idempotency key reused with a different request body")]
    IdempotencyConflict,
    /// Another live workspace has the name.
    #[error("{0}")]
    NameTaken(String),
    /// A query parameter is unknown or its value invalid.
    #[error("{0}")]
    InvalidQuery(String),
    /// Too much load on one workspace or the daemon.
    #[error("{0}")]
    Overloaded(String),
    /// Not ready (store unreachable, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// A provider call failed.
    #[error("provider error: {0}")]
    Provider(String),
    /// The provider asked for is known but disabled on this daemon.
    #[error("provider {0:?} is disabled on this daemon (its providers.<name>.enabled is false)")]
    ProviderDisabled(String),
    /// The output asked for is no longer kept.
    #[error("{0}")]
    OutputGone(String),
    /// Too many logs followed at once.
    #[error("{0}")]
    TooManyFollowers(String),
}

/// The JSON error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "MALFORMED_JSON",
            ApiError::InvalidField(_) => "INVALID_FIELD",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::RequestTimeout(_) => "REQUEST_TIMEOUT",
            ApiError::InvalidId(_) => "INVALID_ID",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Deleting => "WORKSPACE_DELETING",
            ApiError::AlreadySwitching => "ALREADY_SWITCHING",
            ApiError::SameProvider(_) => "SAME_PROVIDER",
            ApiError::IdempotencyConflict => "IDEMPOTENCY_KEY_REUSED",
            ApiError::NameTaken(_) => "NAME_TAKEN",
            ApiError::InvalidQuery(_) => "INVALID_QUERY",
            ApiError::Overloaded(_) => "OVERLOADED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Provider(_) => "PROVIDER_ERROR",
            ApiError::ProviderDisabled(_) => "PROVIDER_DISABLED",
            ApiError::OutputGone(_) => "OUTPUT_GONE",
            ApiError::TooManyFollowers(_) => "TOO_MANY_FOLLOWERS",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidId(_) | ApiError::InvalidQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::InvalidField(_)
            | ApiError::IdempotencyConflict
            | ApiError::ProviderDisabled(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::OutputGone(_) => StatusCode::NOT_FOUND,
            ApiError::TooManyFollowers(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Deleting
            | ApiError::AlreadySwitching
            | ApiError::SameProvider(_)
            | ApiError::NameTaken(_) => StatusCode::CONFLICT,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Provider(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(
            self,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) | ApiError::TooManyFollowers(_)
        ) {
            response.insert_header(("Retry-After", "1"));
        }
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if matches!(
            self,
            ApiError::PayloadTooLarge(_) | ApiError::RequestTimeout(_)
        ) {
            // The rest of the body is never read: the connection ends with this answer.
            response.force_close();
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::NotFound(id) => ApiError::NotFound(format!("workspace {id} not found")),
            ActorError::SecretNotFound(key) => {
                ApiError::NotFound(format!("secret {key:?} not found"))
            }
            ActorError::Deleting => ApiError::Deleting,
            ActorError::AlreadySwitching => ApiError::AlreadySwitching,
            ActorError::SameProvider(p) => {
                ApiError::SameProvider(format!("the workspace is already on provider {p:?}"))
            }
            ActorError::Unauthorized => ApiError::Unauthorized,
            ActorError::UnknownProvider(p) => {
                ApiError::InvalidField(format!("unknown provider {p:?}"))
            }
            ActorError::ProviderDisabled(p) => ApiError::ProviderDisabled(p),
            ActorError::NotAdmitted(reason) => ApiError::InvalidField(reason),
            ActorError::Limit(e) => ApiError::InvalidField(e.to_string()),
            e @ ActorError::NotWaitable(_) => ApiError::InvalidField(e.to_string()),
            ActorError::IdempotencyConflict => ApiError::IdempotencyConflict,
            e @ ActorError::NameTaken { .. } => ApiError::NameTaken(e.to_string()),
            ActorError::Overloaded => {
                ApiError::Overloaded("workspace mailbox is full, retry later".into())
            }
            ActorError::Restarting => {
                ApiError::Overloaded("workspace actor is restarting, retry later".into())
            }
            ActorError::ShuttingDown => ApiError::Unavailable("daemon is shutting down".into()),
            ActorError::Store(reason) => {
                // An overloaded or failing store answers every request so: summarized.
                if STORE_FAILURES.admit(&reason) {
                    tracing::error!(%reason, "store failure answered as 503");
                }
                ApiError::Unavailable("store unavailable; the request was not committed".into())
            }
            ActorError::Provider(reason) => ApiError::Provider(reason),
            ActorError::OutputGone(reason) => ApiError::OutputGone(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn answer(error: &ApiError) -> (u16, serde_json::Value, actix_web::http::header::HeaderMap) {
        let response = error.error_response();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .try_into_bytes()
            .unwrap_or_else(|_| panic!("a complete body"));
        let body = serde_json::from_slice(&bytes).expect("a JSON body");
        (status, body, headers)
    }

    /// The one status mapping, variant by variant: status, code, and a body that is exactly
    /// `{"error", "message"}`.
    #[test]
    fn every_error_has_its_status_code_and_shape() {
        let table = [
            (ApiError::MalformedJson("m".into()), 400, "MALFORMED_JSON"),
            (ApiError::InvalidId("x".into()), 400, "INVALID_ID"),
            (ApiError::Unauthorized, 401, "UNAUTHORIZED"),
            (ApiError::NotFound("n".into()), 404, "NOT_FOUND"),
            (ApiError::OutputGone("g".into()), 404, "OUTPUT_GONE"),
            (
                ApiError::TooManyFollowers("f".into()),
                429,
                "TOO_MANY_FOLLOWERS",
            ),
            (ApiError::MethodNotAllowed, 405, "METHOD_NOT_ALLOWED"),
            (ApiError::Deleting, 409, "WORKSPACE_DELETING"),
            (ApiError::AlreadySwitching, 409, "ALREADY_SWITCHING"),
            (ApiError::SameProvider("s".into()), 409, "SAME_PROVIDER"),
            (
                ApiError::RequestTimeout(std::time::Duration::from_secs(1)),
                408,
                "REQUEST_TIMEOUT",
            ),
            (ApiError::PayloadTooLarge(10), 413, "PAYLOAD_TOO_LARGE"),
            (ApiError::InvalidField("f".into()), 422, "INVALID_FIELD"),
            (ApiError::IdempotencyConflict, 422, "IDEMPOTENCY_KEY_REUSED"),
            (
                ApiError::ProviderDisabled("docker".into()),
                422,
                "PROVIDER_DISABLED",
            ),
            (ApiError::Provider("p".into()), 502, "PROVIDER_ERROR"),
            (ApiError::Overloaded("o".into()), 503, "OVERLOADED"),
            (ApiError::Unavailable("u".into()), 503, "UNAVAILABLE"),
        ];
        for (error, status, code) in table {
            let (got, body, headers) = answer(&error);
            assert_eq!(
                (got, body["error"].as_str()),
                (status, Some(code)),
                "{error:?}"
            );
            assert_eq!(body["message"], error.to_string(), "{error:?}");
            assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
            let retry = headers.get("Retry-After").map(|v| v.as_bytes().to_vec());
            assert_eq!(
                retry.is_some(),
                status == 503 || status == 429,
                "Retry-After iff 503 or 429: {error:?}"
            );
            let challenge = headers
                .get("WWW-Authenticate")
                .map(|v| v.as_bytes().to_vec());
            assert_eq!(challenge.is_some(), status == 401, "{error:?}");
        }
    }

    /// What the actors answer becomes the error a client can act on, and a store failure's
    /// reason (internal) never reaches the client.
    #[test]
    fn actor_errors_map_to_what_a_client_can_act_on() {
        let id = steward_domain::WorkspaceId::from(uuid::Uuid::nil());
        let table = [
            (ActorError::NotFound(id), 404, "NOT_FOUND"),
            (ActorError::SecretNotFound("K".into()), 404, "NOT_FOUND"),
            (ActorError::Deleting, 409, "WORKSPACE_DELETING"),
            (ActorError::AlreadySwitching, 409, "ALREADY_SWITCHING"),
            (ActorError::SameProvider("sim".into()), 409, "SAME_PROVIDER"),
            (ActorError::Unauthorized, 401, "UNAUTHORIZED"),
            (
                ActorError::UnknownProvider("x".into()),
                422,
                "INVALID_FIELD",
            ),
            (
                ActorError::ProviderDisabled("docker".into()),
                422,
                "PROVIDER_DISABLED",
            ),
            (
                ActorError::NotAdmitted("needs an image".into()),
                422,
                "INVALID_FIELD",
            ),
            (
                ActorError::Limit(steward_domain::LimitError::TooManyEntries { field: "secrets" }),
                422,
                "INVALID_FIELD",
            ),
            (
                ActorError::IdempotencyConflict,
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (
                ActorError::NameTaken {
                    name: "w".into(),
                    holder: id,
                },
                409,
                "NAME_TAKEN",
            ),
            (ActorError::Overloaded, 503, "OVERLOADED"),
            (ActorError::Restarting, 503, "OVERLOADED"),
            (ActorError::ShuttingDown, 503, "UNAVAILABLE"),
            (
                ActorError::Store("disk I/O error at /secret/path".into()),
                503,
                "UNAVAILABLE",
            ),
            (
                ActorError::Provider("engine down".into()),
                502,
                "PROVIDER_ERROR",
            ),
        ];
        for (error, status, code) in table {
            let shown = format!("{error:?}");
            let (got, body, _) = answer(&ApiError::from(error));
            assert_eq!(
                (got, body["error"].as_str()),
                (status, Some(code)),
                "{shown}"
            );
            assert!(!body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("/secret/path"));
        }
    }

    /// A store that fails (an overload, say) answers every request with 503: one ERROR line,
    /// then a summary with the count, never one line per request.
    #[test]
    fn store_failures_are_logged_once_then_summarized() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Log(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let summarized = tracing::subscriber::with_default(subscriber, || {
            for _ in 0..1000 {
                let error = ApiError::from(ActorError::Store(
                    "the store is overloaded: too many commits waiting".into(),
                ));
                assert!(matches!(error, ApiError::Unavailable(_)));
            }
            STORE_FAILURES.flush()
        });
        let text = String::from_utf8_lossy(&log.0.lock().expect("log")).into_owned();
        // Other tests of this binary may have logged the first one on their thread.
        assert!(text.lines().count() <= 2, "{text}");
        assert!(summarized >= 999, "{summarized} summarized: {text}");
        assert!(text.contains(&format!("count={summarized}")), "{text}");
    }
}
