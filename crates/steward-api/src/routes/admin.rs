//! `/v1/admin`: live actor inspection and fault drills.

use actix_web::{web, HttpResponse};

use crate::dto::{ActorDto, ActorList};
use crate::{workspace_id, ApiError, ApiState};

/// Every workspace actor, inspected live.
#[utoipa::path(get, path = "/v1/admin/actors", tag = "admin",
    responses((status = 200, body = ActorList)), security(("admin" = [])))]
pub async fn actors(state: web::Data<ApiState>) -> HttpResponse {
    let actors = state
        .registry
        .inspect_all()
        .await
        .into_iter()
        .map(ActorDto::from)
        .collect();
    HttpResponse::Ok().json(ActorList { actors })
}

/// One workspace actor, inspected live.
#[utoipa::path(get, path = "/v1/admin/actors/{id}", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "admin",
    responses((status = 200, body = ActorDto), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn actor(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state.registry.inspect(workspace_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(ActorDto::from(view)))
}

/// Fault drill: kill the current instance through its provider, as a crash would.
#[utoipa::path(post, path = "/v1/admin/workspaces/{id}/kill", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "admin",
    responses((status = 202), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn kill(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.registry.kill(workspace_id(&id)?).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "status": "killed" })))
}
