//! Logging in with the admin token, and out.
//!
//! The token is typed into a password field and sent in a POST body, never in a URL; it is
//! hashed at once and compared with the configured hash in constant time, and never written
//! to a page or a log. Attempts are limited per client address (right or wrong ones alike,
//! so guessing cannot outrun the limit); a refused or limited attempt is shown on the page.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;
use subtle::ConstantTimeEq;

use crate::session::{self, local_path, Operator};
use crate::{pages, Console, ConsoleError};

/// Where a login lands when it names no page.
const HOME: &str = "/ui/workspaces";
/// Past this many tracked addresses, the limiter forgets those whose allowance is full again.
const TRACKED_MAX: usize = 4096;

/// Login attempts per client address.
pub struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl LoginLimiter {
    /// `per_minute` attempts a minute from one address, all of them at once at most.
    pub fn new(per_minute: u32) -> LoginLimiter {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        LoginLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one attempt from `addr`; `Err(wait)` if it is over the limit.
    pub fn attempt(&self, addr: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > TRACKED_MAX {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&addr)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// `GET /ui/login` query.
#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    token: SecretString,
    #[serde(default)]
    next: Option<String>,
}

/// The logout form.
#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

fn next_or_home(next: Option<&str>) -> String {
    next.and_then(local_path).unwrap_or_else(|| HOME.to_owned())
}

fn see_other(location: &str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::SeeOther();
    response.insert_header((header::LOCATION, location.to_owned()));
    response
}

/// The login page (or, for an operator already logged in, the page they asked for).
pub async fn page(req: HttpRequest, query: web::Query<LoginQuery>) -> HttpResponse {
    let next = next_or_home(query.next.as_deref());
    if session::operator(&req).is_some() {
        return see_other(&next).finish();
    }
    pages::html(StatusCode::OK, pages::login_page(&next, None))
}

/// Checks the token; opens a session and redirects to the page asked for.
pub async fn submit(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ConsoleError> {
    session::same_origin(&req)?;
    let form = form.into_inner();
    let next = next_or_home(form.next.as_deref());
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    if let Err(wait) = console.limiter.attempt(peer) {
        tracing::warn!(%peer, "console login refused: too many attempts");
        let message = format!(
            "Too many login attempts from your address. Try again in {} s.",
            wait.as_secs().max(1)
        );
        return Ok(pages::html_with(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login_page(&next, Some(&message)),
            |r| {
                r.insert_header((header::RETRY_AFTER, wait.as_secs().max(1).to_string()));
            },
        ));
    }
    let presented = steward_api::token_hash(form.token.expose_secret().trim());
    if !bool::from(presented.ct_eq(&console.admin_token_hash)) {
        tracing::warn!(%peer, "console login refused: wrong admin token");
        return Ok(pages::html(
            StatusCode::UNAUTHORIZED,
            pages::login_page(&next, Some("That is not the admin token.")),
        ));
    }
    let id = console.sessions.open();
    tracing::info!(%peer, "console login");
    Ok(see_other(&next)
        .cookie(session::cookie(&req, id, console.sessions.ttl()))
        .finish())
}

/// Ends the session.
pub async fn logout(
    console: web::Data<Console>,
    operator: Operator,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check(&req, &form.csrf)?;
    console.sessions.close(&operator);
    Ok(see_other("/ui/login")
        .cookie(session::expired_cookie(&req))
        .finish())
}
