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
//! See `docker/host.rs` and `docker/engine.rs`: every engine call goes through the host the
//! provider drives (one engine, at the configured socket), which holds the connection and
//! follows the engine's event stream. The engine is reached lazily (an engine that is down
//! does not keep the daemon from starting; operations fail with `Engine` errors until it is
//! back), the API version is negotiated down to the engine's, at most `max_concurrent_ops`
//! calls are in flight, and each has a deadline.
//!
//! ## What it does not do
//!
//! It keeps no state of its own, not even the id of a container it started: the engine is the
//! record, so a restarted daemon sees the same containers, and every operation finds the
//! containers it acts on by a list call (by name or by labels) made for it. It does not pull,
//! build or remove images, collect logs, or stop containers when the daemon exits (they
//! survive it; adoption is the daemon's business). Reading containers goes through the
//! container list, never `inspect`: bollard logs every answer body at `debug`, and an inspect
//! answer holds the container's environment, secrets included. (The create request itself is
//! logged by bollard at `trace`: a daemon must keep `bollard` below `debug` in its log filter.)

mod config;
mod engine;
mod events;
mod host;
mod logs;
mod spec;

pub use config::DockerConfig;

use crate::logs::{LogQuery, LogStream};
use crate::{InstanceDeath, InstanceSpec, InstanceSummary, Liveness, Provider, ProviderError};
use async_trait::async_trait;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, StartContainerOptions, StopContainerOptions,
};
use host::{Found, Host};
use std::fmt;
use std::time::Duration;
use steward_domain::{Generation, ReadyWhen, WorkspaceId, WorkspaceSpec};
use tokio::sync::broadcast;

/// Deaths buffered per subscriber before a slow one starts missing some (probes cover it).
const DEATHS_CAPACITY: usize = 256;

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
    /// The engine its containers run on.
    host: Host,
    deaths: broadcast::Sender<InstanceDeath>,
}

impl fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerProvider")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("host", &self.host)
            .finish()
    }
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
        let (deaths, _) = broadcast::channel(DEATHS_CAPACITY);
        let host = Host::start(&config, deaths.clone());
        Ok(Self {
            name: name.into(),
            config,
            host,
            deaths,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Name of the workspace's container.
    pub fn container_name(&self, id: WorkspaceId) -> String {
        format!("{}{id}", self.config.name_prefix)
    }

    fn stop_timeout(&self) -> Duration {
        self.config.stop_timeout
    }

    /// Our container of the workspace, or `None` when there is none of ours (a foreign one
    /// with the name is logged and left alone).
    async fn ours(
        &self,
        id: WorkspaceId,
        operation: &'static str,
    ) -> Result<Option<(String, Generation)>, ProviderError> {
        let name = self.container_name(id);
        match self.host.find(&name).await? {
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
                .host
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
                        .host
                        .engine
                        .error(failure, format_args!("creating container {name}")))
                }
            }
            // The name is taken: by a leftover of ours (a crash between create and remove,
            // a daemon restart), or by someone else's container.
            match self.host.find(&name).await? {
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
                    self.host.remove_container(&leftover, &name).await?;
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

    /// The log of the workspace's container (see `docker/logs.rs`).
    async fn logs(&self, id: WorkspaceId, query: LogQuery) -> Result<LogStream, ProviderError> {
        self.container_logs(id, query).await
    }

    /// Nothing to do: the engine's log goes with the container, removed before this.
    async fn forget_logs(&self, _id: WorkspaceId) {}

    fn default_ready_when(&self) -> ReadyWhen {
        ReadyWhen::Agent
    }

    fn admits(&self, spec: &WorkspaceSpec) -> Result<(), String> {
        match spec.image.as_deref().map(str::trim) {
            Some(image) if !image.is_empty() => Ok(()),
            _ => Err(format!(
                "provider {:?} runs containers: the workspace needs an image",
                self.name
            )),
        }
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
            .host
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
                    .host
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
            if let Err(cleanup) = self.host.remove_container(&container, &name).await {
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
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `stop_timeout`. The container is kept (exited).
    async fn stop(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let name = self.container_name(id);
        let Some((container, generation)) = self.ours(id, "stop").await? else {
            return Ok(());
        };
        self.host.expect_death(&container);
        let options = StopContainerOptions {
            signal: None,
            t: Some(self.config.stop_timeout_secs()),
        };
        let target = container.clone();
        let stopped = self
            .host
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
                    .host
                    .engine
                    .error(failure, format_args!("stopping container {name}")))
            }
        }
        tracing::info!(workspace = %id, %generation, container = %name, "instance container stopped");
        Ok(())
    }

    /// Removes every container of ours labelled with the workspace: its container, and any
    /// other (a leftover under another name, made by hand or by an older daemon). Force
    /// removal: the engine kills a container that runs, then removes it and its anonymous
    /// volumes.
    ///
    /// One list call by the owner and workspace labels finds them all; each is then removed
    /// by the id that call gave (normally one). A container that merely has the workspace's
    /// name without being labelled ours is never touched. Nothing is removed by an id
    /// remembered from earlier: the engine reads an id it no longer knows as a container
    /// *name*, which need not be ours.
    async fn remove(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let filters = self
            .host
            .ours_filter(&[format!("{}={id}", labels::WORKSPACE)]);
        let containers = self
            .host
            .containers(filters, &format!("listing containers of workspace {id}"))
            .await?;
        let name = format!("/{}", self.container_name(id));
        for container in containers {
            let Some(container_id) = container.id else {
                continue;
            };
            let generation = labels::generation(&container.labels.unwrap_or_default());
            let named = container
                .names
                .unwrap_or_default()
                .into_iter()
                .next()
                .unwrap_or_else(|| container_id.clone());
            let shown = named.trim_start_matches('/');
            self.host.expect_death(&container_id);
            if !self.host.remove_container(&container_id, shown).await? {
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
        match self.host.find(&name).await? {
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
            .host
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
                .host
                .engine
                .error(failure, format_args!("killing container {name}"))),
        }
    }

    /// One list call, filtered by our owner label. Containers without a valid workspace label
    /// or with an unknown state are left out (and logged).
    async fn list(&self) -> Result<Vec<InstanceSummary>, ProviderError> {
        let containers = self
            .host
            .containers(self.host.ours_filter(&[]), "listing containers")
            .await?;
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
    /// What `list` reports of one container.
    fn summary(&self, container: ContainerSummary) -> Option<InstanceSummary> {
        let labels = container.labels.unwrap_or_default();
        if !self.host.owns(&labels) {
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
        Some(InstanceSummary {
            workspace_id,
            liveness,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
