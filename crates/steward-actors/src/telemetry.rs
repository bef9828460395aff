//! Prometheus metrics derived from what the machines record. Their names and labels are part
//! of the daemon's contract: dashboards read them at `GET /metrics`.

use std::sync::OnceLock;
use steward_domain::{Cause, Phase, Record, RecordKind, Timestamp};

/// Counts one record.
pub fn count(record: &Record, cycle_started_at: Option<Timestamp>, now: Timestamp) {
    match &record.kind {
        RecordKind::RestartRequested { cause } | RecordKind::RestartDeferred { cause } => {
            metrics::counter!("steward_restart_requests_total", "cause" => cause.as_str())
                .increment(1);
        }
        RecordKind::RestartCoalesced { cause } => coalesced(*cause),
        RecordKind::RestartDropped { cause, reason } => {
            metrics::counter!(
                "steward_restart_dropped_total",
                "cause" => cause.as_str(),
                "reason" => reason.as_str()
            )
            .increment(1);
        }
        RecordKind::ProvisionSucceeded | RecordKind::ProvisionFailed { .. } => {
            let result = if matches!(record.kind, RecordKind::ProvisionSucceeded) {
                "succeeded"
            } else {
                "failed"
            };
            metrics::counter!("steward_restart_cycles_total", "result" => result).increment(1);
            if let Some(started) = cycle_started_at {
                metrics::histogram!("steward_cycle_duration_seconds")
                    .record(now.since(started).as_secs_f64());
            }
        }
        RecordKind::StaleResultIgnored { .. } => {
            metrics::counter!("steward_stale_results_total").increment(1);
        }
        RecordKind::SwitchCompleted { .. } | RecordKind::SwitchRolledBack { .. } => {
            let result = if matches!(record.kind, RecordKind::SwitchCompleted { .. }) {
                "completed"
            } else {
                "rolled_back"
            };
            metrics::counter!("steward_switches_total", "result" => result).increment(1);
        }
        _ => {}
    }
}

/// Counts one restart folded into the pending cycle. This is the hot path of a restart storm:
/// the counters are looked up once (handles registered with the recorder installed at
/// start-up), not per request.
pub fn coalesced(cause: Cause) {
    struct Handles {
        requests: Vec<(Cause, metrics::Counter)>,
        coalesced: metrics::Counter,
    }
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| Handles {
        requests: Cause::ALL
            .iter()
            .map(|c| {
                let counter =
                    metrics::counter!("steward_restart_requests_total", "cause" => c.as_str());
                (*c, counter)
            })
            .collect(),
        coalesced: metrics::counter!("steward_restart_coalesced_total"),
    });
    if let Some((_, counter)) = handles.requests.iter().find(|(c, _)| *c == cause) {
        counter.increment(1);
    }
    handles.coalesced.increment(1);
}

/// Moves one workspace from phase `from` to `to` in `steward_workspaces{phase}`.
pub fn phase_changed(from: Option<Phase>, to: Option<Phase>) {
    if from == to {
        return;
    }
    if let Some(from) = from {
        metrics::gauge!("steward_workspaces", "phase" => from.as_str()).decrement(1.0);
    }
    if let Some(to) = to {
        metrics::gauge!("steward_workspaces", "phase" => to.as_str()).increment(1.0);
    }
}
