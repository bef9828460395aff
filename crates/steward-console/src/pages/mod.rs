//! The console's pages, server-rendered with maud (compile-time templates, escaped by
//! default). Each page module renders from the API crate's DTOs, so the console shows the
//! same fields, names and texts as the JSON API. Fragments that live updates replace (a
//! list row, a workspace's summary and inspection, a timeline entry) are rendered by the same
//! functions for the page and for the stream.

pub mod list;
pub mod overview;
pub mod timeline;
pub mod workspace;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, HttpResponseBuilder};
use maud::{html, Markup, DOCTYPE};

use crate::assets;
use crate::session::{Flash, Operator};

/// Which section of the console a page belongs to (highlighted in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The workspace list and workspace pages.
    Workspaces,
    /// The overview.
    Overview,
}

/// What surrounds a page's content.
pub struct Chrome<'a> {
    /// Title (before " · Steward").
    pub title: String,
    /// Highlighted section.
    pub section: Section,
    /// The logged-in operator (for the logout form).
    pub operator: &'a Operator,
    /// A message left by the previous action.
    pub flash: Option<Flash>,
    /// The live stream the page's script opens (`/ui/live?...`), if the page has live parts.
    pub live: Option<String>,
}

/// An HTML answer.
pub fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    html_with(status, markup, |_| {})
}

/// An HTML answer with extra headers.
pub fn html_with(
    status: StatusCode,
    markup: Markup,
    extra: impl FnOnce(&mut HttpResponseBuilder),
) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"));
    extra(&mut response);
    response.body(markup.into_string())
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · Steward" }
            link rel="stylesheet" href=(assets::css());
            link rel="icon" type="image/svg+xml" href=(assets::icon());
            script src=(assets::js()) defer {}
        }
    }
}

/// A page of the console for a logged-in operator.
pub fn layout(chrome: Chrome<'_>, content: Markup) -> Markup {
    let current = |s: Section| (chrome.section == s).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&chrome.title))
            body data-live=[chrome.live.as_deref()] {
                header.top {
                    a.brand href="/ui/workspaces" { "Steward" }
                    nav {
                        a href="/ui/workspaces" aria-current=[current(Section::Workspaces)] { "Workspaces" }
                        a href="/ui/overview" aria-current=[current(Section::Overview)] { "Overview" }
                    }
                    span.spacer {}
                    @if chrome.live.is_some() {
                        span #live .live-status role="status" { "not live" }
                    }
                    form.inline method="post" action="/ui/logout" {
                        (csrf_field(chrome.operator))
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    div #flash aria-live="polite" {
                        @if let Some(flash) = &chrome.flash {
                            p.flash.ok[flash.ok].error[!flash.ok] { (flash.text) }
                        }
                    }
                    (content)
                }
            }
        }
    }
}

/// The login page, with the error of the last attempt if any.
pub fn login_page(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body {
                main.login {
                    h1 { "Steward" }
                    div.panel {
                        form method="post" action="/ui/login" {
                            input type="hidden" name="next" value=(next);
                            label {
                                "Admin token"
                                input #token type="password" name="token" required
                                    autocomplete="current-password" autofocus;
                            }
                            @if let Some(error) = error {
                                p.flash.error #login-error role="alert" { (error) }
                            }
                            button.primary type="submit" { "Log in" }
                        }
                    }
                    p.muted {
                        "The token is in " code { "<data_dir>/admin.token" }
                        " unless the daemon was given one."
                    }
                }
            }
        }
    }
}

/// A page for a failed request (no navigation: the visitor may not be logged in).
pub fn error_page(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main {
                    h1 { (title) }
                    p.flash.error #error { (message) }
                    p { a href="/ui/workspaces" { "Back to the workspaces" } }
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf); }
}

/// A one-button form POSTing to `action`, sent in the background when the script runs.
pub fn button_form(operator: &Operator, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) data-fetch {
            (csrf_field(operator))
            button class=(class) type="submit" { (label) }
        }
    }
}

/// A phase as a coloured badge.
pub fn phase_badge(phase: &str) -> Markup {
    html! { span class={ "phase phase-" (phase) } { (phase) } }
}

/// An RFC 3339 time shown as date and time to the second (UTC), the full value on hover.
pub fn time(rfc3339: &str) -> Markup {
    let short = rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ");
    html! { time datetime=(rfc3339) title=(rfc3339) { (short) "Z" } }
}

/// An optional value, or a dash.
pub fn or_dash(value: Option<&str>) -> Markup {
    html! {
        @match value {
            Some(v) => (v),
            None => span.muted { "—" },
        }
    }
}

/// `value` escaped for a URL query component.
pub fn query_escape(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A query string (`?a=b&c=d`, empty if nothing is set) from the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (*k, v)))
        .collect();
    if set.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(set).unwrap_or_default())
}
