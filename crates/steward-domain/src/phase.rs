//! Phases a workspace is seen in, what its owner wants, and when it counts as ready.

/// The phase of a workspace, as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A cycle is in flight, or a retry of a failed one is scheduled.
    Provisioning,
    /// The instance is up; the agent of this generation has not registered yet.
    Starting,
    /// Up and ready.
    Running,
    /// A stop is under way.
    Stopping,
    /// No instance, on purpose.
    Stopped,
    /// Parked after repeated failures (or a failed stop); only a user intent moves it on.
    Failed,
    /// A delete is under way.
    Deleting,
    /// Gone. Terminal: the shell purges the workspace.
    Deleted,
}

impl Phase {
    /// Every phase, in a stable order.
    pub const ALL: [Phase; 8] = [
        Phase::Provisioning,
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Stopped,
        Phase::Failed,
        Phase::Deleting,
        Phase::Deleted,
    ];

    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provisioning => "provisioning",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Deleting => "deleting",
            Phase::Deleted => "deleted",
        }
    }

    /// Parses the name produced by [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What the owner of the workspace last asked for. The machine converges towards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Desired {
    /// An instance should be up.
    Running,
    /// No instance should be up; configuration changes wait for the next start.
    Stopped,
    /// The workspace should be gone.
    Deleted,
}

impl Desired {
    /// The snake_case name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Deleted => "deleted",
        }
    }

    /// Parses the name produced by [`Desired::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Desired::Running, Desired::Stopped, Desired::Deleted]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// When a started instance counts as `running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadyWhen {
    /// As soon as the provider reports the instance started.
    Instance,
    /// When the agent of the current generation has registered.
    Agent,
}

impl ReadyWhen {
    /// The snake_case name used at the edges.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyWhen::Instance => "instance",
            ReadyWhen::Agent => "agent",
        }
    }

    /// Parses the name produced by [`ReadyWhen::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "instance" => Some(ReadyWhen::Instance),
            "agent" => Some(ReadyWhen::Agent),
            _ => None,
        }
    }
}
