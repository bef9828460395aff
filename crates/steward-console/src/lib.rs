//! The operators' web console, served by the daemon at `/ui`.
//!
//! Server-rendered HTML (maud), one stylesheet, one small hand-written script, one icon, all
//! embedded in the binary: no npm, no build step outside cargo. Every action is a plain HTML
//! form that works without JavaScript (POST, then a redirect back); the script only adds live
//! updates, over one Server-Sent Events stream per tab (`live`), and sends forms without
//! leaving the page.
//!
//! Like the API handlers, the console talks only to the [`Registry`] facade (never to the
//! store) and renders the API's own DTOs, so it shows what the API shows and keeps working
//! whatever sits behind the registry. It holds no lifecycle logic: a page reads, an action
//! sends one intent.
//!
//! Security: a login with the admin token opens a session (`session`: random id in an
//! HttpOnly, SameSite=Strict, expiring cookie; the table lives in this process's memory);
//! every form carries a CSRF token and must come from this origin; attempts to log in are
//! rate-limited per address (`login`); every answer carries a strict Content-Security-Policy
//! (no inline script or style anywhere) and is never cached except the hashed assets. The
//! admin token never appears in a page, a URL or a log.

mod actions;
mod assets;
mod charts;
mod config;
mod error;
mod live;
mod login;
pub mod pages;
mod samples;
mod session;

pub use config::ConsoleConfig;
pub use error::ConsoleError;
pub use samples::{MetricsSource, Sample, Samples};
pub use session::{Flash, COOKIE};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use steward_actors::Registry;
use steward_domain::WorkspaceId;

use login::LoginLimiter;
use pages::{list, overview, workspace};
use session::Sessions;

/// The Content-Security-Policy of every console answer: nothing but this origin's own files,
/// no inline script, no inline style, no framing, forms only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// Largest accepted form body.
const FORM_LIMIT: usize = 64 * 1024;

/// What the console's handlers share.
pub struct Console {
    registry: Registry,
    admin_token_hash: [u8; 32],
    config: ConsoleConfig,
    sessions: Sessions,
    limiter: LoginLimiter,
    samples: Arc<Samples>,
    /// Live streams open.
    streams: AtomicUsize,
}

impl Console {
    /// A console over `registry`, logging in with the admin token whose SHA-256 is
    /// `admin_token_hash`, charting the counters `metrics` renders (none: the overview shows
    /// only current counts). Call [`Console::start_sampling`] to start the overview's history.
    pub fn new(
        registry: Registry,
        admin_token_hash: [u8; 32],
        config: ConsoleConfig,
        metrics: Option<MetricsSource>,
    ) -> Console {
        let samples = Samples::new(metrics, config.sample_interval, config.samples_kept());
        Console {
            registry,
            admin_token_hash,
            sessions: Sessions::new(config.session_ttl),
            limiter: LoginLimiter::new(config.login_attempts_per_minute),
            samples: Arc::new(samples),
            config,
            streams: AtomicUsize::new(0),
        }
    }

    /// Starts sampling the counters for the overview (a thread of its own, which ends when
    /// the console is dropped).
    pub fn start_sampling(&self) -> std::io::Result<()> {
        self.samples.start()
    }

    /// The overview's samples (tests add their own).
    pub fn samples(&self) -> &Samples {
        &self.samples
    }

    /// Number of live sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.count()
    }
}

/// Parses a workspace id from a URL.
fn parse_id(raw: &str) -> Result<WorkspaceId, ConsoleError> {
    raw.parse().map_err(|_| {
        ConsoleError::NotFound(format!(
            "{:?} is not a workspace id",
            raw.chars().take(64).collect::<String>()
        ))
    })
}

/// Mounts the console under `/ui`.
pub fn configure(console: web::Data<Console>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let bad_request = |e: String| -> actix_web::Error { ConsoleError::BadRequest(e).into() };
        cfg.service(
            web::scope("/ui")
                .app_data(console)
                .app_data(
                    web::FormConfig::default()
                        .limit(FORM_LIMIT)
                        .error_handler(move |e, _| bad_request(e.to_string())),
                )
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(move |e, _| bad_request(e.to_string())),
                )
                .wrap(from_fn(security_headers))
                .service(web::resource(["", "/"]).get(home))
                .service(web::resource("/login").get(login::page).post(login::submit))
                .service(web::resource("/logout").post(login::logout))
                .service(web::resource("/workspaces").get(list::page))
                .service(web::resource("/workspaces/{id}").get(workspace::page))
                .service(
                    web::resource("/workspaces/{id}/delete")
                        .get(workspace::confirm_delete)
                        .post(actions::delete),
                )
                .service(web::resource("/workspaces/{id}/secrets").post(actions::set_secret))
                .service(
                    web::resource("/workspaces/{id}/secrets/{key}/remove")
                        .post(actions::remove_secret),
                )
                .service(web::resource("/workspaces/{id}/model").post(actions::set_model))
                .service(web::resource("/workspaces/{id}/switch").post(actions::switch_provider))
                .service(web::resource("/workspaces/{id}/{action}").post(actions::lifecycle))
                .service(web::resource("/overview").get(overview::page))
                .service(web::resource("/live").get(live::live))
                .service(web::resource("/assets/{name}").get(assets::serve))
                .default_service(web::to(not_found)),
        );
    }
}

async fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/workspaces"))
        .finish()
}

async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ConsoleError::NotFound(
        "There is no such page in the console.".into(),
    ))
}

/// Headers of every console answer: the CSP, no sniffing, no framing, the `Referer` kept
/// to this origin, and no caching unless the handler set its own policy (assets).
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}
