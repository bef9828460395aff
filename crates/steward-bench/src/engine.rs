//! The baseline: the engine calls of a workspace restart, made directly with bollard (the
//! provider's client, version and features), on a container with the same image, labels,
//! environment keys and host configuration as the daemon's — and cleaning up after a run.
//!
//! What the docker provider does in one restart cycle (`crates/steward-provider/src/docker.rs`,
//! `docker/spec.rs`; the cycle is `remove` then `start`, there is no separate stop):
//!
//! 1. `remove`: one list call by the owner + workspace labels (the workspace's container and
//!    any leftover under another name), then a force-remove (`force`, `v`) of each container
//!    it lists, by id (normally one);
//! 2. `start`: create (named, labelled, allow-listed host config), start. No image inspect:
//!    the create reports a missing image itself.
//!
//! The variants below replay that: [`Variant::Minimal`] is the least engine work that
//! replaces a running container (force-remove, create, start — the headline baseline);
//! [`Variant::Mirror`] is the provider's exact call sequence, so that `Mirror − Minimal` is
//! the cost of the provider's extra look-up and `Steward − Mirror` the cost of everything
//! else (HTTP, actor, store, events); [`Variant::StopRemove`] adds a graceful stop first, as
//! a restart that stops before removing would.
//!
//! Baseline containers carry an owner label of their own (never the daemon's), so the daemon
//! never sees them as its orphans. Their agents get the same `STEWARD_*` variables, pointed
//! at a closed port: they run (retrying registration with backoff) like the daemon's do.

use anyhow::{bail, Context, Result};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Label keys, as the provider writes them.
pub const OWNER: &str = "io.steward.owner";
const WORKSPACE: &str = "io.steward.workspace";
const GENERATION: &str = "io.steward.generation";

/// Every owner label of this tool starts with this, so `cleanup` can find leftovers of an
/// interrupted run without touching anything else.
pub const OWNER_PREFIX: &str = "steward-bench-";

/// bollard's transport timeout, as the provider sets it (call timeout 30 s + stop timeout
/// 10 s + 5 s).
const TRANSPORT_TIMEOUT_SECS: u64 = 45;

/// A client of the engine at `socket`, negotiated down to the engine's API version, as the
/// provider makes it.
pub async fn connect(socket: &Path) -> Result<Docker> {
    let path = socket.to_str().context("socket path is not UTF-8")?;
    let docker = Docker::connect_with_unix(path, TRANSPORT_TIMEOUT_SECS, API_DEFAULT_VERSION)
        .with_context(|| format!("connect to {path}"))?;
    docker
        .negotiate_version()
        .await
        .with_context(|| format!("negotiate the API version with {path}"))
}

/// Which engine calls one baseline cycle makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Force-remove, create, start.
    Minimal,
    /// The provider's exact sequence: force-remove by id beside a list call by labels,
    /// create, start.
    Mirror,
    /// Stop (with the stop timeout), force-remove, create, start.
    StopRemove,
}

impl Variant {
    /// Name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Minimal => "minimal",
            Variant::Mirror => "mirror",
            Variant::StopRemove => "stop-remove",
        }
    }
}

/// What the containers look like: the provider's defaults (`config/default.toml`).
#[derive(Clone, Debug)]
pub struct Spec {
    /// Owner label (the baseline's own).
    pub owner: String,
    /// Image, present on the engine.
    pub image: String,
    /// `[providers.docker] network_mode`.
    pub network_mode: String,
    /// `[providers.docker] stop_timeout`, in seconds (the container's `StopTimeout` and the stop's `t`).
    pub stop_timeout_secs: u32,
    /// `STEWARD_CONTROL_URL` of the baseline agents (a closed port).
    pub control_url: String,
    /// `STEWARD_HEARTBEAT_INTERVAL` of the baseline agents.
    pub heartbeat: String,
}

/// One baseline container: the stand-in of one workspace.
#[derive(Clone, Debug)]
pub struct BaseContainer {
    /// `<owner>-<workspace>`, as the provider names them.
    pub name: String,
    /// Its stand-in workspace id.
    pub workspace: Uuid,
    /// Generation of the container that runs.
    pub generation: u64,
}

/// One measured cycle: its total and each call.
#[derive(Clone, Debug, Default)]
pub struct Cycle {
    /// From before the first call to after the last returned.
    pub total: Duration,
    /// Each engine call and how long it took (waiting for a permit excluded).
    pub calls: Vec<(&'static str, Duration)>,
}

/// Direct engine calls, optionally under a cap of calls in flight (the provider's
/// `max_concurrent_ops` semaphore: one permit per call).
#[derive(Clone)]
pub struct Baseline {
    docker: Docker,
    spec: Arc<Spec>,
    permits: Option<Arc<Semaphore>>,
}

impl Baseline {
    /// A baseline on `docker`; with `cap`, at most that many calls in flight.
    pub fn new(docker: Docker, spec: Spec, cap: Option<usize>) -> Baseline {
        Baseline {
            docker,
            spec: Arc::new(spec),
            permits: cap.map(|c| Arc::new(Semaphore::new(c))),
        }
    }

    /// A new stand-in workspace (nothing created yet).
    pub fn container(&self) -> BaseContainer {
        let workspace = Uuid::new_v4();
        BaseContainer {
            name: format!("{}-{workspace}", self.spec.owner),
            workspace,
            generation: 0,
        }
    }

    async fn call<T, Fut>(&self, name: &'static str, cycle: &mut Cycle, call: Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let _permit = match &self.permits {
            Some(permits) => Some(permits.acquire().await.context("semaphore closed")?),
            None => None,
        };
        let started = Instant::now();
        let result = call.await;
        cycle.calls.push((name, started.elapsed()));
        result.with_context(|| format!("baseline {name}"))
    }

    /// The create request, as `docker/spec.rs` builds it.
    fn body(&self, c: &BaseContainer) -> ContainerCreateBody {
        let token = format!(
            "{}.{}.{}{}",
            c.workspace,
            c.generation,
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        // The order of the provider's env: the workspace env (a sorted map), then secrets.
        let env = vec![
            format!("STEWARD_CONTROL_URL={}", self.spec.control_url),
            format!("STEWARD_GENERATION={}", c.generation),
            format!("STEWARD_HEARTBEAT_INTERVAL={}", self.spec.heartbeat),
            format!("STEWARD_WORKSPACE_ID={}", c.workspace),
            format!("STEWARD_AGENT_TOKEN={token}"),
        ];
        let labels = HashMap::from([
            (OWNER.to_owned(), self.spec.owner.clone()),
            (WORKSPACE.to_owned(), c.workspace.to_string()),
            (GENERATION.to_owned(), c.generation.to_string()),
        ]);
        ContainerCreateBody {
            image: Some(self.spec.image.clone()),
            cmd: None,
            env: Some(env),
            labels: Some(labels),
            stop_timeout: Some(i64::from(self.spec.stop_timeout_secs)),
            host_config: Some(HostConfig {
                network_mode: Some(self.spec.network_mode.clone()),
                privileged: Some(false),
                init: Some(true),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }

    /// Create and start (generation + 1), as the provider's `start` step does.
    async fn create_start(&self, c: &mut BaseContainer, cycle: &mut Cycle) -> Result<()> {
        c.generation += 1;
        let options = CreateContainerOptions {
            name: Some(c.name.clone()),
            ..CreateContainerOptions::default()
        };
        let created = self
            .call(
                "create",
                cycle,
                self.docker.create_container(Some(options), self.body(c)),
            )
            .await?;
        self.call(
            "start",
            cycle,
            self.docker
                .start_container(&created.id, None::<StartContainerOptions>),
        )
        .await?;
        Ok(())
    }

    async fn remove(&self, target: &str, cycle: &mut Cycle) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        // Gone already counts as removed, as in the provider.
        let removal = async {
            match self.docker.remove_container(target, Some(options)).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                other => other,
            }
        };
        self.call("remove", cycle, removal).await
    }

    async fn list(
        &self,
        name: &'static str,
        filters: HashMap<String, Vec<String>>,
        cycle: &mut Cycle,
    ) -> Result<Vec<ContainerSummary>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        self.call(name, cycle, self.docker.list_containers(Some(options)))
            .await
    }

    /// The first container of a stand-in workspace (not a measured cycle).
    pub async fn provision(&self, c: &mut BaseContainer) -> Result<()> {
        let mut cycle = Cycle::default();
        self.create_start(c, &mut cycle).await
    }

    /// One restart cycle of `c`: the running container is replaced by generation + 1.
    pub async fn cycle(&self, c: &mut BaseContainer, variant: Variant) -> Result<Cycle> {
        let mut cycle = Cycle::default();
        let started = Instant::now();
        match variant {
            Variant::Minimal => {
                self.remove(&c.name, &mut cycle).await?;
                self.create_start(c, &mut cycle).await?;
            }
            Variant::StopRemove => {
                let options = StopContainerOptions {
                    signal: None,
                    t: i32::try_from(self.spec.stop_timeout_secs).ok(),
                };
                self.call(
                    "stop",
                    &mut cycle,
                    self.docker.stop_container(&c.name, Some(options)),
                )
                .await?;
                self.remove(&c.name, &mut cycle).await?;
                self.create_start(c, &mut cycle).await?;
            }
            Variant::Mirror => {
                let by_labels = HashMap::from([(
                    "label".to_owned(),
                    vec![
                        format!("{OWNER}={}", self.spec.owner),
                        format!("{WORKSPACE}={}", c.workspace),
                    ],
                )]);
                // As the provider: the list call first, then each container it lists.
                for listed in self.list("list_by_labels", by_labels, &mut cycle).await? {
                    if let Some(id) = listed.id {
                        self.remove(&id, &mut cycle).await?;
                    }
                }
                self.create_start(c, &mut cycle).await?;
            }
        }
        cycle.total = started.elapsed();
        Ok(cycle)
    }
}

/// Every container (running or not) labelled with `owner`, in one list call.
pub async fn list_owned(docker: &Docker, owner: &str) -> Result<Vec<ContainerSummary>> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{OWNER}={owner}")],
        )])),
        ..ListContainersOptions::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .context("list containers by owner")
}

/// How many of `containers` run.
pub fn running(containers: &[ContainerSummary]) -> usize {
    containers
        .iter()
        .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
        .count()
}

/// The workspace label of a container.
pub fn workspace_of(c: &ContainerSummary) -> Option<&str> {
    c.labels.as_ref()?.get(WORKSPACE).map(String::as_str)
}

/// Force-removes every container of `owners` (8 removals at a time); returns how many.
pub async fn remove_owned(docker: &Docker, owners: &[String]) -> Result<usize> {
    let mut ids = Vec::new();
    for owner in owners {
        ids.extend(
            list_owned(docker, owner)
                .await?
                .into_iter()
                .filter_map(|c| c.id),
        );
    }
    remove_ids(docker, ids).await
}

/// Force-removes every container whose owner label starts with [`OWNER_PREFIX`]: leftovers
/// of interrupted runs of this tool, and nothing else.
pub async fn remove_leftovers(docker: &Docker) -> Result<usize> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![OWNER.to_owned()],
        )])),
        ..ListContainersOptions::default()
    };
    let ids = docker
        .list_containers(Some(options))
        .await
        .context("list labelled containers")?
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(OWNER))
                .is_some_and(|o| o.starts_with(OWNER_PREFIX))
        })
        .filter_map(|c| c.id)
        .collect();
    remove_ids(docker, ids).await
}

/// How long the cleanup waits for the engine to remove one container.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(60);

async fn remove_ids(docker: &Docker, ids: Vec<String>) -> Result<usize> {
    let total = ids.len();
    if total > 0 {
        eprintln!("cleanup: removing {total} containers");
    }
    let failures: Vec<String> = stream::iter(ids)
        .map(|id| async move {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            };
            // A deadline per removal: an engine that never answers one (seen: dockerd stuck
            // killing a container) must fail the cleanup, not hang the bench.
            let removal = docker.remove_container(&id, Some(options));
            match tokio::time::timeout(REMOVAL_DEADLINE, removal).await {
                Ok(Ok(())) => None,
                Ok(Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => None,
                Ok(Err(e)) => Some(format!("{id}: {e}")),
                Err(_) => Some(format!("{id}: no answer within {REMOVAL_DEADLINE:?}")),
            }
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        bail!(
            "{} of {total} removals failed, e.g. {first}",
            failures.len()
        );
    }
    Ok(total)
}
