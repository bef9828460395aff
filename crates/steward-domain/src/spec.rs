//! What a workspace runs: the user-supplied part of its configuration (secrets aside).

use std::collections::BTreeMap;

/// The configuration a cycle provisions from. Secrets are kept apart (encrypted at rest and
/// never in this type) so that a spec can be shown, logged and compared freely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceSpec {
    /// Human name (not unique).
    pub name: String,
    /// Provider name, e.g. `sim`.
    pub provider: String,
    /// Image (docker), if any.
    pub image: Option<String>,
    /// Command and arguments (process, docker), if any. Never passed through a shell.
    pub command: Option<Vec<String>>,
    /// Plain environment variables.
    pub env: BTreeMap<String, String>,
    /// Model setting handed to the agent.
    pub model: Option<String>,
}
