//! `docker-reconcile`: start-up reconcile of N unchanged Docker workspaces (default 1 000),
//! against one labelled list call to the engine, in the same run.
//!
//! 1. A daemon creates N workspaces (`ready_when = "instance"`) in batches and waits until
//!    all run; the generation of each is noted. Creation stops early (and says so) if the
//!    machine runs short of memory.
//! 2. The daemon is stopped with SIGTERM (the docker provider's shutdown leaves containers
//!    running; they outlive the daemon by design).
//! 3. Baseline: the list call the provider's `list` makes (`all = true`, owner label filter),
//!    timed with a fresh client (connect + negotiate + list: "cold") and then repeated on the
//!    warm client.
//! 4. Boot, direct: the daemon is started again on the same data dir and address (so the
//!    agents reach it), and timed from process spawn until `GET /v1/workspaces` shows every
//!    workspace running with the generation it had before (adopted, not replaced) — the upper
//!    bound is when that answer arrived. The container ids are checked unchanged. Its log
//!    gives spawn → "registry booted" (store, one list per provider, actors spawned).
//! 5. Boot, counted: the same once more with a counting proxy in front of the engine: engine
//!    calls made during the boot, per kind, and how long the survey's list call took inside
//!    the daemon. The target is zero per-container calls.

use crate::daemon::{self, read_log, wall_ms, Api, BenchApi, DaemonConfig};
use crate::engine::{self, list_owned, running, workspace_of};
use crate::proxy::{count_by_kind, Proxy};
use crate::report::{at_most, ms, num, ratio, round3, times, Report, Summary};
use crate::session::Session;
use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// `docker-reconcile` options.
#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Workspaces to create.
    #[arg(long, default_value_t = 1000)]
    pub workspaces: usize,
    /// Workspaces created per batch (the next batch waits until this one runs).
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Stop creating when MemAvailable falls below this many MiB.
    #[arg(long, default_value_t = 3072)]
    pub min_free_mib: u64,
    /// Poll step of `GET /v1/workspaces` while timing a boot.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    pub poll: Duration,
    /// Warm list calls of the baseline.
    #[arg(long, default_value_t = 5)]
    pub list_repeats: usize,
    /// `[health] agent_heartbeat_interval` of the daemon (default: the daemon's, 5 s).
    #[arg(long)]
    pub heartbeat: Option<String>,
}

/// Target: boot reconcile ≤ 4× the list call.
const TARGET: f64 = 4.0;

/// One timed boot.
struct Boot {
    /// Spawn → `listen.addr` seen.
    listening: Duration,
    /// Spawn → the answer that showed every workspace adopted.
    reconciled: Duration,
    /// How long that last answer took.
    last_poll: Duration,
    /// Polls made.
    polls: usize,
    /// Spawn → log lines (ms), by message.
    log: BTreeMap<String, f64>,
    /// Workspaces whose generation changed (replaced instead of adopted).
    replaced: usize,
    /// Containers whose id changed.
    containers_changed: usize,
    /// Daemon's pid, for reference.
    pid: Option<u32>,
}

/// Runs `docker-reconcile`.
pub async fn run(session: &Session, args: &ReconcileArgs) -> Result<()> {
    let dir = session.subdir("reconcile")?;
    let config = DaemonConfig {
        socket: session.socket.clone(),
        owner: session.daemon_owner(),
        max_concurrent_ops: session.cap,
        heartbeat: args.heartbeat.clone(),
    };
    let mut daemon = daemon::spawn(&session.steward, &dir, &config.toml(), None)?;
    let api = daemon.wait_up(Duration::from_secs(30)).await?;
    let addr = daemon.addr();

    // 1. Populate.
    let created = populate(&api, session, args).await?;
    let before = snapshot(&api).await?;
    if before.len() != created {
        bail!("{created} workspaces created but {} listed", before.len());
    }
    let containers_before = container_ids(session).await?;
    eprintln!(
        "docker-reconcile: {created} workspaces run ({} containers of ours)",
        containers_before.len()
    );

    // 2. Stop gracefully; containers survive.
    let (status, shutdown) = daemon.terminate(Duration::from_secs(60)).await?;
    drop(daemon);
    let survivors = list_owned(&session.docker, &session.daemon_owner()).await?;
    eprintln!(
        "docker-reconcile: daemon stopped ({status}) in {:.0} ms; {} of {} containers still run",
        shutdown.as_secs_f64() * 1e3,
        running(&survivors),
        survivors.len()
    );

    // 3. Baseline: the labelled list call.
    let (cold, warm) = list_calls(session, args.list_repeats).await?;
    let warm_summary = Summary::of(&warm);

    // 4. Boot, direct.
    eprintln!("docker-reconcile: timing the boot (direct)");
    let boot = timed_boot(
        session,
        &dir,
        &config.toml(),
        addr,
        &before,
        &containers_before,
        args,
    )
    .await?;
    let (_, warm_after) = list_calls(session, args.list_repeats).await?;

    // 5. Boot, counted.
    eprintln!("docker-reconcile: timing the boot (through the counting proxy)");
    let proxy = Proxy::start(&dir.join("engine.sock"), &session.socket)?;
    let counted_config = DaemonConfig {
        socket: proxy.path.clone(),
        ..config.clone()
    };
    let spawn_mark = Instant::now();
    let counted = timed_boot(
        session,
        &dir,
        &counted_config.toml(),
        addr,
        &before,
        &containers_before,
        args,
    )
    .await?;
    let calls = proxy.calls();
    let until = spawn_mark + counted.reconciled + Duration::from_millis(1);
    let counts = count_by_kind(&calls, spawn_mark, until);
    let per_container: usize = calls
        .iter()
        .filter(|c| c.started >= spawn_mark && c.started < until && c.per_container())
        .count();
    let survey: Vec<Value> = calls
        .iter()
        .filter(|c| c.started >= spawn_mark && c.started < until)
        .filter(|c| c.kind == "GET /containers/json [label:io.steward.owner]")
        .map(|c| {
            json!({
                "started_after_spawn_ms": num(c.started.duration_since(spawn_mark).as_secs_f64() * 1e3),
                "first_byte_ms": c.first_byte.map(|d| num(d.as_secs_f64() * 1e3)),
                "last_byte_ms": c.last_byte.map(|d| num(d.as_secs_f64() * 1e3)),
                "bytes": c.bytes,
            })
        })
        .collect();

    // Results.
    let list_ms = warm_summary.p50;
    let boot_ms = boot.reconciled.as_secs_f64() * 1e3;
    let r = ratio(boot_ms, list_ms);
    let mut report = Report::new(&[
        "bench",
        "workspaces",
        "boot: spawn → all adopted",
        "spawn → registry booted",
        "list call (warm p50)",
        "list call (cold)",
        "ratio (≤ 4×)",
        "per-container calls",
        "replaced",
        "verdict",
    ]);
    let verdict = if at_most(r, TARGET) == "holds"
        && per_container == 0
        && boot.replaced + boot.containers_changed == 0
        && counted.replaced + counted.containers_changed == 0
    {
        "holds"
    } else {
        "MISSES"
    };
    report.json(&json!({
        "bench": "docker-reconcile",
        "workspaces": created,
        "workspaces_asked": args.workspaces,
        "first_daemon_exit": status.to_string(),
        "first_daemon_shutdown_ms": num(shutdown.as_secs_f64() * 1e3),
        "baseline_list": {
            "cold_ms": num(cold.as_secs_f64() * 1e3),
            "warm_before": warm_summary.json(),
            "warm_after": Summary::of(&warm_after).json(),
        },
        "boot_direct": boot_json(&boot),
        "boot_counted": boot_json(&counted),
        "engine_calls_during_counted_boot": counts,
        "per_container_calls": per_container,
        "survey_list_calls_seen_by_proxy": survey,
        "ratio_boot_to_warm_list": num(r),
        "ratio_boot_to_cold_list": num(ratio(boot_ms, cold.as_secs_f64() * 1e3)),
        "target": TARGET,
        "verdict": verdict,
    }));
    let booted = boot
        .log
        .get("registry booted")
        .copied()
        .map_or_else(|| "n/a".to_owned(), ms);
    report.row(&[
        "docker-reconcile".to_owned(),
        created.to_string(),
        ms(boot_ms),
        booted,
        ms(list_ms),
        ms(cold.as_secs_f64() * 1e3),
        times(r),
        per_container.to_string(),
        (boot.replaced.max(boot.containers_changed)
            + counted.replaced.max(counted.containers_changed))
        .to_string(),
        verdict.to_owned(),
    ]);
    report.finish();
    Ok(())
}

fn boot_json(boot: &Boot) -> Value {
    json!({
        "spawn_to_listening_ms": num(boot.listening.as_secs_f64() * 1e3),
        "spawn_to_all_adopted_ms": num(boot.reconciled.as_secs_f64() * 1e3),
        "last_poll_ms": num(boot.last_poll.as_secs_f64() * 1e3),
        "polls": boot.polls,
        "log_ms_after_spawn": boot.log,
        "replaced": boot.replaced,
        "containers_changed": boot.containers_changed,
        "pid": boot.pid,
    })
}

/// MemAvailable in MiB.
fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Creates up to `args.workspaces` workspaces in batches, each batch waited for; returns how
/// many were created.
async fn populate(api: &Api, session: &Session, args: &ReconcileArgs) -> Result<usize> {
    let started = Instant::now();
    let mut created = 0usize;
    while created < args.workspaces {
        if let Some(free) = mem_available_mib() {
            if free < args.min_free_mib {
                eprintln!(
                    "docker-reconcile: MemAvailable {free} MiB < {} MiB: stopping at {created} workspaces",
                    args.min_free_mib
                );
                break;
            }
        }
        let batch = args.batch.min(args.workspaces - created);
        let results: Vec<Result<String>> = stream::iter(created..created + batch)
            .map(|i| {
                let api = api.clone();
                let image = session.image.clone();
                async move {
                    api.create_docker(&format!("bench-reconcile-{i}"), &image)
                        .await
                }
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
        for result in results {
            result?;
        }
        created += batch;
        // Wait until everything created so far runs.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let list = api.list().await?;
            let up = list
                .iter()
                .filter(|w| w["phase"] == "running" && w["generation"] == w["observed_generation"])
                .count();
            let failed = list.iter().filter(|w| w["phase"] == "failed").count();
            if failed > 0 {
                bail!("{failed} workspaces failed while populating");
            }
            if up == created {
                break;
            }
            if Instant::now() >= deadline {
                bail!("only {up} of {created} workspaces run after 300 s");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "docker-reconcile: {created}/{} running after {:.0} s (MemAvailable {} MiB)",
            args.workspaces,
            started.elapsed().as_secs_f64(),
            mem_available_mib().unwrap_or(0)
        );
    }
    Ok(created)
}

/// Workspace id → generation, all of which must be running with that generation up.
async fn snapshot(api: &Api) -> Result<HashMap<String, u64>> {
    let list = api.list().await?;
    let mut map = HashMap::new();
    for w in &list {
        let id = w["id"].as_str().context("workspace id")?.to_owned();
        let generation = w["generation"].as_u64().context("generation")?;
        if w["phase"] != "running" || w["observed_generation"] != generation {
            bail!("workspace {id} is not settled: {w}");
        }
        map.insert(id, generation);
    }
    Ok(map)
}

/// Workspace id → container id, for the daemon's containers.
async fn container_ids(session: &Session) -> Result<HashMap<String, String>> {
    Ok(list_owned(&session.docker, &session.daemon_owner())
        .await?
        .into_iter()
        .filter_map(|c| Some((workspace_of(&c)?.to_owned(), c.id?)))
        .collect())
}

/// The baseline list call: once with a fresh client (connect, negotiate, list), then
/// `repeats` times on the warm client.
async fn list_calls(session: &Session, repeats: usize) -> Result<(Duration, Vec<Duration>)> {
    let owner = session.daemon_owner();
    let t0 = Instant::now();
    let docker = engine::connect(&session.socket).await?;
    let first = list_owned(&docker, &owner).await?;
    let cold = t0.elapsed();
    let mut warm = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let list = list_owned(&docker, &owner).await?;
        warm.push(t.elapsed());
        if list.len() != first.len() {
            bail!(
                "the list changed between calls: {} then {}",
                first.len(),
                list.len()
            );
        }
    }
    eprintln!(
        "docker-reconcile: list of {} containers: cold {:.1} ms, warm p50 {:.1} ms",
        first.len(),
        cold.as_secs_f64() * 1e3,
        Summary::of(&warm).p50
    );
    Ok((cold, warm))
}

/// Starts the daemon on `dir` and `addr` and times it until every workspace of `before` is
/// running with its generation; stops it again (SIGTERM) before returning.
async fn timed_boot(
    session: &Session,
    dir: &Path,
    config: &str,
    addr: SocketAddr,
    before: &HashMap<String, u64>,
    containers_before: &HashMap<String, String>,
    args: &ReconcileArgs,
) -> Result<Boot> {
    let mut daemon = daemon::spawn(&session.steward, dir, config, Some(addr))?;
    let spawned = daemon.spawned();
    let spawned_wall = daemon.spawned_wall();
    daemon
        .wait_listening(Duration::from_millis(1), Duration::from_secs(120))
        .await?;
    let listening = spawned.elapsed();
    let api = daemon.client();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut polls = 0usize;
    let (reconciled, last_poll, replaced) = loop {
        let t = Instant::now();
        let answer = api.list().await;
        polls += 1;
        let returned = Instant::now();
        if let Ok(list) = answer {
            let adopted = list
                .iter()
                .filter(|w| {
                    w["phase"] == "running"
                        && w["observed_generation"] == w["generation"]
                        && w["id"]
                            .as_str()
                            .and_then(|id| before.get(id))
                            .is_some_and(|g| w["generation"] == *g)
                })
                .count();
            let settled_elsewhere = list
                .iter()
                .filter(|w| w["phase"] == "running" && w["observed_generation"] == w["generation"])
                .count();
            if adopted == before.len() {
                break (returned - spawned, returned - t, 0);
            }
            if settled_elsewhere == before.len() && list.len() == before.len() {
                // Every workspace settled, some on a new generation: replaced, not adopted.
                break (returned - spawned, returned - t, before.len() - adopted);
            }
        }
        if Instant::now() >= deadline {
            bail!("the workspaces did not settle within 300 s of the boot");
        }
        tokio::time::sleep(args.poll).await;
    };
    let after = container_ids(session).await?;
    let containers_changed = containers_before
        .iter()
        .filter(|(ws, id)| after.get(*ws) != Some(id))
        .count();
    let pid = daemon.pid();
    daemon.terminate(Duration::from_secs(60)).await?;
    let mut log = BTreeMap::new();
    for line in read_log(&daemon.log_path())? {
        if line.at < spawned_wall {
            continue;
        }
        let key = line.message.clone();
        if matches!(
            key.as_str(),
            "connected to the docker engine" | "registry booted" | "steward listening"
        ) {
            log.entry(key)
                .or_insert_with(|| round3(wall_ms(spawned_wall, line.at)));
        }
    }
    eprintln!(
        "docker-reconcile: boot: listening after {:.1} ms, all adopted after {:.1} ms ({polls} polls; {replaced} replaced; {containers_changed} containers changed)",
        listening.as_secs_f64() * 1e3,
        reconciled.as_secs_f64() * 1e3,
    );
    Ok(Boot {
        listening,
        reconciled,
        last_poll,
        polls,
        log,
        replaced,
        containers_changed,
        pid,
    })
}
