//! Wire types of the HTTP API and their conversions from the actors' views. Domain types
//! are not `Serialize`: this module is where they meet JSON.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};
use steward_actors::{ActorView, IntentReply, WorkspaceView};
use steward_domain::{Cause, DropReason, Outcome, Phase, ReadyWhen, Switch, Timestamp};
use steward_store::EventRecord;
use utoipa::ToSchema;

/// RFC 3339 text of a timestamp.
pub fn rfc3339(t: Timestamp) -> String {
    let ms = u64::try_from(t.0).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `POST /v1/workspaces` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Human name, 1–128 characters.
    pub name: String,
    /// Image (docker provider).
    pub image: Option<String>,
    /// Command and arguments (process/docker), never run through a shell.
    pub command: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets, exported to the instance as environment variables; never returned.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub secrets: BTreeMap<String, SecretString>,
    /// Model handed to the agent as `STEWARD_MODEL`.
    pub model: Option<String>,
    /// Provider name (default: the configured `default_provider`).
    pub provider: Option<String>,
    /// `instance` or `agent` (default: the provider's).
    pub ready_when: Option<ReadyWhenDto>,
}

/// When a workspace counts as running.
#[derive(Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyWhenDto {
    /// As soon as the instance is up.
    Instance,
    /// When the agent of the current generation has registered.
    Agent,
}

impl From<ReadyWhenDto> for ReadyWhen {
    fn from(r: ReadyWhenDto) -> Self {
        match r {
            ReadyWhenDto::Instance => ReadyWhen::Instance,
            ReadyWhenDto::Agent => ReadyWhen::Agent,
        }
    }
}

/// `PUT .../secrets/{key}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The secret value.
    #[schema(value_type = String)]
    pub value: SecretString,
}

/// `PUT .../model` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetModel {
    /// The model.
    pub model: String,
}

/// `POST .../switch-provider` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchProvider {
    /// The provider to move the workspace to.
    pub provider: String,
}

/// The answer to an accepted switch: it goes on in the daemon, whatever the client does.
#[derive(Serialize, ToSchema)]
pub struct SwitchAnswer {
    /// Always `switching`.
    pub status: &'static str,
    /// Provider being moved to.
    pub to: String,
}

/// A provider switch in progress.
#[derive(Serialize, ToSchema)]
pub struct SwitchDto {
    /// Provider being left.
    pub from: String,
    /// Provider being moved to.
    pub to: String,
    /// `leaving` (the old instance is being removed) or `arrived` (recorded on `to`).
    pub stage: &'static str,
    /// Whether this is the way back after a failed switch.
    pub rollback: bool,
}

impl From<Switch> for SwitchDto {
    fn from(s: Switch) -> Self {
        Self {
            from: s.from,
            to: s.to,
            stage: s.stage.as_str(),
            rollback: s.rollback,
        }
    }
}

/// A workspace.
#[derive(Serialize, ToSchema)]
pub struct Workspace {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Image.
    pub image: Option<String>,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Model.
    pub model: Option<String>,
    /// `instance` or `agent`.
    pub ready_when: &'static str,
    /// provisioning, starting, running, stopping, stopped, failed or deleting.
    pub phase: &'static str,
    /// Latest generation started or scheduled.
    pub generation: u64,
    /// Generation of the instance that is up.
    pub observed_generation: u64,
    /// Restart state.
    pub restart: RestartState,
    /// The agent of the instance up (both fields null when no instance is up: stopped,
    /// failed, being replaced or deleted).
    pub agent: Agent,
    /// What the probes last saw of the instance up.
    pub health: HealthDto,
    /// Last failure, if the workspace is failing.
    pub failure: Option<FailureDto>,
    /// The provider switch in progress, if any.
    pub switch: Option<SwitchDto>,
    /// Secret keys (never values).
    pub secret_keys: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// Restart state of a workspace.
#[derive(Serialize, ToSchema)]
pub struct RestartState {
    /// A cycle is in flight.
    pub in_flight: bool,
    /// Another cycle will follow it.
    pub pending: bool,
    /// Causes of the pending cycle.
    pub pending_causes: Vec<&'static str>,
}

/// Agent channel state.
#[derive(Serialize, ToSchema)]
pub struct Agent {
    /// URL the agent registered.
    pub url: Option<String>,
    /// Last heartbeat.
    pub last_heartbeat_at: Option<String>,
}

/// What the probes last saw of the instance up. A `running` workspace whose last report is
/// `dead` is up as far as its lifecycle goes (the report may be inside the debounce window,
/// or below the failure threshold) but its instance is not answering: clients show it as
/// unhealthy.
#[derive(Serialize, ToSchema)]
pub struct HealthDto {
    /// `alive`, `pending` (booting) or `dead` (including no instance and a silent agent);
    /// null before the first report about the generation up.
    pub last_report: Option<&'static str>,
    /// When that report came.
    pub last_report_at: Option<String>,
    /// Dead reports in a row counted towards a health restart.
    pub dead_in_a_row: u32,
}

/// A failure.
#[derive(Serialize, ToSchema)]
pub struct FailureDto {
    /// Why.
    pub reason: String,
    /// Generation that failed.
    pub generation: u64,
}

impl From<WorkspaceView> for Workspace {
    fn from(v: WorkspaceView) -> Self {
        Self {
            id: v.id.to_string(),
            name: v.spec.name,
            provider: v.spec.provider,
            image: v.spec.image,
            command: v.spec.command,
            env: v.spec.env,
            model: v.spec.model,
            ready_when: v.ready_when.as_str(),
            phase: v.phase.as_str(),
            generation: v.generation.0,
            observed_generation: v.observed_generation.0,
            restart: RestartState {
                in_flight: v.in_flight,
                pending: !v.pending.is_empty(),
                pending_causes: v.pending.iter().map(|c| c.as_str()).collect(),
            },
            // The agent of an instance that is gone is not shown as if it were live.
            agent: match v.phase {
                Phase::Starting | Phase::Running => Agent {
                    url: v.agent.url,
                    last_heartbeat_at: v.agent.last_heartbeat_at.map(rfc3339),
                },
                _ => Agent {
                    url: None,
                    last_heartbeat_at: None,
                },
            },
            health: HealthDto {
                last_report: v.health.last_report.map(|(report, _)| report.as_str()),
                last_report_at: v.health.last_report.map(|(_, at)| rfc3339(at)),
                dead_in_a_row: v.health.dead_in_a_row,
            },
            failure: v.failure.map(|f| FailureDto {
                reason: f.reason.to_string(),
                generation: f.generation.0,
            }),
            switch: v.switch.map(Into::into),
            secret_keys: v.secret_keys,
            created_at: rfc3339(v.created_at),
            updated_at: rfc3339(v.updated_at),
        }
    }
}

/// `GET /v1/workspaces`.
#[derive(Serialize, ToSchema)]
pub struct WorkspaceList {
    /// The workspaces of this page, oldest first.
    pub workspaces: Vec<Workspace>,
    /// More match: pass this as `cursor` for the next page. `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET .../secrets`.
#[derive(Serialize, ToSchema)]
pub struct SecretKeys {
    /// Keys, sorted.
    pub keys: Vec<String>,
}

/// The answer to a lifecycle intent.
#[derive(Serialize, ToSchema)]
pub struct IntentAnswer {
    /// `started`, `coalesced`, `deferred` (config change of a stopped workspace),
    /// `accepted`, or `deleted` (a delete that is done).
    pub outcome: &'static str,
    /// The generation that will carry the intent (or the current one).
    pub generation: u64,
}

impl From<IntentReply> for IntentAnswer {
    fn from(r: IntentReply) -> Self {
        let outcome = match r.outcome {
            Outcome::Started(_) => "started",
            Outcome::Coalesced(_) => "coalesced",
            Outcome::Deferred => "deferred",
            Outcome::Accepted | Outcome::Rejected(_) => "accepted",
        };
        Self {
            outcome,
            generation: r.generation.0,
        }
    }
}

/// `GET .../events` (JSON form).
#[derive(Serialize, ToSchema)]
pub struct EventList {
    /// Events, oldest first: `{seq, type, generation, at, ...details}`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
}

/// The JSON form of one event: details flattened next to `seq`, `type`, `generation`, `at`.
pub fn event_json(e: &EventRecord) -> Value {
    let mut object = match &e.data {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    object.insert("seq".into(), e.seq.into());
    object.insert("type".into(), e.kind.clone().into());
    object.insert("generation".into(), e.generation.0.into());
    object.insert("at".into(), rfc3339(e.at).into());
    Value::Object(object)
}

/// `GET /v1/admin/actors`.
#[derive(Serialize, ToSchema)]
pub struct ActorList {
    /// Every actor.
    pub actors: Vec<ActorDto>,
}

/// Live inspection of one workspace actor.
#[derive(Serialize, ToSchema)]
pub struct ActorDto {
    /// Workspace id.
    pub id: String,
    /// Phase.
    pub phase: &'static str,
    /// Latest generation.
    pub generation: u64,
    /// Generation up.
    pub observed_generation: u64,
    /// The cycle in flight.
    pub cycle: Option<CycleDto>,
    /// The provider operation in flight.
    pub operation: Option<OperationDto>,
    /// Whether a restart is pending.
    pub pending: bool,
    /// Its causes.
    pub pending_causes: Vec<&'static str>,
    /// The provider switch in progress, if any.
    pub switch: Option<SwitchDto>,
    /// End of the debounce window, if inside it.
    pub debounce_until: Option<String>,
    /// End of the settle window, if inside it.
    pub settle_until: Option<String>,
    /// Consecutive dead health reports.
    pub health_failures: u32,
    /// What the last probe saw.
    pub last_probe: Option<ProbeDto>,
    /// Backoff state.
    pub backoff: BackoffDto,
    /// Counters.
    pub counters: CountersDto,
    /// Messages waiting for this actor.
    pub mailbox_len: usize,
    /// Last error seen.
    pub last_error: Option<String>,
    /// Times the actor was restarted from the store after a crash.
    pub restarts: u32,
    /// Recent phase transitions, oldest first.
    pub transitions: Vec<TransitionDto>,
}

/// A probe report.
#[derive(Serialize, ToSchema)]
pub struct ProbeDto {
    /// Generation the probe saw.
    pub generation: u64,
    /// alive, pending (booting) or dead (including "no instance" and a silent agent).
    pub report: &'static str,
    /// When.
    pub at: String,
}

/// The cycle in flight.
#[derive(Serialize, ToSchema)]
pub struct CycleDto {
    /// Causes it serves.
    pub causes: Vec<&'static str>,
    /// Generation it provisions.
    pub generation: u64,
    /// When it started.
    pub started_at: String,
}

/// The provider operation in flight.
#[derive(Serialize, ToSchema)]
pub struct OperationDto {
    /// remove_old, start, stop, remove or release.
    pub step: &'static str,
    /// Generation.
    pub generation: u64,
    /// When it started.
    pub started_at: String,
    /// When it is abandoned.
    pub deadline: String,
}

/// Backoff state.
#[derive(Serialize, ToSchema)]
pub struct BackoffDto {
    /// Next retry number.
    pub attempt: u32,
    /// When the scheduled retry fires.
    pub retry_at: Option<String>,
}

/// Counters of one actor.
#[derive(Serialize, ToSchema)]
pub struct CountersDto {
    /// Cycles started.
    pub cycles: u64,
    /// Cycles failed.
    pub cycles_failed: u64,
    /// Restarts coalesced.
    pub coalesced: u64,
    /// Restarts dropped, by cause then reason (only `health` restarts are ever dropped).
    pub dropped: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Stale results ignored.
    pub stale_results: u64,
}

/// A phase change.
#[derive(Serialize, ToSchema)]
pub struct TransitionDto {
    /// Old phase.
    pub from: &'static str,
    /// New phase.
    pub to: &'static str,
    /// When.
    pub at: String,
}

impl From<ActorView> for ActorDto {
    fn from(v: ActorView) -> Self {
        Self {
            id: v.id.to_string(),
            phase: v.phase.as_str(),
            generation: v.generation.0,
            observed_generation: v.observed_generation.0,
            cycle: v.cycle.map(|c| CycleDto {
                causes: c.causes.iter().map(|c| c.as_str()).collect(),
                generation: c.generation.0,
                started_at: rfc3339(c.started_at),
            }),
            operation: v.op.map(|o| OperationDto {
                step: o.step.as_str(),
                generation: o.generation.0,
                started_at: rfc3339(o.started_at),
                deadline: rfc3339(o.deadline),
            }),
            pending: !v.pending.is_empty(),
            pending_causes: v.pending.iter().map(|c| c.as_str()).collect(),
            switch: v.switch.map(Into::into),
            debounce_until: v.debounce_until.map(rfc3339),
            settle_until: v.settle_until.map(rfc3339),
            health_failures: v.health_failures,
            last_probe: v.last_probe.map(|(generation, report, at)| ProbeDto {
                generation: generation.0,
                report: report.as_str(),
                at: rfc3339(at),
            }),
            backoff: BackoffDto {
                attempt: v.backoff_attempt,
                retry_at: v.retry_at.map(rfc3339),
            },
            counters: CountersDto {
                cycles: u64::from(v.counters.cycles),
                cycles_failed: u64::from(v.counters.cycles_failed),
                coalesced: u64::from(v.counters.coalesced),
                dropped: BTreeMap::from([(
                    Cause::Health.as_str(),
                    DropReason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .zip(v.counters.dropped.map(u64::from))
                        .collect(),
                )]),
                stale_results: u64::from(v.counters.stale_results),
            },
            mailbox_len: v.mailbox_len,
            last_error: v.last_error,
            restarts: v.restarts,
            transitions: v
                .transitions
                .into_iter()
                .map(|t| TransitionDto {
                    from: t.from.as_str(),
                    to: t.to.as_str(),
                    at: rfc3339(t.at),
                })
                .collect(),
        }
    }
}
