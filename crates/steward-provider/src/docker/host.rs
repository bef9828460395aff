//! One Docker engine and what the provider keeps per engine: the connection (see `engine.rs`:
//! the client, the cap on calls in flight, the deadlines), the follower of its event stream
//! (see `events.rs`), the marks of the deaths the provider causes itself, and the look-ups and
//! removals by our owner label that every operation is made of.
//!
//! The provider drives one host today, the engine at the configured socket. Every engine call
//! goes through a host, and a host knows nothing of workspaces beyond their labels, so that
//! several engines are several hosts.

use super::engine::Engine;
use super::events::{Follower, Quiet};
use super::{labels, DockerConfig};
use crate::{InstanceDeath, ProviderError};
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::Generation;
use tokio::sync::{broadcast, oneshot};

/// One engine: its connection, its event follower, and our containers on it.
pub(super) struct Host {
    /// The connection: every engine call goes through it.
    pub(super) engine: Arc<Engine>,
    /// Value of our owner label: the only mark of the containers that are ours.
    owner: String,
    /// Containers the provider is stopping or removing itself (their deaths are not crashes).
    quiet: Arc<Quiet>,
    /// Dropped with the host, which ends its event follower.
    _follower: oneshot::Sender<()>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("engine", &self.engine)
            .field("owner", &self.owner)
            .finish()
    }
}

/// A container with a given name, as the engine lists it.
pub(super) enum Found {
    /// No container has the name.
    Nothing,
    /// Ours (owner label matches).
    Ours {
        id: String,
        generation: Generation,
        state: Option<ContainerSummaryStateEnum>,
    },
    /// Someone else's: never touched.
    Foreign { id: String },
}

impl Host {
    /// The engine at `config.socket`, reached on first use (an engine that is down does not
    /// keep the daemon from starting), and the task that follows its events, spawned on the
    /// current tokio runtime, publishing the deaths of our containers to `deaths`.
    pub(super) fn start(config: &DockerConfig, deaths: broadcast::Sender<InstanceDeath>) -> Self {
        let engine = Arc::new(Engine::new(
            config.socket.clone(),
            config.max_concurrent_ops,
            config.call_timeout,
            config.stop_timeout,
        ));
        let (follower, stop) = oneshot::channel();
        let quiet = Arc::new(Quiet::default());
        tokio::spawn(
            Follower {
                engine: Arc::clone(&engine),
                owner: config.owner.clone(),
                deaths,
                stop,
                quiet: Arc::clone(&quiet),
            }
            .run(),
        );
        Self {
            engine,
            owner: config.owner.clone(),
            quiet,
            _follower: follower,
        }
    }

    /// The death of `container` that is about to follow is the provider's own doing: it is
    /// not reported.
    pub(super) fn expect_death(&self, container: &str) {
        self.quiet.expect(container);
    }

    /// Whether `labels` mark a container as ours.
    pub(super) fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(labels::OWNER) == Some(&self.owner)
    }

    /// The label filter that selects our containers, narrowed by `more` labels.
    pub(super) fn ours_filter(&self, more: &[String]) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{}={}", labels::OWNER, self.owner)];
        labels.extend_from_slice(more);
        HashMap::from([("label".to_owned(), labels)])
    }

    /// Every container (stopped ones too) matching `filters`, in one list call; `what` names
    /// the lookup in errors.
    pub(super) async fn containers(
        &self,
        filters: HashMap<String, Vec<String>>,
        what: &str,
    ) -> Result<Vec<ContainerSummary>, ProviderError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        self.engine
            .call(Duration::ZERO, |d| async move {
                d.list_containers(Some(options)).await
            })
            .await
            .map_err(|f| self.engine.error(f, what))
    }

    /// The container that has the name `name`, if any. One list call filtered by name (see
    /// the module doc of `docker` for why not `inspect`).
    pub(super) async fn find(&self, name: &str) -> Result<Found, ProviderError> {
        // The engine matches the name filter as a regular expression against "/<name>".
        let pattern = format!("^/{}$", name.replace('.', "\\."));
        let filters = HashMap::from([("name".to_owned(), vec![pattern])]);
        let containers = self
            .containers(filters, &format!("looking up container {name}"))
            .await?;
        let wanted = format!("/{name}");
        let Some(container) = containers.into_iter().find(|c| {
            c.names
                .as_deref()
                .is_some_and(|names| names.contains(&wanted))
        }) else {
            return Ok(Found::Nothing);
        };
        let id = container.id.unwrap_or_else(|| name.to_owned());
        let labels = container.labels.unwrap_or_default();
        if !self.owns(&labels) {
            return Ok(Found::Foreign { id });
        }
        Ok(Found::Ours {
            id,
            generation: labels::generation(&labels),
            state: container.state,
        })
    }

    /// Force-removes a container of ours by id (with its anonymous volumes). Gone or being
    /// removed already counts as removed; returns whether this call removed it. `name` names
    /// it in errors.
    pub(super) async fn remove_container(
        &self,
        container: &str,
        name: &str,
    ) -> Result<bool, ProviderError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        let target = container.to_owned();
        let removed = self
            .engine
            .call(Duration::ZERO, |d| async move {
                d.remove_container(&target, Some(options)).await
            })
            .await;
        match removed {
            Ok(()) => Ok(true),
            Err(failure) if failure.status() == Some(404) => Ok(false),
            Err(failure)
                if failure.status() == Some(409) && failure.message().contains("in progress") =>
            {
                Ok(false)
            }
            Err(failure) => Err(self
                .engine
                .error(failure, format_args!("removing container {name}"))),
        }
    }
}
