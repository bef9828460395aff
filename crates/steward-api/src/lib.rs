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
mod validate;

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

use routes::{admin, events, system, workspaces};

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
        events::events, admin::actors, admin::actor, admin::kill,
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
                    .route("", web::post().to(workspaces::create))
                    .route("", web::get().to(workspaces::list))
                    .route("/{id}", web::get().to(workspaces::get))
                    .route("/{id}", web::delete().to(workspaces::delete))
                    .route("/{id}/restart", web::post().to(workspaces::restart))
                    .route("/{id}/stop", web::post().to(workspaces::stop))
                    .route("/{id}/start", web::post().to(workspaces::start))
                    .route("/{id}/secrets", web::get().to(workspaces::secret_keys))
                    .route("/{id}/secrets/{key}", web::put().to(workspaces::set_secret))
                    .route(
                        "/{id}/secrets/{key}",
                        web::delete().to(workspaces::remove_secret),
                    )
                    .route("/{id}/model", web::put().to(workspaces::set_model))
                    .route("/{id}/events", web::get().to(events::events)),
            )
            .service(
                web::scope("/v1/admin")
                    .wrap(from_fn(auth::require_admin))
                    .route("/actors", web::get().to(admin::actors))
                    .route("/actors/{id}", web::get().to(admin::actor))
                    .route("/workspaces/{id}/kill", web::post().to(admin::kill)),
            )
            .route("/healthz", web::get().to(system::healthz))
            .route("/readyz", web::get().to(system::readyz))
            .route("/metrics", web::get().to(system::metrics))
            .route("/openapi.json", web::get().to(system::openapi))
            .default_service(web::to(not_found));
    }
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
