//! Reading JSON request bodies within a size and a time limit, with the API's error mapping:
//! syntax errors are 400 `MALFORMED_JSON`, unknown fields and wrong types are 422
//! `INVALID_FIELD`, oversized bodies are 413 `PAYLOAD_TOO_LARGE`, bodies that do not arrive
//! in time are 408 `REQUEST_TIMEOUT` (a client sending one byte now and then cannot hold a
//! connection and a handler).

use std::time::Duration;

use actix_web::web::{Bytes, BytesMut, Payload};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// How much body a request may send, and how long it may take.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: usize,
    /// The whole body must have arrived this long after the handler starts reading it.
    pub timeout: Duration,
}

/// Reads the body within `limits`, refusing more than `max_bytes` without buffering it.
pub async fn read(payload: Payload, limits: &BodyLimits) -> Result<Bytes, ApiError> {
    tokio::time::timeout(limits.timeout, read_all(payload, limits.max_bytes))
        .await
        .unwrap_or(Err(ApiError::RequestTimeout(limits.timeout)))
}

async fn read_all(mut payload: Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses `body` as `T`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("a JSON body is required".into()));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidField(describe(&e)),
        _ => ApiError::MalformedJson(format!(
            "invalid JSON at line {} column {}",
            e.line(),
            e.column()
        )),
    })
}

/// Reads and parses a JSON body; also returns the raw bytes.
pub async fn json<T: DeserializeOwned>(
    payload: Payload,
    limits: &BodyLimits,
) -> Result<(T, Bytes), ApiError> {
    let body = read(payload, limits).await?;
    Ok((parse(&body)?, body))
}

/// A data error, without the offending value: serde quotes values ("invalid type: string
/// \"hunter2\"…"), and the value may be a secret. Unknown and missing field names are kept.
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let names_only = text.starts_with("unknown field") || text.starts_with("missing field");
    if names_only {
        text
    } else {
        format!(
            "invalid value at line {} column {}: wrong type or out of range",
            e.line(),
            e.column()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized: the tests look at parse errors
    struct Body {
        value: String,
    }

    #[test]
    fn errors_name_fields_but_never_echo_values() {
        let wrong_type = parse::<Body>(br#"{"value": 987654321}"#).expect_err("rejected");
        assert!(matches!(wrong_type, ApiError::InvalidField(_)));
        assert!(
            !wrong_type.to_string().contains("987654321"),
            "{wrong_type}"
        );
        let unknown = parse::<Body>(br#"{"value": "x", "hunter2": 1}"#).expect_err("rejected");
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        let syntax = parse::<Body>(br#"{"value": "sekrit"#).expect_err("rejected");
        assert!(matches!(syntax, ApiError::MalformedJson(_)));
        assert!(!syntax.to_string().contains("sekrit"));
    }
}
