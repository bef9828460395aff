//! Bearer authentication, as middleware that runs before any body is read: an
//! unauthenticated request changes nothing, costs little and cannot hold a connection by
//! sending its body slowly.
//!
//! - Admin scopes compare the token's SHA-256 with the configured one in constant time.
//! - Agent routes ask the workspace actor the token names whether it is its current agent
//!   token (the call itself checks again, atomically with what it does).
//!
//! The scheme is case-insensitive (`Bearer`, `bearer`, RFC 7235); anything else is the same
//! 401 with `WWW-Authenticate: Bearer`.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use steward_actors::AgentCall;
use subtle::ConstantTimeEq;

use crate::{ApiError, ApiState};

/// SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = headers.get(AUTHORIZATION)?.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn state(req: &ServiceRequest) -> Option<&web::Data<ApiState>> {
    req.app_data::<web::Data<ApiState>>()
}

/// The answer to a refused request. A body the client announced is never read: the
/// connection closes after the answer instead of waiting for (or draining) it.
fn refuse(req: ServiceRequest, error: &ApiError) -> ServiceResponse<BoxBody> {
    let mut response = error.error_response();
    let announces_body = req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if announces_body {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    req.into_response(response)
}

/// Rejects requests without `Authorization: Bearer <admin token>`.
pub async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let expected = state(&req).map(|s| s.admin_token_hash);
    let presented = bearer(req.headers()).map(token_hash);
    let authorized = match (expected, presented) {
        (Some(expected), Some(presented)) => bool::from(expected.ct_eq(&presented)),
        _ => false,
    };
    if !authorized {
        return Ok(refuse(req, &ApiError::Unauthorized));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Rejects requests without the current agent token of the workspace the token names.
pub async fn require_agent(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let token = bearer(req.headers()).map(|t| SecretString::from(t.to_owned()));
    let registry = state(&req).map(|s| s.registry.clone());
    let verdict = match (token, registry) {
        (Some(token), Some(registry)) => registry
            .from_agent(token, AgentCall::Authenticate)
            .await
            .map_err(ApiError::from),
        _ => Err(ApiError::Unauthorized),
    };
    if let Err(error) = verdict {
        return Ok(refuse(req, &error));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
