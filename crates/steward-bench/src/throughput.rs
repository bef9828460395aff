//! `docker-throughput`: restart cycles per second with W Docker workspaces restarting
//! continuously (default 16), against the same cycles made directly with bollard under the
//! same cap of engine calls in flight, in the same run.
//!
//! Steward side: W workspaces (`ready_when = "instance"`); W client tasks each loop
//! `POST .../restart` → wait for its `provision_succeeded` (SSE) on their own workspace.
//! Baseline side: W containers; W tasks each loop one cycle of the variant (see `engine.rs`),
//! every engine call taking one of `max_concurrent_ops` permits, as the provider's calls do.
//!
//! Each side runs for a warm-up, then a measured window; cycles that complete inside the
//! window are counted (cycles/s = count / window). Tasks start no cycle after the window and
//! the side drains before the next one starts. Sides run one after the other (Steward first,
//! then each baseline), and the order is reversed every other round (two rounds by default),
//! so a drift of the machine's load falls on every side alike.
//!
//! For each window it also reports where the CPU went (`cpu.rs`: machine busy share, daemon,
//! engine, agents), how evenly the cycles were spread over the workspaces, and with
//! `--via-proxy` the engine calls per kind and their latencies (each side then goes through a
//! counting proxy of its own).

use crate::cpu;
use crate::daemon::{self, wait_event, Api, BenchApi};
use crate::engine::{self, BaseContainer, Baseline, Variant};
use crate::proxy::{self, Proxy};
use crate::report::{at_least, ms, num, ratio, round3, Report, Summary};
use crate::session::Session;
use anyhow::{Context, Result};
use futures::future::try_join_all;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use steward_testkit::EventStream;

/// `docker-throughput` options.
#[derive(Clone, Debug, clap::Args)]
pub struct ThroughputArgs {
    /// Workspaces (and baseline containers) restarting at once.
    #[arg(long, default_value_t = 16)]
    pub workspaces: usize,
    /// Measured window per side.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Unmeasured warm-up per side, before the window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub warmup: Duration,
    /// Baselines to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "minimal,mirror"
    )]
    pub baselines: Vec<Variant>,
    /// Rounds; the order of the sides is reversed every other round.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Put a counting proxy in front of the engine for each side and report the engine calls
    /// per kind with their latencies (adds one hop to every engine call of both sides).
    #[arg(long)]
    pub via_proxy: bool,
}

/// Target: Steward ≥ 0.9× the baseline's cycles/s.
const TARGET: f64 = 0.9;

/// What one side did in its measured windows.
#[derive(Debug, Default)]
struct Tally {
    /// Cycles completed inside the windows.
    cycles: usize,
    /// Total length of the windows.
    window: Duration,
    /// Latency of those cycles.
    latencies: Vec<Duration>,
    /// Cycles that failed or timed out.
    errors: usize,
    /// Per window: cycles/s, CPU, spread over workspaces, engine calls.
    windows: Vec<Value>,
}

impl Tally {
    fn rate(&self) -> f64 {
        ratio(self.cycles as f64, self.window.as_secs_f64())
    }

    /// Adds one window's cycles (start, end) per workspace.
    fn add(&mut self, per_workspace: &[Vec<(Instant, Instant)>], window: &Window, extra: Value) {
        let mut counts = Vec::new();
        let mut cycles = 0;
        for done in per_workspace {
            let inside: Vec<&(Instant, Instant)> = done
                .iter()
                .filter(|(_, t1)| *t1 >= window.from && *t1 <= window.until)
                .collect();
            counts.push(inside.len());
            cycles += inside.len();
            self.latencies
                .extend(inside.iter().map(|(t0, t1)| *t1 - *t0));
        }
        self.cycles += cycles;
        self.window += window.until - window.from;
        counts.sort_unstable();
        let mut entry = json!({
            "cycles_per_s": num(ratio(cycles as f64, (window.until - window.from).as_secs_f64())),
            "cycles_per_workspace": {
                "min": counts.first(),
                "median": counts.get(counts.len() / 2),
                "max": counts.last(),
            },
        });
        if let (Value::Object(entry), Value::Object(extra)) = (&mut entry, extra) {
            entry.extend(extra);
        }
        self.windows.push(entry);
    }
}

/// A measured window.
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn after_warmup(args: &ThroughputArgs) -> Window {
        let from = Instant::now() + args.warmup;
        Window {
            from,
            until: from + args.duration,
        }
    }

    /// CPU use between `from` and `until` (sampled then), while the side runs.
    async fn cpu(&self, daemon: Option<u32>) -> Value {
        tokio::time::sleep_until(self.from.into()).await;
        let start = cpu::Sample::take(daemon);
        tokio::time::sleep_until(self.until.into()).await;
        start.until(&cpu::Sample::take(daemon))
    }

    /// The proxy's calls inside the window, per kind.
    fn calls(&self, proxy: Option<&Proxy>, cycles: usize) -> Value {
        let Some(proxy) = proxy else {
            return Value::Null;
        };
        let calls: Vec<proxy::Call> = proxy
            .calls()
            .into_iter()
            .filter(|c| c.started >= self.from && c.started <= self.until)
            .collect();
        proxy::by_kind(&calls, cycles)
    }
}

/// Runs `docker-throughput`.
pub async fn run(session: &Session, args: &ThroughputArgs) -> Result<()> {
    let dir = session.subdir("throughput")?;
    let (daemon_proxy, baseline_proxy) = session.proxies(&dir, args.via_proxy)?;
    let config = session.daemon_config(daemon_proxy.as_ref());
    let mut daemon = daemon::spawn(&session.steward, &dir, &config.toml(), None)?;
    let api = daemon.wait_up(Duration::from_secs(30)).await?;
    let pid = daemon.pid();
    eprintln!(
        "docker-throughput: daemon up; creating {} workspaces",
        args.workspaces
    );
    let ids = try_join_all((0..args.workspaces).map(|i| {
        let api = api.clone();
        let image = session.image.clone();
        async move {
            api.create_docker(&format!("bench-throughput-{i}"), &image)
                .await
        }
    }))
    .await?;
    let mut streams = Vec::new();
    for id in &ids {
        let mut events = api.follow(id, 0).await?;
        wait_event(
            &mut events,
            "provision_succeeded",
            1,
            Duration::from_secs(120),
        )
        .await
        .with_context(|| format!("workspace {id} did not run within 120 s"))?;
        streams.push(events);
    }
    let docker = match &baseline_proxy {
        Some(proxy) => engine::connect(&proxy.path).await?,
        None => session.docker.clone(),
    };
    let baseline = Baseline::new(docker, session.baseline_spec()?, Some(session.cap));
    let mut containers = Vec::new();
    for _ in 0..args.workspaces {
        let mut c = baseline.container();
        baseline.provision(&mut c).await?;
        containers.push(c);
    }
    eprintln!(
        "docker-throughput: {} workspaces and {} baseline containers run",
        ids.len(),
        containers.len()
    );

    let mut steward = Tally::default();
    let mut base: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut streams: Vec<Option<EventStream>> = streams.into_iter().map(Some).collect();
    for round in 0..args.rounds.max(1) {
        let mut order: Vec<Option<Variant>> = std::iter::once(None)
            .chain(args.baselines.iter().copied().map(Some))
            .collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for side in order {
            let window = Window::after_warmup(args);
            match side {
                None => {
                    eprintln!("docker-throughput: round {} — Steward", round + 1);
                    let (done, cpu) = tokio::join!(
                        steward_side(&api, &ids, &mut streams, &window, &mut steward.errors),
                        window.cpu(pid),
                    );
                    let cycles = count(&done, &window);
                    let calls = window.calls(daemon_proxy.as_ref(), cycles);
                    steward.add(
                        &done,
                        &window,
                        json!({"round": round + 1, "cpu": cpu, "engine_calls": calls}),
                    );
                    eprintln!(
                        "docker-throughput: Steward {:.2} cycles/s so far ({} errors)",
                        steward.rate(),
                        steward.errors
                    );
                }
                Some(variant) => {
                    eprintln!(
                        "docker-throughput: round {} — baseline {}",
                        round + 1,
                        variant.name()
                    );
                    let tally = base.entry(variant.name()).or_default();
                    let ((back, done), cpu) = tokio::join!(
                        baseline_side(&baseline, containers, variant, &window, &mut tally.errors),
                        window.cpu(pid),
                    );
                    containers = back;
                    let cycles = count(&done, &window);
                    let calls = window.calls(baseline_proxy.as_ref(), cycles);
                    tally.add(
                        &done,
                        &window,
                        json!({"round": round + 1, "cpu": cpu, "engine_calls": calls}),
                    );
                    eprintln!(
                        "docker-throughput: baseline {} {:.2} cycles/s so far ({} errors)",
                        variant.name(),
                        tally.rate(),
                        tally.errors
                    );
                }
            }
        }
    }
    let (status, _) = daemon.terminate(Duration::from_secs(30)).await?;

    let mut report = Report::new(&[
        "bench",
        "baseline",
        "workspaces",
        "cap",
        "Steward cycles/s",
        "baseline cycles/s",
        "ratio (≥ 0.9×)",
        "Steward cycle p50 / p99",
        "baseline cycle p50 / p99",
        "verdict",
    ]);
    let s = Summary::of(&steward.latencies);
    report.json(&json!({
        "bench": "docker-throughput",
        "side": "steward",
        "workspaces": args.workspaces,
        "max_concurrent_ops": session.cap,
        "cycles": steward.cycles,
        "window_s": round3(steward.window.as_secs_f64()),
        "cycles_per_s": num(steward.rate()),
        "latency": s.json(),
        "errors": steward.errors,
        "windows": steward.windows,
        "daemon_exit": status.to_string(),
    }));
    for (name, tally) in &base {
        let b = Summary::of(&tally.latencies);
        let r = ratio(steward.rate(), tally.rate());
        report.json(&json!({
            "bench": "docker-throughput",
            "side": format!("baseline-{name}"),
            "workspaces": args.workspaces,
            "max_concurrent_ops": session.cap,
            "cycles": tally.cycles,
            "window_s": round3(tally.window.as_secs_f64()),
            "cycles_per_s": num(tally.rate()),
            "latency": b.json(),
            "errors": tally.errors,
            "windows": tally.windows,
            "ratio": num(r),
            "target": TARGET,
            "verdict": at_least(r, TARGET),
        }));
        report.row(&[
            "docker-throughput".to_owned(),
            (*name).to_owned(),
            args.workspaces.to_string(),
            session.cap.to_string(),
            format!("{:.2}", steward.rate()),
            format!("{:.2}", tally.rate()),
            crate::report::times(r),
            format!("{} / {}", ms(s.p50), ms(s.p99)),
            format!("{} / {}", ms(b.p50), ms(b.p99)),
            at_least(r, TARGET).to_owned(),
        ]);
    }
    report.finish();
    Ok(())
}

/// Cycles that ended inside the window.
fn count(per_workspace: &[Vec<(Instant, Instant)>], window: &Window) -> usize {
    per_workspace
        .iter()
        .flatten()
        .filter(|(_, t1)| *t1 >= window.from && *t1 <= window.until)
        .count()
}

/// The Steward side for one window: every task loops restart → `provision_succeeded`.
/// Returns each workspace's cycles as (sent, observed).
async fn steward_side(
    api: &Api,
    ids: &[String],
    streams: &mut [Option<EventStream>],
    window: &Window,
    errors: &mut usize,
) -> Vec<Vec<(Instant, Instant)>> {
    let until = window.until;
    let tasks = ids.iter().zip(streams.iter_mut()).map(|(id, slot)| {
        let api = api.clone();
        let id = id.clone();
        let mut events = slot.take();
        async move {
            let mut done = Vec::new();
            let mut errors = 0usize;
            if let Some(stream) = events.as_mut() {
                while Instant::now() < until {
                    let t0 = Instant::now();
                    let generation = match api.try_restart(&id).await {
                        Ok((_, generation)) => generation,
                        Err(e) => {
                            errors += 1;
                            eprintln!("docker-throughput: restart of {id} failed: {e:#}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    match wait_event(
                        stream,
                        "provision_succeeded",
                        generation,
                        Duration::from_secs(60),
                    )
                    .await
                    {
                        Some(event) => done.push((t0, event.received)),
                        None => {
                            errors += 1;
                            eprintln!(
                                "docker-throughput: {id} generation {generation} did not run within 60 s"
                            );
                        }
                    }
                }
            }
            (done, errors, events)
        }
    });
    let results = futures::future::join_all(tasks).await;
    let mut all = Vec::new();
    for ((done, task_errors, events), slot) in results.into_iter().zip(streams.iter_mut()) {
        *slot = events;
        *errors += task_errors;
        all.push(done);
    }
    all
}

/// A baseline for one window: every task loops one cycle of `variant` on its container.
/// Returns the containers and each one's cycles as (start, end).
async fn baseline_side(
    baseline: &Baseline,
    containers: Vec<BaseContainer>,
    variant: Variant,
    window: &Window,
    errors: &mut usize,
) -> (Vec<BaseContainer>, Vec<Vec<(Instant, Instant)>>) {
    let until = window.until;
    let tasks = containers.into_iter().map(|mut c| {
        let baseline = baseline.clone();
        async move {
            let mut done = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < until {
                let t0 = Instant::now();
                match baseline.cycle(&mut c, variant).await {
                    Ok(_) => done.push((t0, Instant::now())),
                    Err(e) => {
                        errors += 1;
                        eprintln!("docker-throughput: baseline cycle failed: {e:#}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (c, done, errors)
        }
    });
    let results = futures::future::join_all(tasks).await;
    let mut containers = Vec::new();
    let mut all = Vec::new();
    for (c, done, task_errors) in results {
        containers.push(c);
        *errors += task_errors;
        all.push(done);
    }
    (containers, all)
}
