//! `/v1/workspaces`: create, list, read, lifecycle intents, secrets and model.

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};
use steward_actors::{Intent, NewWorkspace, WorkspaceView};
use steward_domain::{Phase, WorkspaceSpec};

use crate::dto::{
    CreateWorkspace, IntentAnswer, SecretKeys, SetModel, SetSecret, SwitchAnswer, SwitchProvider,
    Workspace, WorkspaceList,
};
use crate::routes::waits::{self, WaitQuery};
use crate::{body, validate, workspace_id, ApiError, ApiState};
use actix_web::http::StatusCode;
use steward_domain::{Generation, Goal};

/// The query of an intent route (`?wait=`), as its handlers take it: a malformed or unknown
/// parameter is a 422 of the handler's, before anything is applied.
type Wait = Result<web::Query<WaitQuery>, actix_web::Error>;

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

/// Create a workspace. With `?wait=`, answers once its first generation is running (or a
/// cycle of it failed, or a later intent stopped or deleted it): the document plus
/// `settled` and `workspace` (the document then); `settled: false` if the time ran out.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body give the same workspace"), WaitQuery),
    responses((status = 201, body = Workspace, description = "Created (with `?wait=`: also `settled` and `workspace`)"), (status = 200, body = Workspace, description = "Replayed idempotent create"),
        (status = 400, body = crate::ErrorBody), (status = 409, body = crate::ErrorBody, description = "The name is taken by a live workspace (NAME_TAKEN)"),
        (status = 413, body = crate::ErrorBody), (status = 422, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn create(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(req.headers())?;
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    let (request, raw) = body::json::<CreateWorkspace>(payload, &state.body).await?;
    let mut new = validated(&state, request)?;
    new.idempotency = key.map(|k| (k, state.registry.request_digest(&canonical(&raw))));
    let (view, created) = state.registry.create(new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let waited = match wait {
        // The generation the create named (a replay names the workspace's current one).
        Some(wait) => {
            let goal = Goal::Run(view.generation.max(Generation(1)));
            Some(state.registry.wait(view.id, goal, wait).await?)
        }
        None => None,
    };
    Ok(waits::answer(status, status, Workspace::from(view), waited))
}

/// The body's canonical JSON (object keys sorted, no insignificant whitespace), so a retried
/// request that differs only in formatting is the same request.
fn canonical(raw: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<serde_json::Value>(raw)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_else(|_| raw.to_vec())
}

/// Default and largest page of `GET /v1/workspaces`.
const LIST_DEFAULT: usize = 1000;
const LIST_MAX: usize = 10_000;

/// The query of `GET /v1/workspaces` (for the description; [`ListFilter::parse`] reads it, so
/// repeated keys and unknown ones get exact answers).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Only workspaces on this provider.
    provider: Option<String>,
    /// Only workspaces in one of these phases (repeatable).
    #[param(inline, value_type = Option<Vec<PhaseName>>)]
    phase: Option<Vec<String>>,
    /// Only workspaces whose name starts with this.
    name: Option<String>,
    /// At most this many (default 1000, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Where the previous page ended: its `next_cursor`.
    #[param(pattern = "^[0-9]{1,18}\\.[0-9a-f]{32}$")]
    cursor: Option<String>,
}

/// A phase, as documents show it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum PhaseName {
    /// A cycle is in flight.
    Provisioning,
    /// Up; its agent has not registered yet.
    Starting,
    /// Up and ready.
    Running,
    /// A stop is under way.
    Stopping,
    /// No instance, on purpose.
    Stopped,
    /// Parked after repeated failures.
    Failed,
    /// A delete is under way.
    Deleting,
}

/// What a list asks for: filters (all of them hold), then a page.
struct ListFilter {
    provider: Option<String>,
    phases: Vec<Phase>,
    name: Option<String>,
    limit: usize,
    after: Option<(i64, uuid::Uuid)>,
}

impl ListFilter {
    fn parse(pairs: Vec<(String, String)>) -> Result<ListFilter, ApiError> {
        let invalid = |m: String| ApiError::InvalidQuery(m);
        let mut filter = ListFilter {
            provider: None,
            phases: Vec::new(),
            name: None,
            limit: LIST_DEFAULT,
            after: None,
        };
        let mut limit = None;
        for (key, value) in pairs {
            match key.as_str() {
                "provider" => {
                    once(&filter.provider, "provider")?;
                    filter.provider = Some(value);
                }
                "name" => {
                    once(&filter.name, "name")?;
                    filter.name = Some(value);
                }
                "phase" => filter.phases.push(
                    Phase::ALL
                        .into_iter()
                        .find(|p| p.as_str() == value)
                        .ok_or_else(|| invalid(format!("unknown phase {value:?}")))?,
                ),
                "limit" => {
                    once(&limit, "limit")?;
                    let n = value.parse::<usize>().ok().filter(|n| (1..=LIST_MAX).contains(n));
                    limit = Some(n.ok_or_else(|| {
                        invalid(format!("limit must be a number from 1 to {LIST_MAX}"))
                    })?);
                }
                "cursor" => {
                    once(&filter.after, "cursor")?;
                    filter.after = Some(parse_cursor(&value).ok_or_else(|| {
                        invalid("cursor is not one this daemon gave (use next_cursor)".into())
                    })?);
                }
                other => {
                    return Err(invalid(format!(
                        "unknown query parameter {other:?} (known: provider, phase, name, limit, cursor)"
                    )))
                }
            }
        }
        filter.limit = limit.unwrap_or(LIST_DEFAULT);
        Ok(filter)
    }

    fn admits(&self, view: &WorkspaceView) -> bool {
        self.provider
            .as_ref()
            .is_none_or(|p| *p == view.spec.provider)
            && (self.phases.is_empty() || self.phases.contains(&view.phase))
            && self
                .name
                .as_ref()
                .is_none_or(|prefix| view.spec.name.starts_with(prefix.as_str()))
            && self.after.is_none_or(|after| position(view) > after)
    }
}

/// Refuses a second value for a parameter that takes one.
fn once<T>(slot: &Option<T>, key: &str) -> Result<(), ApiError> {
    match slot {
        Some(_) => Err(ApiError::InvalidQuery(format!(
            "query parameter {key:?} is given twice"
        ))),
        None => Ok(()),
    }
}

/// Where a workspace sits in the list's order (oldest first).
fn position(view: &WorkspaceView) -> (i64, uuid::Uuid) {
    (view.created_at.0, view.id.as_uuid())
}

fn cursor(view: &WorkspaceView) -> String {
    let (at, id) = position(view);
    format!("{at}.{}", id.simple())
}

fn parse_cursor(text: &str) -> Option<(i64, uuid::Uuid)> {
    let (at, id) = text.split_once('.')?;
    let valid = !at.is_empty() && at.len() <= 18 && at.bytes().all(|b| b.is_ascii_digit());
    let id = (id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| uuid::Uuid::try_parse(id).ok())
        .flatten()?;
    Some((at.parse().ok().filter(|_| valid)?, id))
}

/// List workspaces, oldest first: filtered (every filter given holds), a page at a time.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", params(ListQuery),
    responses((status = 200, body = WorkspaceList), (status = 400, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn list(
    state: State,
    query: Result<web::Query<Vec<(String, String)>>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let pairs = query.map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    let filter = ListFilter::parse(pairs.into_inner())?;
    let mut page: Vec<WorkspaceView> = state
        .registry
        .list()
        .await
        .into_iter()
        .filter(|view| filter.admits(view))
        .take(filter.limit + 1)
        .collect();
    let next_cursor = (page.len() > filter.limit).then(|| {
        page.truncate(filter.limit);
        page.last().map(cursor)
    });
    Ok(HttpResponse::Ok().json(WorkspaceList {
        workspaces: page.into_iter().map(Workspace::from).collect(),
        next_cursor: next_cursor.flatten(),
    }))
}

/// One workspace.
#[utoipa::path(get, path = "/v1/workspaces/{id}", params(("id" = String, Path, description = "Workspace id (UUID)")), tag = "workspaces",
    responses((status = 200, body = Workspace), (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn get(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = state.registry.get(workspace_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(Workspace::from(view)))
}

/// Submits `intent` and answers `202` at once, or, with a wait, once it settled (`200`) or
/// the wait ran out (`202`).
async fn intent(
    state: &ApiState,
    id: &str,
    intent: Intent,
    wait: Option<std::time::Duration>,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(id)?;
    let reply = state.registry.submit(id, intent).await?;
    let waited = match wait {
        Some(wait) => Some(state.registry.wait(id, reply.goal, wait).await?),
        None => None,
    };
    Ok(waits::answer(
        StatusCode::ACCEPTED,
        StatusCode::OK,
        IntentAnswer::from(reply),
        waited,
    ))
}

/// Restart: a new cycle now, or folded into the pending one.
#[utoipa::path(post, path = "/v1/workspaces/{id}/restart", params(("id" = String, Path, description = "Workspace id (UUID)"), WaitQuery), tag = "lifecycle",
    responses((status = 202, body = IntentAnswer, description = "Committed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = IntentAnswer, description = "With `?wait=`: settled (the generation named, or a later one, running; or a cycle of it failed; or a later stop or delete)"),
        (status = 404, body = crate::ErrorBody), (status = 409, body = crate::ErrorBody),
        (status = 503, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn restart(
    state: State,
    id: web::Path<String>,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    intent(&state, &id, Intent::Restart, wait).await
}

/// Stop: wins over any pending restart.
#[utoipa::path(post, path = "/v1/workspaces/{id}/stop", params(("id" = String, Path, description = "Workspace id (UUID)"), WaitQuery), tag = "lifecycle",
    responses((status = 202, body = IntentAnswer, description = "Committed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = IntentAnswer, description = "With `?wait=`: settled (stopped, or the stop failed, or a later intent made it run)"),
        (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn stop(
    state: State,
    id: web::Path<String>,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    intent(&state, &id, Intent::Stop, wait).await
}

/// Start a stopped or failed workspace (no-op if running).
#[utoipa::path(post, path = "/v1/workspaces/{id}/start", params(("id" = String, Path, description = "Workspace id (UUID)"), WaitQuery), tag = "lifecycle",
    responses((status = 202, body = IntentAnswer, description = "Committed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = IntentAnswer, description = "With `?wait=`: settled, as for a restart"),
        (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn start(
    state: State,
    id: web::Path<String>,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    intent(&state, &id, Intent::Start, wait).await
}

/// Delete: the workspace, its instance, secrets and events are removed. Answers 200 once
/// they are gone, or 202 if that takes longer than the daemon waits — `?wait=` if given,
/// else `http.delete_wait`: the deletion goes on, and the workspace shows phase `deleting`
/// until it is gone. With `?wait=`, the answer also has `settled` and `workspace` (`null`
/// once gone, else the document then).
#[utoipa::path(delete, path = "/v1/workspaces/{id}", params(("id" = String, Path, description = "Workspace id (UUID)"), WaitQuery), tag = "lifecycle",
    responses((status = 200, body = IntentAnswer, description = "Deleted: the workspace is gone (outcome `deleted`)"),
        (status = 202, body = IntentAnswer, description = "Being deleted (outcome `accepted`)"),
        (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn delete(
    state: State,
    id: web::Path<String>,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let asked = WaitQuery::parse(wait, state.wait_max)?;
    let (reply, gone) = state
        .registry
        .delete(id, asked.unwrap_or(state.delete_wait))
        .await?;
    let mut answer = IntentAnswer::from(reply);
    if gone {
        answer.outcome = "deleted";
    }
    let waited = match asked {
        Some(_) if gone => Some(steward_actors::Waited {
            settled: Some(steward_domain::Settled::Gone),
            workspace: None,
        }),
        Some(_) => Some(
            state
                .registry
                .wait(id, reply.goal, std::time::Duration::ZERO)
                .await?,
        ),
        None => None,
    };
    let status = if gone {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(waits::answer(status, status, answer, waited))
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
#[utoipa::path(put, path = "/v1/workspaces/{id}/secrets/{key}", params(("id" = String, Path, description = "Workspace id (UUID)"), ("key" = String, Path, description = "Secret key"), WaitQuery), tag = "config", request_body = SetSecret,
    responses((status = 202, body = IntentAnswer, description = "Committed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = IntentAnswer, description = "With `?wait=`: settled, as for a restart (at once for a stopped workspace: outcome `deferred`)"),
        (status = 404, body = crate::ErrorBody), (status = 422, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_secret(
    state: State,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    let id = workspace_id(&id)?;
    validate::key("secrets", &key)?;
    let wait = WaitQuery::parse(wait, state.wait_max)?;
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
        wait,
    )
    .await
}

/// Remove a secret: a config restart.
#[utoipa::path(delete, path = "/v1/workspaces/{id}/secrets/{key}", params(("id" = String, Path, description = "Workspace id (UUID)"), ("key" = String, Path, description = "Secret key"), WaitQuery), tag = "config",
    responses((status = 202, body = IntentAnswer, description = "Committed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = IntentAnswer, description = "With `?wait=`: settled, as for a restart (at once for a stopped workspace: outcome `deferred`)"),
        (status = 404, body = crate::ErrorBody)), security(("admin" = [])))]
pub async fn remove_secret(
    state: State,
    path: web::Path<(String, String)>,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    workspace_id(&id)?;
    validate::key("secrets", &key)?;
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    intent(&state, &id, Intent::RemoveSecret { key }, wait).await
}

/// Set the model: a config restart.
#[utoipa::path(put, path = "/v1/workspaces/{id}/model", params(("id" = String, Path, description = "Workspace id (UUID)"), WaitQuery), tag = "config", request_body = SetModel,
    responses((status = 202, body = IntentAnswer, description = "Committed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = IntentAnswer, description = "With `?wait=`: settled, as for a restart (at once for a stopped workspace: outcome `deferred`)"),
        (status = 404, body = crate::ErrorBody), (status = 422, body = crate::ErrorBody)),
    security(("admin" = [])))]
pub async fn set_model(
    state: State,
    id: web::Path<String>,
    payload: web::Payload,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    let (request, _) = body::json::<SetModel>(payload, &state.body).await?;
    validate::non_empty("model", &request.model)?;
    intent(
        &state,
        &id.to_string(),
        Intent::SetModel {
            model: request.model,
        },
        wait,
    )
    .await
}

/// Move the workspace to another provider. Claimed in the workspace's actor before any side
/// effect: while a switch runs, another gets 409 `ALREADY_SWITCHING` and changes nothing.
/// The accepted switch goes on whatever the client does: the old instance is removed, the
/// workspace recorded on the new provider and provisioned there; if that fails, it rolls
/// back and provisions on the old provider (events `switch_started`, `switch_completed`,
/// `switch_rolled_back`).
#[utoipa::path(post, path = "/v1/workspaces/{id}/switch-provider", params(("id" = String, Path, description = "Workspace id (UUID)"), WaitQuery), tag = "lifecycle", request_body = SwitchProvider,
    responses((status = 202, body = SwitchAnswer, description = "Claimed (with `?wait=`: the wait ran out, `settled: false`)"),
        (status = 200, body = SwitchAnswer, description = "With `?wait=`: settled (running on the new provider; or the switch failed and rolled back; or, stopped, released from the old one; or a later intent overruled it)"),
        (status = 404, body = crate::ErrorBody),
        (status = 409, body = crate::ErrorBody, description = "ALREADY_SWITCHING, SAME_PROVIDER or WORKSPACE_DELETING"),
        (status = 422, body = crate::ErrorBody, description = "Unknown provider")),
    security(("admin" = [])))]
pub async fn switch_provider(
    state: State,
    id: web::Path<String>,
    payload: web::Payload,
    wait: Wait,
) -> Result<HttpResponse, ApiError> {
    let id = workspace_id(&id)?;
    let wait = WaitQuery::parse(wait, state.wait_max)?;
    let (request, _) = body::json::<SwitchProvider>(payload, &state.body).await?;
    validate::non_empty("provider", &request.provider)?;
    let reply = state
        .registry
        .switch_provider(id, request.provider.clone())
        .await?;
    let waited = match wait {
        Some(wait) => Some(state.registry.wait(id, reply.goal, wait).await?),
        None => None,
    };
    let answer = SwitchAnswer {
        status: "switching",
        to: request.provider,
    };
    Ok(waits::answer(
        StatusCode::ACCEPTED,
        StatusCode::OK,
        answer,
        waited,
    ))
}
