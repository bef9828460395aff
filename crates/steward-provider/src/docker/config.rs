//! `[providers.docker]`: the operator's settings of the docker provider, and the checks that
//! refuse settings the engine would reject on every call.

use crate::ProviderError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[providers.docker]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Whether the provider is offered at all.
    pub enabled: bool,
    /// Unix socket of the engine.
    pub socket: PathBuf,
    /// Value of the `io.steward.owner` label: which containers are this daemon's. Two
    /// daemons (or test runs) with different owners never touch each other's containers.
    pub owner: String,
    /// Container name = prefix + workspace id.
    pub name_prefix: String,
    /// Network mode of every container. The operator's choice; workspaces have none.
    pub network_mode: String,
    /// Time between SIGTERM and SIGKILL on stop (the container's `StopTimeout` too), in
    /// whole seconds: the engine counts in seconds.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Engine calls in flight at once; more queue. A restart storm then waits its turn
    /// instead of overloading a small engine.
    pub max_concurrent_ops: usize,
    /// Memory limit of each container, in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit of each container, in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Process limit of each container.
    pub pids_limit: Option<i64>,
    /// Deadline of one engine call, so that a wedged engine cannot hang an operation (a stop
    /// gets `stop_timeout` on top).
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from("/var/run/docker.sock"),
            owner: "steward".to_owned(),
            name_prefix: "steward-".to_owned(),
            network_mode: "host".to_owned(),
            stop_timeout: Duration::from_secs(10),
            max_concurrent_ops: 4,
            memory_bytes: None,
            nano_cpus: None,
            pids_limit: None,
            call_timeout: Duration::from_secs(30),
        }
    }
}

impl DockerConfig {
    /// Refuses settings the engine would reject on every call, or that would make the
    /// provider unsafe (an empty owner would make no container ours, or all of them).
    pub(super) fn validate(&self) -> Result<(), ProviderError> {
        let invalid = |m: String| ProviderError::InvalidSpec(format!("[providers.docker] {m}"));
        if self.owner.trim().is_empty() {
            return Err(invalid("owner must not be empty".to_owned()));
        }
        let prefix_ok = self
            .name_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && self
                .name_prefix
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_alphanumeric());
        if !prefix_ok {
            return Err(invalid(format!(
                "name_prefix {:?} is not a valid container name start ([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
                self.name_prefix
            )));
        }
        if self.network_mode.trim().is_empty() {
            return Err(invalid("network_mode must not be empty".to_owned()));
        }
        if self.max_concurrent_ops == 0 {
            return Err(invalid("max_concurrent_ops must be at least 1".to_owned()));
        }
        if self.call_timeout.is_zero() {
            return Err(invalid("call_timeout must be greater than zero".to_owned()));
        }
        if self.stop_timeout.subsec_nanos() != 0 {
            return Err(invalid(format!(
                "stop_timeout ({:?}) must be whole seconds: the engine counts in seconds",
                self.stop_timeout
            )));
        }
        if i32::try_from(self.stop_timeout.as_secs()).is_err() {
            return Err(invalid("stop_timeout is too large".to_owned()));
        }
        Ok(())
    }

    /// `stop_timeout` in the engine's unit (whole seconds; [`DockerConfig::validate`] checks
    /// that it fits).
    pub(crate) fn stop_timeout_secs(&self) -> i32 {
        i32::try_from(self.stop_timeout.as_secs()).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_apply_to_missing_keys_and_unknown_keys_are_refused() {
        let config: DockerConfig = toml::from_str("").expect("empty config");
        assert_eq!(config, DockerConfig::default());
        assert!(config.enabled);
        assert_eq!(config.socket, PathBuf::from("/var/run/docker.sock"));
        assert_eq!(config.owner, "steward");
        assert_eq!(config.name_prefix, "steward-");
        assert_eq!(config.network_mode, "host");
        assert_eq!(config.stop_timeout, Duration::from_secs(10));
        assert_eq!(config.max_concurrent_ops, 4);
        assert_eq!(config.call_timeout, Duration::from_secs(30));
        assert_eq!(
            (config.memory_bytes, config.nano_cpus, config.pids_limit),
            (None, None, None)
        );

        let config: DockerConfig = toml::from_str(
            "owner = \"ci-42\"\nnetwork_mode = \"bridge\"\nmemory_bytes = 268435456\nmax_concurrent_ops = 1",
        )
        .expect("partial config");
        assert_eq!(config.owner, "ci-42");
        assert_eq!(config.network_mode, "bridge");
        assert_eq!(config.memory_bytes, Some(268_435_456));
        assert_eq!(config.max_concurrent_ops, 1);
        assert!(toml::from_str::<DockerConfig>("privileged = true").is_err());
    }

    #[test]
    fn configs_that_cannot_work_are_refused() {
        let bad = [
            DockerConfig {
                owner: " ".to_owned(),
                ..DockerConfig::default()
            },
            DockerConfig {
                name_prefix: "-x".to_owned(),
                ..DockerConfig::default()
            },
            DockerConfig {
                name_prefix: "a/b".to_owned(),
                ..DockerConfig::default()
            },
            DockerConfig {
                max_concurrent_ops: 0,
                ..DockerConfig::default()
            },
            DockerConfig {
                call_timeout: Duration::ZERO,
                ..DockerConfig::default()
            },
            DockerConfig {
                stop_timeout: Duration::from_secs(u64::from(u32::MAX)),
                ..DockerConfig::default()
            },
            DockerConfig {
                stop_timeout: Duration::from_millis(1500),
                ..DockerConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(DockerConfig::default().validate().is_ok());
        assert!(DockerConfig {
            name_prefix: String::new(),
            ..DockerConfig::default()
        }
        .validate()
        .is_ok());
    }
}
