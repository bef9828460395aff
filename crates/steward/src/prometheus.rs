//! The daemon's Prometheus metrics: the recorder behind `/metrics`, one `# HELP` line for
//! every metric the crates record ([`DESCRIPTIONS`]), and two of the daemon itself —
//! `steward_build_info` (its version) and `process_start_time_seconds` (when it started, so
//! a restart shows as a step and uptime is `time() - process_start_time_seconds`).
//!
//! A metric recorded anywhere in the workspace must have its line in [`DESCRIPTIONS`]; a test
//! reads the sources and fails otherwise.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kind of a metric, for its description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the daemon records: name, kind, help text (with its unit and labels).
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        "steward_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route pattern and status code.",
    ),
    (
        "steward_restart_requests_total",
        Kind::Counter,
        "Restarts requested, by cause (manual, config, health, recovery, switch).",
    ),
    (
        "steward_restart_cycles_total",
        Kind::Counter,
        "Provisioning cycles ended, by result (succeeded, failed).",
    ),
    (
        "steward_restart_coalesced_total",
        Kind::Counter,
        "Restart requests folded into a cycle already pending.",
    ),
    (
        "steward_restart_dropped_total",
        Kind::Counter,
        "Health restarts dropped, by cause and reason (cycle in flight, debounce, settle, stale generation, pending, not running).",
    ),
    (
        "steward_stale_results_total",
        Kind::Counter,
        "Completions and timers of superseded operations or generations, ignored.",
    ),
    (
        "steward_switches_total",
        Kind::Counter,
        "Provider switches ended, by result (completed, rolled_back).",
    ),
    (
        "steward_cycle_duration_seconds",
        Kind::Histogram,
        "Duration of provisioning cycles, from their start to their end, in seconds.",
    ),
    (
        "steward_workspaces",
        Kind::Gauge,
        "Workspaces run by this daemon, by phase.",
    ),
    (
        "steward_provider_operations_total",
        Kind::Counter,
        "Provider operations finished, by provider, step and result (ok, error).",
    ),
    (
        "steward_agent_rejected_total",
        Kind::Counter,
        "Agent calls refused (a token of another generation or workspace, or a wrong one).",
    ),
    (
        "steward_probe_errors_total",
        Kind::Counter,
        "Probe rounds that could not list a provider's instances, by provider.",
    ),
    (
        "steward_probe_rounds_skipped_total",
        Kind::Counter,
        "Probe rounds skipped because the previous round of that provider was still running, by provider.",
    ),
    (
        "steward_probe_reports_skipped_total",
        Kind::Counter,
        "Probe reports not delivered because the workspace's mailbox was full.",
    ),
    (
        "steward_store_commit_seconds",
        Kind::Histogram,
        "Whole time of a commit in the store, from its queue to its answer, in seconds.",
    ),
    (
        "steward_store_queue_seconds",
        Kind::Histogram,
        "Time a commit waited in the store writer's queue, in seconds.",
    ),
    (
        "steward_store_batch_seconds",
        Kind::Histogram,
        "Time the store writer took for one batch of commits, in seconds.",
    ),
    (
        "steward_store_batch_size",
        Kind::Histogram,
        "Commits grouped into one batch (one transaction).",
    ),
    (
        "steward_store_sync_seconds",
        Kind::Histogram,
        "Time of one sync of the SQLite write-ahead log to disk, in seconds.",
    ),
    (
        "steward_store_log_frames",
        Kind::Gauge,
        "Frames in the SQLite write-ahead log at its last checkpoint.",
    ),
    (
        "steward_store_checkpoint_catch_up_seconds",
        Kind::Histogram,
        "Time of a checkpoint that copied the write-ahead log back into the database, in seconds.",
    ),
    (
        "steward_build_info",
        Kind::Gauge,
        "Always 1; its version label is the daemon's version.",
    ),
    (
        "process_start_time_seconds",
        Kind::Gauge,
        "When the daemon started, in seconds since the Unix epoch.",
    ),
];

/// Installs the recorder, describes every metric, and sets the daemon's own.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("steward_cycle_duration_seconds".into()),
            &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ],
        )
        .context("metric buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe();
    metrics::gauge!("steward_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!("process_start_time_seconds").set(started.as_secs_f64());
    // The histograms' samples are folded into their summaries every few seconds, on a thread
    // of its own: under load that is tens of thousands of samples at once (1-14 ms measured at
    // 5 000 restarts/s), which on the daemon's main thread stalled the store's writer.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("steward-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .context("cannot start the metrics thread")?;
    Ok(handle)
}

/// Gives the installed recorder the help text of every metric.
fn describe() {
    for (name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The metric names recorded in `text` (a Rust source): the first string literal after
    /// each `counter!(`, `gauge!(` and `histogram!(`.
    fn recorded(text: &str, names: &mut BTreeSet<(String, &'static str)>) {
        for (macro_, kind) in [
            ("counter!(", "counter"),
            ("gauge!(", "gauge"),
            ("histogram!(", "histogram"),
        ] {
            for (at, _) in text.match_indices(macro_) {
                let rest = &text[at + macro_.len()..];
                let Some(open) = rest.find('"') else { continue };
                if !rest[..open].trim().is_empty() {
                    continue; // a name that is not a literal: not a recording site of ours
                }
                let name = &rest[open + 1..];
                if let Some(close) = name.find('"') {
                    names.insert((name[..close].to_owned(), kind));
                }
            }
        }
    }

    fn sources(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("read a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }

    #[test]
    fn every_metric_recorded_in_the_crates_is_described_with_its_kind() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for krate in std::fs::read_dir(&crates).expect("read crates/").flatten() {
            let src = krate.path().join("src");
            if src.is_dir() && krate.file_name() != "steward-bench" {
                sources(&src, &mut files);
            }
        }
        let mut names = BTreeSet::new();
        for file in files.iter().filter(|f| !f.ends_with("prometheus.rs")) {
            recorded(
                &std::fs::read_to_string(file).expect("read a source"),
                &mut names,
            );
        }
        assert!(names.len() >= 15, "found too few metrics: {names:?}");
        let described: BTreeSet<(String, &'static str)> = DESCRIPTIONS
            .iter()
            .map(|(name, kind, _)| {
                let kind = match kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                ((*name).to_owned(), kind)
            })
            .collect();
        let missing: Vec<_> = names.difference(&described).collect();
        assert!(
            missing.is_empty(),
            "recorded but not described in DESCRIPTIONS: {missing:?}"
        );
        assert!(DESCRIPTIONS.iter().all(|(_, _, help)| !help.is_empty()));
    }
}
