//! Workspace actors and the registry, driven in-process with the sim provider and a real
//! SQLite store. Waits are on conditions (`eventually`), never on fixed sleeps.

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use steward_actors::{
    ActorError, Clock, Deps, EventBus, Intent, NewWorkspace, Registry, RegistryOptions, Waited,
};
use steward_domain::{
    BackoffPolicy, Generation, Goal, Outcome, Phase, Policy, Settled, WorkspaceId, WorkspaceSpec,
};
use steward_provider::sim::{SimConfig, SimProvider};
use steward_provider::Providers;
use steward_store::{Store, StoreOptions};

struct Fixture {
    registry: Registry,
    sim: Arc<SimProvider>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn fast_policy() -> Policy {
    Policy {
        provision_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(10),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..BackoffPolicy::default()
        },
        ..Policy::default()
    }
}

impl Fixture {
    /// Another connection to the store's database, holding its write lock: every commit
    /// waits until [`unlock`].
    async fn lock_store(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let url = format!("sqlite://{}", self._dir.path().join("s.db").display());
        let mut lock = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connects");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut lock)
            .await
            .expect("write lock");
        lock
    }

    async fn new(sim: SimConfig, mailbox_capacity: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (registry, sim, store) = boot(dir.path(), sim, mailbox_capacity).await;
        Self {
            registry,
            sim,
            store,
            _dir: dir,
        }
    }

    /// Another daemon on the same database (its own store, registry and sim provider), as
    /// replicas sharing one PostgreSQL would be.
    async fn replica(&self) -> Registry {
        boot(self._dir.path(), sim(10), 1024).await.0
    }

    async fn create(&self, key: Option<&str>) -> Result<WorkspaceId, ActorError> {
        Ok(self.registry.create(new_workspace(key)).await?.0.id)
    }

    async fn phase(&self, id: WorkspaceId) -> Phase {
        self.registry.get(id).await.expect("workspace exists").phase
    }

    async fn event_kinds(&self, id: WorkspaceId) -> Vec<String> {
        self.store
            .events(id, 0, 10_000)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    async fn wait_running_and_idle(&self, id: WorkspaceId) {
        eventually("running and idle", || async {
            let v = self.registry.get(id).await.expect("exists");
            v.phase == Phase::Running && !v.in_flight && v.pending.is_empty()
        })
        .await;
    }
}

/// A workspace to create, with `key` as its idempotency key (and a name of its own: names
/// are unique).
fn new_workspace(key: Option<&str>) -> NewWorkspace {
    let name = match key {
        Some(key) => format!("w-{key}"),
        None => format!("w-{}", uuid::Uuid::new_v4().simple()),
    };
    NewWorkspace {
        spec: WorkspaceSpec {
            name,
            provider: "sim".into(),
            image: None,
            command: None,
            env: BTreeMap::new(),
            model: None,
        },
        secrets: BTreeMap::from([("TOKEN".to_owned(), SecretString::from("v1"))]),
        ready_when: None,
        idempotency: key.map(|k| (k.to_owned(), "hash".to_owned())),
    }
}

/// A store on the database in `dir` and a registry over it, with a sim provider.
async fn boot(
    dir: &std::path::Path,
    sim: SimConfig,
    mailbox_capacity: usize,
) -> (Registry, Arc<SimProvider>, Store) {
    let store = Store::open(
        StoreOptions {
            database_url: format!("sqlite://{}?mode=rwc", dir.join("s.db").display()),
            max_batch: 256,
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        },
        &dir.join("secrets.key"),
    )
    .await
    .expect("store opens");
    let sim = Arc::new(SimProvider::new("sim", sim));
    let mut providers = Providers::default();
    providers.insert(sim.clone());
    let deps = Deps {
        store: store.clone(),
        providers,
        policy: Arc::new(fast_policy()),
        clock: Clock::system(),
        bus: EventBus::new(1024),
        mailbox_capacity,
        control_url: "http://127.0.0.1:9".into(),
        http: reqwest::Client::new(),
        context_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(1),
    };
    let registry = Registry::boot(deps, RegistryOptions { arbiters: 0 })
        .await
        .expect("boot");
    (registry, sim, store)
}

async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn sim(start_delay_ms: u64) -> SimConfig {
    SimConfig {
        start_delay: Duration::from_millis(start_delay_ms),
        stop_delay: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

#[actix::test]
async fn fifty_concurrent_restarts_run_exactly_two_cycles_that_never_overlap() {
    let f = Fixture::new(sim(100), 1024).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    let replies =
        futures::future::join_all((0..50).map(|_| f.registry.submit(id, Intent::Restart))).await;
    let outcomes: Vec<Outcome> = replies
        .into_iter()
        .map(|r| r.expect("accepted").outcome)
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Started(_)))
            .count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Coalesced(_)))
            .count(),
        49
    );
    f.wait_running_and_idle(id).await;
    let started = f
        .event_kinds(id)
        .await
        .iter()
        .filter(|k| *k == "provision_started")
        .count();
    assert_eq!(
        started, 3,
        "create + the restart + exactly one coalesced cycle"
    );
    assert_eq!(
        f.sim.overlaps(),
        0,
        "two provider operations overlapped on one workspace"
    );
}

/// A restart folded into the pending cycle is answered once the commit that recorded that
/// cycle is durable, not after whatever the workspace committed since: here a later commit
/// of the workspace (a secret, for the same pending cycle) cannot land, because another
/// connection holds the database's write lock, and the restart is answered anyway.
#[actix::test]
async fn a_folded_restart_does_not_wait_for_a_later_commit() {
    let f = Fixture::new(sim(600_000), 1024).await;
    let id = f.create(None).await.expect("created");
    let submit = |intent| f.registry.submit(id, intent);
    let secret = |value: &str| Intent::SetSecret {
        key: "TOKEN".into(),
        value: SecretString::from(value.to_owned()),
    };
    // The create's cycle runs for the whole test; a restart and a config change are pending,
    // durably (each answer waited for its commit).
    let pending = submit(Intent::Restart).await.expect("accepted").outcome;
    assert!(matches!(pending, Outcome::Coalesced(_)));
    submit(secret("v2")).await.expect("accepted");
    let mut lock = f.lock_store().await;
    // Another secret: folded into the same pending cycle, but its value must be written, and
    // that commit now waits for the lock.
    let mut blocked = Box::pin(submit(secret("v3")));
    assert!(futures::poll!(&mut blocked).is_pending());
    let folded = tokio::time::timeout(Duration::from_secs(3), submit(Intent::Restart))
        .await
        .expect("answered while a later commit of the workspace is still waiting")
        .expect("accepted");
    assert!(matches!(folded.outcome, Outcome::Coalesced(_)));
    assert!(futures::poll!(&mut blocked).is_pending(), "the lock held");
    unlock(&mut lock).await;
    blocked
        .await
        .expect("the secret is committed once the lock is gone");
}

/// An intent counts against its workspace's mailbox until its commit is durable, not only
/// until the actor decided it: with a stalled store, intents are refused as overloaded
/// instead of piling up.
#[actix::test]
async fn an_intent_holds_its_mailbox_slot_until_its_commit_is_durable() {
    let f = Fixture::new(sim(600_000), 1).await;
    let id = f.create(None).await.expect("created");
    let mut lock = f.lock_store().await;
    let mut blocked = Box::pin(f.registry.submit(id, Intent::Restart));
    // The actor decides (it runs on this thread) and its commit waits for the lock.
    for _ in 0..20 {
        assert!(futures::poll!(&mut blocked).is_pending(), "the lock held");
        tokio::task::yield_now().await;
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        f.registry.submit(id, Intent::Restart),
    )
    .await
    .expect("refused at once, not queued behind the stalled commit");
    assert!(
        matches!(refused, Err(ActorError::Overloaded)),
        "{refused:?}"
    );
    unlock(&mut lock).await;
    blocked.await.expect("committed once the lock is gone");
}

#[actix::test]
async fn create_immediately_followed_by_restart_never_fails() {
    let f = Fixture::new(sim(30), 1024).await;
    for _ in 0..10 {
        let id = f.create(None).await.expect("created");
        let reply = f
            .registry
            .submit(id, Intent::Restart)
            .await
            .expect("accepted");
        assert!(
            matches!(reply.outcome, Outcome::Coalesced(_)),
            "the create's cycle is in flight"
        );
        f.wait_running_and_idle(id).await;
        assert!(!f
            .event_kinds(id)
            .await
            .iter()
            .any(|k| k == "failed" || k == "provision_failed"));
    }
    assert_eq!(f.sim.overlaps(), 0);
}

#[actix::test]
async fn a_panic_during_a_cycle_restarts_the_actor_from_the_store_and_records_it() {
    let f = Fixture::new(sim(10), 1024).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    f.sim.set_config(SimConfig {
        panic_rate: 1.0,
        ..sim(10)
    });
    f.registry
        .submit(id, Intent::Restart)
        .await
        .expect("accepted");
    eventually("the panic is recorded", || async {
        f.store
            .events(id, 0, 1000)
            .await
            .expect("events")
            .iter()
            .any(|e| {
                e.kind == "provision_failed"
                    && e.data["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("panicked"))
            })
    })
    .await;
    f.sim.set_config(sim(10));
    // The restarted actor retries with backoff and the workspace recovers on its own.
    f.wait_running_and_idle(id).await;
    let actor = f.registry.inspect(id).await.expect("inspect");
    assert!(
        actor.restarts >= 1,
        "the actor must have been restarted from the store"
    );
    assert!(actor.counters.cycles >= 1);
    assert_eq!(f.sim.overlaps(), 0);
}

#[actix::test]
async fn a_full_mailbox_refuses_with_overloaded_instead_of_queueing() {
    let f = Fixture::new(sim(10), 2).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    let replies =
        futures::future::join_all((0..20).map(|_| f.registry.submit(id, Intent::Restart))).await;
    let overloaded = replies
        .iter()
        .filter(|r| matches!(r, Err(ActorError::Overloaded)))
        .count();
    let accepted = replies.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 2);
    assert_eq!(overloaded, 18);
    f.wait_running_and_idle(id).await;
}

#[actix::test]
async fn concurrent_creates_with_one_idempotency_key_make_one_workspace_created_once() {
    let f = Fixture::new(sim(10), 1024).await;
    let answers =
        futures::future::join_all((0..10).map(|_| f.registry.create(new_workspace(Some("k1")))))
            .await;
    let answers: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("created or replayed"))
        .collect();
    let first = answers[0].0.id;
    assert!(answers.iter().all(|(view, _)| view.id == first));
    let created = answers.iter().filter(|(_, created)| *created).count();
    assert_eq!(created, 1, "exactly one request created the workspace");
    assert_eq!(f.registry.list().await.len(), 1);
    // Later, from the store: the same workspace again, not created again.
    let (again, created) = f
        .registry
        .create(new_workspace(Some("k1")))
        .await
        .expect("replayed");
    assert_eq!((again.id, created), (first, false));
}

#[actix::test]
async fn a_key_stored_before_digests_were_keyed_replays_its_workspace() {
    let f = Fixture::new(sim(10), 1024).await;
    // The upgrade erased the bare digests it could not convert: the body is unknown.
    let mut legacy = new_workspace(Some("old"));
    legacy.idempotency = Some(("old".to_owned(), String::new()));
    let (first, created) = f.registry.create(legacy).await.expect("created");
    assert!(created);
    let (again, created) = f
        .registry
        .create(new_workspace(Some("old")))
        .await
        .expect("a replay, not a conflict");
    assert_eq!((again.id, created), (first.id, false));
    assert_eq!(f.registry.list().await.len(), 1);
}

#[actix::test]
async fn an_idempotent_create_that_loses_at_the_database_replays_the_winner() {
    let f = Fixture::new(sim(10), 1024).await;
    let replica = f.replica().await;
    // Both daemons look the key up (not there yet) before either can commit: each spawns
    // its workspace's actor, and their inserts meet at the key's uniqueness.
    let mut lock = f.lock_store().await;
    let both_looked = async {
        eventually("both daemons to spawn an actor", || async {
            f.registry.actor_count() == 1 && replica.actor_count() == 1
        })
        .await;
        unlock(&mut lock).await;
    };
    let (here, there, ()) = futures::join!(
        f.registry.create(new_workspace(Some("race"))),
        replica.create(new_workspace(Some("race"))),
        both_looked
    );
    let (here, there) = (here.expect("here"), there.expect("there"));
    assert_eq!(here.0.id, there.0.id, "one workspace for one key");
    assert_eq!(
        [here.1, there.1].iter().filter(|created| **created).count(),
        1,
        "exactly one daemon created it"
    );
    assert_eq!(f.store.load_all().await.expect("load").len(), 1);
    // The loser's actor found nothing of its own in the store and is gone.
    eventually("the losing actor to be gone", || async {
        f.registry.actor_count() + replica.actor_count() == 1
    })
    .await;
    // A later replay on either daemon answers the same workspace.
    for registry in [&f.registry, &replica] {
        let (view, created) = registry
            .create(new_workspace(Some("race")))
            .await
            .expect("replayed");
        assert_eq!((view.id, created), (here.0.id, false));
    }
}

#[actix::test]
async fn stop_wins_over_pending_restarts_and_delete_purges_everything() {
    let f = Fixture::new(sim(50), 1024).await;
    let id = f.create(None).await.expect("created");
    f.registry
        .submit(id, Intent::Restart)
        .await
        .expect("coalesced");
    f.registry.submit(id, Intent::Stop).await.expect("accepted");
    eventually("stopped", || async { f.phase(id).await == Phase::Stopped }).await;
    let kinds = f.event_kinds(id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "provision_started").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(f.sim.instance_count(), 0);

    f.registry
        .submit(id, Intent::Delete)
        .await
        .expect("accepted");
    eventually("gone", || async {
        matches!(f.registry.get(id).await, Err(ActorError::NotFound(_)))
    })
    .await;
    assert!(f.store.load(id).await.expect("load").is_none());
    assert!(f.store.events(id, 0, 10).await.expect("events").is_empty());
}

#[actix::test]
async fn a_config_change_reaches_the_next_cycle() {
    let f = Fixture::new(sim(30), 1024).await;
    let id = f.create(None).await.expect("created");
    for value in ["v2", "v3", "v4"] {
        f.registry
            .submit(
                id,
                Intent::SetSecret {
                    key: "TOKEN".into(),
                    value: SecretString::from(value),
                },
            )
            .await
            .expect("accepted");
    }
    f.wait_running_and_idle(id).await;
    let stored = f.store.load(id).await.expect("load").expect("exists");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&stored.secrets["TOKEN"]),
        "v4"
    );
    let env = f.sim.instance_env(id).expect("an instance is up");
    assert_eq!(
        env.get("TOKEN").map(String::as_str),
        Some("v4"),
        "the last instance must hold the last value"
    );
    let kinds = f.event_kinds(id).await;
    let last_request = kinds
        .iter()
        .rposition(|k| k == "restart_coalesced" || k == "restart_requested");
    let last_start = kinds.iter().rposition(|k| k == "provision_started");
    assert!(
        last_start > last_request,
        "the last cycle must start after the last config change: {kinds:?}"
    );
}

#[actix::test]
async fn a_slow_stale_failure_after_a_newer_generation_succeeded_changes_nothing() {
    let f = Fixture::new(sim(100), 1024).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    // Generation 2's start step: remember its operation id while it is in flight.
    f.registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    let stale_op = std::sync::Mutex::new(None);
    eventually("generation 2's start step", || async {
        let op = f.registry.inspect(id).await.expect("inspect").op;
        let start = op.filter(|op| op.step == steward_domain::Step::Start);
        *stale_op.lock().expect("not poisoned") = start;
        start.is_some()
    })
    .await;
    let stale_op = stale_op
        .into_inner()
        .expect("not poisoned")
        .expect("seen")
        .id;
    f.wait_running_and_idle(id).await;
    // Generation 3 succeeds.
    f.registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    f.wait_running_and_idle(id).await;
    let before = f.registry.get(id).await.expect("exists");
    assert_eq!(before.generation.0, 3);

    // Generation 2's failure finally arrives.
    f.registry
        .late_completion(
            id,
            steward_actors::LateCompletion {
                op: stale_op,
                result: Err("slow failure of generation 2".into()),
            },
        )
        .await
        .expect("delivered");

    eventually("the stale result to be recorded", || async {
        f.event_kinds(id)
            .await
            .iter()
            .any(|k| k == "stale_result_ignored")
    })
    .await;
    let after = f.registry.get(id).await.expect("exists");
    assert_eq!(after.phase, Phase::Running);
    assert_eq!(
        (after.generation, after.observed_generation),
        (before.generation, before.observed_generation)
    );
    assert!(after.failure.is_none(), "{:?}", after.failure);
    let inspected = f.registry.inspect(id).await.expect("inspect");
    assert_eq!(inspected.counters.stale_results, 1);
    let stored = f.store.load(id).await.expect("load").expect("stored");
    assert_eq!(
        stored.state.phase,
        Phase::Running,
        "nothing stale reached the store"
    );
    assert_eq!(stored.state.failure, None);
    assert!(!f
        .event_kinds(id)
        .await
        .iter()
        .any(|k| k == "provision_failed"));
}

/// Releases the write lock taken by [`Fixture::lock_store`].
async fn unlock(lock: &mut sqlx::SqliteConnection) {
    sqlx::query("ROLLBACK")
        .execute(lock)
        .await
        .expect("unlocked");
}

// ---- waiting for an intent to settle ---------------------------------------------------------

/// A restart's goal, and the wait for it, from a task (so the test can act meanwhile).
fn wait_in_background(
    registry: &Registry,
    id: WorkspaceId,
    goal: Goal,
    timeout: Duration,
) -> tokio::task::JoinHandle<Waited> {
    let registry = registry.clone();
    actix::spawn(async move { registry.wait(id, goal, timeout).await.expect("wait") })
}

#[actix::test]
async fn a_waiter_is_woken_by_the_transition_that_settles_its_intent() {
    let f = Fixture::new(sim(300), 1024).await;
    let id = f.create(None).await.expect("created");
    let first = f
        .registry
        .wait(id, Goal::Run(Generation(1)), Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(first.settled, Some(Settled::Running));
    let reply = f
        .registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    assert_eq!(reply.goal, Goal::Run(Generation(2)));
    let started = tokio::time::Instant::now();
    let waited = f
        .registry
        .wait(id, reply.goal, Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(waited.settled, Some(Settled::Running));
    let view = waited.workspace.expect("the document");
    assert_eq!(
        (view.phase, view.observed_generation),
        (Phase::Running, Generation(2))
    );
    // Answered when the cycle ended (the sim's start takes 300 ms), not when the wait ran out.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(30),
        "{took:?}"
    );
}

#[actix::test]
async fn a_wait_that_runs_out_answers_unsettled_and_cancels_nothing() {
    let f = Fixture::new(sim(1_000), 1024).await;
    let id = f.create(None).await.expect("created");
    // Folded into the cycle after the create's: two starts of a second each.
    let reply = f
        .registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    assert_eq!(reply.goal, Goal::Run(Generation(2)));
    let waited = f
        .registry
        .wait(id, reply.goal, Duration::from_millis(100))
        .await
        .expect("wait");
    assert_eq!(waited.settled, None);
    let view = waited.workspace.expect("the document");
    assert_eq!(view.phase, Phase::Provisioning);
    // The cycle goes on, and a later wait hears it end.
    let later = f
        .registry
        .wait(id, reply.goal, Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(later.settled, Some(Settled::Running));
}

#[actix::test]
async fn a_failed_cycle_settles_its_waiters() {
    let f = Fixture::new(sim(10), 1024).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    f.sim.set_config(SimConfig {
        fail_rate: 1.0,
        ..sim(10)
    });
    let reply = f
        .registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    let waited = f
        .registry
        .wait(id, reply.goal, Duration::from_secs(60))
        .await
        .expect("wait");
    assert_eq!(waited.settled, Some(Settled::Failed));
    let failure = waited
        .workspace
        .expect("the document")
        .failure
        .expect("a failure");
    assert!(failure.generation >= reply.generation, "{failure:?}");
}

#[actix::test]
async fn a_later_stop_or_delete_settles_a_restart_waiter() {
    let f = Fixture::new(sim(300), 1024).await;
    let id = f.create(None).await.expect("created");
    let reply = f
        .registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    let waiter = wait_in_background(&f.registry, id, reply.goal, Duration::from_secs(30));
    let stop = f.registry.submit(id, Intent::Stop).await.expect("stop");
    let waited = waiter.await.expect("joins");
    assert_eq!(waited.settled, Some(Settled::Overruled));

    // The stop's own waiter hears the stop finish; a delete's waiter hears the workspace go.
    let stopped = f
        .registry
        .wait(id, stop.goal, Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(stopped.settled, Some(Settled::Stopped));
    let reply = f.registry.submit(id, Intent::Start).await.expect("start");
    let waiter = wait_in_background(&f.registry, id, reply.goal, Duration::from_secs(30));
    let delete = f.registry.submit(id, Intent::Delete).await.expect("delete");
    assert_eq!(
        waiter.await.expect("joins").settled,
        Some(Settled::Overruled)
    );
    let gone = f
        .registry
        .wait(id, delete.goal, Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(
        (gone.settled, gone.workspace.is_none()),
        (Some(Settled::Gone), true)
    );
    assert!(
        f.store.load(id).await.expect("load").is_none(),
        "gone means its records too"
    );
}

#[actix::test]
async fn waiting_for_a_phase_without_an_intent() {
    let f = Fixture::new(sim(10), 1024).await;
    let id = f.create(None).await.expect("created");
    let running = f
        .registry
        .wait_for(id, Phase::Running, Duration::from_secs(60))
        .await
        .expect("wait");
    assert_eq!(running.settled, Some(Settled::Running));
    assert!(matches!(
        f.registry
            .wait_for(id, Phase::Starting, Duration::from_secs(1))
            .await,
        Err(ActorError::NotWaitable("starting"))
    ));
    let unknown = WorkspaceId::from(uuid::Uuid::new_v4());
    assert!(matches!(
        f.registry
            .wait_for(unknown, Phase::Running, Duration::from_secs(1))
            .await,
        Err(ActorError::NotFound(_))
    ));
}

#[actix::test]
async fn many_waiters_on_one_workspace_all_hear_and_leave_no_cell_behind() {
    let f = Fixture::new(sim(50), 1024).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    let reply = f
        .registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    let waiters: Vec<_> = (0..200)
        .map(|_| wait_in_background(&f.registry, id, reply.goal, Duration::from_secs(60)))
        .collect();
    for waiter in waiters {
        assert_eq!(waiter.await.expect("joins").settled, Some(Settled::Running));
    }
}

#[actix::test]
async fn a_waiter_follows_its_workspace_across_an_actor_restart() {
    let f = Fixture::new(sim(10), 1024).await;
    let id = f.create(None).await.expect("created");
    f.wait_running_and_idle(id).await;
    f.sim.set_config(SimConfig {
        panic_rate: 1.0,
        ..sim(10)
    });
    f.registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    // Folded into the cycle after the one whose start panics: its waiter outlives the actor.
    let later = f
        .registry
        .submit(id, Intent::Restart)
        .await
        .expect("restart");
    let waiter = wait_in_background(&f.registry, id, later.goal, Duration::from_secs(30));
    eventually("the actor restarted from the store", || async {
        f.registry
            .inspect(id)
            .await
            .is_ok_and(|actor| actor.restarts >= 1)
    })
    .await;
    f.sim.set_config(sim(10));
    // Whatever the successor decided about that generation or a later one (its cycle may have
    // started, and panicked, before the knob was turned back) reaches the waiter: the first
    // actor never ran that cycle, so the waiter heard it from a successor.
    let waited = waiter.await.expect("joins");
    let view = waited.workspace.clone().expect("the document");
    match waited.settled {
        Some(Settled::Running) => assert!(view.observed_generation >= later.generation),
        Some(Settled::Failed) => {
            let failure = view.failure.expect("a failure");
            assert!(failure.generation >= later.generation, "{failure:?}");
        }
        other => panic!("settled {other:?}: {view:?}"),
    }
}

#[actix::test]
async fn a_wait_ends_unsettled_when_the_daemon_begins_to_shut_down() {
    let f = Fixture::new(sim(60_000), 1024).await;
    let id = f.create(None).await.expect("created");
    let goal = Goal::Run(Generation(1));
    let waiter = wait_in_background(&f.registry, id, goal, Duration::from_secs(30));
    // The waiter is subscribed once the actor has answered a later message.
    f.registry.get(id).await.expect("exists");
    f.registry.begin_shutdown();
    let waited = waiter.await.expect("joins");
    assert_eq!(waited.settled, None);
    assert_eq!(
        waited.workspace.expect("the document").phase,
        Phase::Provisioning
    );
}
