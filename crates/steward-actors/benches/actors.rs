//! In-process benchmarks of the actor layer (`cargo bench -p steward-actors --bench actors`),
//! each against its baseline measured in the same run. Prints one JSON object per line.
//!
//! - `restart`: restart intents through the registry and the workspace actors (1 000
//!   workspaces, senders on several threads, every answer awaited: the intent is durable in
//!   SQLite when it is answered) vs bare actix `send().await` round trips to 1 000 trivial
//!   actors with the same senders. The two sides take turns (`BENCH_ROUNDS` each, default 3,
//!   `BENCH_SECONDS` each, default 5), and each side's figure is its median. Cycles are slow
//!   (sim start 60 s), so after the first restart of each workspace every request is folded
//!   into its pending cycle: this measures the intent path, not the provider.
//! - `one_slow_cycle`: 1 000 000 restart requests to one workspace while one slow cycle
//!   runs; must give exactly one extra cycle.
//! - `idle_memory`: resident memory per idle workspace (actor, registry entry, timers) with
//!   100 000 sim workspaces.
//!
//! Scale with `BENCH_WORKSPACES`, `BENCH_SECONDS`, `BENCH_ROUNDS`, `BENCH_SENDERS`, `BENCH_IDLE`,
//! `BENCH_REQUESTS`; pick benchmarks with the first argument (`restart`, `one_slow_cycle`,
//! `idle_memory`; default all).

#![allow(missing_docs, clippy::unwrap_used)]

use actix::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steward_actors::{Clock, Deps, EventBus, Intent, NewWorkspace, Registry, RegistryOptions};
use steward_domain::{Outcome, Policy, WorkspaceId, WorkspaceSpec};
use steward_provider::sim::{SimConfig, SimProvider};
use steward_provider::Providers;
use steward_store::{Store, StoreOptions};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A trivial actor: the baseline's round trip.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Ping(u64);

impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, Ping(n): Ping, _: &mut Self::Context) -> u64 {
        n
    }
}

async fn registry(dir: &std::path::Path, sim: SimConfig) -> (Registry, Store) {
    let store = Store::open(
        StoreOptions {
            database_url: format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
            max_batch: 512,
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        },
        &dir.join("secrets.key"),
    )
    .await
    .unwrap();
    let mut providers = Providers::default();
    providers.insert(Arc::new(SimProvider::new("sim", sim)));
    let deps = Deps {
        store: store.clone(),
        providers,
        policy: Arc::new(Policy::default()),
        clock: Clock::system(),
        bus: EventBus::new(1024),
        mailbox_capacity: 100_000,
        control_url: "http://127.0.0.1:9".into(),
        http: reqwest::Client::new(),
        context_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(10),
    };
    // One arbiter, as the daemon runs by default.
    let registry = Registry::boot(deps, RegistryOptions { arbiters: 1 })
        .await
        .unwrap();
    (registry, store)
}

fn new_workspace(i: usize) -> NewWorkspace {
    NewWorkspace {
        spec: WorkspaceSpec {
            name: format!("bench-{i}"),
            provider: "sim".into(),
            image: None,
            command: None,
            env: BTreeMap::new(),
            model: None,
        },
        secrets: BTreeMap::new(),
        ready_when: None,
        idempotency: None,
    }
}

async fn create_all(registry: &Registry, n: usize) -> Vec<WorkspaceId> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(512) {
        let created =
            futures::future::join_all(chunk.iter().map(|i| registry.create(new_workspace(*i))))
                .await;
        ids.extend(created.into_iter().map(|r| r.unwrap().0.id));
    }
    ids
}

/// Runs `senders` OS threads, each with its own runtime and `window` requests in flight,
/// calling `op(i)` for `seconds`; returns completed operations per second.
fn drive<F, Fut>(senders: usize, window: usize, seconds: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|s| {
            let (op, done, stop) = (op.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let tasks = (0..window).map(|w| {
                        let (op, done, stop) = (op.clone(), done.clone(), stop.clone());
                        async move {
                            let mut i = (s * window + w) as u64 * 7919;
                            while !stop.load(Ordering::Relaxed) {
                                op(i).await;
                                done.fetch_add(1, Ordering::Relaxed);
                                i += 1;
                            }
                        }
                    });
                    futures::future::join_all(tasks).await;
                });
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let count = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    count as f64 / elapsed
}

async fn bench_restart() {
    let workspaces = env("BENCH_WORKSPACES", 1000) as usize;
    let seconds = env("BENCH_SECONDS", 5);
    let rounds = env("BENCH_ROUNDS", 3).max(1);
    let senders = env("BENCH_SENDERS", 2) as usize;
    let window = 32;

    // Baseline: bare actix round trips to as many trivial actors, on one arbiter.
    let arbiter = Arbiter::new();
    let echoes: Arc<Vec<Addr<Echo>>> = Arc::new(
        (0..workspaces)
            .map(|_| Echo::start_in_arbiter(&arbiter.handle(), |_| Echo))
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        start_delay: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let (registry, _store) = registry(dir.path(), sim).await;
    let ids = Arc::new(create_all(&registry, workspaces).await);
    // Every workspace has a cycle in flight and a pending restart.
    for id in ids.iter() {
        registry.submit(*id, Intent::Restart).await.unwrap();
    }

    // The two sides take turns, `rounds` times each, who goes first alternating, so that what
    // the machine does meanwhile falls on both alike; each side's figure is its median.
    let baseline_round = || {
        let echoes = echoes.clone();
        tokio::task::spawn_blocking(move || {
            drive(senders, window, seconds, move |i| {
                let addr = echoes[(i as usize) % echoes.len()].clone();
                async move {
                    addr.send(Ping(i)).await.unwrap();
                }
            })
        })
    };
    let actors_round = || {
        let (registry, ids) = (registry.clone(), ids.clone());
        tokio::task::spawn_blocking(move || {
            drive(senders, window, seconds, move |i| {
                let (registry, id) = (registry.clone(), ids[(i as usize) % ids.len()]);
                async move {
                    let reply = registry.submit(id, Intent::Restart).await.unwrap();
                    assert!(matches!(reply.outcome, Outcome::Coalesced(_)));
                }
            })
        })
    };
    let (mut baseline, mut through_actors) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            baseline.push(baseline_round().await.unwrap());
            through_actors.push(actors_round().await.unwrap());
        } else {
            through_actors.push(actors_round().await.unwrap());
            baseline.push(baseline_round().await.unwrap());
        }
    }
    let per_round: Vec<f64> = baseline
        .iter()
        .zip(&through_actors)
        .map(|(b, a)| (a / b * 100.0).round() / 100.0)
        .collect();
    let (baseline, through_actors) = (median(baseline), median(through_actors));
    println!(
        "{}",
        serde_json::json!({
            "bench": "restart_in_process",
            "workspaces": workspaces,
            "senders": senders,
            "in_flight_per_sender": window,
            "seconds_per_round": seconds,
            "rounds_per_side": rounds,
            "baseline_actix_send_per_s": baseline.round(),
            "restart_intents_per_s": through_actors.round(),
            "ratio": (through_actors / baseline * 100.0).round() / 100.0,
            "ratio_per_round": per_round,
            "target": ">= 0.5",
        })
    );
    arbiter.stop();
}

/// The median of `values` (not empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

async fn bench_one_slow_cycle() {
    let requests = env("BENCH_REQUESTS", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        start_delay: Duration::from_secs(3600),
        ..SimConfig::default()
    };
    let (registry, store) = registry(dir.path(), sim).await;
    let id = create_all(&registry, 1).await[0];
    // The create's cycle is the slow one: every request below arrives while it runs.
    let started = Instant::now();
    let window = 64;
    let next = Arc::new(AtomicU64::new(0));
    let coalesced = Arc::new(AtomicU64::new(0));
    futures::future::join_all((0..window).map(|_| {
        let (registry, next, coalesced) = (registry.clone(), next.clone(), coalesced.clone());
        async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let reply = registry.submit(id, Intent::Restart).await.unwrap();
                if matches!(reply.outcome, Outcome::Coalesced(_)) {
                    coalesced.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let view = registry.inspect(id).await.unwrap();
    let events = store.events(id, 0, 1_000_000).await.unwrap();
    let kinds = |k: &str| events.iter().filter(|e| e.kind == k).count();
    println!(
        "{}",
        serde_json::json!({
            "bench": "one_slow_cycle",
            "requests": requests,
            "seconds": (elapsed * 100.0).round() / 100.0,
            "requests_per_s": (requests as f64 / elapsed).round(),
            "coalesced": coalesced.load(Ordering::Relaxed),
            "cycles_started": view.counters.cycles,
            "extra_cycles_pending": u64::from(!view.pending.is_empty()),
            "events_recorded": events.len(),
            "restart_coalesced_events": kinds("restart_coalesced"),
            "target": "exactly one extra cycle",
        })
    );
    assert_eq!(coalesced.load(Ordering::Relaxed), requests);
    assert_eq!(
        view.counters.cycles, 1,
        "only the create's cycle ran so far"
    );
    assert!(
        !view.pending.is_empty(),
        "exactly one extra cycle is pending"
    );
}

/// The resident memory of this process, from `/proc/self/status`.
#[derive(Clone, Copy)]
struct Resident {
    /// Everything resident (`VmRSS`).
    total: u64,
    /// Anonymous memory (`RssAnon`): the heap and the stacks — the actors, the registry, the
    /// timers, SQLite's page caches.
    anon: u64,
    /// Pages of files mapped by the process (`RssFile`): here the database file, which SQLite
    /// reads through a memory map. The kernel's page cache, shared and reclaimable.
    file: u64,
    /// Shared memory (`RssShmem`): SQLite's index of its write-ahead log (`-shm`).
    shmem: u64,
}

fn resident() -> Resident {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        let value: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        value * 1024
    };
    Resident {
        total: kib("VmRSS:"),
        anon: kib("RssAnon:"),
        file: kib("RssFile:"),
        shmem: kib("RssShmem:"),
    }
}

async fn bench_idle_memory() {
    let n = env("BENCH_IDLE", 100_000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        start_delay: Duration::ZERO,
        stop_delay: Duration::ZERO,
        ..SimConfig::default()
    };
    let (registry, _store) = registry(dir.path(), sim).await;
    // Warm up the store, the allocator and the registry's map with a first small batch.
    create_all(&registry, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident();
    let started = Instant::now();
    create_all(&registry, n).await;
    // Idle: every workspace running, nothing in flight.
    loop {
        let census = registry.census().await;
        if census.get("running").copied().unwrap_or(0) >= n + 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = resident();
    let per = |part: fn(&Resident) -> u64| {
        (part(&after).saturating_sub(part(&before)) as f64 / n as f64).round()
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "idle_memory",
            "workspaces": n,
            "create_seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "rss_before_mib": before.total / (1 << 20),
            "rss_after_mib": after.total / (1 << 20),
            // The whole resident set per workspace (the target), then its parts: heap and
            // stacks (actor, registry entry, timers, SQLite's page caches), file pages
            // mapped, and shared memory (SQLite's index of the write-ahead log).
            "rss_bytes_per_idle_workspace": per(|r| r.total),
            "anon_bytes_per_idle_workspace": per(|r| r.anon),
            "file_bytes_per_idle_workspace": per(|r| r.file),
            "shared_bytes_per_idle_workspace": per(|r| r.shmem),
            "target": "<= 4096",
        })
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let system = System::new();
    system.block_on(async {
        if wants("restart") {
            bench_restart().await;
        }
        if wants("one_slow_cycle") {
            bench_one_slow_cycle().await;
        }
        if wants("idle_memory") {
            bench_idle_memory().await;
        }
    });
}
