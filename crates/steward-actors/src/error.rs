//! Why a message to a workspace could not be served.

use steward_domain::WorkspaceId;

/// Errors of the registry and actors, each a distinct answer for the API to map.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ActorError {
    /// No such workspace.
    #[error("workspace {0} not found")]
    NotFound(WorkspaceId),
    /// No such secret.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// An agent token that is not the current one of its workspace (or no such workspace).
    #[error("agent token rejected")]
    Unauthorized,
    /// The workspace is being deleted.
    #[error("workspace is being deleted")]
    Deleting,
    /// A provider switch is already in progress; nothing was done.
    #[error("a provider switch is already in progress")]
    AlreadySwitching,
    /// The workspace is already on the provider asked for; nothing was done.
    #[error("the workspace is already on provider {0:?}")]
    SameProvider(String),
    /// Another live workspace has this name; nothing was created.
    #[error("the name {name:?} is taken by workspace {holder}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The workspace that has it.
        holder: WorkspaceId,
    },
    /// The provider named is not configured.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    /// The provider named exists but is disabled on this daemon; nothing was done.
    #[error("provider {0:?} is disabled")]
    ProviderDisabled(String),
    /// The provider cannot run the workspace as configured (docker without an image, say);
    /// nothing was done. The text says why.
    #[error("{0}")]
    NotAdmitted(String),
    /// The change would make the workspace's configuration too large to start; nothing
    /// was done.
    #[error("{0}")]
    Limit(steward_domain::LimitError),
    /// The idempotency key was used with another body.
    #[error("idempotency key reused with a different request body")]
    IdempotencyConflict,
    /// The actor's mailbox is full.
    #[error("workspace is overloaded, retry later")]
    Overloaded,
    /// The actor is restarting (after a crash); the request was not processed.
    #[error("workspace actor is restarting, retry later")]
    Restarting,
    /// The daemon is shutting down.
    #[error("daemon is shutting down")]
    ShuttingDown,
    /// The store failed; the intent was not committed.
    #[error("store unavailable: {0}")]
    Store(String),
    /// A wait for a phase no wait can be for (only `running`, `stopped`, `deleted`).
    #[error("cannot wait for phase {0:?}: only running, stopped or deleted")]
    NotWaitable(&'static str),
    /// The output asked for is no longer kept by the provider.
    #[error("{0}")]
    OutputGone(String),
    /// The provider failed.
    #[error("provider: {0}")]
    Provider(String),
}
