//! The client's reading of the API's JSON answers (the DTOs of `steward-api`, which are
//! `Serialize` only). Lenient on purpose: optional and newer fields default, unknown fields
//! are ignored, so an older CLI keeps working against a newer daemon. These types are only
//! used for the human rendering; `--json` prints the answer itself, untouched by them.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A workspace document.
#[derive(Debug, Deserialize)]
pub struct Workspace {
    /// Id (UUID).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Provider name.
    pub provider: String,
    /// Image (docker).
    #[serde(default)]
    pub image: Option<String>,
    /// Command and arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Environment (not secret).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// `instance` or `agent`.
    #[serde(default)]
    pub ready_when: Option<String>,
    /// Lifecycle phase.
    pub phase: String,
    /// Latest generation started or scheduled.
    pub generation: u64,
    /// Generation of the instance that is up.
    pub observed_generation: u64,
    /// Restart state.
    #[serde(default)]
    pub restart: RestartState,
    /// Agent channel.
    #[serde(default)]
    pub agent: Agent,
    /// What the probes last saw.
    #[serde(default)]
    pub health: Health,
    /// Last failure.
    #[serde(default)]
    pub failure: Option<Failure>,
    /// Secret keys (the API never returns values).
    #[serde(default)]
    pub secret_keys: Vec<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// Last change (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
}

/// Restart state of a workspace.
#[derive(Debug, Default, Deserialize)]
pub struct RestartState {
    /// A cycle is in flight.
    #[serde(default)]
    pub in_flight: bool,
    /// Another cycle will follow it.
    #[serde(default)]
    pub pending: bool,
    /// Causes of the pending cycle.
    #[serde(default)]
    pub pending_causes: Vec<String>,
}

/// Agent channel state.
#[derive(Debug, Default, Deserialize)]
pub struct Agent {
    /// URL the agent registered.
    #[serde(default)]
    pub url: Option<String>,
    /// Last heartbeat (RFC 3339).
    #[serde(default)]
    pub last_heartbeat_at: Option<String>,
}

/// What the probes last saw of the instance up.
#[derive(Debug, Default, Deserialize)]
pub struct Health {
    /// `alive`, `pending` or `dead`.
    #[serde(default)]
    pub last_report: Option<String>,
    /// When (RFC 3339).
    #[serde(default)]
    pub last_report_at: Option<String>,
    /// Dead reports in a row counted towards a health restart.
    #[serde(default)]
    pub dead_in_a_row: u32,
}

/// A failure.
#[derive(Debug, Deserialize)]
pub struct Failure {
    /// Why.
    pub reason: String,
    /// Generation that failed.
    pub generation: u64,
}

/// `GET /v1/workspaces`.
#[derive(Debug, Deserialize)]
pub struct WorkspaceList {
    /// The workspaces listed, oldest first (the CLI reads every page).
    pub workspaces: Vec<Workspace>,
}

/// `GET .../secrets`.
#[derive(Debug, Deserialize)]
pub struct SecretKeys {
    /// Keys, sorted.
    pub keys: Vec<String>,
}

/// The answer to a lifecycle intent (restart, stop, start, delete, secret, model).
#[derive(Debug, Deserialize)]
pub struct IntentAnswer {
    /// `started`, `coalesced`, `deferred` or `accepted`.
    pub outcome: String,
    /// The generation that will carry the intent (or the current one).
    pub generation: u64,
}

/// `GET .../events` (JSON form).
#[derive(Debug, Deserialize)]
pub struct EventPage {
    /// Events, oldest first.
    pub events: Vec<Value>,
}

/// One lifecycle event: the fixed fields, and every other field as details.
#[derive(Debug, Deserialize)]
pub struct Event {
    /// Per-workspace sequence number.
    pub seq: u64,
    /// Event type, e.g. `provision_started`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Generation it belongs to.
    pub generation: u64,
    /// When (RFC 3339).
    pub at: String,
    /// Type-specific details (`cause`, `reason`, ...).
    #[serde(flatten)]
    pub details: BTreeMap<String, Value>,
}

/// `GET /v1/admin/actors`.
#[derive(Debug, Deserialize)]
pub struct ActorList {
    /// Every live actor.
    pub actors: Vec<Actor>,
}

/// Live inspection of one workspace actor.
#[derive(Debug, Deserialize)]
pub struct Actor {
    /// Workspace id.
    pub id: String,
    /// Phase.
    pub phase: String,
    /// Latest generation.
    pub generation: u64,
    /// Generation up.
    pub observed_generation: u64,
    /// The cycle in flight.
    #[serde(default)]
    pub cycle: Option<Cycle>,
    /// The provider operation in flight.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// Whether a restart is pending.
    #[serde(default)]
    pub pending: bool,
    /// Its causes.
    #[serde(default)]
    pub pending_causes: Vec<String>,
    /// End of the debounce window.
    #[serde(default)]
    pub debounce_until: Option<String>,
    /// End of the settle window.
    #[serde(default)]
    pub settle_until: Option<String>,
    /// Consecutive dead health reports.
    #[serde(default)]
    pub health_failures: u32,
    /// What the last probe saw.
    #[serde(default)]
    pub last_probe: Option<Probe>,
    /// Backoff state.
    #[serde(default)]
    pub backoff: Backoff,
    /// Counters.
    #[serde(default)]
    pub counters: Counters,
    /// Messages waiting for the actor.
    #[serde(default)]
    pub mailbox_len: u64,
    /// Last error seen.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Times the actor was restarted after a crash.
    #[serde(default)]
    pub restarts: u32,
    /// Recent phase transitions, oldest first.
    #[serde(default)]
    pub transitions: Vec<Transition>,
}

/// The cycle in flight.
#[derive(Debug, Deserialize)]
pub struct Cycle {
    /// Causes it serves.
    #[serde(default)]
    pub causes: Vec<String>,
    /// Generation it provisions.
    pub generation: u64,
    /// When it started.
    #[serde(default)]
    pub started_at: String,
}

/// The provider operation in flight.
#[derive(Debug, Deserialize)]
pub struct Operation {
    /// remove_old, start, stop or remove.
    pub step: String,
    /// Generation.
    pub generation: u64,
    /// When it started.
    #[serde(default)]
    pub started_at: String,
    /// When it is abandoned.
    #[serde(default)]
    pub deadline: String,
}

/// A probe report.
#[derive(Debug, Deserialize)]
pub struct Probe {
    /// Generation the probe saw.
    pub generation: u64,
    /// alive, pending or dead.
    pub report: String,
    /// When.
    #[serde(default)]
    pub at: String,
}

/// Backoff state.
#[derive(Debug, Default, Deserialize)]
pub struct Backoff {
    /// Next retry number.
    #[serde(default)]
    pub attempt: u32,
    /// When the scheduled retry fires.
    #[serde(default)]
    pub retry_at: Option<String>,
}

/// Counters of one actor.
#[derive(Debug, Default, Deserialize)]
pub struct Counters {
    /// Cycles started.
    #[serde(default)]
    pub cycles: u64,
    /// Cycles failed.
    #[serde(default)]
    pub cycles_failed: u64,
    /// Restarts coalesced.
    #[serde(default)]
    pub coalesced: u64,
    /// Restarts dropped, by cause then reason.
    #[serde(default)]
    pub dropped: BTreeMap<String, BTreeMap<String, u64>>,
    /// Stale results ignored.
    #[serde(default)]
    pub stale_results: u64,
}

/// A phase change.
#[derive(Debug, Deserialize)]
pub struct Transition {
    /// Old phase.
    pub from: String,
    /// New phase.
    pub to: String,
    /// When.
    #[serde(default)]
    pub at: String,
}
