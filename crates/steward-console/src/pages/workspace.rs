//! A workspace's page: its summary and actions, its spec (env and secret keys, never values),
//! configuration forms, the live actor inspection, the lifecycle timeline and its logs.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use steward_api::dto::{ActorDto, Workspace};

use super::timeline::{self, Filter};
use super::{button_form, csrf_field, layout, or_dash, phase_badge, query, time, Chrome, Section};
use crate::session::Operator;
use crate::{parse_id, Console, ConsoleError};

/// Element ids the live stream patches.
pub const SUMMARY: &str = "ws-summary";
/// The inspection panel's element id.
pub const INSPECTION: &str = "ws-inspect";
/// The timeline list's element id.
pub const TIMELINE: &str = "timeline";
/// The log lines' element id.
pub const LOGS: &str = "ws-logs";
/// Lines of output the page shows when it is rendered.
pub const LOG_LINES: usize = 200;
/// Characters of output the page keeps as lines arrive (the oldest go).
pub const LOG_KEEP: usize = 200_000;

/// `GET /ui/workspaces/{id}` query.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// Timeline filter: `all`, `failures` or `dropped`.
    pub events: Option<String>,
    /// Only events older than this `seq` (the timeline's next page).
    pub before: Option<i64>,
}

/// `GET /ui/workspaces/{id}`.
pub async fn page(
    console: web::Data<Console>,
    operator: Operator,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let id = parse_id(&id)?;
    let view = console.registry.get(id).await?;
    let last = view.last_event_seq;
    let inspection = console.registry.inspect(id).await.ok().map(ActorDto::from);
    let filter = Filter::parse(query.events.as_deref());
    let events = timeline::load(&console.registry, id, last, filter, query.before).await?;
    let mut providers = console.registry.provider_names();
    providers.sort();
    let w = Workspace::from(view);
    // The last lines, then (live) those written after the last shown: the stream asks from
    // there, so nothing written in between is missed.
    let read_at = std::time::SystemTime::now();
    let output = read_logs(&console, id).await;
    let logs_after = output
        .as_ref()
        .ok()
        .and_then(|lines| lines.last().map(|l| l.at))
        .unwrap_or(read_at);
    let logs_after = logs_after
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let live = match query.before {
        None => format!(
            "/ui/live?ws={}&events={}&after={last}&logs={logs_after}",
            w.id,
            filter.as_str()
        ),
        Some(_) => format!("/ui/live?ws={}&logs={logs_after}", w.id),
    };
    let content = html! {
        h1 { (w.name) span.sub.mono { (w.id) } }
        (summary(&operator, &w))
        div.grid {
            (spec(&w))
            (configure(&operator, &w, &providers))
        }
        (inspection_panel(inspection.as_ref()))
        (timeline_panel(&w, filter, query.before, &events))
        (logs_panel(&output))
    };
    let chrome = Chrome {
        title: w.name.clone(),
        section: Section::Workspaces,
        flash: console.sessions.take_flash(&operator),
        operator: &operator,
        live: Some(live),
    };
    Ok(super::html(StatusCode::OK, layout(chrome, content)))
}

/// The summary and the lifecycle actions (live: the stream replaces it when the workspace
/// changes).
pub fn summary(operator: &Operator, w: &Workspace) -> Markup {
    let base = format!("/ui/workspaces/{}", w.id);
    let startable = matches!(w.phase, "stopped" | "failed");
    html! {
        section.panel id=(SUMMARY) data-phase=(w.phase) {
            div.toolbar {
                (phase_badge(w.phase))
                span.mono { "generation " (w.generation) " · observed " (w.observed_generation) }
                span.spacer {}
                @if w.phase != "deleting" {
                    (button_form(operator, &format!("{base}/restart"), "Restart", "restart"))
                    @if startable {
                        (button_form(operator, &format!("{base}/start"), "Start", "start"))
                    } @else {
                        (button_form(operator, &format!("{base}/stop"), "Stop", "stop"))
                    }
                    (button_form(operator, &format!("{base}/kill"), "Kill instance (drill)", "kill danger"))
                    a.button.danger href={ (base) "/delete" } { "Delete…" }
                }
            }
            dl.facts {
                dt { "Provider" } dd { (w.provider)
                    @if let Some(s) = &w.switch {
                        " " span.chip { "switching " (s.from) " → " (s.to) " (" (s.stage) @if s.rollback { ", rollback" } ")" }
                    }
                }
                dt { "Ready when" } dd { (w.ready_when) }
                dt { "Cycle" } dd {
                    @if w.restart.in_flight { "in flight" } @else { span.muted { "none" } }
                    @for cause in &w.restart.pending_causes { " " span.chip { "pending: " (cause) } }
                }
                dt { "Failure" } dd.failure {
                    @match &w.failure {
                        Some(f) => { (f.reason) " " span.muted { "(generation " (f.generation) ")" } },
                        None => (or_dash(None)),
                    }
                }
                dt { "Agent" } dd { (or_dash(w.agent.url.as_deref())) }
                dt { "Last heartbeat" } dd {
                    @match &w.agent.last_heartbeat_at { Some(at) => (time(at)), None => (or_dash(None)) }
                }
                dt { "Created" } dd { (time(&w.created_at)) }
                dt { "Updated" } dd { (time(&w.updated_at)) }
            }
        }
    }
}

/// The summary of a workspace that no longer exists.
pub fn gone_summary() -> Markup {
    html! {
        section.panel id=(SUMMARY) data-phase="deleted" {
            p.flash.error { "This workspace has been deleted." }
            a href="/ui/workspaces" { "Back to the workspaces" }
        }
    }
}

fn spec(w: &Workspace) -> Markup {
    html! {
        section.panel #spec {
            h2 { "Spec" }
            dl.facts {
                dt { "Image" } dd.mono { (or_dash(w.image.as_deref())) }
                dt { "Command" } dd.mono {
                    @match &w.command { Some(c) => (c.join(" ")), None => (or_dash(None)) }
                }
                dt { "Model" } dd { (or_dash(w.model.as_deref())) }
                dt { "Env keys" } dd {
                    @for k in w.env.keys() { span.chip.mono { (k) } }
                    @if w.env.is_empty() { (or_dash(None)) }
                }
                dt { "Secret keys" } dd #secret-keys {
                    @for k in &w.secret_keys { span.chip.mono { (k) } }
                    @if w.secret_keys.is_empty() { (or_dash(None)) }
                }
            }
            p.muted { "Values of env variables and secrets are never shown." }
        }
    }
}

fn configure(operator: &Operator, w: &Workspace, providers: &[String]) -> Markup {
    let base = format!("/ui/workspaces/{}", w.id);
    html! {
        section.panel #configure {
            h2 { "Configure" }
            p.muted { "Each change restarts the workspace with it (a stopped one gets it at its next start)." }
            form.row #set-secret method="post" action={ (base) "/secrets" } data-fetch data-reset {
                (csrf_field(operator))
                label { "Secret key" input type="text" name="key" required pattern="[A-Za-z_][A-Za-z0-9_]*" autocomplete="off"; }
                label { "Value" input type="password" name="value" required autocomplete="new-password"; }
                button type="submit" { "Set secret" }
            }
            @if !w.secret_keys.is_empty() {
                div.buttons {
                    @for k in &w.secret_keys {
                        form.inline method="post" action={ (base) "/secrets/" (k) "/remove" } data-fetch {
                            (csrf_field(operator))
                            button.danger type="submit" title={ "Remove the secret " (k) } { "Remove " (k) }
                        }
                        " "
                    }
                }
            }
            form.row #set-model method="post" action={ (base) "/model" } data-fetch {
                (csrf_field(operator))
                label { "Model" input type="text" name="model" required value=[w.model.as_deref()]; }
                button type="submit" { "Set model" }
            }
            @if providers.len() < 2 {
                p.muted { "Only one provider is configured: there is none to switch to." }
            } @else {
                form.row #switch method="post" action={ (base) "/switch" } data-fetch {
                    (csrf_field(operator))
                    label { "Provider"
                        select name="provider" {
                            @for p in providers.iter().filter(|p| **p != w.provider) {
                                option value=(p) { (p) }
                            }
                        }
                    }
                    button type="submit" { "Switch provider" }
                }
            }
        }
    }
}

fn inspection_panel(a: Option<&ActorDto>) -> Markup {
    match a {
        Some(a) => inspection(a),
        None => html! {
            section.panel id=(INSPECTION) { h2 { "Actor" } p.muted { "The actor cannot be inspected right now." } }
        },
    }
}

/// The live actor inspection.
pub fn inspection(a: &ActorDto) -> Markup {
    let dropped: Vec<(&str, u64)> = a
        .counters
        .dropped
        .values()
        .flat_map(|reasons| reasons.iter().map(|(r, n)| (*r, *n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    html! {
        section.panel id=(INSPECTION) {
            h2 { "Actor" }
            div.grid {
                dl.facts {
                    dt { "Cycle in flight" } dd {
                        @match &a.cycle {
                            Some(c) => { "generation " (c.generation) " since " (time(&c.started_at)) " "
                                @for cause in &c.causes { span.chip { (cause) } } },
                            None => (or_dash(None)),
                        }
                    }
                    dt { "Operation" } dd {
                        @match &a.operation {
                            Some(o) => { span.mono { (o.step) } " gen " (o.generation) ", deadline " (time(&o.deadline)) },
                            None => (or_dash(None)),
                        }
                    }
                    dt { "Pending causes" } dd {
                        @for cause in &a.pending_causes { span.chip { (cause) } }
                        @if a.pending_causes.is_empty() { (or_dash(None)) }
                    }
                    dt { "Debounce until" } dd { @match &a.debounce_until { Some(t) => (time(t)), None => (or_dash(None)) } }
                    dt { "Settle until" } dd { @match &a.settle_until { Some(t) => (time(t)), None => (or_dash(None)) } }
                    dt { "Health failures" } dd { (a.health_failures) }
                    dt { "Last probe" } dd {
                        @match &a.last_probe {
                            Some(p) => { (p.report) " (gen " (p.generation) ") at " (time(&p.at)) },
                            None => (or_dash(None)),
                        }
                    }
                    dt { "Backoff" } dd {
                        "attempt " (a.backoff.attempt)
                        @if let Some(at) = &a.backoff.retry_at { ", retry at " (time(at)) }
                    }
                }
                dl.facts {
                    dt { "Cycles" } dd { (a.counters.cycles) " (" (a.counters.cycles_failed) " failed)" }
                    dt { "Coalesced restarts" } dd { (a.counters.coalesced) }
                    dt { "Dropped restarts" } dd {
                        @for (reason, n) in &dropped { span.chip { (reason) ": " (n) } }
                        @if dropped.is_empty() { "0" }
                    }
                    dt { "Stale results" } dd { (a.counters.stale_results) }
                    dt { "Mailbox" } dd { (a.mailbox_len) }
                    dt { "Actor restarts" } dd { (a.restarts) }
                    dt { "Last error" } dd.failure { (or_dash(a.last_error.as_deref())) }
                    dt { "Transitions" } dd {
                        @for t in a.transitions.iter().rev().take(8) {
                            div { span.mono { (t.from) " → " (t.to) } " " span.muted { (time(&t.at)) } }
                        }
                        @if a.transitions.is_empty() { (or_dash(None)) }
                    }
                }
            }
        }
    }
}

fn timeline_panel(
    w: &Workspace,
    filter: Filter,
    before: Option<i64>,
    page: &timeline::TimelinePage,
) -> Markup {
    let link = |f: Filter, before: Option<i64>| {
        format!(
            "/ui/workspaces/{}{}",
            w.id,
            query(&[
                ("events", (f != Filter::All).then(|| f.as_str().to_owned())),
                ("before", before.map(|b| b.to_string())),
            ])
        )
    };
    html! {
        section.panel #events {
            h2 { "Timeline" }
            nav.tabs {
                @for f in Filter::ALL {
                    a href=(link(f, None)) aria-current=[(f == filter).then_some("page")] { (f.label()) }
                }
            }
            ol.timeline id=(TIMELINE) data-filter=(filter.as_str()) {
                @for e in &page.events { (timeline::entry(e)) }
                @if page.events.is_empty() { li.empty { "No events here." } }
            }
            nav.pager {
                @if before.is_some() { a href=(link(filter, None)) { "← Newest" } }
                @if let Some(older) = page.older {
                    a rel="next" href=(link(filter, Some(older))) { "Older →" }
                }
                @if let Some(to) = page.searched_to {
                    span.muted { "searched back to event #" (to) }
                }
            }
        }
    }
}

/// The last [`LOG_LINES`] lines the workspace's instance wrote, as its provider keeps them.
async fn read_logs(
    console: &Console,
    id: steward_domain::WorkspaceId,
) -> Result<Vec<steward_provider::LogLine>, String> {
    use futures::StreamExt;
    let query = steward_provider::LogQuery {
        tail: Some(LOG_LINES),
        ..steward_provider::LogQuery::default()
    };
    match console.registry.logs(id, query).await {
        Ok(lines) => Ok(lines.collect().await),
        Err(error) => Err(error.to_string()),
    }
}

/// The text of log lines, one per line.
pub fn log_text<'a>(lines: impl IntoIterator<Item = &'a steward_provider::LogLine>) -> String {
    lines.into_iter().fold(String::new(), |mut text, line| {
        text.push_str(&line.text);
        text.push('\n');
        text
    })
}

/// The instance's output: the last lines, then new ones as the live stream brings them.
fn logs_panel(output: &Result<Vec<steward_provider::LogLine>, String>) -> Markup {
    html! {
        section.panel #logs {
            h2 { "Logs" }
            @match output {
                Ok(lines) => {
                    p.hint {
                        "What the instance wrote (stdout and stderr, in order): the last "
                        (LOG_LINES) " lines, then new lines as they come while this page is live."
                    }
                    pre.logs #(LOGS) data-lines=(lines.len()) { (log_text(lines)) }
                }
                Err(error) => {
                    p.unavailable #logs-unavailable { "The output cannot be read now: " (error) }
                }
            }
        }
    }
}

/// The delete confirmation page (`GET /ui/workspaces/{id}/delete`).
pub async fn confirm_delete(
    console: web::Data<Console>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let id = parse_id(&id)?;
    let w = Workspace::from(console.registry.get(id).await?);
    let content = html! {
        h1 { "Delete " (w.name) "?" }
        div.panel {
            p { "The workspace " strong { (w.name) } " (" span.mono { (w.id) } ") is deleted: its instance is removed, its secrets and history are gone. This cannot be undone." }
            form.inline #confirm-delete method="post" action={ "/ui/workspaces/" (w.id) "/delete" } {
                (csrf_field(&operator))
                button.danger.solid type="submit" { "Delete " (w.name) }
            }
            " "
            a.button href={ "/ui/workspaces/" (w.id) } { "Cancel" }
        }
    };
    let chrome = Chrome {
        title: format!("Delete {}", w.name),
        section: Section::Workspaces,
        flash: console.sessions.take_flash(&operator),
        operator: &operator,
        live: None,
    };
    Ok(super::html(StatusCode::OK, layout(chrome, content)))
}
