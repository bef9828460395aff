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

    /// The readiness of a new workspace: what its create asked for; else `instance` when it
    /// names a command (a command of the user's is not known to be an agent that registers:
    /// `sleep 600` never would, and would only ever time out booting); else the default of
    /// its provider (`provider_default`).
    pub fn at_create(
        requested: Option<ReadyWhen>,
        names_command: bool,
        provider_default: ReadyWhen,
    ) -> ReadyWhen {
        match (requested, names_command) {
            (Some(requested), _) => requested,
            (None, true) => ReadyWhen::Instance,
            (None, false) => provider_default,
        }
    }

    /// The readiness of a workspace moving to a provider whose default is
    /// `provider_default`: a workspace that names its own command keeps its readiness (chosen
    /// for that command, which moves with it); one that runs the provider's default program
    /// takes the new provider's default.
    pub fn at_switch(
        current: ReadyWhen,
        names_command: bool,
        provider_default: ReadyWhen,
    ) -> ReadyWhen {
        if names_command {
            current
        } else {
            provider_default
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

#[cfg(test)]
mod tests {
    use super::ReadyWhen::{Agent, Instance};
    use super::*;

    #[test]
    fn a_named_command_is_ready_as_an_instance_unless_the_create_says_otherwise() {
        // (asked for, names a command, provider's default) → readiness
        for (requested, command, default, expected) in [
            (None, false, Agent, Agent),
            (None, false, Instance, Instance),
            (None, true, Agent, Instance),
            (Some(Agent), true, Agent, Agent),
            (Some(Agent), true, Instance, Agent),
            (Some(Instance), false, Agent, Instance),
        ] {
            assert_eq!(
                ReadyWhen::at_create(requested, command, default),
                expected,
                "{requested:?} {command} {default:?}"
            );
        }
    }

    #[test]
    fn a_switch_keeps_the_readiness_of_a_named_command() {
        assert_eq!(ReadyWhen::at_switch(Instance, true, Agent), Instance);
        assert_eq!(ReadyWhen::at_switch(Agent, true, Instance), Agent);
        assert_eq!(ReadyWhen::at_switch(Instance, false, Agent), Agent);
        assert_eq!(ReadyWhen::at_switch(Agent, false, Instance), Instance);
    }
}
