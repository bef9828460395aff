//! Why things went wrong, as values: why a step failed, why a workspace was parked, why a
//! switch was rolled back, why a health restart was dropped, what a stale result was.
//!
//! Code matches on these; users read their `Display` (the `failure.reason` of a workspace
//! and the `reason` of its events); scripts read their [`code`](StepFailure::code), a stable
//! snake_case name.

use crate::{Generation, OpId, Step};
use std::fmt;

/// Why a provider step, a cycle or a booting instance failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepFailure {
    /// The provider answered with an error (or its call panicked): its message.
    Provider(String),
    /// The step's deadline passed (`provision_timeout` for a start, `stop_timeout` for the
    /// others); the step was abandoned.
    Deadline(Step),
    /// The instance came up, but its agent did not register within `boot_timeout`.
    BootTimeout,
    /// Probes saw the instance up dead (`failure_threshold` reports in a row).
    InstanceDied,
    /// A daemon or actor restart cut the cycle short.
    Interrupted,
    /// A stop or delete arrived while the cycle ran: it was not carried on.
    Cancelled,
}

impl StepFailure {
    /// The stable snake_case name of the kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            StepFailure::Provider(_) => "provider_error",
            StepFailure::Deadline(_) => "deadline",
            StepFailure::BootTimeout => "boot_timeout",
            StepFailure::InstanceDied => "instance_died",
            StepFailure::Interrupted => "interrupted",
            StepFailure::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepFailure::Provider(message) => f.write_str(message),
            StepFailure::Deadline(Step::Start) => f.write_str("provision_timeout"),
            StepFailure::Deadline(_) => f.write_str("stop_timeout"),
            StepFailure::BootTimeout => f.write_str("boot_timeout"),
            StepFailure::InstanceDied => f.write_str("instance died"),
            StepFailure::Interrupted => {
                f.write_str("interrupted: the daemon restarted during the cycle")
            }
            StepFailure::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// Why a workspace was parked in `failed`, where only a user intent moves it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParkReason {
    /// The instance kept dying: the breaker tripped on health restarts.
    CrashLoop,
    /// Cycles kept failing (provider errors, deadlines, interruptions).
    ProvisionFailed,
    /// Agents kept not registering in time.
    BootTimeout,
    /// A user's stop failed; nothing is known to run, and nothing is retried.
    StopFailed(StepFailure),
}

impl ParkReason {
    /// The breaker reason when failures like `failure` trip it.
    pub fn tripped_by(failure: &StepFailure) -> Self {
        match failure {
            StepFailure::InstanceDied => ParkReason::CrashLoop,
            StepFailure::BootTimeout => ParkReason::BootTimeout,
            StepFailure::Provider(_)
            | StepFailure::Deadline(_)
            | StepFailure::Interrupted
            | StepFailure::Cancelled => ParkReason::ProvisionFailed,
        }
    }

    /// The stable snake_case name of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            ParkReason::CrashLoop => "crash_loop",
            ParkReason::ProvisionFailed => "provision_failed",
            ParkReason::BootTimeout => "boot_timeout",
            ParkReason::StopFailed(_) => "stop_failed",
        }
    }
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParkReason::StopFailed(failure) => write!(f, "stop failed: {failure}"),
            other => f.write_str(other.code()),
        }
    }
}

/// The reason of a workspace's last failure (what users see as `failure.reason`), or of a
/// switch that was rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// A step, a cycle or a booting instance failed; the workspace retries (or rolls a
    /// switch back).
    Step(StepFailure),
    /// The workspace was parked.
    Parked(ParkReason),
    /// A stopped workspace's instance could not be released from the provider it leaves.
    ReleaseFailed(StepFailure),
}

impl FailureReason {
    /// The stable snake_case name: the step failure's or park reason's code, or
    /// `release_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            FailureReason::Step(failure) => failure.code(),
            FailureReason::Parked(reason) => reason.code(),
            FailureReason::ReleaseFailed(_) => "release_failed",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Step(failure) => failure.fmt(f),
            FailureReason::Parked(reason) => reason.fmt(f),
            FailureReason::ReleaseFailed(failure) => write!(f, "release failed: {failure}"),
        }
    }
}

/// Why a health restart was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A cycle (or another operation) is in flight.
    CycleInFlight,
    /// Inside the debounce window after the last cycle started.
    Debounce,
    /// Inside the settle window after the last cycle ended.
    Settle,
    /// The report is for another generation than the one up.
    StaleGeneration,
    /// The instance is still booting: not dead.
    Pending,
    /// No instance is meant to be up (stopped, failed, deleting, retry scheduled).
    NotRunning,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 6] = [
        DropReason::CycleInFlight,
        DropReason::Debounce,
        DropReason::Settle,
        DropReason::StaleGeneration,
        DropReason::Pending,
        DropReason::NotRunning,
    ];

    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::CycleInFlight => "cycle_in_flight",
            DropReason::Debounce => "debounce",
            DropReason::Settle => "settle",
            DropReason::StaleGeneration => "stale_generation",
            DropReason::Pending => "pending",
            DropReason::NotRunning => "not_running",
        }
    }

    /// Its index in [`DropReason::ALL`] (and in `Counters::dropped`).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A result that arrived for something the machine no longer waits for: ignored, counted and
/// recorded (`stale_result_ignored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleResult {
    /// The completion of an operation that was abandoned or never issued.
    Completion(OpId),
    /// A heartbeat of an agent that is not the one up.
    Heartbeat(Generation),
    /// A registration of an agent that is not the one up or being started.
    Registration(Generation),
}

impl fmt::Display for StaleResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleResult::Completion(op) => write!(f, "completion of operation {}", op.0),
            StaleResult::Heartbeat(generation) => write!(f, "heartbeat of generation {generation}"),
            StaleResult::Registration(generation) => {
                write!(f, "agent registration of generation {generation}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_they_always_did() {
        let provider = StepFailure::Provider("engine unreachable".into());
        assert_eq!(provider.to_string(), "engine unreachable");
        assert_eq!(
            StepFailure::Deadline(Step::Start).to_string(),
            "provision_timeout"
        );
        assert_eq!(
            StepFailure::Deadline(Step::RemoveOld).to_string(),
            "stop_timeout"
        );
        assert_eq!(
            ParkReason::StopFailed(StepFailure::Deadline(Step::Stop)).to_string(),
            "stop failed: stop_timeout"
        );
        assert_eq!(
            FailureReason::ReleaseFailed(provider).to_string(),
            "release failed: engine unreachable"
        );
        assert_eq!(
            FailureReason::Parked(ParkReason::CrashLoop).to_string(),
            "crash_loop"
        );
    }

    #[test]
    fn the_breaker_names_what_tripped_it() {
        assert_eq!(
            ParkReason::tripped_by(&StepFailure::InstanceDied),
            ParkReason::CrashLoop
        );
        assert_eq!(
            ParkReason::tripped_by(&StepFailure::BootTimeout),
            ParkReason::BootTimeout
        );
        assert_eq!(
            ParkReason::tripped_by(&StepFailure::Deadline(Step::Start)),
            ParkReason::ProvisionFailed
        );
    }

    #[test]
    fn drop_reasons_index_their_counters() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
