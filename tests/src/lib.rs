//! End-to-end tests: the real `steward` binary on port 0 in a private temporary directory,
//! driven over HTTP only.
//!
//! The harness itself — the daemon launcher, the JSON client, `eventually`, the create-body
//! builder — is `steward-testkit`, shared with the benches and re-exported here. This crate
//! adds what only the end-to-end tests need: their base configuration, checkers for the
//! lifecycle invariants a user can observe through the event log, and Docker helpers.
//!
//! What it must not do: reach into the daemon's crates, its database or its internals. Every
//! assertion is made through the public HTTP API (plus the files the daemon documents: the
//! listen address, the admin token and the log).
//!
//! Running: `cargo build -p steward && cargo test -p steward-tests` (set `STEWARD_BIN` to test
//! another binary). Each test gets its own temporary directory and port, so tests run in
//! parallel; when a test panics, the tail of its daemon's log is printed.

pub mod docker;

use std::fs;

use serde_json::Value;
pub use steward_testkit::{
    eventually, generation_of, id_of, is_settled, of_type, seq_of, steward_bin, summarize, Api,
    CreateBody, Daemon, EventStream, Launch, Method, Reply, StreamEvent, Wait, Workdir,
    DEFAULT_WAIT,
};

/// The configuration most tests start from: the sim provider with the given start delay, no
/// settle window, short backoff. Tests with special needs write their own TOML.
pub fn sim_config(start_delay_ms: u64) -> String {
    format!(
        r#"default_provider = "sim"

[providers.sim]
start_delay = "{start_delay_ms}ms"
stop_delay = "10ms"
boot_pending = "0s"
fail_rate = 0.0

[restart]
debounce_window = "60s"
settle_window = "0s"
provision_timeout = "30s"
stop_timeout = "10s"
boot_timeout = "30s"

[backoff]
initial = "100ms"
max = "2s"

[http]
max_body_bytes = 65536
"#
    )
}

/// Asserts that the event log never shows two provisioning cycles at once.
///
/// Also checks the log is ordered by strictly increasing `seq`, that every
/// `provision_started` is closed by a `provision_succeeded`/`provision_failed` of the same
/// generation before the next `provision_started`, and that cycle generations strictly
/// increase.
#[track_caller]
pub fn assert_no_overlapping_cycles(events: &[Value]) {
    let mut last_seq = 0;
    let mut open: Option<u64> = None;
    let mut last_started: Option<u64> = None;
    for event in events {
        let seq = seq_of(event);
        assert!(
            seq > last_seq,
            "event seq not strictly increasing at #{seq}: {}",
            summarize(events)
        );
        last_seq = seq;
        match event["type"].as_str() {
            Some("provision_started") => {
                let generation = generation_of(event);
                if let Some(open) = open {
                    panic!(
                        "overlapping cycles: provision_started g{generation} (#{seq}) while \
                         g{open} was still in flight: {}",
                        summarize(events)
                    );
                }
                if let Some(previous) = last_started {
                    assert!(
                        generation > previous,
                        "cycle generations not increasing: g{generation} (#{seq}) after \
                         g{previous}: {}",
                        summarize(events)
                    );
                }
                open = Some(generation);
                last_started = Some(generation);
            }
            Some("provision_succeeded") | Some("provision_failed") => {
                let generation = generation_of(event);
                if open == Some(generation) {
                    open = None;
                } else {
                    panic!(
                        "{} g{generation} (#{seq}) does not close the open cycle {open:?}: {}",
                        event["type"],
                        summarize(events)
                    );
                }
            }
            _ => {}
        }
    }
}

/// Asserts a workspace's log has no `failed` or `provision_failed` event.
#[track_caller]
pub fn assert_never_failed(events: &[Value]) {
    let failures: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "failed" || e["type"] == "provision_failed")
        .collect();
    assert!(
        failures.is_empty(),
        "unexpected failure events {failures:?} in {}",
        summarize(events)
    );
}

/// The value of the Prometheus sample `name{labels}` in `/metrics` text (0 if absent).
/// `labels` are `key="value"` pairs that must all appear in the sample's label set.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Pids of the live (non-zombie) processes that run as an instance of workspace `id`: those
/// whose environment holds `STEWARD_WORKSPACE_ID=<id>` (process provider instances).
pub fn instance_processes(id: &str) -> Vec<u32> {
    let needle = format!("STEWARD_WORKSPACE_ID={id}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let live = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat[stat.rfind(')')? + 1..]
                        .split_whitespace()
                        .next()?
                        .to_owned();
                    Some(state != "Z" && state != "X")
                })
                .unwrap_or(false);
            live && fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(kinds: &[(&str, u64)]) -> Vec<Value> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, (kind, generation))| {
                json!({ "seq": i + 1, "type": kind, "generation": generation, "at": "t" })
            })
            .collect()
    }

    #[test]
    fn sequential_cycles_pass() {
        assert_no_overlapping_cycles(&log(&[
            ("created", 0),
            ("provision_started", 1),
            ("restart_coalesced", 1),
            ("provision_succeeded", 1),
            ("provision_started", 2),
            ("provision_failed", 2),
            ("provision_started", 3),
        ]));
    }

    #[test]
    #[should_panic(expected = "overlapping cycles")]
    fn a_second_start_before_the_first_ends_fails() {
        assert_no_overlapping_cycles(&log(&[
            ("provision_started", 1),
            ("provision_started", 2),
            ("provision_succeeded", 1),
        ]));
    }

    #[test]
    #[should_panic(expected = "does not close")]
    fn a_result_of_another_generation_fails() {
        assert_no_overlapping_cycles(&log(&[
            ("provision_started", 2),
            ("provision_succeeded", 1),
        ]));
    }

    #[test]
    #[should_panic(expected = "not increasing")]
    fn a_reused_generation_fails() {
        assert_no_overlapping_cycles(&log(&[
            ("provision_started", 2),
            ("provision_succeeded", 2),
            ("provision_started", 2),
        ]));
    }
}
