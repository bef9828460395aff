//! The console's actions: plain HTML form POSTs, each checked (session, same origin, CSRF
//! token), validated by the API's own rules, sent to the registry as the API would, and
//! answered with a redirect back to the page the form was on and a message shown there.
//! Sent by the console's script instead (`X-Console-Fetch: 1`), the answer is a small JSON
//! `{ok, message, redirect?}` and the page stays where it is (live updates show the rest).

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures::future::LocalBoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use steward_actors::{Intent, IntentReply};
use steward_api::dto::IntentAnswer;
use steward_api::{validate, ApiError};
use steward_domain::WorkspaceId;

use crate::session::{local_path, Flash, Operator};
use crate::{parse_id, Console, ConsoleError};

/// A form of the console: every one carries the session's CSRF token.
pub trait ConsoleForm: DeserializeOwned + 'static {
    /// The CSRF token it carries.
    fn csrf(&self) -> &str;
}

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

macro_rules! console_forms {
    ($($form:ty),*) => {
        $(impl ConsoleForm for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}
console_forms!(CsrfForm, SecretForm, ModelForm, SwitchForm);

/// An action on the workspace `{id}` of the path, checked before anything is done: a live
/// session (else to the login page, the body unread), then the form, this origin and the
/// session's CSRF token.
pub struct Action<F> {
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    id: WorkspaceId,
    form: F,
}

impl<F: ConsoleForm> FromRequest for Action<F> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let operator = Operator::extract(&req).into_inner();
        let form = web::Form::<F>::from_request(&req, payload);
        Box::pin(async move {
            let operator = operator?;
            let form = form.await?.into_inner();
            operator.check(&req, form.csrf())?;
            let console = req
                .app_data::<web::Data<Console>>()
                .cloned()
                .ok_or_else(|| ConsoleError::Unavailable("the console is not mounted".into()))?;
            let id = parse_id(req.match_info().get("id").unwrap_or_default())?;
            Ok(Action {
                console,
                operator,
                req,
                id,
                form,
            })
        })
    }
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

fn described(action: &str, reply: IntentReply) -> String {
    let answer = IntentAnswer::from(reply);
    format!(
        "{action}: {} (generation {})",
        answer.outcome, answer.generation
    )
}

impl<F> Action<F> {
    /// The workspace's name for messages (its id if it cannot be read).
    async fn name(&self) -> String {
        self.console
            .registry
            .get(self.id)
            .await
            .map_or_else(|_| self.id.to_string(), |v| v.spec.name)
    }

    /// Sends an intent; says what became of it.
    async fn submit(&self, intent: Intent, action: &str) -> Outcome {
        let name = self.name().await;
        let reply = self.console.registry.submit(self.id, intent).await?;
        Ok(format!("{name}: {}", described(action, reply)))
    }

    /// Answers the action: JSON for the script, else a message for the next page and a
    /// redirect (to `redirect` after a success, else back to the page of the form).
    fn answer(&self, outcome: Outcome, redirect: Option<&str>) -> HttpResponse {
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
        let redirect = redirect.filter(|_| flash.ok);
        if fetched(&self.req) {
            return HttpResponse::build(status).json(serde_json::json!({
                "ok": flash.ok,
                "message": flash.text,
                "redirect": redirect,
            }));
        }
        let location = redirect.map_or_else(
            || back(&self.req, &format!("/ui/workspaces/{}", self.id)),
            str::to_owned,
        );
        self.console.sessions.flash(&self.operator, flash);
        HttpResponse::SeeOther()
            .insert_header((actix_web::http::header::LOCATION, location))
            .finish()
    }
}

/// `POST /ui/workspaces/{id}/{restart|stop|start|kill}`.
pub async fn lifecycle(action: Action<CsrfForm>) -> Result<HttpResponse, ConsoleError> {
    let verb = action.req.match_info().get("action").unwrap_or_default();
    let outcome = match verb {
        "restart" => action.submit(Intent::Restart, "restart").await,
        "stop" => action.submit(Intent::Stop, "stop").await,
        "start" => action.submit(Intent::Start, "start").await,
        "kill" => {
            let name = action.name().await;
            match action.console.registry.kill(action.id).await {
                Ok(()) => Ok(format!(
                    "{name}: instance killed (fault drill); the probes will see it dead"
                )),
                Err(e) => Err(e.into()),
            }
        }
        other => return Err(ConsoleError::NotFound(format!("no action {other:?}"))),
    };
    Ok(action.answer(outcome, None))
}

/// `POST /ui/workspaces/{id}/delete` (from the confirmation page); then to the list.
pub async fn delete(action: Action<CsrfForm>) -> HttpResponse {
    let outcome = action.submit(Intent::Delete, "delete").await;
    action.answer(outcome, Some("/ui/workspaces"))
}

/// `POST /ui/workspaces/{id}/secrets`: set a secret (a config restart).
pub async fn set_secret(action: Action<SecretForm>) -> HttpResponse {
    let key = action.form.key.trim().to_owned();
    let value = action.form.value.clone();
    let checked = validate::key("secrets", &key)
        .and_then(|()| validate::value("secret value", value.expose_secret()));
    let outcome = match checked {
        Ok(()) => {
            let verb = format!("secret {key} set, restart");
            action.submit(Intent::SetSecret { key, value }, &verb).await
        }
        Err(e) => Err(e),
    };
    action.answer(outcome, None)
}

/// `POST /ui/workspaces/{id}/secrets/{key}/remove`.
pub async fn remove_secret(action: Action<CsrfForm>) -> HttpResponse {
    let key = action
        .req
        .match_info()
        .get("key")
        .unwrap_or_default()
        .to_owned();
    let verb = format!("secret {key} removed, restart");
    let outcome = action.submit(Intent::RemoveSecret { key }, &verb).await;
    action.answer(outcome, None)
}

/// `POST /ui/workspaces/{id}/model`.
pub async fn set_model(action: Action<ModelForm>) -> HttpResponse {
    let model = action.form.model.trim().to_owned();
    let outcome = match validate::non_empty("model", &model) {
        Ok(()) => {
            let verb = format!("model set to {model}, restart");
            action.submit(Intent::SetModel { model }, &verb).await
        }
        Err(e) => Err(e),
    };
    action.answer(outcome, None)
}

/// `POST /ui/workspaces/{id}/switch`.
pub async fn switch_provider(action: Action<SwitchForm>) -> HttpResponse {
    let to = action.form.provider.trim().to_owned();
    let outcome = match validate::non_empty("provider", &to) {
        Ok(()) => {
            let name = action.name().await;
            match action
                .console
                .registry
                .switch_provider(action.id, to.clone())
                .await
            {
                Ok(_) => Ok(format!(
                    "{name}: switching to {to} (the timeline follows it)"
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e),
    };
    action.answer(outcome, None)
}
