//! `ConsoleError`: what a console request can fail with, answered as an HTML page (or, for a
//! visitor without a session, a redirect to the login page). Failures of actions are not
//! errors here: they are shown as a message on the page the action came from.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use steward_api::ApiError;

use crate::pages;

/// A failed console request.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No valid session: log in first (then come back to `next`).
    #[error("log in to continue")]
    LoginRequired {
        /// The page to return to after logging in (a validated `/ui` path).
        next: Option<String>,
    },
    /// A state-changing request that did not come from a console page of this origin (no or
    /// wrong CSRF token, foreign `Origin`/`Referer`).
    #[error("{0}")]
    Forbidden(String),
    /// No such page or workspace.
    #[error("{0}")]
    NotFound(String),
    /// A malformed request (form, query).
    #[error("{0}")]
    BadRequest(String),
    /// The daemon cannot answer now (shutting down, store unavailable, too many streams).
    #[error("{0}")]
    Unavailable(String),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e.status_code() {
            StatusCode::NOT_FOUND => ConsoleError::NotFound(e.to_string()),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => {
                ConsoleError::Unavailable(e.to_string())
            }
            _ => ConsoleError::BadRequest(e.to_string()),
        }
    }
}

impl From<steward_actors::ActorError> for ConsoleError {
    fn from(e: steward_actors::ActorError) -> Self {
        ApiError::from(e).into()
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::LoginRequired { next } = self {
            let location = match next {
                Some(next) => format!("/ui/login?next={}", pages::query_escape(next)),
                None => "/ui/login".to_owned(),
            };
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, location))
                .finish();
        }
        let status = self.status_code();
        let title = status.canonical_reason().unwrap_or("Error");
        pages::html(status, pages::error_page(title, &self.to_string()))
    }
}
