//! `/v1/agent`: the channel of the agent inside an instance. Authenticated by the agent
//! token of the instance's generation (never the admin token), before any body is read
//! (`auth::require_agent`); any mismatch is a 401 that reveals nothing about which part was
//! wrong.

use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde::Deserialize;
use steward_actors::AgentCall;

use crate::{body, ApiError, ApiState};

/// Longest accepted agent URL.
pub(crate) const URL_MAX: usize = 2048;

/// `POST /v1/agent/register` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Where the daemon reaches the agent (`http://` or `https://`).
    pub url: String,
}

/// The request's agent token (the middleware has verified it before any body was read).
fn bearer(req: &HttpRequest) -> Result<SecretString, ApiError> {
    let token = crate::auth::bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
    Ok(SecretString::from(token.to_owned()))
}

fn answer(workspace_and_generation: (String, u64)) -> HttpResponse {
    let (workspace_id, generation) = workspace_and_generation;
    HttpResponse::Ok()
        .json(serde_json::json!({ "workspace_id": workspace_id, "generation": generation }))
}

async fn call(
    state: &ApiState,
    token: SecretString,
    call: AgentCall,
) -> Result<(String, u64), ApiError> {
    let claims = steward_actors::token_claims(secrecy::ExposeSecret::expose_secret(&token));
    let generation = state.registry.from_agent(token, call).await?;
    let workspace_id = claims.map(|(id, _)| id.to_string()).unwrap_or_default();
    Ok((workspace_id, generation.0))
}

/// The agent of the current generation is up and reachable at `url`.
#[utoipa::path(post, path = "/v1/agent/register", tag = "agent", request_body = Register,
    responses((status = 200, description = "Registered"), (status = 401, body = crate::ErrorBody),
        (status = 422, body = crate::ErrorBody)), security(("agent" = [])))]
pub async fn register(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req)?;
    let (request, _) = body::json::<Register>(payload, &state.body).await?;
    let valid = request.url.chars().count() <= URL_MAX
        && (request.url.starts_with("http://") || request.url.starts_with("https://"))
        && !request.url.chars().any(char::is_whitespace);
    if !valid {
        return Err(ApiError::InvalidField(format!(
            "url must be an http(s) URL of at most {URL_MAX} characters"
        )));
    }
    Ok(answer(
        call(&state, token, AgentCall::Register { url: request.url }).await?,
    ))
}

/// The agent of the current generation is alive.
#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agent",
    responses((status = 200, description = "Recorded"), (status = 401, body = crate::ErrorBody)), security(("agent" = [])))]
pub async fn heartbeat(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = bearer(&req)?;
    // The body is `{}` or empty; it is read (bounded) only so that nothing unexpected passes.
    let raw = body::read(payload, &state.body).await?;
    if !raw.iter().all(u8::is_ascii_whitespace) {
        body::parse::<serde_json::Map<String, serde_json::Value>>(&raw)?;
    }
    Ok(answer(call(&state, token, AgentCall::Heartbeat).await?))
}
