//! The HTTP facade of Steward (actix-web).
//!
//! Each handler parses a request into one message for the registry, sends it, and maps the
//! reply to a status and a DTO. There is no business logic here: lifecycle decisions belong
//! to the domain, their execution to the actors. This crate owns the wire types (`dto`),
//! the error mapping (`ApiError`), input validation, admin authentication and the OpenAPI
//! description generated from the handlers.

mod auth;
mod body;
pub mod dto;
mod error;
mod openapi;
mod routes;
pub mod validate;

pub use auth::token_hash;
pub use body::BodyLimits;
pub use error::{ApiError, ErrorBody};
pub use openapi::{describe, ApiDoc};
pub use routes::logs::LogLimits;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;
use steward_actors::Registry;
use steward_domain::WorkspaceId;

use routes::{admin, agent, events, logs, system, waits, workspaces};

/// The floods this crate summarizes instead of logging line by line.
pub static LOG_SUMMARIES: &[&steward_actors::log_summary::LogSummary] = &[&error::STORE_FAILURES];

/// What the handlers share.
pub struct ApiState {
    /// The workspace actors.
    pub registry: Registry,
    /// SHA-256 of the admin token.
    pub admin_token_hash: [u8; 32],
    /// Renders `/metrics` (absent in tests that install no recorder).
    pub metrics: Option<PrometheusHandle>,
    /// Size and time limits of request bodies.
    pub body: BodyLimits,
    /// How long a delete waits for the workspace to be gone before answering 202 (unless
    /// the request says `?wait=`).
    pub delete_wait: std::time::Duration,
    /// The longest `?wait=` (and `GET …/wait` timeout) a request may ask for.
    pub wait_max: std::time::Duration,
    /// Provider of workspaces created without one.
    pub default_provider: String,
    /// Bounds of the logs route (`[logs]`).
    pub logs: LogLimits,
}

/// Parses a path id.
fn workspace_id(raw: &str) -> Result<WorkspaceId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::InvalidId(raw.chars().take(64).collect()))
}

/// Mounts every route. `state` is shared by all workers.
pub fn configure(state: web::Data<ApiState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .service(
                web::scope("/v1/workspaces")
                    .wrap(from_fn(auth::require_admin))
                    .service(resource(
                        "",
                        [
                            (Method::POST, web::to(workspaces::create)),
                            (Method::GET, web::to(workspaces::list)),
                        ],
                    ))
                    .service(resource(
                        "/{id}",
                        [
                            (Method::GET, web::to(workspaces::get)),
                            (Method::DELETE, web::to(workspaces::delete)),
                        ],
                    ))
                    .service(resource(
                        "/{id}/restart",
                        [(Method::POST, web::to(workspaces::restart))],
                    ))
                    .service(resource(
                        "/{id}/wait",
                        [(Method::GET, web::to(waits::wait))],
                    ))
                    .service(resource(
                        "/{id}/stop",
                        [(Method::POST, web::to(workspaces::stop))],
                    ))
                    .service(resource(
                        "/{id}/start",
                        [(Method::POST, web::to(workspaces::start))],
                    ))
                    .service(resource(
                        "/{id}/secrets",
                        [(Method::GET, web::to(workspaces::secret_keys))],
                    ))
                    .service(resource(
                        "/{id}/secrets/{key}",
                        [
                            (Method::PUT, web::to(workspaces::set_secret)),
                            (Method::DELETE, web::to(workspaces::remove_secret)),
                        ],
                    ))
                    .service(resource(
                        "/{id}/model",
                        [(Method::PUT, web::to(workspaces::set_model))],
                    ))
                    .service(resource(
                        "/{id}/switch-provider",
                        [(Method::POST, web::to(workspaces::switch_provider))],
                    ))
                    .service(resource(
                        "/{id}/events",
                        [(Method::GET, web::to(events::events))],
                    ))
                    .service(resource("/{id}/logs", [(Method::GET, web::to(logs::logs))])),
            )
            .service(
                web::scope("/v1/admin")
                    .wrap(from_fn(auth::require_admin))
                    .service(resource("/actors", [(Method::GET, web::to(admin::actors))]))
                    .service(resource(
                        "/actors/{id}",
                        [(Method::GET, web::to(admin::actor))],
                    ))
                    .service(resource(
                        "/workspaces/{id}/kill",
                        [(Method::POST, web::to(admin::kill))],
                    )),
            )
            .service(
                web::scope("/v1/agent")
                    .wrap(from_fn(auth::require_agent))
                    .service(resource(
                        "/register",
                        [(Method::POST, web::to(agent::register))],
                    ))
                    .service(resource(
                        "/heartbeat",
                        [(Method::POST, web::to(agent::heartbeat))],
                    )),
            )
            .service(resource(
                "/healthz",
                [(Method::GET, web::to(system::healthz))],
            ))
            .service(resource(
                "/readyz",
                [(Method::GET, web::to(system::readyz))],
            ))
            .service(resource(
                "/metrics",
                [(Method::GET, web::to(system::metrics))],
            ))
            .service(resource(
                "/openapi.json",
                [(Method::GET, web::to(system::openapi))],
            ))
            .default_service(web::to(not_found));
    }
}

/// A route answering each of `routes`' methods with its handler; any other method gets 405
/// in the API's JSON error shape, with `Allow` listing the methods that exist.
fn resource<const N: usize>(
    path: &str,
    routes: [(Method, actix_web::Route); N],
) -> actix_web::Resource {
    let allow = routes
        .iter()
        .map(|(method, _)| method.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let resource = routes
        .into_iter()
        .fold(web::resource(path), |resource, (method, route)| {
            resource.route(route.method(method))
        });
    resource.default_service(web::to(move || {
        let mut response = actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
            response
                .headers_mut()
                .insert(actix_web::http::header::ALLOW, value);
        }
        std::future::ready(response)
    }))
}

async fn not_found() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound("no such route".into()))
}

/// Middleware counting `steward_http_requests_total{route,status}` (route = the matched
/// pattern, so ids do not explode the label space).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.call(req).await?;
    let status = response.status().as_u16().to_string();
    metrics::counter!("steward_http_requests_total", "route" => route, "status" => status)
        .increment(1);
    Ok(response)
}
