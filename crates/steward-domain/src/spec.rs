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

/// What one workspace may hold. The same limits hold on every path that changes it — a
/// create, a secret set, a model set — so that whatever is accepted can be started: an
/// instance's environment and arguments are bounded by the kernel (`E2BIG`, "Argument list
/// too long"), and every entry is copied into each start.
pub mod limits {
    /// Longest workspace name, in characters.
    pub const NAME_MAX: usize = 128;
    /// Longest env or secret key, in bytes.
    pub const KEY_MAX: usize = 128;
    /// Longest env or secret value, model, image or command argument, in bytes.
    pub const VALUE_MAX: usize = 32 * 1024;
    /// Most env entries; most secrets; most command arguments.
    pub const ENTRIES_MAX: usize = 256;
    /// Largest total of what the instance receives from the workspace: every env entry and
    /// secret as `KEY=value`, the model, and the command's arguments, in bytes (the daemon's
    /// own `STEWARD_*` variables come on top; they are small). A quarter of Linux's smallest
    /// usual `ARG_MAX` (1 MiB).
    pub const ENVIRONMENT_MAX: usize = 256 * 1024;
}

/// Why a workspace's configuration cannot be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// More than [`limits::ENTRIES_MAX`] entries in `field` (`env`, `secrets`, `command`).
    TooManyEntries {
        /// Which collection.
        field: &'static str,
    },
    /// The instance's environment and arguments would exceed [`limits::ENVIRONMENT_MAX`].
    EnvironmentTooLarge {
        /// Their size, in bytes.
        bytes: usize,
    },
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitError::TooManyEntries { field } => write!(
                f,
                "{field} would have more than {} entries",
                limits::ENTRIES_MAX
            ),
            LimitError::EnvironmentTooLarge { bytes } => write!(
                f,
                "the instance's environment and arguments would take {bytes} bytes, more than {}",
                limits::ENVIRONMENT_MAX
            ),
        }
    }
}

impl WorkspaceSpec {
    /// Checks that this spec, with secrets of these `(key, value length)`s, fits an instance:
    /// entry counts and the total size of its environment and arguments.
    pub fn check_fits<'a>(
        &self,
        secrets: impl ExactSizeIterator<Item = (&'a str, usize)>,
    ) -> Result<(), LimitError> {
        let too_many = |n: usize| n > limits::ENTRIES_MAX;
        let arguments = self.command.as_deref().unwrap_or_default();
        for (field, n) in [
            ("env", self.env.len()),
            ("secrets", secrets.len()),
            ("command", arguments.len()),
        ] {
            if too_many(n) {
                return Err(LimitError::TooManyEntries { field });
            }
        }
        // `KEY=value` and its terminating NUL; an argument and its NUL.
        let entry = |key: usize, value: usize| key + value + 2;
        let bytes = self
            .env
            .iter()
            .map(|(k, v)| entry(k.len(), v.len()))
            .chain(secrets.map(|(k, len)| entry(k.len(), len)))
            .chain(
                self.model
                    .iter()
                    .map(|m| entry("STEWARD_MODEL".len(), m.len())),
            )
            .chain(arguments.iter().map(|a| a.len() + 1))
            .sum();
        if bytes > limits::ENVIRONMENT_MAX {
            return Err(LimitError::EnvironmentTooLarge { bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkspaceSpec {
        WorkspaceSpec {
            name: "w".into(),
            provider: "sim".into(),
            image: None,
            command: None,
            env: BTreeMap::new(),
            model: None,
        }
    }

    #[test]
    fn counts_and_the_total_environment_are_bounded() {
        let keys: Vec<String> = (0..=limits::ENTRIES_MAX).map(|i| format!("K{i}")).collect();
        let secrets = |n: usize, len: usize| keys[..n].iter().map(move |k| (k.as_str(), len));
        assert_eq!(spec().check_fits(secrets(limits::ENTRIES_MAX, 1)), Ok(()));
        assert_eq!(
            spec().check_fits(secrets(limits::ENTRIES_MAX + 1, 1)),
            Err(LimitError::TooManyEntries { field: "secrets" })
        );
        // Seven secrets of the largest value fit; eight do not.
        let fits = secrets(7, limits::VALUE_MAX);
        assert_eq!(spec().check_fits(fits), Ok(()));
        let over = spec().check_fits(secrets(8, limits::VALUE_MAX));
        assert!(
            matches!(over, Err(LimitError::EnvironmentTooLarge { bytes }) if bytes > limits::ENVIRONMENT_MAX),
            "{over:?}"
        );
        // The env, the model and the command count towards the same total.
        let mut big = spec();
        big.env
            .insert("E".into(), "e".repeat(limits::ENVIRONMENT_MAX / 2));
        big.model = Some("m".repeat(limits::ENVIRONMENT_MAX / 4));
        assert_eq!(big.check_fits(secrets(0, 0)), Ok(()));
        big.command = Some(vec!["c".repeat(limits::ENVIRONMENT_MAX / 4)]);
        assert!(big.check_fits(secrets(0, 0)).is_err());
        let mut args = spec();
        args.command = Some(vec!["a".into(); limits::ENTRIES_MAX + 1]);
        assert_eq!(
            args.check_fits(secrets(0, 0)),
            Err(LimitError::TooManyEntries { field: "command" })
        );
    }
}
