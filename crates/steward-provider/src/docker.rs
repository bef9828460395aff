//! The `docker` provider: a workspace's instance is a container of the local Docker engine.
//!
//! ## Which containers are ours
//!
//! Every container this provider creates carries three labels: `io.steward.owner` (the
//! configured [`DockerConfig::owner`]), `io.steward.workspace` and `io.steward.generation`.
//! The owner label is the only thing that makes a container ours: `list` and the death
//! stream consider nothing else, and no operation ever stops, kills or removes a container
//! without it — not even one that bears a workspace's container name
//! (`<name_prefix><workspace id>`). Operations look the name up, check the label, and then
//! act on the container's id, so a name reassigned meanwhile cannot redirect them.
//!
//! ## What a container gets
//!
//! See `docker/spec.rs`: image, command, environment and secrets from the workspace;
//! everything about the host from the operator's configuration; nothing privileged. Images are
//! never pulled: the image must be on the engine already, else the start fails at once with
//! `InvalidSpec`. With `init`, a command missing from the image does not fail the start: the
//! engine's init process starts, cannot run it, and the instance is dead at once.
//!
//! ## Engine access
//!
//! See `docker/engine.rs`: the engine is reached lazily (an engine that is down does not keep
//! the daemon from starting; operations fail with `Engine` errors until it is back), the API
//! version is negotiated down to the engine's, at most `max_concurrent_ops` calls are in
//! flight, and each has a deadline.
//!
//! ## What it does not do
//!
//! It keeps no state of its own: the engine is the record, so a restarted daemon sees the
//! same containers. (It remembers the id of each workspace's container it started or listed,
//! while that container exists, only as a hint to save a look-up: see
//! [`DockerProvider::remove`].) It does not pull, build or remove images, collect logs, or stop
//! containers when the daemon exits (they survive it; adoption is the daemon's business).
//! Reading containers goes through the container list, never `inspect`: bollard logs every
//! answer body at `debug`, and an inspect answer holds the container's environment, secrets
//! included. (The create request itself is logged by bollard at `trace`: a daemon must keep
//! `bollard` below `debug` in its log filter.)

mod engine;
mod events;
mod spec;

use crate::{InstanceDeath, InstanceSpec, InstanceSummary, Liveness, Provider, ProviderError};
use async_trait::async_trait;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use engine::Engine;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::{Generation, ReadyWhen, WorkspaceId};
use tokio::sync::{broadcast, oneshot};

/// Deaths buffered per subscriber before a slow one starts missing some (probes cover it).
const DEATHS_CAPACITY: usize = 256;

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
    fn validate(&self) -> Result<(), ProviderError> {
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

/// Label keys, and reading them back.
mod labels {
    use std::collections::HashMap;
    use steward_domain::Generation;

    /// Which daemon's container it is; the only mark of ours.
    pub(super) const OWNER: &str = "io.steward.owner";
    /// The workspace whose instance it is.
    pub(super) const WORKSPACE: &str = "io.steward.workspace";
    /// The generation it was started for.
    pub(super) const GENERATION: &str = "io.steward.generation";

    /// The generation a container was labelled with; `0` ("never provisioned", older than
    /// any real generation) when the label is missing or malformed, so that anything the
    /// daemon does with it is fenced off as stale.
    pub(super) fn generation(labels: &HashMap<String, String>) -> Generation {
        Generation(
            labels
                .get(GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
        )
    }
}

/// Containers of the local Docker engine, one per workspace.
pub struct DockerProvider {
    name: String,
    config: DockerConfig,
    engine: Arc<Engine>,
    deaths: broadcast::Sender<InstanceDeath>,
    /// Containers it is stopping or removing itself (their deaths are not crashes).
    quiet: Arc<events::Quiet>,
    /// The container of ours each workspace was last seen with: a hint that lets `remove`
    /// start removing it at once, beside the look-up of others rather than after it. Never
    /// trusted alone (see `remove`).
    known: Arc<events::Known>,
    /// Dropped with the provider, which ends the event follower.
    _follower: oneshot::Sender<()>,
}

impl fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerProvider")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("engine", &self.engine)
            .finish()
    }
}

/// A container with our workspace's name, as the engine lists it.
enum Found {
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

impl DockerProvider {
    /// A docker provider called `name`. Does not need the engine to be up: the configuration
    /// is checked, the engine is reached on first use. Starts the task that follows the
    /// engine's events (on the current tokio runtime), so it must be called inside one.
    ///
    /// Errors: `InvalidSpec` for a configuration that cannot work.
    pub async fn connect(
        name: impl Into<String>,
        config: DockerConfig,
    ) -> Result<Self, ProviderError> {
        config.validate()?;
        let engine = Arc::new(Engine::new(
            config.socket.clone(),
            config.max_concurrent_ops,
            config.call_timeout,
            config.stop_timeout,
        ));
        let (deaths, _) = broadcast::channel(DEATHS_CAPACITY);
        let (follower, stop) = oneshot::channel();
        let quiet = Arc::new(events::Quiet::default());
        let known = Arc::new(events::Known::default());
        tokio::spawn(
            events::Follower {
                engine: Arc::clone(&engine),
                owner: config.owner.clone(),
                deaths: deaths.clone(),
                stop,
                quiet: Arc::clone(&quiet),
                known: Arc::clone(&known),
            }
            .run(),
        );
        Ok(Self {
            name: name.into(),
            config,
            engine,
            deaths,
            quiet,
            known,
            _follower: follower,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The id of the workspace's container that `remove` would start removing at once, if
    /// the provider remembers one (for tests and inspection).
    #[doc(hidden)]
    pub fn remembered(&self, id: WorkspaceId) -> Option<String> {
        self.known.get(id)
    }

    /// Name of the workspace's container.
    pub fn container_name(&self, id: WorkspaceId) -> String {
        format!("{}{id}", self.config.name_prefix)
    }

    fn stop_timeout(&self) -> Duration {
        self.config.stop_timeout
    }

    /// Every container (stopped ones too) matching `filters`, in one list call; `what` names
    /// the lookup in errors.
    async fn containers(
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

    /// The label filter that selects our containers, narrowed by `more` labels.
    fn ours_filter(&self, more: &[String]) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{}={}", labels::OWNER, self.config.owner)];
        labels.extend_from_slice(more);
        HashMap::from([("label".to_owned(), labels)])
    }

    /// The container that has the workspace's name, if any. One list call filtered by name
    /// (see the module doc for why not `inspect`).
    async fn find(&self, name: &str) -> Result<Found, ProviderError> {
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
        if labels.get(labels::OWNER) != Some(&self.config.owner) {
            return Ok(Found::Foreign { id });
        }
        Ok(Found::Ours {
            id,
            generation: labels::generation(&labels),
            state: container.state,
        })
    }

    /// Our container of the workspace, or `None` when there is none of ours (a foreign one
    /// with the name is logged and left alone).
    async fn ours(
        &self,
        id: WorkspaceId,
        operation: &'static str,
    ) -> Result<Option<(String, Generation)>, ProviderError> {
        let name = self.container_name(id);
        match self.find(&name).await? {
            Found::Nothing => Ok(None),
            Found::Ours {
                id: container,
                generation,
                ..
            } => Ok(Some((container, generation))),
            Found::Foreign { id: container } => {
                tracing::warn!(
                    workspace = %id,
                    container = %name,
                    container_id = %short(&container),
                    operation,
                    owner = %self.config.owner,
                    "a container not labelled as ours has the workspace's name; left untouched"
                );
                Ok(None)
            }
        }
    }

    /// Creates the workspace's container; replaces a leftover of ours that holds the name
    /// (once). Returns the new container's id.
    async fn create(&self, spec: &InstanceSpec, image: &str) -> Result<String, ProviderError> {
        let name = self.container_name(spec.workspace_id);
        let mut replaced = false;
        loop {
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..CreateContainerOptions::default()
            };
            // Holds secret values; moved into the call and dropped with it.
            let body = spec::container(&self.config, spec, image);
            let created = self
                .engine
                .call(Duration::ZERO, |d| async move {
                    d.create_container(Some(options), body).await
                })
                .await;
            let failure = match created {
                Ok(response) => return Ok(response.id),
                Err(failure) => failure,
            };
            match failure.status() {
                Some(409) if !replaced => {}
                // Nothing is pulled. (A 404 can also be a missing network of the operator's
                // `network_mode`: that one is the engine's.)
                Some(404) if failure.message().contains("No such image") => {
                    return Err(ProviderError::InvalidSpec(format!(
                        "image {image:?} is not present on the engine (no registry to pull from)"
                    )));
                }
                Some(400) => {
                    return Err(ProviderError::InvalidSpec(format!(
                        "the engine refused container {name}: {}",
                        failure.message()
                    )))
                }
                _ => {
                    return Err(self
                        .engine
                        .error(failure, format_args!("creating container {name}")))
                }
            }
            // The name is taken: by a leftover of ours (a crash between create and remove,
            // a daemon restart), or by someone else's container.
            match self.find(&name).await? {
                Found::Ours {
                    id: leftover,
                    generation,
                    ..
                } => {
                    tracing::warn!(
                        workspace = %spec.workspace_id,
                        generation = %spec.generation,
                        container = %name,
                        leftover_generation = %generation,
                        "replacing a leftover container of ours"
                    );
                    self.remove_container(&leftover, &name).await?;
                    replaced = true;
                }
                Found::Foreign { id: foreign } => {
                    return Err(ProviderError::Engine(format!(
                    "container name {name} is taken by container {} that is not labelled {}={}; \
                         it is left untouched",
                    short(&foreign),
                    labels::OWNER,
                    self.config.owner
                )))
                }
                // Gone meanwhile: try again.
                Found::Nothing => replaced = true,
            }
        }
    }

    /// Force-removes a container of ours by id (with its anonymous volumes). Gone or being
    /// removed already counts as removed; returns whether this call removed it.
    async fn remove_container(&self, container: &str, name: &str) -> Result<bool, ProviderError> {
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

/// What a container's state means for liveness; `None` for a state the engine should not
/// report.
fn liveness_of(
    state: Option<&ContainerSummaryStateEnum>,
    generation: Generation,
) -> Option<Liveness> {
    use ContainerSummaryStateEnum as S;
    Some(match state? {
        S::RUNNING => Liveness::Alive(generation),
        S::CREATED | S::RESTARTING => Liveness::Booting(generation),
        // Being stopped or removed is on the way to dead, never back to running.
        S::EXITED | S::DEAD | S::PAUSED | S::REMOVING | S::STOPPING => Liveness::Dead(generation),
        S::EMPTY => return None,
    })
}

/// The first 12 characters of a container id, as `docker ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_ready_when(&self) -> ReadyWhen {
        ReadyWhen::Agent
    }

    /// Flow: check the spec, check the image is on the engine, create the container
    /// (replacing a leftover of ours that holds the name), start it.
    ///
    /// Guarantees: a failed start leaves no container behind (the created one is removed);
    /// a container that is not ours is never touched.
    ///
    /// Errors: `InvalidSpec` without an image, for an image the engine does not have (at
    /// once: nothing is pulled), for a malformed environment, and when the engine refuses the
    /// container (a command that does not exist in the image, for instance); `Engine` when
    /// the name is held by a container that is not ours, and for engine failures.
    async fn start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        let image = spec::image(spec)?;
        spec::check(spec)?;
        let name = self.container_name(spec.workspace_id);
        // No image inspect first: the create reports a missing image itself (one engine
        // call less per cycle, which is most of what Steward adds to one).
        let container = self.create(spec, image).await?;
        let target = container.clone();
        let started = self
            .engine
            .call(Duration::ZERO, |d| async move {
                d.start_container(&target, None::<StartContainerOptions>)
                    .await
            })
            .await;
        if let Err(failure) = started {
            let error = match failure.status() {
                Some(400) => ProviderError::InvalidSpec(format!(
                    "container {name} cannot start: {}",
                    failure.message()
                )),
                _ => self
                    .engine
                    .error(failure, format_args!("starting container {name}")),
            };
            tracing::warn!(
                workspace = %spec.workspace_id,
                generation = %spec.generation,
                container = %name,
                %error,
                "container did not start; removing it"
            );
            if let Err(cleanup) = self.remove_container(&container, &name).await {
                tracing::warn!(workspace = %spec.workspace_id, container = %name, error = %cleanup, "could not remove a container that did not start");
            }
            return Err(error);
        }
        tracing::info!(
            workspace = %spec.workspace_id,
            generation = %spec.generation,
            container = %name,
            container_id = %short(&container),
            image,
            "instance container started"
        );
        self.known
            .remember(spec.workspace_id, container, spec.generation);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `stop_timeout`. The container is kept (exited).
    async fn stop(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let name = self.container_name(id);
        let Some((container, generation)) = self.ours(id, "stop").await? else {
            return Ok(());
        };
        self.quiet.expect(&container);
        let options = StopContainerOptions {
            signal: None,
            t: Some(self.config.stop_timeout_secs()),
        };
        let target = container.clone();
        let stopped = self
            .engine
            .call(self.stop_timeout(), |d| async move {
                d.stop_container(&target, Some(options)).await
            })
            .await;
        match stopped {
            // 304 (already stopped) is a success for bollard already.
            Ok(()) => {}
            Err(failure) if failure.status() == Some(404) => {}
            Err(failure) => {
                return Err(self
                    .engine
                    .error(failure, format_args!("stopping container {name}")))
            }
        }
        tracing::info!(workspace = %id, %generation, container = %name, "instance container stopped");
        Ok(())
    }

    /// Force removal: the engine kills the container if it runs, then removes it and its
    /// anonymous volumes.
    /// Removes the workspace's container and any other container of ours labelled with the
    /// workspace (a leftover under another name, e.g. made by hand or by an older daemon).
    ///
    /// One list call finds them all: every container of ours carries the workspace label, and
    /// one that merely has the workspace's name without being labelled ours is never touched.
    /// When the provider knows the id of the workspace's container (it started or listed it),
    /// that removal starts at once, beside the list call instead of after it: a restart cycle
    /// then waits for the removal alone, as a bare `docker rm -f` would. The id is only a
    /// hint: one already gone counts as removed, and the list call still finds every other
    /// container of the workspace, whatever the hint said. A container id names one container
    /// for good, but the engine reads an id it no longer knows as a container *name*: the hint
    /// is therefore forgotten as soon as the engine reports the container destroyed (by
    /// anyone), and whenever a full list (every probe round) no longer shows it.
    async fn remove(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let filters = self.ours_filter(&[format!("{}={id}", labels::WORKSPACE)]);
        let what = format!("listing containers of workspace {id}");
        let name = format!("/{}", self.container_name(id));
        let shown = &name[1..];
        let known = self.known.take(id);
        let containers = match &known {
            Some((container, generation)) => {
                self.quiet.expect(container);
                let (removed, listed) = tokio::join!(
                    self.remove_container(container, shown),
                    self.containers(filters, &what)
                );
                if removed? {
                    tracing::info!(workspace = %id, %generation, container = %shown, "instance container removed");
                }
                listed?
            }
            None => self.containers(filters, &what).await?,
        };
        for container in containers {
            let Some(container_id) = container.id else {
                continue;
            };
            if known
                .as_ref()
                .is_some_and(|(known, _)| *known == container_id)
            {
                // Listed while its removal was under way.
                continue;
            }
            let generation = labels::generation(&container.labels.unwrap_or_default());
            let named = container
                .names
                .unwrap_or_default()
                .into_iter()
                .next()
                .unwrap_or_else(|| container_id.clone());
            let shown = named.trim_start_matches('/').to_owned();
            self.quiet.expect(&container_id);
            if !self.remove_container(&container_id, &shown).await? {
                continue;
            }
            if named == name {
                tracing::info!(workspace = %id, %generation, container = %shown, "instance container removed");
            } else {
                tracing::info!(workspace = %id, container = %shown, "leftover container of the workspace removed");
            }
        }
        Ok(())
    }

    /// `Absent` also when the name is held by a container that is not ours: this provider
    /// has no instance of the workspace (a start would say why it cannot make one).
    async fn liveness(&self, id: WorkspaceId) -> Result<Liveness, ProviderError> {
        let name = self.container_name(id);
        match self.find(&name).await? {
            Found::Nothing | Found::Foreign { .. } => Ok(Liveness::Absent),
            Found::Ours {
                generation, state, ..
            } => liveness_of(state.as_ref(), generation).ok_or_else(|| {
                ProviderError::Engine(format!("container {name} has no state the provider knows"))
            }),
        }
    }

    /// SIGKILL, as a crash would. Returns once the engine has sent it; the container then
    /// dies (and a death is published) within moments.
    async fn kill(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let name = self.container_name(id);
        let Some((container, generation)) = self.ours(id, "kill").await? else {
            return Ok(());
        };
        tracing::warn!(workspace = %id, %generation, container = %name, "killing instance container (fault drill)");
        let options = KillContainerOptions {
            signal: "SIGKILL".to_owned(),
        };
        let killed = self
            .engine
            .call(Duration::ZERO, |d| async move {
                d.kill_container(&container, Some(options)).await
            })
            .await;
        match killed {
            Ok(()) => Ok(()),
            // Gone, or not running: nothing to kill.
            Err(failure) if matches!(failure.status(), Some(404 | 409)) => Ok(()),
            Err(failure) => Err(self
                .engine
                .error(failure, format_args!("killing container {name}"))),
        }
    }

    /// One list call, filtered by our owner label. Containers without a valid workspace label
    /// or with an unknown state are left out (and logged).
    async fn list(&self) -> Result<Vec<InstanceSummary>, ProviderError> {
        let containers = self
            .containers(self.ours_filter(&[]), "listing containers")
            .await?;
        let listed: HashSet<String> = containers.iter().filter_map(|c| c.id.clone()).collect();
        self.known.keep_only(&listed);
        Ok(containers
            .into_iter()
            .filter_map(|c| self.summary(c))
            .collect())
    }

    fn deaths(&self) -> Option<broadcast::Receiver<InstanceDeath>> {
        Some(self.deaths.subscribe())
    }

    /// Nothing: containers outlive the daemon.
    async fn shutdown(&self) {}
}

impl DockerProvider {
    /// What `list` reports of one container; remembers the id of a workspace's container
    /// (the hint `remove` uses).
    fn summary(&self, container: ContainerSummary) -> Option<InstanceSummary> {
        let labels = container.labels.unwrap_or_default();
        if labels.get(labels::OWNER) != Some(&self.config.owner) {
            return None;
        }
        let name = container
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        let Some(workspace_id) = labels
            .get(labels::WORKSPACE)
            .and_then(|w| w.parse::<WorkspaceId>().ok())
        else {
            tracing::warn!(container = %name, "a container of ours has no valid workspace label; left out");
            return None;
        };
        let generation = labels::generation(&labels);
        let Some(liveness) = liveness_of(container.state.as_ref(), generation) else {
            tracing::warn!(workspace = %workspace_id, container = %name, "a container of ours has no known state; left out");
            return None;
        };
        if let Some(id) = container.id {
            if name == self.container_name(workspace_id) {
                self.known.remember(workspace_id, id, generation);
            }
        }
        Some(InstanceSummary {
            workspace_id,
            liveness,
        })
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

    #[test]
    fn container_states_map_to_liveness() {
        use ContainerSummaryStateEnum as S;
        let g = Generation(3);
        assert_eq!(liveness_of(Some(&S::RUNNING), g), Some(Liveness::Alive(g)));
        assert_eq!(
            liveness_of(Some(&S::CREATED), g),
            Some(Liveness::Booting(g))
        );
        assert_eq!(
            liveness_of(Some(&S::RESTARTING), g),
            Some(Liveness::Booting(g))
        );
        for dead in [S::EXITED, S::DEAD, S::PAUSED, S::REMOVING] {
            assert_eq!(liveness_of(Some(&dead), g), Some(Liveness::Dead(g)));
        }
        assert_eq!(liveness_of(None, g), None);
    }

    #[test]
    fn generation_labels_that_are_missing_or_malformed_read_as_zero() {
        let labels = |g: &str| HashMap::from([(labels::GENERATION.to_owned(), g.to_owned())]);
        assert_eq!(labels::generation(&labels("12")), Generation(12));
        assert_eq!(labels::generation(&labels("x")), Generation(0));
        assert_eq!(labels::generation(&HashMap::new()), Generation(0));
    }
}
