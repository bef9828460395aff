//! The stored form of every value: a workspace's configuration, lifecycle state and agent
//! channel as JSON text (one column each), events, generations as `BIGINT`.
//!
//! Both directions live here, so the writer and the readers cannot disagree. Adding a field
//! to the state (or the configuration, or the agent record) means adding it to the matching
//! `…Json` struct below, with `#[serde(default)]` so that rows written before it still read;
//! no SQL changes. The generation is not in the state's JSON: it is the `generation` column,
//! which writes are fenced on.
//!
//! A failure's reason is typed (`{"step": {"provider": "…"}}`, `{"parked": "crash_loop"}`…).
//! Rows written before reasons were typed hold the bare text (`crash_loop`, a provider's
//! message); they still read, as the fixed reason the text names, else as a provider's
//! message ([`legacy_reason`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use steward_domain::{
    Cause, CauseSet, Cycle, Desired, Failure, FailureReason, Generation, MachineState, ParkReason,
    Phase, ReadyWhen, ScheduledRetry, Step, StepFailure, Switch, SwitchStage, Timestamp,
    WorkspaceId, WorkspaceSpec,
};

use crate::{AgentRecord, StoreError};

/// `workspaces.state` and `workspaces.generation` of `state`.
pub(crate) fn encode_state(state: &MachineState) -> Result<(String, i64), StoreError> {
    let json = StateJson {
        phase: state.phase.as_str().to_owned(),
        desired: state.desired.as_str().to_owned(),
        ready_when: state.ready_when.as_str().to_owned(),
        observed_generation: state.observed_generation.0,
        pending: causes(state.pending),
        failure: state.failure.as_ref().map(|failure| FailureJson {
            reason: StoredReason::Typed(ReasonJson::from(&failure.reason)),
            generation: failure.generation.0,
            consecutive: failure.consecutive,
        }),
        backoff_attempt: state.backoff_attempt,
        recent_failures: state.recent_failures.iter().map(|t| t.0).collect(),
        last_cycle_started_at: state.last_cycle_started_at.map(|t| t.0),
        last_cycle_ended_at: state.last_cycle_ended_at.map(|t| t.0),
        healthy_since: state.healthy_since.map(|t| t.0),
        retry: state.retry.map(|retry| RetryJson {
            at: retry.at.0,
            causes: causes(retry.causes),
        }),
        cycle: state.cycle.map(|cycle| CycleJson {
            generation: cycle.generation.0,
            causes: causes(cycle.causes),
            started_at: cycle.started_at.0,
        }),
        switch: state.switch.as_deref().map(SwitchJson::new),
    };
    Ok((to_json(&json)?, generation_column(state.generation)?))
}

/// The state stored as `json`, at `generation`.
pub(crate) fn decode_state(json: &str, generation: i64) -> Result<MachineState, StoreError> {
    let json: StateJson = from_json(json)?;
    let phase = Phase::parse(&json.phase).ok_or_else(|| unknown("phase", &json.phase))?;
    Ok(MachineState {
        phase,
        desired: Desired::parse(&json.desired).ok_or_else(|| unknown("desired", &json.desired))?,
        ready_when: ready_when(&json.ready_when)?,
        generation: generation_value(generation)?,
        observed_generation: Generation(json.observed_generation),
        pending: parse_causes(&json.pending)?,
        failure: json
            .failure
            .map(|failure| {
                Ok::<_, StoreError>(Failure {
                    reason: match failure.reason {
                        StoredReason::Typed(reason) => reason.parse()?,
                        StoredReason::Legacy(text) => legacy_reason(&text, phase == Phase::Failed),
                    },
                    generation: Generation(failure.generation),
                    consecutive: failure.consecutive,
                })
            })
            .transpose()?,
        backoff_attempt: json.backoff_attempt,
        recent_failures: json.recent_failures.into_iter().map(Timestamp).collect(),
        last_cycle_started_at: json.last_cycle_started_at.map(Timestamp),
        last_cycle_ended_at: json.last_cycle_ended_at.map(Timestamp),
        healthy_since: json.healthy_since.map(Timestamp),
        retry: json
            .retry
            .map(|retry| {
                Ok::<_, StoreError>(ScheduledRetry {
                    at: Timestamp(retry.at),
                    causes: parse_causes(&retry.causes)?,
                })
            })
            .transpose()?,
        cycle: json
            .cycle
            .map(|cycle| {
                Ok::<_, StoreError>(Cycle {
                    generation: Generation(cycle.generation),
                    causes: parse_causes(&cycle.causes)?,
                    started_at: Timestamp(cycle.started_at),
                })
            })
            .transpose()?,
        switch: json
            .switch
            .map(|switch| switch.parse().map(Box::new))
            .transpose()?,
    })
}

/// `workspaces.spec` of `spec`.
pub(crate) fn encode_spec(spec: &WorkspaceSpec) -> Result<String, StoreError> {
    to_json(&SpecJson {
        name: spec.name.clone(),
        provider: spec.provider.clone(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        env: spec.env.clone(),
        model: spec.model.clone(),
    })
}

/// The configuration stored as `json`.
pub(crate) fn decode_spec(json: &str) -> Result<WorkspaceSpec, StoreError> {
    let json: SpecJson = from_json(json)?;
    Ok(WorkspaceSpec {
        name: json.name,
        provider: json.provider,
        image: json.image,
        command: json.command,
        env: json.env,
        model: json.model,
    })
}

/// `workspaces.agent` of `agent`.
pub(crate) fn encode_agent(agent: &AgentRecord) -> Result<String, StoreError> {
    to_json(&AgentJson {
        generation: agent.generation.0,
        token_hash: agent.token_hash.as_ref().map(to_hex),
        url: agent.url.clone(),
        last_heartbeat_at: agent.last_heartbeat_at.map(|t| t.0),
    })
}

/// The agent record stored as `json`.
pub(crate) fn decode_agent(json: &str) -> Result<AgentRecord, StoreError> {
    let json: AgentJson = from_json(json)?;
    Ok(AgentRecord {
        generation: Generation(json.generation),
        token_hash: json
            .token_hash
            .as_deref()
            .map(|hex| {
                from_hex(hex).ok_or_else(|| corrupt("agent token hash is not 64 hex digits"))
            })
            .transpose()?,
        url: json.url,
        last_heartbeat_at: json.last_heartbeat_at.map(Timestamp),
    })
}

/// A generation as stored (`BIGINT`).
pub(crate) fn generation_column(generation: Generation) -> Result<i64, StoreError> {
    i64::try_from(generation.0)
        .map_err(|_| StoreError::Corrupt(format!("generation {generation} exceeds BIGINT")))
}

/// A stored generation.
pub(crate) fn generation_value(column: i64) -> Result<Generation, StoreError> {
    u64::try_from(column)
        .map(Generation)
        .map_err(|_| unknown("generation", &column.to_string()))
}

/// A stored workspace id.
pub(crate) fn workspace_id(column: &str) -> Result<WorkspaceId, StoreError> {
    WorkspaceId::from_str(column).map_err(|_| unknown("workspace id", column))
}

/// JSON text of a value.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("json: {e}")))
}

/// A value from JSON text.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: &str) -> Result<T, StoreError> {
    serde_json::from_str(column).map_err(|e| corrupt(&format!("json {column:?}: {e}")))
}

#[derive(Serialize, Deserialize)]
struct StateJson {
    phase: String,
    desired: String,
    ready_when: String,
    observed_generation: u64,
    pending: Vec<String>,
    failure: Option<FailureJson>,
    backoff_attempt: u32,
    recent_failures: Vec<i64>,
    last_cycle_started_at: Option<i64>,
    last_cycle_ended_at: Option<i64>,
    healthy_since: Option<i64>,
    retry: Option<RetryJson>,
    cycle: Option<CycleJson>,
    switch: Option<SwitchJson>,
}

#[derive(Serialize, Deserialize)]
struct FailureJson {
    reason: StoredReason,
    generation: u64,
    consecutive: u32,
}

#[derive(Serialize, Deserialize)]
struct RetryJson {
    at: i64,
    causes: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct CycleJson {
    generation: u64,
    causes: Vec<String>,
    started_at: i64,
}

/// The switch in progress.
#[derive(Serialize, Deserialize)]
struct SwitchJson {
    from: String,
    to: String,
    from_ready: String,
    to_ready: String,
    stage: String,
    rollback: bool,
}

impl SwitchJson {
    fn new(switch: &Switch) -> Self {
        Self {
            from: switch.from.clone(),
            to: switch.to.clone(),
            from_ready: switch.from_ready.as_str().to_owned(),
            to_ready: switch.to_ready.as_str().to_owned(),
            stage: switch.stage.as_str().to_owned(),
            rollback: switch.rollback,
        }
    }

    fn parse(self) -> Result<Switch, StoreError> {
        Ok(Switch {
            from_ready: ready_when(&self.from_ready)?,
            to_ready: ready_when(&self.to_ready)?,
            stage: SwitchStage::parse(&self.stage)
                .ok_or_else(|| unknown("switch stage", &self.stage))?,
            from: self.from,
            to: self.to,
            rollback: self.rollback,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SpecJson {
    name: String,
    provider: String,
    image: Option<String>,
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    model: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct AgentJson {
    generation: u64,
    /// SHA-256 of the token, hex.
    token_hash: Option<String>,
    url: Option<String>,
    last_heartbeat_at: Option<i64>,
}

/// A failure's reason: typed, or the bare text of a row written before reasons were typed
/// (every typed reason is a JSON object, so a string is always the old form).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredReason {
    Typed(ReasonJson),
    Legacy(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReasonJson {
    Step(StepJson),
    Parked(ParkJson),
    ReleaseFailed(StepJson),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StepJson {
    Provider(String),
    /// The step whose deadline passed, by name.
    Deadline(String),
    BootTimeout,
    InstanceDied,
    Interrupted,
    Cancelled,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ParkJson {
    CrashLoop,
    ProvisionFailed,
    BootTimeout,
    StopFailed(StepJson),
}

impl From<&FailureReason> for ReasonJson {
    fn from(reason: &FailureReason) -> Self {
        match reason {
            FailureReason::Step(failure) => ReasonJson::Step(failure.into()),
            FailureReason::Parked(park) => ReasonJson::Parked(match park {
                ParkReason::CrashLoop => ParkJson::CrashLoop,
                ParkReason::ProvisionFailed => ParkJson::ProvisionFailed,
                ParkReason::BootTimeout => ParkJson::BootTimeout,
                ParkReason::StopFailed(failure) => ParkJson::StopFailed(failure.into()),
            }),
            FailureReason::ReleaseFailed(failure) => ReasonJson::ReleaseFailed(failure.into()),
        }
    }
}

impl From<&StepFailure> for StepJson {
    fn from(failure: &StepFailure) -> Self {
        match failure {
            StepFailure::Provider(message) => StepJson::Provider(message.clone()),
            StepFailure::Deadline(step) => StepJson::Deadline(step.as_str().to_owned()),
            StepFailure::BootTimeout => StepJson::BootTimeout,
            StepFailure::InstanceDied => StepJson::InstanceDied,
            StepFailure::Interrupted => StepJson::Interrupted,
            StepFailure::Cancelled => StepJson::Cancelled,
        }
    }
}

impl ReasonJson {
    fn parse(self) -> Result<FailureReason, StoreError> {
        Ok(match self {
            ReasonJson::Step(failure) => FailureReason::Step(failure.parse()?),
            ReasonJson::Parked(park) => FailureReason::Parked(match park {
                ParkJson::CrashLoop => ParkReason::CrashLoop,
                ParkJson::ProvisionFailed => ParkReason::ProvisionFailed,
                ParkJson::BootTimeout => ParkReason::BootTimeout,
                ParkJson::StopFailed(failure) => ParkReason::StopFailed(failure.parse()?),
            }),
            ReasonJson::ReleaseFailed(failure) => FailureReason::ReleaseFailed(failure.parse()?),
        })
    }
}

impl StepJson {
    fn parse(self) -> Result<StepFailure, StoreError> {
        Ok(match self {
            StepJson::Provider(message) => StepFailure::Provider(message),
            StepJson::Deadline(step) => {
                StepFailure::Deadline(Step::parse(&step).ok_or_else(|| unknown("step", &step))?)
            }
            StepJson::BootTimeout => StepFailure::BootTimeout,
            StepJson::InstanceDied => StepFailure::InstanceDied,
            StepJson::Interrupted => StepFailure::Interrupted,
            StepJson::Cancelled => StepFailure::Cancelled,
        })
    }
}

/// A reason as stored before reasons were typed; `parked` says whether the workspace is
/// parked (which a bare `boot_timeout` does not say by itself).
fn legacy_reason(text: &str, parked: bool) -> FailureReason {
    let park = match text {
        "crash_loop" => Some(ParkReason::CrashLoop),
        "provision_failed" => Some(ParkReason::ProvisionFailed),
        "boot_timeout" if parked => Some(ParkReason::BootTimeout),
        _ => text
            .strip_prefix("stop failed: ")
            .map(|inner| ParkReason::StopFailed(legacy_step(inner))),
    };
    match (park, text.strip_prefix("release failed: ")) {
        (Some(park), _) => FailureReason::Parked(park),
        (None, Some(inner)) => FailureReason::ReleaseFailed(legacy_step(inner)),
        (None, None) => FailureReason::Step(legacy_step(text)),
    }
}

fn legacy_step(text: &str) -> StepFailure {
    match text {
        "provision_timeout" => StepFailure::Deadline(Step::Start),
        "stop_timeout" => StepFailure::Deadline(Step::Stop),
        "boot_timeout" => StepFailure::BootTimeout,
        "instance died" => StepFailure::InstanceDied,
        "cancelled" => StepFailure::Cancelled,
        "interrupted: the daemon restarted during the cycle" => StepFailure::Interrupted,
        message => StepFailure::Provider(message.to_owned()),
    }
}

fn ready_when(name: &str) -> Result<ReadyWhen, StoreError> {
    ReadyWhen::parse(name).ok_or_else(|| unknown("ready_when", name))
}

fn causes(set: CauseSet) -> Vec<String> {
    set.iter().map(|cause| cause.as_str().to_owned()).collect()
}

fn parse_causes(names: &[String]) -> Result<CauseSet, StoreError> {
    names
        .iter()
        .map(|name| Cause::parse(name).ok_or_else(|| unknown("cause", name)))
        .collect()
}

fn to_hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

fn unknown(what: &str, value: &str) -> StoreError {
    corrupt(&format!("unknown {what} {value:?}"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_failure(reason: FailureReason, phase: Phase) -> MachineState {
        let mut state = MachineState::new(ReadyWhen::Agent);
        state.phase = phase;
        state.failure = Some(Failure {
            reason,
            generation: Generation(2),
            consecutive: 3,
        });
        state
    }

    #[test]
    fn every_reason_round_trips() {
        let steps = [
            StepFailure::Provider("{not json".into()),
            StepFailure::Provider("crash_loop".into()),
            StepFailure::Deadline(Step::RemoveOld),
            StepFailure::BootTimeout,
            StepFailure::InstanceDied,
            StepFailure::Interrupted,
            StepFailure::Cancelled,
        ];
        let mut reasons: Vec<FailureReason> = steps
            .iter()
            .flat_map(|s| {
                [
                    FailureReason::Step(s.clone()),
                    FailureReason::ReleaseFailed(s.clone()),
                    FailureReason::Parked(ParkReason::StopFailed(s.clone())),
                ]
            })
            .collect();
        reasons.extend(
            [
                ParkReason::CrashLoop,
                ParkReason::ProvisionFailed,
                ParkReason::BootTimeout,
            ]
            .map(FailureReason::Parked),
        );
        for reason in reasons {
            let state = with_failure(reason, Phase::Running);
            let (json, generation) = encode_state(&state).expect("encodes");
            assert_eq!(decode_state(&json, generation).expect("decodes"), state);
        }
    }

    #[test]
    fn reasons_stored_as_text_still_read() {
        let read = |text: &str, phase: Phase| {
            let json = format!(
                r#"{{"phase":"{}","desired":"running","ready_when":"agent",
                "observed_generation":0,"pending":[],"backoff_attempt":0,"recent_failures":[],
                "failure":{{"reason":{},"generation":2,"consecutive":1}}}}"#,
                phase.as_str(),
                serde_json::Value::from(text)
            );
            let state = decode_state(&json, 0).expect("decodes");
            state.failure.expect("a failure").reason
        };
        assert_eq!(
            read("crash_loop", Phase::Failed),
            FailureReason::Parked(ParkReason::CrashLoop)
        );
        assert_eq!(
            read("boot_timeout", Phase::Failed),
            FailureReason::Parked(ParkReason::BootTimeout)
        );
        assert_eq!(
            read("boot_timeout", Phase::Running),
            FailureReason::Step(StepFailure::BootTimeout)
        );
        assert_eq!(
            read("stop failed: stop_timeout", Phase::Failed),
            FailureReason::Parked(ParkReason::StopFailed(StepFailure::Deadline(Step::Stop)))
        );
        assert_eq!(
            read("{\"engine\": \"unreachable\"}", Phase::Running),
            FailureReason::Step(StepFailure::Provider(
                "{\"engine\": \"unreachable\"}".into()
            ))
        );
        for text in ["provision_timeout", "engine unreachable", "instance died"] {
            assert_eq!(read(text, Phase::Running).to_string(), text);
        }
    }

    #[test]
    fn the_generation_is_the_column_not_the_json() {
        let mut state = MachineState::new(ReadyWhen::Instance);
        state.generation = Generation(7);
        let (json, generation) = encode_state(&state).expect("encodes");
        assert_eq!(generation, 7);
        assert!(!json.contains("\"generation\""), "{json}");
        assert_eq!(
            decode_state(&json, 9).expect("decodes").generation,
            Generation(9)
        );
        state.generation = Generation(u64::MAX);
        assert!(matches!(encode_state(&state), Err(StoreError::Corrupt(_))));
    }
}
