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
mod routes;
pub mod validate;

pub use auth::token_hash;
pub use error::{ApiError, ErrorBody};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;
use steward_actors::Registry;
use steward_domain::WorkspaceId;
use utoipa::OpenApi;

use routes::{admin, agent, events, system, workspaces};

/// What the handlers share.
pub struct ApiState {
    /// The workspace actors.
    pub registry: Registry,
    /// SHA-256 of the admin token.
    pub admin_token_hash: [u8; 32],
    /// Renders `/metrics` (absent in tests that install no recorder).
    pub metrics: Option<PrometheusHandle>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Provider of workspaces created without one.
    pub default_provider: String,
}

/// The OpenAPI description, generated from the handlers and DTOs.
#[derive(OpenApi)]
#[openapi(
    info(title = "Steward", description = "Keeps agent workspaces alive, race-free."),
    paths(
        workspaces::create, workspaces::list, workspaces::get, workspaces::restart,
        workspaces::stop, workspaces::start, workspaces::delete, workspaces::secret_keys,
        workspaces::set_secret, workspaces::remove_secret, workspaces::set_model,
        workspaces::switch_provider,
                events::events, admin::actors, admin::actor, admin::kill, agent::register, agent::heartbeat,
        system::healthz, system::readyz, system::metrics, system::openapi,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "agent",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
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
                    .service(
                        resource("")
                            .route(web::post().to(workspaces::create))
                            .route(web::get().to(workspaces::list)),
                    )
                    .service(
                        resource("/{id}")
                            .route(web::get().to(workspaces::get))
                            .route(web::delete().to(workspaces::delete)),
                    )
                    .service(resource("/{id}/restart").route(web::post().to(workspaces::restart)))
                    .service(resource("/{id}/stop").route(web::post().to(workspaces::stop)))
                    .service(resource("/{id}/start").route(web::post().to(workspaces::start)))
                    .service(
                        resource("/{id}/secrets").route(web::get().to(workspaces::secret_keys)),
                    )
                    .service(
                        resource("/{id}/secrets/{key}")
                            .route(web::put().to(workspaces::set_secret))
                            .route(web::delete().to(workspaces::remove_secret)),
                    )
                    .service(resource("/{id}/model").route(web::put().to(workspaces::set_model)))
                    .service(
                        resource("/{id}/switch-provider")
                            .route(web::post().to(workspaces::switch_provider)),
                    )
                    .service(resource("/{id}/events").route(web::get().to(events::events))),
            )
            .service(
                web::scope("/v1/admin")
                    .wrap(from_fn(auth::require_admin))
                    .service(resource("/actors").route(web::get().to(admin::actors)))
                    .service(resource("/actors/{id}").route(web::get().to(admin::actor)))
                    .service(resource("/workspaces/{id}/kill").route(web::post().to(admin::kill))),
            )
            .service(resource("/v1/agent/register").route(web::post().to(agent::register)))
            .service(resource("/v1/agent/heartbeat").route(web::post().to(agent::heartbeat)))
            .service(resource("/healthz").route(web::get().to(system::healthz)))
            .service(resource("/readyz").route(web::get().to(system::readyz)))
            .service(resource("/metrics").route(web::get().to(system::metrics)))
            .service(resource("/openapi.json").route(web::get().to(system::openapi)))
            .default_service(web::to(not_found));
    }
}

/// A route whose other methods answer 405 in the API's JSON error shape.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed)
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
