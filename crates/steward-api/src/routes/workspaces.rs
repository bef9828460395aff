//! `/v1/workspaces`: create, list, read, lifecycle intents, secrets and model.

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};
use steward_actors::{Intent, NewWorkspace};
use steward_domain::WorkspaceSpec;

use crate::dto::{
    CreateWorkspace, IntentAnswer, SecretKeys, SetModel, SetSecret, SwitchAnswer, SwitchProvider,
    Workspace, WorkspaceList,
};
use crate::{body, validate, workspace_id, ApiError, ApiState};

type State = web::Data<ApiState>;

/// Longest accepted `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value.as_bytes();
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX || !visible {
        return Err(ApiError::InvalidField(format!(
            "Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} visible ASCII characters, no spaces"
        )));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

fn validated(state: &ApiState, req: CreateWorkspace) -> Result<NewWorkspace, ApiError> {
    validate::name(&req.name)?;
    validate::entries("env", req.env.len())?;
    validate::entries("secrets", req.secrets.len())?;
    for (k, v) in &req.env {
        validate::key("env", k)?;
        validate::value("env value", v)?;
    }
    for (k, v) in &req.secrets {
        validate::key("secrets", k)?;
        validate::value("secret value", secrecy::ExposeSecret::expose_secret(v))?;
    }
    if let Some(model) = &req.model {
        validate::non_empty("model", model)?;
    }
    if let Some(image) = &req.image {
        validate::non_empty("image", image)?;
    }
    if let Some(command) = &req.command {
        validate::command(command)?;
    }

    let spec = WorkspaceSpec {
        name: req.name,
        provider: req
            .provider
            .unwrap_or_else(|| state.default_provider.clone()),
        image: req.image,
        command: req.command,
        env: req.env,
        model: req.model,
    };
    let secret_sizes = req
        .secrets
        .iter()
        .map(|(k, v)| (k.as_str(), secrecy::ExposeSecret::expose_secret(v).len()));
    spec.check_fits(secret_sizes)
        .map_err(|e| ApiError::InvalidField(e.to_string()))?;
    Ok(NewWorkspace {
        spec,
        secrets: req.secrets,
        ready_when: req.ready_when.map(Into::into),
        idempotency: None,
    })
}

/// Create a workspace.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body give the same workspace")),
    responses((status = 201, body = Workspace), (status = 200, body = Workspace, description = "Replayed idempotent create"),
        (status = 400, body = crate::ErrorBody), (status = 413, body = crate::ErrorBody), (status = 422, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn create(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(req.headers())?;
    let (request, raw) = body::json::<CreateWorkspace>(payload, &state.body).await?;
    let mut new = validated(&state, request)?;
    new.idempotency = key.map(|k| (k, state.registry.request_digest(&canonical(&raw))));
    let (view, created) = state.registry.create(new).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(Workspace::from(view)))
}

/// The body's canonical JSON (object keys sorted, no insignificant whitespace), so a retried
/// request that differs only in formatting is the same request.
fn canonical(raw: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<serde_json::Value>(raw)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_else(|_| raw.to_vec())
}

/// List workspaces.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = WorkspaceList)), security(("admin" = [])))]
pub async fn list(state: State) -> HttpResponse {
    let workspaces = state
        .registry
        .list()
        .await
        .into_iter()
        .map(Workspace::from)
        .collect();
    HttpResponse::Ok().json(WorkspaceList { workspaces })
}

/// One workspace.
#[utoipa::path(get, path = "/v1/workspaces/{id}", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "workspaces",
    responses((status = 200, body = Workspace), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn get(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = state.registry.get(workspace_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(Workspace::from(view)))
}

async fn intent(state: &ApiState, id: &str, intent: Intent) -> Result<HttpResponse, ApiError> {
    let reply = state.registry.submit(workspace_id(id)?, intent).await?;
    Ok(HttpResponse::Accepted().json(IntentAnswer::from(reply)))
}

/// Restart: a new cycle now, or folded into the pending one.
#[utoipa::path(post, path = "/v1/workspaces/{id}/restart", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "lifecycle",
    responses((status = 202, body = IntentAnswer), (status = 404, body = crate::ErrorBody), (status = 409, body = crate::ErrorBody),
        (status = 503, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn restart(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    intent(&state, &id, Intent::Restart).await
}

/// Stop: wins over any pending restart.
#[utoipa::path(post, path = "/v1/workspaces/{id}/stop", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "lifecycle",
    responses((status = 202, body = IntentAnswer), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn stop(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    intent(&state, &id, Intent::Stop).await
}

/// Start a stopped or failed workspace (no-op if running).
#[utoipa::path(post, path = "/v1/workspaces/{id}/start", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "lifecycle",
    responses((status = 202, body = IntentAnswer), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn start(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    intent(&state, &id, Intent::Start).await
}

/// Delete: the workspace, its instance, secrets and events are removed. Answers 200 once
/// they are gone, or 202 if that takes longer than the daemon waits (`http.delete_wait`):
/// the deletion goes on, and the workspace shows phase `deleting` until it is gone.
#[utoipa::path(delete, path = "/v1/workspaces/{id}", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "lifecycle",
    responses((status = 200, body = IntentAnswer, description = "Deleted: the workspace is gone (outcome `deleted`)"),
        (status = 202, body = IntentAnswer, description = "Being deleted (outcome `accepted`)"),
        (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn delete(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (reply, gone) = state
        .registry
        .delete(workspace_id(&id)?, state.delete_wait)
        .await?;
    let mut answer = IntentAnswer::from(reply);
    if gone {
        answer.outcome = "deleted";
        return Ok(HttpResponse::Ok().json(answer));
    }
    Ok(HttpResponse::Accepted().json(answer))
}

/// Secret keys (never values).
#[utoipa::path(get, path = "/v1/workspaces/{id}/secrets", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "config",
    responses((status = 200, body = SecretKeys), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn secret_keys(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = state.registry.get(workspace_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(SecretKeys {
        keys: view.secret_keys,
    }))
}

/// Set a secret: a config restart.
#[utoipa::path(put, path = "/v1/workspaces/{id}/secrets/{key}", params(("id" = String, Path, description = "Workspace id (UUID)"), ("key" = String, Path, description = "Secret key")), tag = "config", request_body = SetSecret,
    responses((status = 202, body = IntentAnswer), (status = 404, body = crate::ErrorBody), (status = 422, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_secret(
    state: State,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    let id = workspace_id(&id)?;
    validate::key("secrets", &key)?;
    let (request, _) = body::json::<SetSecret>(payload, &state.body).await?;
    validate::value(
        "secret value",
        secrecy::ExposeSecret::expose_secret(&request.value),
    )?;
    intent(
        &state,
        &id.to_string(),
        Intent::SetSecret {
            key,
            value: request.value,
        },
    )
    .await
}

/// Remove a secret: a config restart.
#[utoipa::path(delete, path = "/v1/workspaces/{id}/secrets/{key}", params(("id" = String, Path, description = "Workspace id (UUID)"), ("key" = String, Path, description = "Secret key")), tag = "config",
    responses((status = 202, body = IntentAnswer), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn remove_secret(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    workspace_id(&id)?;
    validate::key("secrets", &key)?;
    intent(&state, &id, Intent::RemoveSecret { key }).await
}

/// Set the model: a config restart.
#[utoipa::path(put, path = "/v1/workspaces/{id}/model", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "config", request_body = SetModel,
    responses((status = 202, body = IntentAnswer), (status = 404, body = crate::ErrorBody), (status = 422, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_model(
    state: State,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let (request, _) = body::json::<SetModel>(payload, &state.body).await?;
    validate::non_empty("model", &request.model)?;
    intent(
        &state,
        &id.to_string(),
        Intent::SetModel {
            model: request.model,
        },
    )
    .await
}

/// Move the workspace to another provider. Claimed in the workspace's actor before any side
/// effect: while a switch runs, another gets 409 `ALREADY_SWITCHING` and changes nothing.
/// The accepted switch goes on whatever the client does: the old instance is removed, the
/// workspace recorded on the new provider and provisioned there; if that fails, it rolls
/// back and provisions on the old provider (events `switch_started`, `switch_completed`,
/// `switch_rolled_back`).
#[utoipa::path(post, path = "/v1/workspaces/{id}/switch-provider", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "lifecycle", request_body = SwitchProvider,
    responses((status = 202, body = SwitchAnswer), (status = 404, body = crate::ErrorBody),
        (status = 409, body = crate::ErrorBody, description = "ALREADY_SWITCHING, SAME_PROVIDER or WORKSPACE_DELETING"),
        (status = 422, body = crate::ErrorBody, description = "Unknown provider")),
    security(("admin" = [])))]
pub async fn switch_provider(
    state: State,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let (request, _) = body::json::<SwitchProvider>(payload, &state.body).await?;
    validate::non_empty("provider", &request.provider)?;
    state
        .registry
        .switch_provider(id, request.provider.clone())
        .await?;
    Ok(HttpResponse::Accepted().json(SwitchAnswer {
        status: "switching",
        to: request.provider,
    }))
}
