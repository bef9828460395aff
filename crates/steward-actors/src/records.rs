//! Turning the machine's records into stored events: the event `type` and its details.

use serde_json::{json, Map, Value};
use steward_domain::{Record, RecordKind, Timestamp, WorkspaceId};
use steward_store::EventRecord;

/// The stored form of `record`, with its per-workspace sequence number.
pub fn to_event(id: WorkspaceId, seq: i64, at: Timestamp, record: &Record) -> EventRecord {
    EventRecord {
        workspace_id: id,
        seq,
        generation: record.generation,
        at,
        kind: record.kind.name().to_owned(),
        data: details(&record.kind),
    }
}

fn details(kind: &RecordKind) -> Value {
    match kind {
        RecordKind::RestartRequested { cause }
        | RecordKind::RestartCoalesced { cause }
        | RecordKind::RestartDeferred { cause } => json!({ "cause": cause.as_str() }),
        RecordKind::RestartDropped { cause, reason } => {
            json!({ "cause": cause.as_str(), "reason": reason.as_str() })
        }
        RecordKind::ProvisionStarted {
            causes,
            previous_generation,
        } => json!({
            "causes": causes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "previous_generation": previous_generation.0,
        }),
        RecordKind::ProvisionFailed { reason } => {
            json!({ "reason": reason.to_string(), "code": reason.code() })
        }
        RecordKind::Failed { reason } => {
            json!({ "reason": reason.to_string(), "code": reason.code() })
        }
        RecordKind::StaleResultIgnored { what } => json!({ "what": what.to_string() }),
        RecordKind::SwitchStarted { from, to } | RecordKind::SwitchCompleted { from, to } => {
            json!({ "from": from, "to": to })
        }
        RecordKind::SwitchRolledBack { from, to, reason } => {
            json!({ "from": from, "to": to, "reason": reason.to_string(), "code": reason.code() })
        }
        RecordKind::BackoffScheduled { delay, attempt } => json!({
            "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "attempt": attempt,
        }),
        RecordKind::Created
        | RecordKind::ProvisionSucceeded
        | RecordKind::StopStarted
        | RecordKind::Stopped
        | RecordKind::DeleteStarted
        | RecordKind::AgentRegistered
        | RecordKind::BootTimedOut
        | RecordKind::ContextDelivered
        | RecordKind::ContextTimeout
        | RecordKind::Deleted => Value::Object(Map::new()),
    }
}
