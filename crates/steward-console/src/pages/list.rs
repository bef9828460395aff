//! The workspace list: filters (phase, provider, name), one page of rows rendered by the
//! server, each row updated in place by the live stream (only the rows of the page).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use steward_actors::WorkspaceView;
use steward_api::dto::Workspace;
use steward_domain::Phase;

use super::{button_form, layout, or_dash, phase_badge, query, time, Chrome, Section};
use crate::session::Operator;
use crate::{Console, ConsoleError};

/// Filters and page of the list (`GET /ui/workspaces`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only this phase.
    pub phase: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Name containing this (case-insensitive), or id starting with it.
    pub q: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ListQuery {
    fn matches(&self, view: &WorkspaceView) -> bool {
        let phase = set(&self.phase).is_none_or(|p| view.phase.as_str() == p);
        let provider = set(&self.provider).is_none_or(|p| view.spec.provider == p);
        let name = set(&self.q).is_none_or(|q| {
            let q = q.to_lowercase();
            view.spec.name.to_lowercase().contains(&q) || view.id.to_string().starts_with(&q)
        });
        phase && provider && name
    }

    fn filtered(&self) -> bool {
        set(&self.phase).is_some() || set(&self.provider).is_some() || set(&self.q).is_some()
    }

    /// The list's URL with these filters, on `page`.
    fn link(&self, page: usize) -> String {
        format!(
            "/ui/workspaces{}",
            query(&[
                ("phase", set(&self.phase).map(str::to_owned)),
                ("provider", set(&self.provider).map(str::to_owned)),
                ("q", set(&self.q).map(str::to_owned)),
                ("page", (page > 1).then(|| page.to_string())),
            ])
        )
    }
}

/// `GET /ui/workspaces`.
pub async fn page(
    console: web::Data<Console>,
    operator: Operator,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let query = query.into_inner();
    let views = console.registry.list().await;
    let total = views.len();
    let matching: Vec<WorkspaceView> = views.into_iter().filter(|v| query.matches(v)).collect();
    let size = console.config.page_size;
    let pages = matching.len().div_ceil(size).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let rows: Vec<Workspace> = matching
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .map(Workspace::from)
        .collect();
    let live = (!rows.is_empty()).then(|| {
        let ids: Vec<&str> = rows.iter().map(|w| w.id.as_str()).collect();
        format!("/ui/live?rows={}", ids.join(","))
    });
    let mut providers = console.registry.provider_names();
    providers.sort();
    let content = html! {
        h1 { "Workspaces" span.sub { (total) " in all" } }
        (filters(&query, &providers))
        p #notice .notice hidden {}
        div.panel {
            @if rows.is_empty() {
                p.muted #empty {
                    @if query.filtered() { "No workspace matches these filters." }
                    @else { "No workspaces yet. Create one with " code { "steward ws create" } " or " code { "POST /v1/workspaces" } "." }
                }
            } @else {
                table #workspaces {
                    thead { tr {
                        th { "Name" } th { "Provider" } th { "Phase" }
                        th title="generation / observed generation" { "Generation" }
                        th { "Pending" } th { "Last heartbeat" } th { "Failure" } th {}
                    } }
                    tbody {
                        @for w in &rows { (row(&operator, w)) }
                    }
                }
                (pager(&query, page, pages, size, matching.len()))
            }
        }
    };
    let chrome = Chrome {
        title: "Workspaces".into(),
        section: Section::Workspaces,
        flash: console.sessions.take_flash(&operator),
        operator: &operator,
        live,
    };
    Ok(super::html(StatusCode::OK, layout(chrome, content)))
}

fn filters(query: &ListQuery, providers: &[String]) -> Markup {
    let phase = set(&query.phase);
    let provider = set(&query.provider);
    html! {
        form.row #filters method="get" action="/ui/workspaces" {
            label { "Name or id"
                input type="search" name="q" value=[set(&query.q)] placeholder="contains…";
            }
            label { "Phase"
                select name="phase" {
                    option value="" { "any" }
                    @for p in Phase::ALL.iter().filter(|p| **p != Phase::Deleted) {
                        option value=(p.as_str()) selected[phase == Some(p.as_str())] { (p.as_str()) }
                    }
                }
            }
            label { "Provider"
                select name="provider" {
                    option value="" { "any" }
                    @for p in providers {
                        option value=(p) selected[provider == Some(p.as_str())] { (p) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if query.filtered() { a.button href="/ui/workspaces" { "Clear" } }
        }
    }
}

fn pager(query: &ListQuery, page: usize, pages: usize, size: usize, matching: usize) -> Markup {
    let first = (page - 1) * size + 1;
    let last = (page * size).min(matching);
    html! {
        nav.pager aria-label="pages" {
            @if page > 1 { a rel="prev" href=(query.link(page - 1)) { "← Previous" } }
            span.muted { (first) "–" (last) " of " (matching) " · page " (page) " of " (pages) }
            @if page < pages { a rel="next" href=(query.link(page + 1)) { "Next →" } }
        }
    }
}

/// The element id of a workspace's row.
pub fn row_id(id: &str) -> String {
    format!("row-{id}")
}

/// One row of the list: the page renders it, and the live stream sends it again when the
/// workspace changes.
pub fn row(operator: &Operator, w: &Workspace) -> Markup {
    let base = format!("/ui/workspaces/{}", w.id);
    let startable = matches!(w.phase, "stopped" | "failed");
    html! {
        tr id=(row_id(&w.id)) data-phase=(w.phase) {
            td.name {
                a href=(base) { (w.name) }
                span.id.mono title=(w.id) { (w.id.get(..8).unwrap_or(&w.id)) "…" }
            }
            td { (w.provider) }
            td.phase-cell {
                (phase_badge(w.phase))
                @if let Some(switch) = &w.switch {
                    " " span.muted { "→ " (switch.to) }
                }
            }
            td.mono { (w.generation) " / " (w.observed_generation) }
            td {
                @if w.restart.pending_causes.is_empty() {
                    @if w.restart.in_flight { span.muted { "cycle in flight" } } @else { span.muted { "—" } }
                } @else {
                    @for cause in &w.restart.pending_causes { span.chip { (cause) } }
                }
            }
            td { @match &w.agent.last_heartbeat_at { Some(at) => (time(at)), None => (or_dash(None)) } }
            td.failure {
                @match &w.failure {
                    Some(f) => { (f.reason) " " span.muted { "(gen " (f.generation) ")" } },
                    None => (or_dash(None)),
                }
            }
            td.actions {
                @if w.phase != "deleting" {
                    (button_form(operator, &format!("{base}/restart"), "Restart", "restart"))
                    " "
                    @if startable {
                        (button_form(operator, &format!("{base}/start"), "Start", "start"))
                    } @else {
                        (button_form(operator, &format!("{base}/stop"), "Stop", "stop"))
                    }
                    " "
                    a.button.danger.delete href={ (base) "/delete" } { "Delete…" }
                }
            }
        }
    }
}

/// The row of a workspace that no longer exists.
pub fn gone_row(id: &str) -> Markup {
    html! {
        tr.gone id=(row_id(id)) data-phase="deleted" {
            td.name { span.id.mono { (id) } }
            td colspan="7" { "deleted" }
        }
    }
}
