//! Builders for the domain's and the store's types: a spec, a stored record, with every
//! optional part empty. Alter what a test is about with struct update syntax:
//! `WorkspaceSpec { model: Some("m".into()), ..spec("w") }`.
//!
//! For the crates' integration tests (`tests/`) and the crates above them: a crate's own unit
//! tests would see a second copy of its types here, not theirs.

use secrecy::SecretString;
use steward_domain::{MachineState, ReadyWhen, Timestamp, WorkspaceId, WorkspaceSpec};
use steward_store::{AgentRecord, WorkspaceRecord};

/// A fresh random workspace id.
pub fn workspace_id() -> WorkspaceId {
    WorkspaceId::from(uuid::Uuid::new_v4())
}

/// A spec on the `sim` provider with only a name: no image, command, env or model.
pub fn spec(name: &str) -> WorkspaceSpec {
    WorkspaceSpec {
        name: name.to_owned(),
        provider: "sim".to_owned(),
        image: None,
        command: None,
        env: Default::default(),
        model: None,
    }
}

/// A new workspace as the store keeps it: a fresh id, `spec`, the state of a workspace just
/// created (ready when its instance runs), no secrets, no agent, created at `Timestamp(1_000)`.
pub fn record(spec: WorkspaceSpec) -> WorkspaceRecord {
    WorkspaceRecord {
        id: workspace_id(),
        spec,
        state: MachineState::new(ReadyWhen::Instance),
        secrets: Default::default(),
        agent: AgentRecord::default(),
        last_event_seq: 0,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(1_000),
    }
}

/// `record` with the secret `key=value` added.
pub fn with_secret(mut record: WorkspaceRecord, key: &str, value: &str) -> WorkspaceRecord {
    record
        .secrets
        .insert(key.to_owned(), SecretString::from(value.to_owned()));
    record
}
