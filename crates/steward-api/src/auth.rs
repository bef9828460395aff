//! Admin bearer authentication: a middleware on the admin scopes that compares the token's
//! SHA-256 with the configured one in constant time. It runs before any body is read, so an
//! unauthenticated request changes nothing and costs little.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, ApiState};

/// SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Rejects requests without `Authorization: Bearer <admin token>`.
pub async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<ApiState>>()
        .map(|s| s.admin_token_hash);
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| token_hash(t.trim()));
    let authorized = match (expected, presented) {
        (Some(expected), Some(presented)) => bool::from(expected.ct_eq(&presented)),
        _ => false,
    };
    if !authorized {
        let response = ApiError::Unauthorized.error_response();
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
