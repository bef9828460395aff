//! Configuration: `config/default.toml` (compiled in) ← `--config FILE` ← `STEWARD_*`
//! environment variables (`__` separates sections: `STEWARD_RESTART__DEBOUNCE_WINDOW`) ←
//! command-line flags. Unknown keys in a file are errors, not silently ignored.

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use steward_domain::{BackoffPolicy, Policy};
use steward_provider::docker::DockerConfig;
use steward_provider::process::ProcessConfig;
use steward_provider::sim::SimConfig;

/// The built-in defaults, the same file users read.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Top-level sections and keys that `STEWARD_*` variables may set.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "admin_token",
    "control_url",
    "default_provider",
    "log_format",
    "log_summary_interval",
    "shutdown_grace",
    "http",
    "actors",
    "store",
    "restart",
    "backoff",
    "health",
    "providers",
    "console",
];

/// The daemon's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Directory for the SQLite file, the admin token, the secrets key.
    pub data_dir: PathBuf,
    /// Database URL; empty means SQLite under `data_dir`.
    pub database_url: String,
    /// Admin token; when absent, read from (or generated into) `data_dir/admin.token`.
    pub admin_token: Option<SecretString>,
    /// URL agents call back (`STEWARD_CONTROL_URL`); empty: `http://<bound address>`.
    pub control_url: String,
    /// Provider of workspaces created without one.
    pub default_provider: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// How often floods of one kind of log line are summarized.
    #[serde(with = "humantime_serde")]
    pub log_summary_interval: Duration,
    /// How long shutdown waits for in-flight operations.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// HTTP server.
    pub http: HttpConfig,
    /// The logs route.
    pub logs: LogsConfig,
    /// Actors.
    pub actors: ActorsConfig,
    /// Store.
    pub store: StoreConfig,
    /// Restart timing.
    pub restart: RestartConfig,
    /// Retry policy.
    pub backoff: BackoffConfig,
    /// Health probing.
    pub health: HealthConfig,
    /// Providers.
    pub providers: ProvidersConfig,
    /// The web console at `/ui`.
    pub console: steward_console::ConsoleConfig,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// A request's head (line and headers) must arrive within this long.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this long of the handler reading it.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// An idle kept-alive connection is closed after this long (0: no keep-alive).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection being closed is dropped after this long, whatever the client does.
    #[serde(with = "humantime_serde")]
    pub disconnect_timeout: Duration,
    /// How long a delete waits for its workspace to be gone before answering 202.
    #[serde(with = "humantime_serde")]
    pub delete_wait: Duration,
    /// The longest wait a request may ask for (`?wait=`, `GET …/wait?timeout=`).
    #[serde(with = "humantime_serde")]
    pub wait_max: Duration,
}

/// `[logs]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Largest `tail`, and the most lines of kept output one answer carries.
    pub max_tail: usize,
    /// Follows (`follow=true`) in progress at once; more are refused with 429.
    pub max_followers: usize,
}

/// `[actors]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorsConfig {
    /// Most messages waiting for one workspace actor before requests get 503.
    pub mailbox_capacity: usize,
    /// Arbiter threads the actors are spread over (0: one per core).
    pub arbiters: usize,
}

/// `[store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Most commits grouped into one transaction.
    pub max_batch: usize,
    /// Read connections.
    pub max_connections: u32,
    /// SQLite busy timeout.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

/// `[restart]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// Health restarts ignored this long after a cycle starts.
    #[serde(with = "humantime_serde")]
    pub debounce_window: Duration,
    /// Health restarts ignored this long after a cycle ends.
    #[serde(with = "humantime_serde")]
    pub settle_window: Duration,
    /// Longest start step.
    #[serde(with = "humantime_serde")]
    pub provision_timeout: Duration,
    /// Longest stop/remove step.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Longest wait for the agent to register.
    #[serde(with = "humantime_serde")]
    pub boot_timeout: Duration,
    /// Longest attempt to deliver a restart context to the new agent.
    #[serde(with = "humantime_serde")]
    pub context_timeout: Duration,
}

/// `[backoff]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Delay cap.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Jitter fraction.
    pub jitter: f64,
    /// Healthy time that resets the attempt counter.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    /// Failures tolerated inside the window, or in a row.
    pub max_failures: u32,
    /// Breaker window.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

/// `[health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Probe interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive dead reports for a health restart.
    pub failure_threshold: u32,
    /// Silence after which a registered agent counts as dead.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How often agents are told to heartbeat.
    #[serde(with = "humantime_serde")]
    pub agent_heartbeat_interval: Duration,
}

/// `[providers.*]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// The simulated provider (absent: not offered).
    pub sim: Option<SimConfig>,
    /// Local child processes (absent: not offered).
    pub process: Option<ProcessConfig>,
    /// Docker containers (absent: not offered).
    pub docker: Option<DockerConfig>,
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--admin-token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

impl Config {
    /// Layers defaults, `file`, the environment and `overrides`, then checks the result.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only variables naming a configuration key (STEWARD_BIN and the like are not ours).
        // The filter sees the raw name after the prefix, e.g. `RESTART__DEBOUNCE_WINDOW`.
        let env = Env::prefixed("STEWARD_")
            .filter(|key| {
                let section = key.as_str().split("__").next().unwrap_or_default();
                ENV_KEYS.iter().any(|k| section.eq_ignore_ascii_case(k))
            })
            .split("__");
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .context("invalid configuration")?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.actors.mailbox_capacity == 0 {
            bail!("actors.mailbox_capacity must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            bail!("http.max_body_bytes must be at least 1024");
        }
        let http = &self.http;
        if http.header_timeout.is_zero()
            || http.body_timeout.is_zero()
            || http.disconnect_timeout.is_zero()
        {
            bail!("http.header_timeout, body_timeout and disconnect_timeout must be greater than zero: without them a slow client holds its connection forever");
        }
        if !(0.0..=1.0).contains(&self.backoff.jitter) {
            bail!("backoff.jitter must be within [0, 1]");
        }
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            bail!("backoff.initial must be > 0 and backoff.max >= backoff.initial");
        }
        if self.log_summary_interval.is_zero() {
            bail!("log_summary_interval must be greater than zero");
        }
        if self.health.failure_threshold == 0 {
            bail!("health.failure_threshold must be at least 1");
        }
        if self.health.interval.is_zero() {
            bail!("health.interval must be greater than zero");
        }
        if self.health.agent_heartbeat_interval.is_zero()
            || self.health.agent_heartbeat_interval.saturating_mul(2)
                > self.health.heartbeat_timeout
        {
            bail!("health.agent_heartbeat_interval must be > 0 and at most half of health.heartbeat_timeout");
        }
        let probing = self
            .health
            .interval
            .saturating_mul(self.health.failure_threshold);
        if self.restart.debounce_window < probing {
            bail!(
                "restart.debounce_window ({:?}) must not be shorter than health.interval x health.failure_threshold ({:?}): \
                 a probe could otherwise restart an instance its own previous restart has not finished booting",
                self.restart.debounce_window,
                probing
            );
        }
        if let Some(sim) = &self.providers.sim {
            if !(0.0..=1.0).contains(&sim.fail_rate) || !(0.0..=1.0).contains(&sim.panic_rate) {
                bail!("providers.sim.fail_rate and panic_rate must be within [0, 1]");
            }
        }
        self.console.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The database URL, defaulting to SQLite under the data dir.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("steward.db").display()
            )
        } else {
            self.database_url.clone()
        }
    }

    /// The lifecycle policy.
    pub fn policy(&self) -> Policy {
        Policy {
            debounce_window: self.restart.debounce_window,
            settle_window: self.restart.settle_window,
            provision_timeout: self.restart.provision_timeout,
            stop_timeout: self.restart.stop_timeout,
            boot_timeout: self.restart.boot_timeout,
            failure_threshold: self.health.failure_threshold,
            heartbeat_timeout: self.health.heartbeat_timeout,
            backoff: BackoffPolicy {
                initial: self.backoff.initial,
                max: self.backoff.max,
                jitter: self.backoff.jitter,
                reset_after: self.backoff.reset_after,
                max_failures: self.backoff.max_failures,
                failure_window: self.backoff.failure_window,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    // figment::Jail's closures return figment::Error, which is large; that is its API.
    #![allow(clippy::result_large_err)]
    use super::*;

    // Every test that loads configuration runs in a figment `Jail`: it serializes them and
    // gives each a clean environment (one of them sets STEWARD_* variables).

    #[test]
    fn the_default_file_is_a_complete_valid_configuration() {
        figment::Jail::expect_with(|_| {
            let config = Config::load(None, Overrides::default()).map_err(|e| format!("{e:#}"))?;
            assert_eq!(config.listen, "127.0.0.1:7878");
            assert_eq!(config.data_dir, PathBuf::from("./data"));
            assert_eq!(config.restart.debounce_window, Duration::from_secs(60));
            let sim = config.providers.sim.as_ref().expect("[providers.sim]");
            assert_eq!(sim.start_delay, Duration::from_millis(200));
            assert_eq!(sim.crash_after, Duration::ZERO);
            let process = config
                .providers
                .process
                .as_ref()
                .expect("[providers.process]");
            assert_eq!(process.stop_grace, Duration::from_secs(5));
            let docker = config
                .providers
                .docker
                .as_ref()
                .expect("[providers.docker]");
            assert!(!docker.enabled, "docker is off by default");
            assert_eq!(docker.stop_timeout, Duration::from_secs(10));
            assert_eq!(docker.call_timeout, Duration::from_secs(30));
            let console = &config.console;
            assert!(console.enabled, "the console is on by default");
            assert_eq!(console.session_ttl, Duration::from_secs(12 * 3600));
            assert_eq!(
                (console.page_size, console.login_attempts_per_minute),
                (50, 10)
            );
            Ok(())
        });
    }

    /// The house style of `config/default.toml`: every key has a comment right above it, and
    /// every duration is a string with its unit (`"250ms"`, `"60s"`), never a number in a
    /// unit named by the key.
    #[test]
    fn every_default_key_is_commented_and_every_duration_carries_its_unit() {
        let mut previous = "";
        for (n, line) in DEFAULT_TOML.lines().enumerate() {
            let line = line.trim();
            let is_key = !line.is_empty() && !line.starts_with('#') && !line.starts_with('[');
            if is_key {
                assert!(
                    previous.starts_with('#'),
                    "config/default.toml:{}: `{line}` has no comment above it",
                    n + 1
                );
            }
            previous = line;
        }

        fn walk(path: &str, value: &toml::Value) {
            let toml::Value::Table(table) = value else {
                return;
            };
            for (key, value) in table {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                assert!(
                    !["_ms", "_secs", "_seconds", "_millis"]
                        .iter()
                        .any(|unit| key.ends_with(unit)),
                    "{path}: durations are strings with a unit, not numbers in a unit named by the key"
                );
                let timely = [
                    "timeout", "delay", "interval", "grace", "window", "after", "pending",
                ];
                if timely.iter().any(|word| key.contains(word)) {
                    let text = value.as_str().unwrap_or_else(|| {
                        panic!("{path} = {value}: a duration must be a string such as \"60s\"")
                    });
                    humantime_serde::re::humantime::parse_duration(text)
                        .unwrap_or_else(|e| panic!("{path} = {text:?}: {e}"));
                }
                walk(&path, value);
            }
        }
        let parsed: toml::Value = toml::from_str(DEFAULT_TOML).expect("valid TOML");
        walk("", &parsed);
    }

    #[test]
    fn a_debounce_window_shorter_than_the_probe_detection_time_is_refused() {
        figment::Jail::expect_with(|jail| {
            let toml = "[restart]\ndebounce_window = \"5s\"\n[health]\ninterval = \"3s\"\nfailure_threshold = 2\n";
            jail.create_file("c.toml", toml)?;
            let file = jail.directory().join("c.toml");
            let err = Config::load(Some(&file), Overrides::default()).expect_err("refused");
            assert!(format!("{err:#}").contains("debounce_window"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn environment_variables_override_the_file_and_flags_override_them() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "default_provider = \"sim\"\n[restart]\ndebounce_window = \"30s\"\n",
            )?;
            jail.set_env("STEWARD_DEFAULT_PROVIDER", "process");
            jail.set_env("STEWARD_RESTART__DEBOUNCE_WINDOW", "45s");
            jail.set_env("STEWARD_LISTEN", "127.0.0.1:9");
            jail.set_env("STEWARD_BIN", "/not/a/config/key");
            let file = jail.directory().join("c.toml");
            let overrides = Overrides {
                listen: Some("127.0.0.1:10".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(&file), overrides).map_err(|e| format!("{e:#}"))?;
            assert_eq!(config.default_provider, "process");
            assert_eq!(config.restart.debounce_window, Duration::from_secs(45));
            assert_eq!(
                config.listen, "127.0.0.1:10",
                "flags win over the environment"
            );
            Ok(())
        });
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"127.0.0.1:1\"\n[restart]\ndebounce_window = \"25s\"\n",
            )?;
            let file = jail.directory().join("c.toml");
            let overrides = Overrides {
                listen: Some("127.0.0.1:2".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(&file), overrides).map_err(|e| format!("{e:#}"))?;
            assert_eq!(config.listen, "127.0.0.1:2");
            assert_eq!(config.restart.debounce_window, Duration::from_secs(25));

            jail.create_file("c.toml", "[restart]\ndebounce_windw = \"1s\"\n")?;
            let err = Config::load(Some(&file), Overrides::default()).expect_err("typo rejected");
            assert!(format!("{err:#}").contains("debounce_windw"), "{err:#}");
            Ok(())
        });
    }
}
