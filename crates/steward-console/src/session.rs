//! Console sessions: a random id in an HttpOnly, SameSite=Strict, expiring cookie, and a table
//! of live sessions in the daemon's memory (so sessions are per daemon process: a restart
//! logs everyone out). The table is keyed by the SHA-256 of the id, so nothing in memory is
//! a usable cookie, and it is bounded.
//!
//! Every state-changing request must come from a console page: it carries the session's CSRF
//! token (compared in constant time) and an `Origin` (or, failing that, a `Referer`) naming
//! the host it was sent to. Either check alone stops a cross-site form; both are kept.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

use crate::{Console, ConsoleError};

/// Name of the session cookie.
pub const COOKIE: &str = "steward_console";
/// Most sessions held at once; the one closest to expiry makes room for a new one.
const MAX_SESSIONS: usize = 1024;

/// A message shown once, on the next page the operator sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports success (else an error).
    pub ok: bool,
    /// What happened.
    pub text: String,
}

struct Session {
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// The table of live sessions.
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
}

/// A logged-in operator: the request's session.
#[derive(Clone, Debug)]
pub struct Operator {
    key: [u8; 32],
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// When the session ends.
    pub expires: Instant,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// An empty table whose sessions last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            table: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves a plain map behind: still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session; returns the id for the cookie.
    pub fn open(&self) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut table = self.table();
        table.retain(|_, s| s.expires > now);
        if table.len() >= MAX_SESSIONS {
            let oldest = table.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                table.remove(&oldest);
            }
        }
        table.insert(
            key_of(&id),
            Session {
                csrf: random_token(),
                expires: now + self.ttl,
                flash: None,
            },
        );
        id
    }

    /// The live session with this cookie id.
    pub fn find(&self, id: &str) -> Option<Operator> {
        let key = key_of(id);
        let table = self.table();
        let session = table.get(&key).filter(|s| s.expires > Instant::now())?;
        Some(Operator {
            key,
            csrf: session.csrf.clone(),
            expires: session.expires,
        })
    }

    /// Whether the operator's session is still open (not logged out, not expired).
    pub fn alive(&self, operator: &Operator) -> bool {
        self.table()
            .get(&operator.key)
            .is_some_and(|s| s.expires > Instant::now())
    }

    /// Ends a session (logout).
    pub fn close(&self, operator: &Operator) {
        self.table().remove(&operator.key);
    }

    /// Leaves a message for the operator's next page.
    pub fn flash(&self, operator: &Operator, flash: Flash) {
        if let Some(session) = self.table().get_mut(&operator.key) {
            session.flash = Some(flash);
        }
    }

    /// Takes the message left for this page, if any.
    pub fn take_flash(&self, operator: &Operator) -> Option<Flash> {
        self.table()
            .get_mut(&operator.key)
            .and_then(|s| s.flash.take())
    }

    /// Number of live sessions.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        self.table().values().filter(|s| s.expires > now).count()
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Whether the request reached us over TLS (directly, or as a TLS-terminating proxy says).
fn over_tls(req: &HttpRequest) -> bool {
    req.app_config().secure() || req.connection_info().scheme() == "https"
}

/// The session cookie for `id`: HttpOnly, SameSite=Strict, scoped to `/ui`, expiring with the
/// session, Secure when the request came over TLS.
pub fn cookie(req: &HttpRequest, id: String, ttl: Duration) -> Cookie<'static> {
    Cookie::build(COOKIE, id)
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(req))
        .max_age(time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish()
}

/// A cookie that removes the session cookie.
pub fn expired_cookie(req: &HttpRequest) -> Cookie<'static> {
    let mut cookie = cookie(req, String::new(), Duration::ZERO);
    cookie.make_removal();
    cookie
}

/// The path and query of a GET request, to come back to after logging in.
fn return_path(req: &HttpRequest) -> Option<String> {
    if req.method() != actix_web::http::Method::GET {
        return None;
    }
    let path = req.uri().path_and_query().map(|p| p.as_str().to_owned())?;
    local_path(&path)
}

/// `path` if it is a console page of this daemon (`/ui` or below, no scheme, no host, no
/// `//`, no backslash, no control character), so redirects never leave the console.
pub fn local_path(path: &str) -> Option<String> {
    let ok = (path == "/ui" || path.starts_with("/ui/") || path.starts_with("/ui?"))
        && !path.contains("//")
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
        && !path.starts_with("/ui/login")
        && path.len() <= 2048;
    ok.then(|| path.to_owned())
}

impl Operator {
    /// Checks that a state-changing request comes from a console page: same origin, and the
    /// session's CSRF token.
    pub fn check(&self, req: &HttpRequest, csrf: &str) -> Result<(), ConsoleError> {
        same_origin(req)?;
        if bool::from(self.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "this form has expired or did not come from the console; reload the page and try again".into(),
            ))
        }
    }
}

/// The request's `Origin` (else `Referer`) must name the host it was sent to. A browser
/// sends `Origin` with every form POST and `fetch`; a request with neither is refused.
/// Only the host and port are compared (a TLS-terminating proxy may hide the scheme).
pub fn same_origin(req: &HttpRequest) -> Result<(), ConsoleError> {
    let host = req.connection_info().host().to_ascii_lowercase();
    let named = |value: &str| {
        let rest = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"));
        rest.map(|r| r.split('/').next().unwrap_or_default().to_ascii_lowercase())
    };
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    let claimed = match header(header::ORIGIN) {
        Some(origin) => named(origin),
        None => header(header::REFERER).and_then(named),
    };
    match claimed {
        Some(claimed) if claimed == host => Ok(()),
        _ => Err(ConsoleError::Forbidden(
            "cross-site request refused: the console only accepts forms sent from its own pages"
                .into(),
        )),
    }
}

fn session_of(req: &HttpRequest) -> Option<Operator> {
    let console = req.app_data::<web::Data<Console>>()?;
    let cookie = req.cookie(COOKIE)?;
    console.sessions.find(cookie.value())
}

/// The operator of a request; a request without a live session is sent to the login page
/// (and brought back to the page it asked for).
impl FromRequest for Operator {
    type Error = ConsoleError;
    type Future = Ready<Result<Operator, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(session_of(req).ok_or_else(|| ConsoleError::LoginRequired {
            next: return_path(req),
        }))
    }
}

/// The operator of a request, if logged in (pages that also serve visitors: the login page).
pub fn operator(req: &HttpRequest) -> Option<Operator> {
    session_of(req)
}
