//! Messages a workspace actor answers, and the views it answers with.

use actix::Message;
use secrecy::SecretString;
use std::collections::BTreeMap;
use steward_domain::{
    CauseSet, Counters, Cycle, Failure, Generation, Goal, HealthReport, MachineState, Op, Outcome,
    Phase, Progress, ReadyWhen, Settled, Switch, Timestamp, Transition, WorkspaceId, WorkspaceSpec,
};
use steward_store::{AgentRecord, WorkspaceRecord};

use crate::ActorError;

/// A user's intent for one workspace.
#[derive(Clone, Debug)]
pub enum Intent {
    /// Provision the freshly created workspace (sent once, by the registry).
    Create {
        /// `(key, body hash)` recorded with the workspace.
        idempotency: Option<(String, String)>,
    },
    /// Replace the instance.
    Restart,
    /// Make it run.
    Start,
    /// Stop it.
    Stop,
    /// Delete it.
    Delete,
    /// Set a secret (config restart).
    SetSecret {
        /// Key.
        key: String,
        /// Value.
        value: SecretString,
    },
    /// Remove a secret (config restart).
    RemoveSecret {
        /// Key.
        key: String,
    },
    /// Set the model (config restart).
    SetModel {
        /// New model.
        model: String,
    },
    /// Move the workspace to another provider.
    SwitchProvider {
        /// The provider to move to (known to be configured).
        to: String,
        /// When an instance of `to` counts as ready (its default).
        to_ready: ReadyWhen,
    },
}

/// Sends an intent; answered with the decision and the commit to await before it counts
/// (`None`: nothing to wait for).
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(IntentReply, Option<crate::workspace::Commit>), ActorError>")]
pub(crate) struct Submit(pub Intent);

/// The answer to an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntentReply {
    /// What the machine decided.
    pub outcome: Outcome,
    /// The generation concerned: the new or pending cycle's, else the current one.
    pub generation: Generation,
    /// What a client that waits for this intent to settle waits for.
    pub goal: Goal,
}

/// Asks for the workspace's progress cell: a receiver the actor updates after each event
/// (see [`steward_domain::Progress`]). Closed when the actor stops (the workspace is gone,
/// or its actor is being restarted from the store).
#[derive(Clone, Debug, Message)]
#[rtype(result = "tokio::sync::watch::Receiver<Progress>")]
pub(crate) struct Subscribe;

/// How a wait ended.
#[derive(Clone, Debug)]
pub struct Waited {
    /// How the goal settled; `None` if the time ran out first (or the daemon began to shut
    /// down). Nothing is cancelled either way.
    pub settled: Option<Settled>,
    /// The workspace as it is then; `None` once it is gone.
    pub workspace: Option<WorkspaceView>,
}

/// Kills the instance through its provider, as a crash would (fault drill). Not an intent:
/// the machine learns of the death the way it would learn of a real crash.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Kill;

/// What a probe of `provider` saw of the workspace's instance. The actor decides what it
/// means; a report from a provider the workspace is not on (it switched) is ignored.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Probe {
    /// The provider that was asked.
    pub provider: std::sync::Arc<str>,
    /// What it saw.
    pub liveness: steward_provider::Liveness,
}

/// Hands the actor the completion of an operation, as a provider call would. Only for tests
/// that show what a late (stale) completion does: in the daemon, abandoned operations are
/// cancelled and never report back.
#[doc(hidden)]
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct LateCompletion {
    /// The operation it claims to complete.
    pub op: steward_domain::OpId,
    /// Its result.
    pub result: Result<(), String>,
}

/// A call of the agent inside an instance, authenticated by its generation's token.
#[derive(Clone, Debug)]
pub enum AgentCall {
    /// The agent is up and reachable at `url`.
    Register {
        /// Where the daemon can reach the agent.
        url: String,
    },
    /// The agent is alive.
    Heartbeat,
    /// Only checks the token (current generation, right secret) and changes nothing: the
    /// HTTP facade asks this before it reads an agent request's body.
    Authenticate,
}

/// Sends an agent call; answered with the token's generation once accepted.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Generation, ActorError>")]
pub struct FromAgent {
    /// The bearer token presented.
    pub token: SecretString,
    /// What the agent says.
    pub call: AgentCall,
}

/// Asks for the workspace document.
#[derive(Clone, Debug, Message)]
#[rtype(result = "WorkspaceView")]
pub struct Get;

/// Asks for the live actor inspection.
#[derive(Clone, Debug, Message)]
#[rtype(result = "ActorView")]
pub struct Inspect;

/// Asks the actor to accept no more intents and to answer once no operation is in flight.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A workspace as users see it.
#[derive(Clone, Debug)]
pub struct WorkspaceView {
    /// Id.
    pub id: WorkspaceId,
    /// Configuration.
    pub spec: WorkspaceSpec,
    /// Readiness rule.
    pub ready_when: ReadyWhen,
    /// Phase.
    pub phase: Phase,
    /// Latest generation started or scheduled.
    pub generation: Generation,
    /// Generation of the instance up.
    pub observed_generation: Generation,
    /// Whether a cycle is in flight.
    pub in_flight: bool,
    /// Causes of the pending restart (empty: none).
    pub pending: CauseSet,
    /// Agent channel state.
    pub agent: AgentRecord,
    /// What the probes last saw of the instance up.
    pub health: HealthView,
    /// Last failure.
    pub failure: Option<Failure>,
    /// The provider switch in progress.
    pub switch: Option<Switch>,
    /// Secret keys (never values).
    pub secret_keys: Vec<String>,
    /// `seq` of its latest event (events are numbered 1, 2, … per workspace), so that a
    /// reader can page through its history newest first.
    pub last_event_seq: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl WorkspaceView {
    /// The view of a workspace with this configuration and state.
    pub(crate) fn of(
        id: WorkspaceId,
        spec: WorkspaceSpec,
        state: &MachineState,
        agent: AgentRecord,
        secret_keys: Vec<String>,
        last_event_seq: i64,
        (created_at, updated_at): (Timestamp, Timestamp),
    ) -> WorkspaceView {
        WorkspaceView {
            id,
            spec,
            ready_when: state.ready_when,
            phase: state.phase,
            generation: state.generation,
            observed_generation: state.observed_generation,
            in_flight: state.cycle.is_some(),
            pending: state.pending,
            agent,
            health: HealthView::default(),
            failure: state.failure.clone(),
            switch: state.switch.as_deref().cloned(),
            secret_keys,
            last_event_seq,
            created_at,
            updated_at,
        }
    }
}

/// What the probes last saw of a workspace's instance up, as its actor knows it (nothing for
/// a workspace read from the store: probes are not persisted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    /// The last probe report about the generation up, and when it came (`None`: none since
    /// that generation came up, or since this daemon started).
    pub last_report: Option<(HealthReport, Timestamp)>,
    /// Dead reports in a row counted towards a health restart (those inside the debounce or
    /// settle window are dropped, not counted: see `last_report`).
    pub dead_in_a_row: u32,
}

/// The view of a stored workspace (one this daemon has no actor for).
impl From<&WorkspaceRecord> for WorkspaceView {
    fn from(record: &WorkspaceRecord) -> Self {
        WorkspaceView::of(
            record.id,
            record.spec.clone(),
            &record.state,
            record.agent.clone(),
            record.secrets.keys().cloned().collect(),
            record.last_event_seq,
            (record.created_at, record.updated_at),
        )
    }
}

/// What an operator sees of a live actor.
#[derive(Clone, Debug)]
pub struct ActorView {
    /// Workspace.
    pub id: WorkspaceId,
    /// Phase.
    pub phase: Phase,
    /// Latest generation.
    pub generation: Generation,
    /// Generation up.
    pub observed_generation: Generation,
    /// Cycle in flight.
    pub cycle: Option<Cycle>,
    /// Provider operation in flight.
    pub op: Option<Op>,
    /// Pending restart causes.
    pub pending: CauseSet,
    /// The provider switch in progress.
    pub switch: Option<Switch>,
    /// End of the debounce window, if inside it.
    pub debounce_until: Option<Timestamp>,
    /// End of the settle window, if inside it.
    pub settle_until: Option<Timestamp>,
    /// Consecutive dead reports.
    pub health_failures: u32,
    /// The last probe report: generation, what it said, when.
    pub last_probe: Option<(Generation, HealthReport, Timestamp)>,
    /// Next backoff retry number.
    pub backoff_attempt: u32,
    /// When the scheduled retry fires.
    pub retry_at: Option<Timestamp>,
    /// Counters.
    pub counters: Counters,
    /// Messages waiting in the mailbox.
    pub mailbox_len: usize,
    /// Last error the actor saw.
    pub last_error: Option<String>,
    /// Times this workspace's actor was restarted from the store after a crash.
    pub restarts: u32,
    /// Recent phase transitions.
    pub transitions: Vec<Transition>,
}

/// A workspace to create.
#[derive(Debug)]
pub struct NewWorkspace {
    /// Configuration.
    pub spec: WorkspaceSpec,
    /// Initial secrets.
    pub secrets: BTreeMap<String, SecretString>,
    /// Readiness rule (default: the provider's).
    pub ready_when: Option<ReadyWhen>,
    /// `(Idempotency-Key, keyed digest of the body)`: see [`crate::Registry::request_digest`].
    pub idempotency: Option<(String, String)>,
}
