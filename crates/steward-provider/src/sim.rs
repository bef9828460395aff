//! The `sim` provider: in-memory instances with configurable latency and faults.
//!
//! It behaves like a real provider from the actor's point of view: calls are asynchronous,
//! take time (`start_delay`, `stop_delay`), can fail (`fail_rate`), and a freshly started
//! instance looks *booting*, not running, to liveness checks for `boot_pending` — the way a
//! cloud VM that is still booting does. `kill` makes an instance dead.
//!
//! Its instances write a few synthetic lines of output around their cycles (starting, up,
//! stopping, killed), kept in a short ring per workspace ([`SIM_LOG_LINES`]), so that demos
//! and tests of the logs have something to read and follow.
//!
//! It also watches for the race Steward exists to prevent: two operations on the same
//! workspace at once are counted in [`SimProvider::overlaps`] and logged as errors.

use crate::logs::{LogLine, LogQuery, LogStream};
use crate::{InstanceSpec, InstanceSummary, Liveness, Provider, ProviderError};
use async_trait::async_trait;
use dashmap::DashMap;
use rand::Rng;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use steward_domain::{Generation, ReadyWhen, WorkspaceId};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Lines of synthetic output kept per workspace (a few cycles' worth: a hundred thousand
/// simulated workspaces must stay cheap).
pub const SIM_LOG_LINES: usize = 8;

/// Lines a follower may fall behind by before it skips some.
const FOLLOW_BACKLOG: usize = 64;

/// What a simulated instance says, rendered when read.
#[derive(Clone, Copy, Debug)]
enum Note {
    Starting,
    Up,
    Stopping,
    Killed,
}

impl Note {
    fn line(self, at: SystemTime, generation: Generation) -> LogLine {
        let text = match self {
            Note::Starting => format!("sim: generation {generation} starting"),
            Note::Up => format!("sim: generation {generation} up, serving"),
            Note::Stopping => format!("sim: generation {generation} stopping (SIGTERM)"),
            Note::Killed => format!("sim: generation {generation} killed (SIGKILL)"),
        };
        LogLine {
            at,
            generation,
            text,
        }
    }
}

/// A workspace's synthetic output: the last lines, and the sender of its followers (only
/// while some follow).
#[derive(Default)]
struct Output {
    lines: VecDeque<(SystemTime, Generation, Note)>,
    live: Option<broadcast::Sender<LogLine>>,
}

/// `[providers.sim]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Whether the provider is offered at all.
    pub enabled: bool,
    /// How long a start takes.
    #[serde(with = "humantime_serde")]
    pub start_delay: Duration,
    /// How long a stop or remove of an existing instance takes.
    #[serde(with = "humantime_serde")]
    pub stop_delay: Duration,
    /// How long a started instance looks booting to liveness checks.
    #[serde(with = "humantime_serde")]
    pub boot_pending: Duration,
    /// Probability in `[0, 1]` that a start fails.
    pub fail_rate: f64,
    /// Probability in `[0, 1]` that a start panics (fault drill for the actor supervisor).
    pub panic_rate: f64,
    /// An instance dies this long after it started (zero: never) — a crash-looping workload.
    #[serde(with = "humantime_serde")]
    pub crash_after: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            start_delay: Duration::from_millis(200),
            stop_delay: Duration::from_millis(50),
            boot_pending: Duration::ZERO,
            fail_rate: 0.0,
            panic_rate: 0.0,
            crash_after: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug)]
struct Instance {
    generation: Generation,
    started_at: Instant,
    dead: bool,
    /// The environment the instance was started with, secrets included (for drills and
    /// tests: a real instance would see exactly this).
    env: Env,
}

/// An environment in two allocations, not a map or a string per name and value: a hundred
/// thousand simulated instances must stay cheap. Every name and value back to back in `text`;
/// `ends` says where each ends (name, value, name, value...).
#[derive(Clone)]
struct Env {
    text: Box<str>,
    ends: Box<[u32]>,
}

/// Names only: values may be secrets.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Env {
    fn new<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (name, value) in pairs {
            for part in [name, value] {
                text.push_str(part);
                ends.push(u32::try_from(text.len()).expect("an environment under 4 GiB"));
            }
        }
        Self {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        let mut parts = self.ends.iter().map(move |&end| {
            let part = &self.text[start..end as usize];
            start = end as usize;
            part
        });
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }
}

/// Simulated instances.
pub struct SimProvider {
    name: String,
    config: RwLock<SimConfig>,
    instances: DashMap<WorkspaceId, Instance>,
    busy: DashMap<WorkspaceId, ()>,
    overlaps: AtomicU64,
    starts: AtomicU64,
    outputs: DashMap<WorkspaceId, Output>,
}

/// Marks a workspace busy for the duration of one operation.
struct Busy<'a> {
    sim: &'a SimProvider,
    id: WorkspaceId,
    owned: bool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.owned {
            self.sim.busy.remove(&self.id);
        }
    }
}

impl SimProvider {
    /// A sim provider called `name`.
    pub fn new(name: impl Into<String>, config: SimConfig) -> Self {
        Self {
            name: name.into(),
            config: RwLock::new(config),
            instances: DashMap::new(),
            busy: DashMap::new(),
            overlaps: AtomicU64::new(0),
            starts: AtomicU64::new(0),
            outputs: DashMap::new(),
        }
    }

    /// The instance of `generation` writes `notes` (now).
    fn write(&self, id: WorkspaceId, generation: Generation, notes: &[Note]) {
        let at = SystemTime::now();
        let mut output = self.outputs.entry(id).or_default();
        for &note in notes {
            if output.lines.len() == SIM_LOG_LINES {
                output.lines.pop_front();
            }
            output.lines.push_back((at, generation, note));
            if let Some(live) = &output.live {
                if live.send(note.line(at, generation)).is_err() {
                    output.live = None;
                }
            }
        }
    }

    /// Replaces the latencies and fault rates (fault drills flip them at run time).
    pub fn set_config(&self, config: SimConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// The current latencies and fault rates.
    pub fn config(&self) -> SimConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Operations that ran while another one on the same workspace was in progress.
    pub fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::Relaxed)
    }

    /// Starts attempted.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// The environment the workspace's instance was started with, if it has one.
    pub fn instance_env(&self, id: WorkspaceId) -> Option<BTreeMap<String, String>> {
        self.instances.get(&id).map(|i| {
            i.env
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
    }

    /// Number of instances that exist (alive, booting or dead).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    fn enter(&self, id: WorkspaceId, what: &str) -> Busy<'_> {
        let owned = self.busy.insert(id, ()).is_none();
        if !owned {
            self.overlaps.fetch_add(1, Ordering::Relaxed);
            tracing::error!(workspace = %id, operation = what, "overlapping operations on one workspace");
        }
        Busy {
            sim: self,
            id,
            owned,
        }
    }

    fn liveness_of(&self, instance: &Instance) -> Liveness {
        let config = self.config();
        let age = instance.started_at.elapsed();
        let crashed = !config.crash_after.is_zero() && age >= config.crash_after;
        if instance.dead || crashed {
            Liveness::Dead(instance.generation)
        } else if age < config.boot_pending {
            Liveness::Booting(instance.generation)
        } else {
            Liveness::Alive(instance.generation)
        }
    }

    async fn take_instance(&self, id: WorkspaceId) {
        let generation = self.instances.get(&id).map(|i| (i.generation, i.dead));
        if let Some((generation, dead)) = generation {
            if !dead {
                self.write(id, generation, &[Note::Stopping]);
            }
            tokio::time::sleep(self.config().stop_delay).await;
            self.instances.remove(&id);
        }
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_ready_when(&self) -> ReadyWhen {
        ReadyWhen::Instance
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        let _busy = self.enter(spec.workspace_id, "start");
        self.starts.fetch_add(1, Ordering::Relaxed);
        let config = self.config();
        let (fail, panic) = {
            let mut rng = rand::thread_rng();
            (
                rng.gen_bool(config.fail_rate.clamp(0.0, 1.0)),
                rng.gen_bool(config.panic_rate.clamp(0.0, 1.0)),
            )
        };
        tokio::time::sleep(config.start_delay).await;
        if panic {
            panic!(
                "sim provider: injected panic while starting {}",
                spec.workspace_id
            );
        }
        if fail {
            return Err(ProviderError::Injected("start failed (fail_rate)"));
        }
        if let Some(existing) = self.instances.get(&spec.workspace_id) {
            return Err(ProviderError::AlreadyExists(existing.generation.0));
        }
        let env = Env::new(
            spec.env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(
                    spec.secrets
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.expose_secret())),
                ),
        );
        self.instances.insert(
            spec.workspace_id,
            Instance {
                generation: spec.generation,
                started_at: Instant::now(),
                dead: false,
                env,
            },
        );
        self.write(
            spec.workspace_id,
            spec.generation,
            &[Note::Starting, Note::Up],
        );
        Ok(())
    }

    async fn stop(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let _busy = self.enter(id, "stop");
        self.take_instance(id).await;
        Ok(())
    }

    async fn remove(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let _busy = self.enter(id, "remove");
        self.take_instance(id).await;
        Ok(())
    }

    async fn liveness(&self, id: WorkspaceId) -> Result<Liveness, ProviderError> {
        Ok(self
            .instances
            .get(&id)
            .map_or(Liveness::Absent, |i| self.liveness_of(&i)))
    }

    async fn kill(&self, id: WorkspaceId) -> Result<(), ProviderError> {
        let killed = self.instances.get_mut(&id).and_then(|mut instance| {
            (!std::mem::replace(&mut instance.dead, true)).then_some(instance.generation)
        });
        if let Some(generation) = killed {
            self.write(id, generation, &[Note::Killed]);
        }
        Ok(())
    }

    /// The ring of lines kept; `OutputGone` for a generation older than every line kept.
    async fn logs(&self, id: WorkspaceId, query: LogQuery) -> Result<LogStream, ProviderError> {
        let mut output = self.outputs.entry(id).or_default();
        let lines = output.lines.iter().map(|&(at, g, note)| note.line(at, g));
        if let Some(wanted) = query.generation {
            let oldest = output.lines.front().map(|&(_, g, _)| g);
            if oldest.is_some_and(|oldest| wanted < oldest) {
                return Err(ProviderError::OutputGone(format!(
                    "the output of generation {wanted} is no longer kept"
                )));
            }
        }
        let kept = query.select(lines);
        if !query.follow {
            return Ok(Box::pin(futures::stream::iter(kept)));
        }
        let live = output
            .live
            .get_or_insert_with(|| broadcast::channel(FOLLOW_BACKLOG).0)
            .subscribe();
        drop(output);
        Ok(crate::logs::kept_then_live(kept, live, query))
    }

    async fn forget_logs(&self, id: WorkspaceId) {
        self.outputs.remove(&id);
    }

    async fn list(&self) -> Result<Vec<InstanceSummary>, ProviderError> {
        Ok(self
            .instances
            .iter()
            .map(|e| InstanceSummary {
                workspace_id: *e.key(),
                liveness: self.liveness_of(e.value()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_keeps_every_name_and_value_and_debug_shows_names_only() {
        let pairs = [
            ("A", "1"),
            ("EMPTY", ""),
            ("URL", "http://x/?a=b=c"),
            ("", "odd"),
        ];
        let env = Env::new(pairs.into_iter());
        assert_eq!(env.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(format!("{env:?}"), r#"["A", "EMPTY", "URL", ""]"#);
    }

    fn spec(id: WorkspaceId, generation: u64) -> InstanceSpec {
        InstanceSpec {
            workspace_id: id,
            generation: Generation(generation),
            image: None,
            command: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    fn sim(config: SimConfig) -> SimProvider {
        SimProvider::new("sim", config)
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_instance_boots_then_runs_and_dies_when_killed() {
        let p = sim(SimConfig {
            boot_pending: Duration::from_millis(1000),
            ..SimConfig::default()
        });
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        p.start(&spec(id, 1)).await.expect("start");
        assert_eq!(
            p.liveness(id).await.ok(),
            Some(Liveness::Booting(Generation(1)))
        );
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(
            p.liveness(id).await.ok(),
            Some(Liveness::Alive(Generation(1)))
        );
        p.kill(id).await.expect("kill");
        assert_eq!(
            p.liveness(id).await.ok(),
            Some(Liveness::Dead(Generation(1)))
        );
        p.remove(id).await.expect("remove");
        assert_eq!(p.liveness(id).await.ok(), Some(Liveness::Absent));
    }

    #[tokio::test(start_paused = true)]
    async fn with_crash_after_an_instance_dies_on_its_own() {
        let p = sim(SimConfig {
            crash_after: Duration::from_millis(500),
            ..SimConfig::default()
        });
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        p.start(&spec(id, 1)).await.expect("start");
        assert_eq!(
            p.liveness(id).await.ok(),
            Some(Liveness::Alive(Generation(1)))
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            p.liveness(id).await.ok(),
            Some(Liveness::Dead(Generation(1)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn starting_over_an_existing_instance_fails_like_a_name_conflict() {
        let p = sim(SimConfig::default());
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        p.start(&spec(id, 1)).await.expect("start");
        assert!(matches!(
            p.start(&spec(id, 2)).await,
            Err(ProviderError::AlreadyExists(1))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_operations_on_one_workspace_are_counted() {
        let p = sim(SimConfig::default());
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        let first = spec(id, 1);
        let (a, b) = tokio::join!(p.start(&first), p.remove(id));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(p.overlaps(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fail_rate_one_always_fails() {
        let p = sim(SimConfig {
            fail_rate: 1.0,
            ..SimConfig::default()
        });
        assert!(p
            .start(&spec(WorkspaceId::from(uuid::Uuid::new_v4()), 1))
            .await
            .is_err());
        assert_eq!(p.list().await.map(|l| l.len()).ok(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn instances_write_lines_around_their_cycles_which_can_be_followed() {
        use futures::StreamExt;
        let p = &sim(SimConfig::default());
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        fn texts(lines: Vec<LogLine>) -> Vec<String> {
            lines.into_iter().map(|l| l.text).collect()
        }
        let read =
            |query| async move { texts(p.logs(id, query).await.expect("logs").collect().await) };
        assert!(read(LogQuery::default()).await.is_empty());
        p.start(&spec(id, 1)).await.expect("start");
        assert_eq!(
            read(LogQuery::default()).await,
            [
                "sim: generation 1 starting",
                "sim: generation 1 up, serving"
            ]
        );
        let mut follow = p
            .logs(
                id,
                LogQuery {
                    follow: true,
                    tail: Some(0),
                    ..LogQuery::default()
                },
            )
            .await
            .expect("follow");
        p.stop(id).await.expect("stop");
        assert_eq!(
            follow.next().await.map(|l| l.text).as_deref(),
            Some("sim: generation 1 stopping (SIGTERM)")
        );
        p.start(&spec(id, 2)).await.expect("start again");
        p.kill(id).await.expect("kill");
        let next: Vec<String> = texts(follow.by_ref().take(3).collect().await);
        assert_eq!(
            next,
            [
                "sim: generation 2 starting",
                "sim: generation 2 up, serving",
                "sim: generation 2 killed (SIGKILL)"
            ]
        );
        // A stopped instance still has its last output; generations select.
        p.remove(id).await.expect("remove");
        let second = LogQuery {
            generation: Some(Generation(2)),
            ..LogQuery::default()
        };
        assert_eq!(read(second).await.len(), 3);
        assert_eq!(
            read(LogQuery {
                tail: Some(1),
                ..LogQuery::default()
            })
            .await,
            ["sim: generation 2 killed (SIGKILL)"]
        );
        // Only the last lines are kept.
        for generation in 3..10 {
            p.start(&spec(id, generation)).await.expect("start");
            p.remove(id).await.expect("remove");
        }
        assert_eq!(read(LogQuery::default()).await.len(), SIM_LOG_LINES);
        let first = LogQuery {
            generation: Some(Generation(1)),
            ..LogQuery::default()
        };
        assert!(matches!(
            p.logs(id, first).await,
            Err(ProviderError::OutputGone(_))
        ));
        // Forgotten: nothing left, and the follower's stream ends.
        p.forget_logs(id).await;
        assert!(follow.all(|_| async { true }).await);
        assert!(read(LogQuery::default()).await.is_empty());
    }
}
