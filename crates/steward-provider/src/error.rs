//! Errors of provider operations. Engine-specific error types stay inside each provider.

/// Why a provider operation failed. The message is shown to users and recorded in events,
/// so it must never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The workspace already has an instance.
    #[error("instance already exists (generation {0})")]
    AlreadyExists(u64),
    /// The engine could not be reached or answered with an error.
    #[error("engine: {0}")]
    Engine(String),
    /// The spec cannot be run by this provider.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The output asked for is no longer kept (a generation replaced or rotated away).
    #[error("{0}")]
    OutputGone(String),
    /// An injected fault (sim provider).
    #[error("injected fault: {0}")]
    Injected(&'static str),
}
