//! The agent's configuration, parsed from `STEWARD_*` environment variables.
//!
//! Owns the variable names, their defaults and their validation. Parsing works on a plain map so
//! tests never touch the process environment. Error messages name the variable but never repeat
//! its value: the token must not leak, and the other values are not ours to log either.

use std::collections::HashMap;
use std::env::VarError;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use uuid::Uuid;

/// Workspace this instance belongs to (uuid).
pub const WORKSPACE_ID: &str = "STEWARD_WORKSPACE_ID";
/// Restart generation of this instance (integer).
pub const GENERATION: &str = "STEWARD_GENERATION";
/// Per-generation bearer token for the agent channel, in both directions.
pub const AGENT_TOKEN: &str = "STEWARD_AGENT_TOKEN";
/// Base URL of the daemon (plain `http://`).
pub const CONTROL_URL: &str = "STEWARD_CONTROL_URL";
/// Optional model setting, reported by `/health`.
pub const MODEL: &str = "STEWARD_MODEL";
/// Optional address the agent's HTTP server binds (default `127.0.0.1:0`).
pub const AGENT_LISTEN: &str = "STEWARD_AGENT_LISTEN";
/// Optional URL to register instead of `http://<bound address>`.
pub const AGENT_URL: &str = "STEWARD_AGENT_URL";
/// Optional heartbeat period, humantime syntax (default `2s`).
pub const HEARTBEAT_INTERVAL: &str = "STEWARD_HEARTBEAT_INTERVAL";

const ALL: [&str; 8] = [
    WORKSPACE_ID,
    GENERATION,
    AGENT_TOKEN,
    CONTROL_URL,
    MODEL,
    AGENT_LISTEN,
    AGENT_URL,
    HEARTBEAT_INTERVAL,
];

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Everything the agent needs to run. `Debug` is safe to print: the token is redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identity reported by `/health` and checked against the daemon's registration reply.
    pub workspace_id: Uuid,
    /// Generation this instance was started as; a newer one supersedes it.
    pub generation: u64,
    /// Bearer token: sent to the daemon and required from it on `POST /context`.
    pub token: SecretString,
    /// Daemon base URL; the agent routes are under `/v1/agent/`.
    pub control_url: Url,
    /// Model setting, informational only.
    pub model: Option<String>,
    /// Where the agent's own HTTP server binds.
    pub listen: SocketAddr,
    /// URL to register; `None` means `http://<bound address>`, known only after binding.
    pub advertise_url: Option<Url>,
    /// Time between heartbeats; never zero.
    pub heartbeat_interval: Duration,
}

/// Why the environment does not describe a runnable agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set but its value cannot be used.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What is wrong, without the value itself.
        reason: String,
    },
}

impl Config {
    /// Reads the `STEWARD_*` variables of this process.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        let mut vars = HashMap::new();
        for name in ALL {
            match std::env::var(name) {
                Ok(value) => {
                    vars.insert(name.to_owned(), value);
                }
                Err(VarError::NotPresent) => {}
                Err(VarError::NotUnicode(_)) => return Err(invalid(name, "not valid UTF-8")),
            }
        }
        Self::from_env_map(&vars)
    }

    /// Parses a configuration from variable name → value. Empty values count as unset.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));

        let workspace_id = required(WORKSPACE_ID)?
            .parse::<Uuid>()
            .map_err(|e| invalid(WORKSPACE_ID, e))?;
        let generation = required(GENERATION)?
            .parse::<u64>()
            .map_err(|e| invalid(GENERATION, e))?;
        let token = SecretString::from(required(AGENT_TOKEN)?);
        let control_url = parse_url(CONTROL_URL, required(CONTROL_URL)?)?;
        if control_url.scheme() != "http" {
            // The agent is built without TLS so that it links statically.
            return Err(invalid(CONTROL_URL, "only http:// URLs are supported"));
        }
        let listen = get(AGENT_LISTEN)
            .map(|v| {
                v.parse::<SocketAddr>()
                    .map_err(|e| invalid(AGENT_LISTEN, e))
            })
            .transpose()?
            .unwrap_or(DEFAULT_LISTEN);
        let advertise_url = get(AGENT_URL)
            .map(|v| parse_url(AGENT_URL, v))
            .transpose()?;
        let heartbeat_interval = get(HEARTBEAT_INTERVAL)
            .map(|v| humantime::parse_duration(v).map_err(|e| invalid(HEARTBEAT_INTERVAL, e)))
            .transpose()?
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
        if heartbeat_interval.is_zero() {
            return Err(invalid(HEARTBEAT_INTERVAL, "must be greater than zero"));
        }

        Ok(Self {
            workspace_id,
            generation,
            token,
            control_url,
            model: get(MODEL).map(str::to_owned),
            listen,
            advertise_url,
            heartbeat_interval,
        })
    }
}

fn parse_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| invalid(var, e))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        _ => Err(invalid(var, "expected an http:// URL with a host")),
    }
}

fn invalid(var: &'static str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = [
            (WORKSPACE_ID, "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"),
            (GENERATION, "7"),
            (AGENT_TOKEN, "s3cret"),
            (CONTROL_URL, "http://127.0.0.1:7878"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    #[test]
    fn minimal_environment_gets_the_defaults() {
        let config = Config::from_env_map(&vars(&[])).expect("valid");
        assert_eq!(config.generation, 7);
        assert_eq!(config.token.expose_secret(), "s3cret");
        assert_eq!(config.listen, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(config.advertise_url, None);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(config.model, None);
    }

    #[test]
    fn optional_variables_are_read() {
        let config = Config::from_env_map(&vars(&[
            (MODEL, "small-1"),
            (AGENT_LISTEN, "0.0.0.0:9000"),
            (AGENT_URL, "http://agent.internal:9000"),
            (HEARTBEAT_INTERVAL, "250ms"),
        ]))
        .expect("valid");
        assert_eq!(config.model.as_deref(), Some("small-1"));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(
            config.advertise_url.map(String::from).as_deref(),
            Some("http://agent.internal:9000/")
        );
        assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
    }

    #[test]
    fn each_missing_or_empty_required_variable_is_named() {
        for name in [WORKSPACE_ID, GENERATION, AGENT_TOKEN, CONTROL_URL] {
            let mut map = vars(&[]);
            map.remove(name);
            assert_eq!(
                Config::from_env_map(&map).err(),
                Some(ConfigError::Missing(name))
            );
            map.insert(name.to_owned(), "  ".to_owned());
            assert_eq!(
                Config::from_env_map(&map).err(),
                Some(ConfigError::Missing(name))
            );
        }
    }

    #[test]
    fn invalid_values_are_rejected_by_variable() {
        let cases = [
            (WORKSPACE_ID, "not-a-uuid"),
            (GENERATION, "-1"),
            (GENERATION, "three"),
            (CONTROL_URL, "127.0.0.1:7878"),
            (CONTROL_URL, "https://steward:7878"),
            (AGENT_LISTEN, "localhost"),
            (AGENT_URL, "ftp://agent"),
            (HEARTBEAT_INTERVAL, "often"),
            (HEARTBEAT_INTERVAL, "0s"),
        ];
        for (name, value) in cases {
            match Config::from_env_map(&vars(&[(name, value)])) {
                Err(ConfigError::Invalid { var, .. }) => assert_eq!(var, name, "{value}"),
                other => panic!("{name}={value}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_and_debug_output_never_show_the_token() {
        let config = Config::from_env_map(&vars(&[])).expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
