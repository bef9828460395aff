//! Unauthenticated operational routes: liveness, readiness, metrics, the API description.

use actix_web::{web, HttpResponse};

use crate::{ApiError, ApiState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The daemon can serve lifecycle intents (store reachable, not shutting down).
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200), (status = 503, body = crate::ErrorBody)))]
pub async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    state.registry.ready().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    let text = state
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

/// This API's OpenAPI description.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200)))]
pub async fn openapi(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(crate::describe(
        &state.registry.provider_names(),
        state.wait_max,
    ))
}
