//! Reading JSON request bodies with an explicit size limit and the API's error mapping:
//! syntax errors are 400 `MALFORMED_JSON`, unknown fields and wrong types are 422
//! `INVALID_FIELD`, oversized bodies are 413 `PAYLOAD_TOO_LARGE`.

use actix_web::web::{Bytes, BytesMut, Payload};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Reads at most `limit` bytes of body, refusing more without buffering it.
pub async fn read(mut payload: Payload, limit: usize) -> Result<Bytes, ApiError> {
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
        serde_json::error::Category::Data => ApiError::InvalidField(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })
}

/// Reads and parses a JSON body; also returns the raw bytes.
pub async fn json<T: DeserializeOwned>(
    payload: Payload,
    limit: usize,
) -> Result<(T, Bytes), ApiError> {
    let body = read(payload, limit).await?;
    Ok((parse(&body)?, body))
}
