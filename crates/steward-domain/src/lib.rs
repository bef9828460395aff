//! The lifecycle of one Steward workspace, as a pure state machine.
//!
//! This crate owns the *decisions*: when a cycle starts, when a restart coalesces, when a
//! health report is dropped, how long to back off, when to give up. It owns no I/O, no clock,
//! no randomness, no async runtime and no serialization: time and jitter arrive as a [`Tick`],
//! decisions leave as [`Effect`] values for the shell (the workspace actor) to carry out.
//!
//! It must not depend on tokio, actix, sqlx, bollard or serde; the outer crates convert.

mod backoff;
mod cause;
mod ids;
mod machine;
mod phase;
mod policy;
mod spec;
mod time;

pub use backoff::BackoffPolicy;
pub use cause::{Cause, CauseSet};
pub use ids::{Generation, OpId, WorkspaceId};
pub use machine::{
    ConfigChange, Counters, Cycle, DropReason, Effect, Event, Failure, FailureReason, Goal,
    HealthReport, Machine, MachineState, Op, Outcome, ParkReason, Progress, Record, RecordKind,
    Rejection, RestartContext, ScheduledRetry, Settled, StaleResult, Step, StepFailure, Switch,
    SwitchStage, Timer, Transition,
};
pub use phase::{Desired, Phase, ReadyWhen};
pub use policy::Policy;
pub use spec::{limits, LimitError, WorkspaceSpec};
pub use time::{Tick, Timestamp};
