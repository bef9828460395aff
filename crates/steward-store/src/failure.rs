//! The stored form of a workspace's last failure (`workspaces.failure_reason`, TEXT): its
//! reason and its count in a row, as JSON.
//!
//! Text written before reasons were typed (a bare reason such as `crash_loop`, or a
//! provider's message) still reads: as the fixed reason it names, else as a provider's
//! message. It must not know anything but the failure: the generation has its own column.

use serde::{Deserialize, Serialize};
use steward_domain::{FailureReason, ParkReason, Step, StepFailure};

use crate::StoreError;

/// `workspaces.failure_reason` of a failure with `reason`, `consecutive` in a row.
pub(crate) fn encode(reason: &FailureReason, consecutive: u32) -> Result<String, StoreError> {
    let column = Column {
        reason: ReasonColumn::from(reason),
        consecutive,
    };
    serde_json::to_string(&column).map_err(|e| StoreError::Corrupt(format!("json: {e}")))
}

/// The reason and count in a row stored in `column`; `parked` says whether the workspace is
/// parked (which a bare legacy reason such as `boot_timeout` does not say by itself).
pub(crate) fn decode(column: &str, parked: bool) -> Result<(FailureReason, u32), StoreError> {
    if !column.starts_with('{') {
        return Ok((legacy(column, parked), 1));
    }
    match serde_json::from_str::<Column>(column) {
        Ok(column) => Ok((column.reason.parse()?, column.consecutive)),
        // A provider's message that happens to start with a brace.
        Err(_) => Ok((legacy(column, parked), 1)),
    }
}

/// A reason as stored before reasons were typed.
fn legacy(text: &str, parked: bool) -> FailureReason {
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

#[derive(Serialize, Deserialize)]
struct Column {
    reason: ReasonColumn,
    consecutive: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReasonColumn {
    Step(StepColumn),
    Parked(ParkColumn),
    ReleaseFailed(StepColumn),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StepColumn {
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
enum ParkColumn {
    CrashLoop,
    ProvisionFailed,
    BootTimeout,
    StopFailed(StepColumn),
}

impl From<&FailureReason> for ReasonColumn {
    fn from(reason: &FailureReason) -> Self {
        match reason {
            FailureReason::Step(failure) => ReasonColumn::Step(failure.into()),
            FailureReason::Parked(park) => ReasonColumn::Parked(match park {
                ParkReason::CrashLoop => ParkColumn::CrashLoop,
                ParkReason::ProvisionFailed => ParkColumn::ProvisionFailed,
                ParkReason::BootTimeout => ParkColumn::BootTimeout,
                ParkReason::StopFailed(failure) => ParkColumn::StopFailed(failure.into()),
            }),
            FailureReason::ReleaseFailed(failure) => ReasonColumn::ReleaseFailed(failure.into()),
        }
    }
}

impl From<&StepFailure> for StepColumn {
    fn from(failure: &StepFailure) -> Self {
        match failure {
            StepFailure::Provider(message) => StepColumn::Provider(message.clone()),
            StepFailure::Deadline(step) => StepColumn::Deadline(step.as_str().to_owned()),
            StepFailure::BootTimeout => StepColumn::BootTimeout,
            StepFailure::InstanceDied => StepColumn::InstanceDied,
            StepFailure::Interrupted => StepColumn::Interrupted,
            StepFailure::Cancelled => StepColumn::Cancelled,
        }
    }
}

impl ReasonColumn {
    fn parse(self) -> Result<FailureReason, StoreError> {
        Ok(match self {
            ReasonColumn::Step(failure) => FailureReason::Step(failure.parse()?),
            ReasonColumn::Parked(park) => FailureReason::Parked(match park {
                ParkColumn::CrashLoop => ParkReason::CrashLoop,
                ParkColumn::ProvisionFailed => ParkReason::ProvisionFailed,
                ParkColumn::BootTimeout => ParkReason::BootTimeout,
                ParkColumn::StopFailed(failure) => ParkReason::StopFailed(failure.parse()?),
            }),
            ReasonColumn::ReleaseFailed(failure) => FailureReason::ReleaseFailed(failure.parse()?),
        })
    }
}

impl StepColumn {
    fn parse(self) -> Result<StepFailure, StoreError> {
        Ok(match self {
            StepColumn::Provider(message) => StepFailure::Provider(message),
            StepColumn::Deadline(step) => StepFailure::Deadline(
                Step::parse(&step)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown step {step:?}")))?,
            ),
            StepColumn::BootTimeout => StepFailure::BootTimeout,
            StepColumn::InstanceDied => StepFailure::InstanceDied,
            StepColumn::Interrupted => StepFailure::Interrupted,
            StepColumn::Cancelled => StepFailure::Cancelled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips() {
        let steps = [
            StepFailure::Provider("{not json".into()),
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
            let column = encode(&reason, 3).expect("encodes");
            assert_eq!(decode(&column, false).expect("decodes"), (reason, 3));
        }
    }

    #[test]
    fn reasons_stored_as_text_still_read() {
        let read = |text: &str, parked: bool| decode(text, parked).expect("decodes").0;
        assert_eq!(
            read("crash_loop", true),
            FailureReason::Parked(ParkReason::CrashLoop)
        );
        assert_eq!(
            read("boot_timeout", true),
            FailureReason::Parked(ParkReason::BootTimeout)
        );
        assert_eq!(
            read("boot_timeout", false),
            FailureReason::Step(StepFailure::BootTimeout)
        );
        assert_eq!(
            read("stop failed: stop_timeout", true),
            FailureReason::Parked(ParkReason::StopFailed(StepFailure::Deadline(Step::Stop)))
        );
        assert_eq!(
            read("{\"engine\": \"unreachable\"}", false),
            FailureReason::Step(StepFailure::Provider(
                "{\"engine\": \"unreachable\"}".into()
            ))
        );
        for text in ["provision_timeout", "engine unreachable", "instance died"] {
            assert_eq!(read(text, false).to_string(), text);
        }
    }
}
