//! The daemon's core without its process: a [`Registry`] of workspace actors on a SQLite
//! store in a temporary directory, with the sim provider. For tests of the actors and of the
//! HTTP facade (`actix_web::test`) that need real workspaces but no binary, no port and no
//! log to read. Must be started inside an actix system (`#[actix::test]`,
//! `#[actix_web::test]`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use steward_actors::{Clock, Deps, EventBus, NewWorkspace, Registry, RegistryOptions};
use steward_domain::{Policy, WorkspaceSpec};
use steward_provider::sim::{SimConfig, SimProvider};
use steward_provider::{Provider, Providers};
use steward_store::{Store, StoreOptions};
use tempfile::TempDir;

/// A running registry, its store and its sim provider.
pub struct InProcess {
    /// The workspace actors.
    pub registry: Registry,
    /// Their store.
    pub store: Store,
    /// The provider `sim`, the default (its knobs can be changed while it runs).
    pub sim: Arc<SimProvider>,
    dir: TempDir,
}

/// How to start an [`InProcess`]; see [`InProcess::builder`].
#[derive(Clone)]
pub struct InProcessBuilder {
    sim: SimConfig,
    others: Vec<(String, SimConfig)>,
    extra: Vec<Arc<dyn Provider>>,
    disabled: Vec<String>,
    policy: Policy,
    mailbox_capacity: usize,
    arbiters: usize,
}

impl InProcess {
    /// Instant sim instances (no start or stop delay), the default policy, room for 1 024
    /// messages per mailbox, actors on the current arbiter (so a paused clock reaches them).
    pub fn builder() -> InProcessBuilder {
        InProcessBuilder {
            sim: SimConfig {
                start_delay: Duration::ZERO,
                stop_delay: Duration::ZERO,
                ..SimConfig::default()
            },
            others: Vec::new(),
            extra: Vec::new(),
            disabled: Vec::new(),
            policy: Policy::default(),
            mailbox_capacity: 1024,
            arbiters: 0,
        }
    }

    /// [`InProcess::builder`]'s defaults, started.
    pub async fn start() -> InProcess {
        InProcess::builder().start().await
    }

    /// The SQLite database file (to open a second connection, e.g. to hold its write lock).
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("steward.db")
    }

    /// Creates a workspace from `spec` with `secrets`; returns its id. Fails the test if the
    /// registry refuses.
    pub async fn create(&self, spec: WorkspaceSpec, secrets: &[(&str, &str)]) -> String {
        let new = NewWorkspace {
            spec,
            secrets: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
                .collect(),
            ready_when: None,
            idempotency: None,
        };
        let (view, _) = self
            .registry
            .create(new)
            .await
            .unwrap_or_else(|e| panic!("create a workspace: {e}"));
        view.id.to_string()
    }
}

impl InProcessBuilder {
    /// The sim provider's knobs.
    pub fn sim(self, sim: SimConfig) -> InProcessBuilder {
        InProcessBuilder { sim, ..self }
    }

    /// Another sim provider, named `name` (to switch workspaces to).
    pub fn other_sim(mut self, name: &str, sim: SimConfig) -> InProcessBuilder {
        self.others.push((name.to_owned(), sim));
        self
    }

    /// Another provider, of any kind.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> InProcessBuilder {
        self.extra.push(provider);
        self
    }

    /// A provider known by `name` but disabled (as configuration disables one).
    pub fn disabled(mut self, name: &str) -> InProcessBuilder {
        self.disabled.push(name.to_owned());
        self
    }

    /// The lifecycle policy.
    pub fn policy(self, policy: Policy) -> InProcessBuilder {
        InProcessBuilder { policy, ..self }
    }

    /// Most messages waiting for one actor.
    pub fn mailbox_capacity(self, mailbox_capacity: usize) -> InProcessBuilder {
        InProcessBuilder {
            mailbox_capacity,
            ..self
        }
    }

    /// Arbiter threads for the actors (0: the current one).
    pub fn arbiters(self, arbiters: usize) -> InProcessBuilder {
        InProcessBuilder { arbiters, ..self }
    }

    /// Opens the store and boots the registry; fails the test if either fails.
    pub async fn start(self) -> InProcess {
        let dir = tempfile::Builder::new()
            .prefix("steward-in-process-")
            .tempdir()
            .expect("create a temporary directory");
        let store = Store::open(
            StoreOptions {
                database_url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("steward.db").display()
                ),
                max_batch: 256,
                max_connections: 4,
                busy_timeout: Duration::from_secs(5),
            },
            &dir.path().join("secrets.key"),
        )
        .await
        .unwrap_or_else(|e| panic!("open the store: {e}"));
        let sim = Arc::new(SimProvider::new("sim", self.sim));
        let mut providers = Providers::default();
        providers.insert(sim.clone());
        for (name, config) in self.others {
            providers.insert(Arc::new(SimProvider::new(name, config)));
        }
        for provider in self.extra {
            providers.insert(provider);
        }
        for name in &self.disabled {
            providers.disable(name);
        }
        let deps = Deps {
            store: store.clone(),
            providers,
            policy: Arc::new(self.policy),
            clock: Clock::system(),
            bus: EventBus::new(1024),
            mailbox_capacity: self.mailbox_capacity,
            // Nothing listens there: restart contexts are never delivered in-process.
            control_url: "http://127.0.0.1:9".into(),
            http: reqwest::Client::new(),
            context_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
        };
        let registry = Registry::boot(
            deps,
            RegistryOptions {
                arbiters: self.arbiters,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("boot the registry: {e}"));
        InProcess {
            registry,
            store,
            sim,
            dir,
        }
    }
}
