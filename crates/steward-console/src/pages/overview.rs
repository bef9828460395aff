//! The overview: the figures of `/metrics` as a person reads them — workspaces by phase,
//! restarts and cycles per sampling interval over the last minutes, dropped health restarts
//! by reason — from the ring of samples. The live stream re-renders it at each new sample.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use steward_domain::Phase;

use super::{layout, Chrome, Section};
use crate::charts::{bars, columns, Stack};
use crate::samples::{Sample, Samples};
use crate::session::Operator;
use crate::Console;

/// The element id the live stream replaces.
pub const BODY: &str = "overview-body";

/// `GET /ui/overview`.
pub async fn page(console: web::Data<Console>, operator: Operator) -> HttpResponse {
    let census = if console.samples.enabled() {
        None
    } else {
        Some(console.registry.census().await)
    };
    let content = html! {
        h1 { "Overview" }
        (body(&console.samples, census.as_ref()))
    };
    let chrome = Chrome {
        title: "Overview".into(),
        section: Section::Overview,
        flash: console.sessions.take_flash(&operator),
        operator: &operator,
        live: console
            .samples
            .enabled()
            .then(|| "/ui/live?overview=1".into()),
    };
    super::html(StatusCode::OK, layout(chrome, content))
}

fn ago(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 120 {
        format!("−{}m", secs / 60)
    } else {
        format!("−{secs}s")
    }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

/// The overview's content (replaced as a whole at each new sample). `census` stands in for
/// the samples when the daemon records no metrics.
pub fn body(ring: &Samples, census: Option<&BTreeMap<&'static str, usize>>) -> Markup {
    let samples = &ring.snapshot();
    let interval = ring.interval();
    let slots = ring.capacity();
    let latest = samples.last();
    let phases: Vec<(String, f64)> = match (latest, census) {
        (Some(s), _) => Phase::ALL
            .iter()
            .filter_map(|p| {
                s.phases
                    .get(p.as_str())
                    .map(|n| (p.as_str().to_owned(), *n))
            })
            .filter(|(p, n)| *n > 0.0 || p == "running")
            .collect(),
        (None, Some(c)) => c
            .iter()
            .map(|(p, n)| ((*p).to_owned(), *n as f64))
            .collect(),
        (None, None) => Vec::new(),
    };
    let total: f64 = phases.iter().map(|(_, n)| n).sum();
    let pairs: Vec<(&Sample, &Sample)> = samples.iter().zip(samples.iter().skip(1)).collect();
    let window = match (
        samples.first().and_then(|s| s.at),
        latest.and_then(|s| s.at),
    ) {
        (Some(first), Some(last)) => last.duration_since(first).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let when = |s: &Sample| {
        s.at.and_then(|at| SystemTime::now().duration_since(at).ok())
            .map(ago)
            .unwrap_or_default()
    };
    let phase_stacks: Vec<Stack> = samples
        .iter()
        .map(|s| Stack {
            parts: Phase::ALL
                .iter()
                .map(|p| {
                    (
                        format!("p-{}", p.as_str()),
                        s.phases.get(p.as_str()).copied().unwrap_or(0.0),
                    )
                })
                .collect(),
            title: format!(
                "{}: {}",
                when(s),
                s.phases
                    .iter()
                    .filter(|(_, n)| **n > 0.0)
                    .map(|(p, n)| format!("{p} {}", count(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    let restart_stacks: Vec<Stack> = pairs
        .iter()
        .map(|(a, b)| {
            let requests = b.restarts - a.restarts;
            let coalesced = b.coalesced - a.coalesced;
            Stack {
                parts: vec![("bar-restarts".into(), requests)],
                title: format!(
                    "{}: {} restart requests ({} folded into a pending cycle)",
                    when(b),
                    count(requests),
                    count(coalesced)
                ),
            }
        })
        .collect();
    let cycle_stacks: Vec<Stack> = pairs
        .iter()
        .map(|(a, b)| {
            let ok = b.cycles_succeeded - a.cycles_succeeded;
            let failed = b.cycles_failed - a.cycles_failed;
            Stack {
                parts: vec![("bar-ok".into(), ok), ("bar-failed".into(), failed)],
                title: format!(
                    "{}: {} cycles succeeded, {} failed",
                    when(b),
                    count(ok),
                    count(failed)
                ),
            }
        })
        .collect();
    let dropped_total: Vec<(String, f64, String)> = latest
        .map(|s| {
            s.dropped
                .iter()
                .map(|(r, n)| (r.clone(), *n, "bar-dropped".to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let dropped_window: BTreeMap<&str, f64> = match (samples.first(), latest) {
        (Some(first), Some(last)) => last
            .dropped
            .iter()
            .map(|(r, n)| (r.as_str(), n - first.dropped.get(r).copied().unwrap_or(0.0)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let left = ago(interval * u32::try_from(slots).unwrap_or(u32::MAX));
    let every = humantime::format_duration(interval).to_string();
    html! {
        div #(BODY) {
            section.panel {
                div.stats {
                    div { strong.big { (count(total)) } span { "workspaces" } }
                    @for (p, n) in &phases {
                        div { strong.big { (count(*n)) } span { (p) } }
                    }
                }
                @if samples.is_empty() && census.is_none() {
                    p.muted { "No sample yet." }
                }
                @if census.is_some() {
                    p.muted { "This daemon records no metrics: only the current counts are shown." }
                }
            }
            @if !samples.is_empty() {
                div.grid {
                    section.panel #chart-phases {
                        h2 { "Workspaces by phase" }
                        (columns("Workspaces by phase over time", &phase_stacks, slots, &left, "now"))
                        div.legend {
                            @for p in Phase::ALL.iter().filter(|p| **p != Phase::Deleted) {
                                span { span class={ "sw p-" (p.as_str()) } {} (p.as_str()) }
                            }
                        }
                    }
                    section.panel #chart-restarts {
                        h2 { "Restart requests per " (every) }
                        (columns("Restart requests per interval", &restart_stacks, slots - 1, &left, "now"))
                        p.muted {
                            (count(latest.map_or(0.0, |s| s.restarts))) " since the daemon started, "
                            (count(latest.map_or(0.0, |s| s.coalesced))) " of them folded into a pending cycle"
                        }
                    }
                    section.panel #chart-cycles {
                        h2 { "Cycles per " (every) }
                        (columns("Cycles per interval", &cycle_stacks, slots - 1, &left, "now"))
                        div.legend {
                            span { span.sw.bar-ok {} "succeeded" }
                            span { span.sw.bar-failed {} "failed" }
                        }
                        p.muted {
                            (count(latest.map_or(0.0, |s| s.cycles_succeeded))) " succeeded and "
                            (count(latest.map_or(0.0, |s| s.cycles_failed))) " failed since the daemon started; "
                            (count(latest.map_or(0.0, |s| s.stale))) " stale provider results ignored"
                        }
                    }
                    section.panel #chart-dropped {
                        h2 { "Dropped health restarts by reason" }
                        @if dropped_total.is_empty() {
                            p.muted { "None since the daemon started." }
                        } @else {
                            (bars("Dropped health restarts by reason, since the daemon started", &dropped_total))
                            p.muted {
                                "In the last " (humantime::format_duration(Duration::from_secs(window.as_secs()))) ": "
                                @for (i, (r, n)) in dropped_window.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (r) " " (count(*n))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
