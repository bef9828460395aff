//! `docker-cycle`: the latency of one restart cycle of a Docker workspace, from the API
//! accepting the restart to the new container running and recorded — against the same
//! engine work done directly, in the same run, interleaved cycle by cycle.
//!
//! Steward side: one workspace (`ready_when = "instance"`, so "running" means the container
//! runs, as in the baseline). A cycle is timed from just before `POST .../restart` to the
//! moment its `provision_succeeded` event (committed, for the new generation) is read from the
//! workspace's SSE stream; afterwards (untimed) the new agent's registration is awaited so the
//! daemon is quiet before the next cycle, and `GET` checks `generation == observed_generation`
//! and `phase = running`.
//!
//! Baseline side: the same container replacement made directly with bollard (see
//! `engine.rs` for the variants). The sides alternate, rotating who goes first, with a pause
//! between cycles, so background load falls on both alike.
//!
//! Where the daemon's time goes is read from its log (the provider logs "instance container
//! removed" and "instance container started"), and with `--via-proxy` from a counting proxy
//! in front of the engine for each side (both sides then pay the proxy hop): engine calls per
//! kind with their latencies, and the idle gaps between consecutive calls (time spent in the
//! daemon between two engine calls of a cycle, e.g. the step change from remove to start).

use crate::daemon::{self, wait_event, BenchApi};
use crate::engine::{self, Baseline, Variant};
use crate::proxy::Call;
use crate::report::{self, at_most, ms, num, ratio, times, Report, Summary};
use crate::session::Session;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// `docker-cycle` options.
#[derive(Clone, Debug, clap::Args)]
pub struct CycleArgs {
    /// Measured cycles per side.
    #[arg(long, default_value_t = 50)]
    pub cycles: usize,
    /// Unmeasured cycles per side first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Baselines to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "minimal,mirror"
    )]
    pub baselines: Vec<Variant>,
    /// Pause after each cycle (every side).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300ms")]
    pub pause: Duration,
    /// Put a counting proxy in front of the engine for each side, and report engine calls
    /// per kind with their latencies (adds one hop to every engine call of both sides).
    #[arg(long)]
    pub via_proxy: bool,
}

/// Target: Steward p50 ≤ 1.05× and p99 ≤ 1.10× the baseline's.
const P50_TARGET: f64 = 1.05;
const P99_TARGET: f64 = 1.10;

/// One measured Steward cycle.
struct StewardCycle {
    /// When `POST .../restart` was sent.
    sent: SystemTime,
    /// Restart sent → `provision_succeeded` read.
    total: Duration,
    /// Restart sent → 202 read.
    accepted: Duration,
    /// The new generation.
    generation: u64,
}

/// Runs `docker-cycle`.
pub async fn run(session: &Session, args: &CycleArgs) -> Result<()> {
    if args.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    let dir = session.subdir("cycle")?;
    let (daemon_proxy, baseline_proxy) = session.proxies(&dir, args.via_proxy)?;
    let config = session.daemon_config(daemon_proxy.as_ref());
    let mut daemon = daemon::spawn(&session.steward, &dir, &config.toml(), None)?;
    let api = daemon.wait_up(Duration::from_secs(30)).await?;
    eprintln!("docker-cycle: daemon up at {}", daemon.addr());

    let id = api.create_docker("bench-cycle", &session.image).await?;
    let mut events = api.follow(&id, 0).await?;
    wait_event(
        &mut events,
        "provision_succeeded",
        1,
        Duration::from_secs(60),
    )
    .await
    .context("the workspace did not run within 60 s")?;
    wait_event(&mut events, "agent_registered", 1, Duration::from_secs(10)).await;

    let docker = match &baseline_proxy {
        Some(proxy) => engine::connect(&proxy.path).await?,
        None => session.docker.clone(),
    };
    let baseline = Baseline::new(docker, session.baseline_spec()?, Some(session.cap));
    let mut containers = Vec::new();
    for _ in &args.baselines {
        let mut c = baseline.container();
        baseline.provision(&mut c).await?;
        containers.push(c);
    }
    if let Some(p) = &daemon_proxy {
        p.reset();
    }
    if let Some(p) = &baseline_proxy {
        p.reset();
    }

    let sides = 1 + args.baselines.len();
    let mut steward: Vec<StewardCycle> = Vec::new();
    let mut base: Vec<Vec<engine::Cycle>> = vec![Vec::new(); args.baselines.len()];
    let mut anomalies: Vec<String> = Vec::new();
    let mut missing_registrations = 0usize;
    let total = args.warmup + args.cycles;
    let mut measured_from = Instant::now();
    for i in 0..total {
        if i == args.warmup {
            measured_from = Instant::now();
        }
        let measured = i >= args.warmup;
        for k in 0..sides {
            let side = (i + k) % sides;
            if side == 0 {
                let sent = SystemTime::now();
                let t0 = Instant::now();
                let (outcome, generation) = api.try_restart(&id).await?;
                let accepted = t0.elapsed();
                let done = wait_event(
                    &mut events,
                    "provision_succeeded",
                    generation,
                    Duration::from_secs(60),
                )
                .await
                .with_context(|| format!("generation {generation} did not run within 60 s"))?;
                let total = done.received.saturating_duration_since(t0);
                if outcome != "started" {
                    anomalies.push(format!("restart {i} answered {outcome}"));
                }
                // Untimed: the new agent registers, so the next cycle starts from a quiet daemon.
                if wait_event(
                    &mut events,
                    "agent_registered",
                    generation,
                    Duration::from_secs(5),
                )
                .await
                .is_none()
                {
                    missing_registrations += 1;
                }
                let doc = api.document(&id).await?;
                if doc["phase"] != "running"
                    || doc["generation"] != generation
                    || doc["observed_generation"] != generation
                {
                    anomalies.push(format!(
                        "after cycle {i}: phase {} generation {} observed {} (expected running {generation})",
                        doc["phase"], doc["generation"], doc["observed_generation"]
                    ));
                }
                if measured {
                    steward.push(StewardCycle {
                        sent,
                        total,
                        accepted,
                        generation,
                    });
                }
            } else {
                let variant = args.baselines[side - 1];
                let cycle = baseline.cycle(&mut containers[side - 1], variant).await?;
                if measured {
                    base[side - 1].push(cycle);
                }
            }
            tokio::time::sleep(args.pause).await;
        }
        if (i + 1) % 10 == 0 || i + 1 == total {
            eprintln!("docker-cycle: {}/{total} rounds", i + 1);
        }
    }
    let measured_until = Instant::now();

    // Where the daemon's time goes, from its log.
    let log = daemon::read_log(&daemon.log_path())?;
    let phases = steward_phases(&steward, &log, &id);
    let metrics = api.metrics().await.unwrap_or_default();
    let (status, shutdown) = daemon.terminate(Duration::from_secs(30)).await?;

    // Results.
    let mut report = Report::new(&[
        "bench",
        "baseline",
        "n",
        "Steward p50",
        "Steward p99",
        "baseline p50",
        "baseline p99",
        "p50 ratio (≤ 1.05×)",
        "p99 ratio (≤ 1.10×)",
        "verdict",
    ]);
    let s_total: Vec<Duration> = steward.iter().map(|c| c.total).collect();
    let s = Summary::of(&s_total);
    let accepted = Summary::of(&steward.iter().map(|c| c.accepted).collect::<Vec<_>>());
    report.json(&json!({
        "bench": "docker-cycle",
        "side": "steward",
        "latency": s.json(),
        "accept": accepted.json(),
        "phases_ms_p50": phases,
        "anomalies": anomalies,
        "agent_registrations_missing": missing_registrations,
        "daemon_exit": status.to_string(),
        "daemon_shutdown_ms": report::round3(shutdown.as_secs_f64() * 1e3),
        "cycle_duration_histogram": histogram(&metrics, "steward_cycle_duration_seconds"),
        // The store's commits (with one workspace: the cycles' accepts and step decisions,
        // its create, its agents' registrations) and their parts: the writer's queue, the
        // batches, the syncs of the log.
        "store": {
            "commit": histogram(&metrics, "steward_store_commit_seconds"),
            "queue": histogram(&metrics, "steward_store_queue_seconds"),
            "batch": histogram(&metrics, "steward_store_batch_seconds"),
            "sync": histogram(&metrics, "steward_store_sync_seconds"),
        },
    }));
    for (variant, cycles) in args.baselines.iter().zip(&base) {
        let totals: Vec<Duration> = cycles.iter().map(|c| c.total).collect();
        let b = Summary::of(&totals);
        let p50 = ratio(s.p50, b.p50);
        let p99 = ratio(s.p99, b.p99);
        let verdict = if at_most(p50, P50_TARGET) == "holds" && at_most(p99, P99_TARGET) == "holds"
        {
            "holds"
        } else {
            "MISSES"
        };
        report.json(&json!({
            "bench": "docker-cycle",
            "side": format!("baseline-{}", variant.name()),
            "latency": b.json(),
            "calls_ms_p50": call_medians(cycles),
            "ratio_p50": num(p50),
            "ratio_p99": num(p99),
            "target": {"p50": P50_TARGET, "p99": P99_TARGET},
            "verdict": verdict,
        }));
        report.row(&[
            "docker-cycle".to_owned(),
            variant.name().to_owned(),
            s.n.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(b.p50),
            ms(b.p99),
            times(p50),
            times(p99),
            verdict.to_owned(),
        ]);
    }
    for (side, proxy) in [("steward", &daemon_proxy), ("baseline", &baseline_proxy)] {
        if let Some(proxy) = proxy {
            let calls: Vec<Call> = proxy
                .calls()
                .into_iter()
                .filter(|c| c.started >= measured_from && c.started < measured_until)
                .collect();
            report.json(&json!({
                "bench": "docker-cycle",
                "side": side,
                "engine_calls": crate::proxy::by_kind(&calls, args.cycles),
                "gaps_between_calls": crate::proxy::gaps(&calls),
            }));
        }
    }
    report.finish();
    Ok(())
}

/// Median of each phase of the Steward cycles, matched with the provider's log lines:
/// accept (restart sent → 202), remove (→ "instance container removed"), start (→ "instance
/// container started"), observe (→ `provision_succeeded` read by the bench).
fn steward_phases(cycles: &[StewardCycle], log: &[daemon::LogLine], id: &str) -> Value {
    let mut accept = Vec::new();
    let mut remove = Vec::new();
    let mut start = Vec::new();
    let mut observe = Vec::new();
    for c in cycles {
        let end = c.sent + c.total;
        let of_cycle = |message: &str| {
            log.iter().find(|l| {
                l.message == message && l.fields["workspace"] == id && l.at >= c.sent && l.at <= end
            })
        };
        let (Some(removed), Some(started)) = (
            of_cycle("instance container removed"),
            log.iter().find(|l| {
                l.message == "instance container started"
                    && l.fields["workspace"] == id
                    && daemon::field_u64(&l.fields["generation"]) == Some(c.generation)
            }),
        ) else {
            continue;
        };
        accept.push(c.accepted.as_secs_f64() * 1e3);
        remove.push(daemon::wall_ms(c.sent, removed.at) - c.accepted.as_secs_f64() * 1e3);
        start.push(daemon::wall_ms(removed.at, started.at));
        observe.push(daemon::wall_ms(started.at, end));
    }
    let median = |v: &mut Vec<f64>| -> Value {
        if v.is_empty() {
            return Value::Null;
        }
        v.sort_by(f64::total_cmp);
        num(v[(v.len() - 1) / 2])
    };
    json!({
        "matched_cycles": accept.len(),
        "accept": median(&mut accept),
        "accepted_to_removed": median(&mut remove),
        "removed_to_started": median(&mut start),
        "started_to_observed": median(&mut observe),
        "note": "accept = POST → 202 (commit durable); accepted_to_removed = a list by \
                 labels, then the force-remove (+ actor scheduling); removed_to_started = commit of \
                 the start step + create + start; started_to_observed = completion → commit → \
                 SSE → bench",
    })
}

/// Median duration of each call kind of the baseline cycles.
fn call_medians(cycles: &[engine::Cycle]) -> Value {
    let mut by: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for cycle in cycles {
        for (name, d) in &cycle.calls {
            by.entry(name).or_default().push(*d);
        }
    }
    Value::Object(
        by.into_iter()
            .map(|(name, ds)| (name.to_owned(), num(Summary::of(&ds).p50)))
            .collect(),
    )
}

/// Count and mean of a Prometheus histogram or summary (all label sets, since the daemon
/// started), and a summary's p50 and p99 (of its unlabelled series; the exporter computes them
/// over its recent window, about the last minute), if present.
fn histogram(metrics: &str, name: &str) -> Value {
    let sum_of = |suffix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{suffix}")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let count = sum_of("_count");
    if count == 0.0 {
        return Value::Null;
    }
    let mut summary = json!({"count": count, "mean_ms": num(sum_of("_sum") / count * 1e3)});
    for (q, key) in [("0.5", "p50_ms"), ("0.99", "p99_ms")] {
        let series = format!("{name}{{quantile=\"{q}\"}} ");
        if let Some(value) = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<f64>().ok())
        {
            summary[key] = num(value * 1e3);
        }
    }
    summary
}
