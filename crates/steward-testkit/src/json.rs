//! Reading the API's JSON documents in assertions: fields that must be there, event lists
//! rendered for failure messages.

use serde_json::Value;

/// Whether a workspace document is running with no cycle in flight or pending, and the
/// instance that is up is the latest generation.
pub fn is_settled(doc: &Value) -> bool {
    doc["phase"] == "running"
        && doc["restart"]["in_flight"] == false
        && doc["restart"]["pending"] == false
        && doc["generation"] == doc["observed_generation"]
}

/// The `id` of a workspace document, as a string.
#[track_caller]
pub fn id_of(doc: &Value) -> String {
    doc["id"]
        .as_str()
        .unwrap_or_else(|| panic!("document has no string `id`: {doc}"))
        .to_owned()
}

/// The `seq` of an event.
#[track_caller]
pub fn seq_of(event: &Value) -> u64 {
    event["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event has no integer `seq`: {event}"))
}

/// The `generation` of an event or a document.
#[track_caller]
pub fn generation_of(value: &Value) -> u64 {
    value["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer `generation` in {value}"))
}

/// The events of a given type.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Compact one-line rendering of an event list for failure messages: `#seq type gN, …`.
pub fn summarize(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "#{} {} g{}",
                e["seq"],
                e["type"].as_str().unwrap_or("?"),
                e["generation"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settled_means_running_idle_and_current() {
        let doc = json!({
            "phase": "running", "generation": 2, "observed_generation": 2,
            "restart": { "in_flight": false, "pending": false },
        });
        assert!(is_settled(&doc));
        let mut pending = doc.clone();
        pending["restart"]["pending"] = json!(true);
        assert!(!is_settled(&pending));
        let mut behind = doc;
        behind["observed_generation"] = json!(1);
        assert!(!is_settled(&behind));
    }

    #[test]
    fn summaries_name_seq_type_and_generation() {
        let events = [
            json!({ "seq": 1, "type": "created", "generation": 0 }),
            json!({ "seq": 2, "type": "provision_started", "generation": 1 }),
        ];
        assert_eq!(summarize(&events), "#1 created g0, #2 provision_started g1");
    }
}
