//! The console's actions: plain HTML form POSTs, each checked (session, same origin, CSRF
//! token), validated by the API's own rules, sent to the registry as the API would, and
//! answered with a redirect back to the page the form was on and a message shown there.
//! Sent by the console's script instead (`X-Console-Fetch: 1`), the answer is a small JSON
//! `{ok, message, redirect?}` and the page stays where it is (live updates show the rest).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use steward_actors::{Intent, IntentReply};
use steward_api::dto::IntentAnswer;
use steward_api::{validate, ApiError};
use steward_domain::WorkspaceId;

use crate::session::{local_path, Flash, Operator};
use crate::{parse_id, Console, ConsoleError};

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// Set a secret.
#[derive(Deserialize)]
pub struct SecretForm {
    csrf: String,
    key: String,
    value: SecretString,
}

/// Set the model.
#[derive(Deserialize)]
pub struct ModelForm {
    csrf: String,
    model: String,
}

/// Switch provider.
#[derive(Deserialize)]
pub struct SwitchForm {
    csrf: String,
    provider: String,
}

/// What an action did (or why it did not), for the operator.
type Outcome = Result<String, ApiError>;

/// Where an action's page was: the `Referer`'s path if it is a console page (the request
/// already passed the same-origin check), else `fallback`.
fn back(req: &HttpRequest, fallback: &str) -> String {
    req.headers()
        .get(actix_web::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://"))
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .and_then(|path| local_path(&path))
        .filter(|path| !path.ends_with("/delete"))
        .unwrap_or_else(|| fallback.to_owned())
}

fn fetched(req: &HttpRequest) -> bool {
    req.headers()
        .get("X-Console-Fetch")
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// Answers an action: JSON for the script, else a message for the next page and a redirect.
fn answer(
    console: &Console,
    operator: &Operator,
    req: &HttpRequest,
    id: WorkspaceId,
    outcome: Outcome,
    redirect: Option<String>,
) -> HttpResponse {
    let (status, flash) = match outcome {
        Ok(text) => (StatusCode::OK, Flash { ok: true, text }),
        Err(e) => (
            e.status_code(),
            Flash {
                ok: false,
                text: e.to_string(),
            },
        ),
    };
    if fetched(req) {
        let redirect = redirect.filter(|_| flash.ok);
        return HttpResponse::build(status).json(serde_json::json!({
            "ok": flash.ok,
            "message": flash.text,
            "redirect": redirect,
        }));
    }
    let location = redirect
        .filter(|_| flash.ok)
        .unwrap_or_else(|| back(req, &format!("/ui/workspaces/{id}")));
    console.sessions.flash(operator, flash);
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location))
        .finish()
}

/// The workspace's name for messages (its id if it cannot be read).
async fn name(console: &Console, id: WorkspaceId) -> String {
    console
        .registry
        .get(id)
        .await
        .map_or_else(|_| id.to_string(), |v| v.spec.name)
}

fn described(action: &str, reply: IntentReply) -> String {
    let answer = IntentAnswer::from(reply);
    format!(
        "{action}: {} (generation {})",
        answer.outcome, answer.generation
    )
}

async fn submit(console: &Console, id: WorkspaceId, intent: Intent, action: &str) -> Outcome {
    let name = name(console, id).await;
    let reply = console.registry.submit(id, intent).await?;
    Ok(format!("{name}: {}", described(action, reply)))
}

/// `POST /ui/workspaces/{id}/{restart|stop|start|kill}`.
pub async fn lifecycle(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    let (id, action) = path.into_inner();
    let id = parse_id(&id)?;
    let outcome = match action.as_str() {
        "restart" => submit(&console, id, Intent::Restart, "restart").await,
        "stop" => submit(&console, id, Intent::Stop, "stop").await,
        "start" => submit(&console, id, Intent::Start, "start").await,
        "kill" => {
            let name = name(&console, id).await;
            match console.registry.kill(id).await {
                Ok(()) => Ok(format!(
                    "{name}: instance killed (fault drill); the probes will see it dead"
                )),
                Err(e) => Err(e.into()),
            }
        }
        other => return Err(ConsoleError::NotFound(format!("no action {other:?}"))),
    };
    Ok(answer(&console, &operator, &req, id, outcome, None))
}

/// `POST /ui/workspaces/{id}/delete` (from the confirmation page).
pub async fn delete(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    let outcome = submit(&console, id, Intent::Delete, "delete").await;
    Ok(answer(
        &console,
        &operator,
        &req,
        id,
        outcome,
        Some("/ui/workspaces".into()),
    ))
}

/// `POST /ui/workspaces/{id}/secrets`: set a secret (a config restart).
pub async fn set_secret(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<SecretForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    let form = form.into_inner();
    let key = form.key.trim().to_owned();
    let checked = validate::key("secrets", &key)
        .and_then(|()| validate::value("secret value", form.value.expose_secret()));
    let outcome = match checked {
        Ok(()) => {
            let action = format!("secret {key} set, restart");
            let intent = Intent::SetSecret {
                key,
                value: form.value,
            };
            submit(&console, id, intent, &action).await
        }
        Err(e) => Err(e),
    };
    Ok(answer(&console, &operator, &req, id, outcome, None))
}

/// `POST /ui/workspaces/{id}/secrets/{key}/remove`.
pub async fn remove_secret(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    let (id, key) = path.into_inner();
    let id = parse_id(&id)?;
    let action = format!("secret {key} removed, restart");
    let outcome = submit(&console, id, Intent::RemoveSecret { key }, &action).await;
    Ok(answer(&console, &operator, &req, id, outcome, None))
}

/// `POST /ui/workspaces/{id}/model`.
pub async fn set_model(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<ModelForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    let model = form.into_inner().model.trim().to_owned();
    let outcome = match validate::non_empty("model", &model) {
        Ok(()) => {
            let action = format!("model set to {model}, restart");
            submit(&console, id, Intent::SetModel { model }, &action).await
        }
        Err(e) => Err(e),
    };
    Ok(answer(&console, &operator, &req, id, outcome, None))
}

/// `POST /ui/workspaces/{id}/switch`.
pub async fn switch_provider(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<SwitchForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    let id = parse_id(&id)?;
    let to = form.into_inner().provider;
    let outcome = match validate::non_empty("provider", &to) {
        Ok(()) => {
            let name = name(&console, id).await;
            match console.registry.switch_provider(id, to.clone()).await {
                Ok(_) => Ok(format!(
                    "{name}: switching to {to} (the timeline follows it)"
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e),
    };
    Ok(answer(&console, &operator, &req, id, outcome, None))
}
