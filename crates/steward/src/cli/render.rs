//! Human output of the CLI: aligned tables for lists, `key: value` blocks for one workspace
//! or actor, one line per event, one-line confirmations for intents. Pure formatting into a
//! writer; it never talks to the daemon and never sees a secret value (the API does not
//! return them).
//!
//! Every string that came from the daemon is passed through [`clean`], so a workspace name
//! or a failure reason cannot smuggle terminal escape sequences or break the columns.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Write};

use super::wire::{Actor, Event, IntentAnswer, Workspace};

/// Placeholder for an absent value.
const NONE: &str = "-";

/// Prints `value` as indented JSON (what `--json` shows).
pub fn json(out: &mut impl Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Prints `value` as compact JSON on one line (`--json --follow`: one event per line).
pub fn json_line(out: &mut impl Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// The workspace table of `ws list`.
pub fn workspace_table(out: &mut impl Write, workspaces: &[Workspace]) -> io::Result<()> {
    if workspaces.is_empty() {
        return writeln!(out, "no workspaces");
    }
    let mut table = Table::new(&[
        "ID", "NAME", "PROVIDER", "PHASE", "GEN", "OBSERVED", "PENDING",
    ]);
    for w in workspaces {
        table.row(vec![
            w.id.clone(),
            w.name.clone(),
            w.provider.clone(),
            phase(w),
            w.generation.to_string(),
            w.observed_generation.to_string(),
            pending(w.restart.pending, &w.restart.pending_causes),
        ]);
    }
    table.write(out)
}

/// The `key: value` block of `ws get`.
pub fn workspace(out: &mut impl Write, w: &Workspace) -> io::Result<()> {
    let restart = match (w.restart.in_flight, w.restart.pending) {
        (false, false) => "idle".to_owned(),
        (true, false) => "cycle in flight".to_owned(),
        (in_flight, true) => format!(
            "{}pending {}",
            if in_flight { "cycle in flight, " } else { "" },
            pending(true, &w.restart.pending_causes)
        ),
    };
    let env = if w.env.is_empty() {
        NONE.to_owned()
    } else {
        w.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let failure = w.failure.as_ref().map_or(NONE.to_owned(), |f| {
        format!("{} (generation {})", f.reason, f.generation)
    });
    block(
        out,
        &[
            ("id", w.id.clone()),
            ("name", w.name.clone()),
            ("provider", w.provider.clone()),
            ("phase", phase(w)),
            ("generation", w.generation.to_string()),
            ("observed generation", w.observed_generation.to_string()),
            ("restart", restart),
            ("ready when", or_none(w.ready_when.as_deref())),
            ("image", or_none(w.image.as_deref())),
            (
                "command",
                w.command.as_deref().map_or(NONE.to_owned(), command_line),
            ),
            ("model", or_none(w.model.as_deref())),
            ("env", env),
            ("secrets", list_or_none(&w.secret_keys)),
            ("agent url", or_none(w.agent.url.as_deref())),
            (
                "last heartbeat",
                or_none(w.agent.last_heartbeat_at.as_deref()),
            ),
            ("health", health(w)),
            ("failure", failure),
            ("created", w.created_at.clone()),
            ("updated", w.updated_at.clone()),
        ],
    )
}

/// The phase, and `(unhealthy)` after it while the probes see the instance of a `starting` or
/// `running` workspace dead (before a health restart, or while one is held back by the
/// debounce window).
fn phase(w: &Workspace) -> String {
    let up = matches!(w.phase.as_str(), "running" | "starting");
    if up && w.health.last_report.as_deref() == Some("dead") {
        format!("{} (unhealthy)", w.phase)
    } else {
        w.phase.clone()
    }
}

/// The last probe report, e.g. `dead at 2025-… (2 in a row)`.
fn health(w: &Workspace) -> String {
    let h = &w.health;
    match (&h.last_report, &h.last_report_at) {
        (Some(report), at) => {
            let at = at
                .as_deref()
                .map(|at| format!(" at {at}"))
                .unwrap_or_default();
            match h.dead_in_a_row {
                0 => format!("{report}{at}"),
                n => format!("{report}{at} ({n} in a row)"),
            }
        }
        (None, _) => NONE.to_owned(),
    }
}

/// The one-line confirmation of `ws create`; `replayed` when an idempotency key returned a
/// workspace created earlier.
pub fn created(out: &mut impl Write, w: &Workspace, replayed: bool) -> io::Result<()> {
    let verb = if replayed {
        "already created (same idempotency key)"
    } else {
        "created"
    };
    writeln!(
        out,
        "workspace {} {verb}: name {}, provider {}, phase {}, generation {}",
        clean(&w.id),
        clean(&w.name),
        clean(&w.provider),
        clean(&w.phase),
        w.generation
    )
}

/// What an intent was, for its confirmation line.
pub enum Intent<'a> {
    /// `ws restart`.
    Restart,
    /// `ws stop`.
    Stop,
    /// `ws start`.
    Start,
    /// `ws delete`.
    Delete,
    /// `ws secret set` (the key only).
    SecretSet(&'a str),
    /// `ws secret rm`.
    SecretRemoved(&'a str),
    /// `ws model set`.
    ModelSet(&'a str),
}

/// The one-line confirmation of an intent, e.g. `restart started: generation 5`.
pub fn intent(out: &mut impl Write, intent: &Intent<'_>, answer: &IntentAnswer) -> io::Result<()> {
    let g = answer.generation;
    let outcome = clean(&answer.outcome);
    let line = match intent {
        Intent::Restart => format!("restart {outcome}: generation {g}"),
        Intent::Stop => format!("stop {outcome}: generation {g}"),
        Intent::Start if answer.outcome == "started" => {
            format!("start accepted, cycle started: generation {g}")
        }
        Intent::Start => format!("start {outcome}: generation {g}"),
        Intent::Delete if answer.outcome == "deleted" => {
            "deleted: the workspace, its instance and secrets are gone".to_owned()
        }
        Intent::Delete => {
            format!("delete {outcome}: the workspace, its instance and secrets are being removed")
        }
        Intent::SecretSet(key) => format!("secret {} set; {}", clean(key), effect(answer)),
        Intent::SecretRemoved(key) => format!("secret {} removed; {}", clean(key), effect(answer)),
        Intent::ModelSet(model) => format!("model set to {}; {}", clean(model), effect(answer)),
    };
    writeln!(out, "{line}")
}

/// What a configuration change caused.
fn effect(answer: &IntentAnswer) -> String {
    let g = answer.generation;
    match answer.outcome.as_str() {
        "started" => format!("restart started: generation {g}"),
        "coalesced" => format!("restart coalesced: generation {g}"),
        "deferred" => "the workspace is stopped: applies at its next start".to_owned(),
        other => format!("{}: generation {g}", clean(other)),
    }
}

/// The keys of `ws secret list`, one per line.
pub fn secret_keys(out: &mut impl Write, keys: &[String]) -> io::Result<()> {
    if keys.is_empty() {
        return writeln!(out, "no secrets");
    }
    for key in keys {
        writeln!(out, "{}", clean(key))?;
    }
    Ok(())
}

/// One event on one line: `seq  at  type  g<generation>  key=value...`.
pub fn event(out: &mut impl Write, e: &Event) -> io::Result<()> {
    let details = e
        .details
        .iter()
        .map(|(k, v)| format!("{}={}", clean(k), detail(v)))
        .collect::<Vec<_>>()
        .join(" ");
    let line = format!(
        "{:>4}  {}  {:<20}  g{:<3}  {details}",
        e.seq,
        clean(&e.at),
        clean(&e.kind),
        e.generation
    );
    writeln!(out, "{}", line.trim_end())
}

/// The actor table of `admin actors`.
pub fn actor_table(out: &mut impl Write, actors: &[Actor]) -> io::Result<()> {
    if actors.is_empty() {
        return writeln!(out, "no live actors");
    }
    let mut table = Table::new(&[
        "ID",
        "PHASE",
        "GEN",
        "OBSERVED",
        "CYCLE",
        "PENDING",
        "HEALTH_FAILS",
        "MAILBOX",
        "CYCLES",
        "COALESCED",
        "DROPPED",
        "STALE",
    ]);
    for a in actors {
        table.row(vec![
            a.id.clone(),
            a.phase.clone(),
            a.generation.to_string(),
            a.observed_generation.to_string(),
            a.cycle.as_ref().map_or(NONE.to_owned(), |c| {
                format!("g{} {}", c.generation, c.causes.join(","))
            }),
            pending(a.pending, &a.pending_causes),
            a.health_failures.to_string(),
            a.mailbox_len.to_string(),
            a.counters.cycles.to_string(),
            a.counters.coalesced.to_string(),
            dropped_total(&a.counters.dropped).to_string(),
            a.counters.stale_results.to_string(),
        ]);
    }
    table.write(out)
}

/// The `key: value` block of `admin actors ID`, followed by its recent transitions.
pub fn actor(out: &mut impl Write, a: &Actor) -> io::Result<()> {
    let cycle = a.cycle.as_ref().map_or(NONE.to_owned(), |c| {
        format!(
            "generation {} ({}) since {}",
            c.generation,
            c.causes.join(", "),
            c.started_at
        )
    });
    let operation = a.operation.as_ref().map_or(NONE.to_owned(), |o| {
        format!(
            "{} generation {} since {}, deadline {}",
            o.step, o.generation, o.started_at, o.deadline
        )
    });
    let probe = a.last_probe.as_ref().map_or(NONE.to_owned(), |p| {
        format!("{} (generation {}) at {}", p.report, p.generation, p.at)
    });
    let backoff = match &a.backoff.retry_at {
        Some(at) => format!("attempt {}, retry at {at}", a.backoff.attempt),
        None => format!("attempt {}", a.backoff.attempt),
    };
    let c = &a.counters;
    let counters = format!(
        "cycles {}, failed {}, coalesced {}, stale results {}",
        c.cycles, c.cycles_failed, c.coalesced, c.stale_results
    );
    let dropped: Vec<String> = c
        .dropped
        .iter()
        .flat_map(|(cause, reasons)| {
            reasons
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(move |(reason, n)| format!("{cause}/{reason} {n}"))
        })
        .collect();
    block(
        out,
        &[
            ("id", a.id.clone()),
            ("phase", a.phase.clone()),
            ("generation", a.generation.to_string()),
            ("observed generation", a.observed_generation.to_string()),
            ("cycle", cycle),
            ("operation", operation),
            ("pending", pending(a.pending, &a.pending_causes)),
            ("debounce until", or_none(a.debounce_until.as_deref())),
            ("settle until", or_none(a.settle_until.as_deref())),
            ("health failures", a.health_failures.to_string()),
            ("last probe", probe),
            ("backoff", backoff),
            ("counters", counters),
            ("dropped", list_or_none(&dropped)),
            ("mailbox", a.mailbox_len.to_string()),
            ("last error", or_none(a.last_error.as_deref())),
            ("actor restarts", a.restarts.to_string()),
        ],
    )?;
    if a.transitions.is_empty() {
        return Ok(());
    }
    writeln!(out, "transitions:")?;
    for t in &a.transitions {
        writeln!(
            out,
            "  {}  {} -> {}",
            clean(&t.at),
            clean(&t.from),
            clean(&t.to)
        )?;
    }
    Ok(())
}

/// `-` when nothing is pending, else the causes (`yes` if the daemon gave none).
fn pending(pending: bool, causes: &[String]) -> String {
    match (pending, causes.is_empty()) {
        (false, _) => NONE.to_owned(),
        (true, true) => "yes".to_owned(),
        (true, false) => causes.join(","),
    }
}

fn dropped_total(dropped: &BTreeMap<String, BTreeMap<String, u64>>) -> u64 {
    dropped.values().flat_map(BTreeMap::values).sum()
}

fn or_none(value: Option<&str>) -> String {
    value.unwrap_or(NONE).to_owned()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        NONE.to_owned()
    } else {
        items.join(", ")
    }
}

/// A command line as a shell user would type it: arguments with spaces or quotes are
/// single-quoted (for reading; it is never run through a shell).
fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An event detail value: strings bare (quoted if they contain spaces), lists joined with
/// commas, anything else as JSON.
fn detail(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() || s.contains(char::is_whitespace) => {
            clean(&format!("{s:?}"))
        }
        Value::String(s) => clean(s),
        Value::Array(items) => items.iter().map(detail).collect::<Vec<_>>().join(","),
        other => clean(&other.to_string()),
    }
}

/// `key: value` lines with the values aligned.
fn block(out: &mut impl Write, rows: &[(&str, String)]) -> io::Result<()> {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in rows {
        writeln!(out, "{:<width$} {}", format!("{key}:"), clean(value))?;
    }
    Ok(())
}

/// Replaces control characters (escape sequences, newlines, tabs) with their escaped form.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Left-aligned columns separated by two spaces, with no trailing spaces.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).expect("writing to memory cannot fail");
        String::from_utf8(out).expect("output is UTF-8")
    }

    fn doc(id: &str, name: &str, pending: bool) -> Workspace {
        serde_json::from_value(json!({
            "id": id, "name": name, "provider": "sim", "phase": "running",
            "generation": 12, "observed_generation": 3,
            "restart": { "in_flight": pending, "pending": pending,
                         "pending_causes": if pending { vec!["manual", "config"] } else { vec![] } },
            "agent": { "url": null, "last_heartbeat_at": null },
            "failure": null, "secret_keys": ["B", "A"], "command": ["sh", "-c", "echo 'hi' there"],
            "env": { "X": "1" }, "created_at": "t0", "updated_at": "t1", "some_new_field": 1,
        }))
        .expect("a workspace document")
    }

    #[test]
    fn the_workspace_table_aligns_columns_without_trailing_spaces() {
        let text = render(|out| {
            workspace_table(
                out,
                &[
                    doc("id-1", "short", false),
                    doc("id-2", "a-longer-name", true),
                ],
            )
        });
        assert_eq!(
            text,
            "ID    NAME           PROVIDER  PHASE    GEN  OBSERVED  PENDING\n\
             id-1  short          sim       running  12   3         -\n\
             id-2  a-longer-name  sim       running  12   3         manual,config\n"
        );
    }

    #[test]
    fn a_running_workspace_the_probes_see_dead_shows_as_unhealthy() {
        let mut dead = doc("id-1", "n", false);
        dead.health.last_report = Some("dead".into());
        dead.health.last_report_at = Some("t2".into());
        dead.health.dead_in_a_row = 1;
        let table = render(|out| workspace_table(out, &[dead]));
        assert!(table.contains("  running (unhealthy)  "), "{table}");
        let mut dead = doc("id-1", "n", false);
        dead.health.last_report = Some("dead".into());
        let block = render(|out| workspace(out, &dead));
        assert!(
            block.contains("\nphase:               running (unhealthy)\n"),
            "{block}"
        );
        let mut alive = doc("id-1", "n", false);
        alive.health.last_report = Some("alive".into());
        alive.health.last_report_at = Some("t3".into());
        let block = render(|out| workspace(out, &alive));
        assert!(
            block.contains("\nphase:               running\n"),
            "{block}"
        );
        assert!(
            block.contains("\nhealth:              alive at t3\n"),
            "{block}"
        );
        let mut stopped = doc("id-1", "n", false);
        stopped.phase = "stopped".into();
        stopped.health.last_report = Some("dead".into());
        let table = render(|out| workspace_table(out, &[stopped]));
        assert!(!table.contains("unhealthy"), "{table}");
    }

    #[test]
    fn names_cannot_inject_escape_sequences_or_newlines() {
        let text = render(|out| workspace_table(out, &[doc("id", "evil\u{1b}[2J\nname", false)]));
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn the_workspace_block_aligns_values_and_quotes_the_command() {
        let text = render(|out| workspace(out, &doc("id-1", "n", true)));
        assert!(text.contains("\nphase:               running\n"), "{text}");
        assert!(
            text.contains("command:             sh -c 'echo '\\''hi'\\'' there'\n"),
            "{text}"
        );
        assert!(
            text.contains("restart:             cycle in flight, pending manual,config\n"),
            "{text}"
        );
        assert!(text.contains("secrets:             B, A\n"), "{text}");
    }

    #[test]
    fn intents_confirm_in_one_line() {
        let answer = |outcome: &str, generation| IntentAnswer {
            outcome: outcome.into(),
            generation,
        };
        let restart = render(|out| intent(out, &Intent::Restart, &answer("started", 5)));
        assert_eq!(restart, "restart started: generation 5\n");
        let coalesced = render(|out| intent(out, &Intent::Restart, &answer("coalesced", 6)));
        assert_eq!(coalesced, "restart coalesced: generation 6\n");
        let secret = render(|out| intent(out, &Intent::SecretSet("K"), &answer("deferred", 2)));
        assert_eq!(
            secret,
            "secret K set; the workspace is stopped: applies at its next start\n"
        );
    }

    #[test]
    fn an_event_is_one_line_with_its_details() {
        let e: Event = serde_json::from_value(json!({
            "seq": 7, "type": "provision_started", "generation": 3, "at": "2025-01-01T00:00:00.000Z",
            "causes": ["manual", "config"], "previous_generation": 2,
        }))
        .expect("an event");
        let text = render(|out| event(out, &e));
        assert_eq!(
            text,
            "   7  2025-01-01T00:00:00.000Z  provision_started     g3    \
             causes=manual,config previous_generation=2\n"
        );
        let e: Event = serde_json::from_value(json!({
            "seq": 8, "type": "provision_failed", "generation": 3, "at": "t",
            "reason": "sim start failed",
        }))
        .expect("an event");
        let text = render(|out| event(out, &e));
        assert!(text.ends_with("reason=\"sim start failed\"\n"), "{text}");
    }
}
