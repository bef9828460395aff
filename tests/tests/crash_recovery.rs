//! Crash recovery: the daemon is SIGKILLed at each named kill point between the steps of a
//! cycle and of a provider switch (and at seeded pseudo-random moments of restart storms),
//! then started again on the same port and data dir. What must hold afterwards:
//! - every intent that reached the kill point (so was committed) is honoured;
//! - no workspace has two live instances;
//! - every workspace converges;
//! - no orphan instance survives the first reconcile pass.
//!
//! Each scenario runs with the process provider (the real `steward-agent` as local
//! processes, which outlive the daemon and are adopted) and with Docker (containers).
//! Instances are counted from outside: `/proc` for processes, `docker ps` for containers.

use futures::future::join_all;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use steward_tests::docker::{docker_ok, engine_ready, Owner, IMAGE};
use steward_tests::{
    eventually, id_of, instance_processes, of_type, summarize, Api, Daemon, Launch, Workdir,
};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(60);

/// Where instances run, and how the test counts them from outside.
enum Backend {
    Process,
    Docker(Owner),
}

impl Backend {
    /// `None` when Docker cannot be used here (outside CI only: under CI that fails).
    fn docker() -> Option<Backend> {
        engine_ready().then(|| Backend::Docker(Owner::new()))
    }

    fn provider(&self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Docker(_) => "docker",
        }
    }

    fn config(&self) -> String {
        let docker = match self {
            Backend::Process => String::new(),
            Backend::Docker(owner) => format!(
                r#"[providers.docker]
enabled = true
owner = "{owner}"
name_prefix = "{owner}-"
stop_timeout = "2s"
call_timeout = "10s"
"#,
                owner = owner.0
            ),
        };
        format!(
            r#"default_provider = "{provider}"
[providers.sim]
start_delay = "50ms"
stop_delay = "10ms"
[providers.process]
stop_grace = "2s"
# A graceful stop of the set-up daemon leaves the instances to the next one.
leave_running = true
{docker}
[restart]
settle_window = "0s"
boot_timeout = "30s"
# No probe round during a test: an orphan must be gone after the boot survey alone.
debounce_window = "3h"
[health]
interval = "1h"
agent_heartbeat_interval = "200ms"
heartbeat_timeout = "20s"
[backoff]
initial = "100ms"
max = "1s"
max_failures = 50
"#,
            provider = self.provider()
        )
    }

    /// The create body of a workspace on this backend.
    fn body(&self, name: &str) -> Value {
        match self {
            Backend::Process => json!({ "name": name, "secrets": { "S": "v0" } }),
            Backend::Docker(_) => {
                json!({ "name": name, "image": IMAGE, "secrets": { "S": "v0" } })
            }
        }
    }

    /// Instances of workspace `id` on this backend, stopped ones included.
    fn any(&self, id: &str) -> usize {
        match self {
            Backend::Process => instance_processes(id).len(),
            Backend::Docker(owner) => {
                let workspace = format!("label=io.steward.workspace={id}");
                steward_tests::docker::docker(&[
                    "ps",
                    "-aq",
                    "--filter",
                    &owner.filter(),
                    "--filter",
                    &workspace,
                ])
                .lines()
                .count()
            }
        }
    }

    /// Live instances of workspace `id` on this backend.
    fn live(&self, id: &str) -> usize {
        match self {
            Backend::Process => instance_processes(id).len(),
            Backend::Docker(owner) => owner.running_of(id),
        }
    }

    /// The value of `S` in the environment of the workspace's live instance.
    fn secret_in_instance(&self, id: &str) -> Option<String> {
        match self {
            Backend::Process => {
                let pid = *instance_processes(id).first()?;
                let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
                env.split(|b| *b == 0)
                    .find_map(|kv| kv.strip_prefix(b"S="))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            }
            Backend::Docker(owner) => {
                let workspace = format!("label=io.steward.workspace={id}");
                let container = docker_ok(&[
                    "ps",
                    "-q",
                    "--filter",
                    &owner.filter(),
                    "--filter",
                    &workspace,
                ]);
                let env = docker_ok(&[
                    "inspect",
                    "--format",
                    "{{range .Config.Env}}{{println .}}{{end}}",
                    container.lines().next()?,
                ]);
                env.lines()
                    .find_map(|l| l.strip_prefix("S="))
                    .map(str::to_owned)
            }
        }
    }

    /// Plants an instance that belongs to no workspace, the way a previous run could have
    /// left one; returns its workspace id.
    fn plant_orphan(&self, data_dir: &std::path::Path) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        match self {
            Backend::Process => {
                // A process in a group of its own, and the record the provider keeps for it.
                let child = Command::new("sleep")
                    .arg("300")
                    .env("STEWARD_WORKSPACE_ID", &id)
                    .stdin(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .expect("spawn an orphan");
                let pid = child.id();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
                let starttime = stat[stat.rfind(')').expect("comm") + 1..]
                    .split_whitespace()
                    .nth(19)
                    .expect("starttime")
                    .to_owned();
                let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .expect("boot id")
                    .trim()
                    .to_owned();
                let dir = data_dir.join("process");
                std::fs::create_dir_all(&dir).expect("state dir");
                std::fs::write(
                    dir.join(format!("{id}.1.{pid}.record")),
                    format!(
                        "workspace={id}\ngeneration=1\npid={pid}\nstarttime={starttime}\nboot_id={boot_id}\nstarted_at_ms=0\n"
                    ),
                )
                .expect("write the orphan's record");
                // Reaped by whoever is its parent; the test only looks at /proc.
                std::mem::forget(child);
            }
            Backend::Docker(owner) => {
                docker_ok(&[
                    "run",
                    "-d",
                    "--name",
                    &format!("{}-orphan-{}", owner.0, &id[..8]),
                    "--label",
                    &format!("io.steward.owner={}", owner.0),
                    "--label",
                    &format!("io.steward.workspace={id}"),
                    "--label",
                    "io.steward.generation=1",
                    "--env",
                    &format!("STEWARD_WORKSPACE_ID={id}"),
                    "--network",
                    "none",
                    IMAGE,
                ]);
            }
        }
        id
    }
}

/// Kills, when dropped, whatever instance processes of `ids` are still alive: the daemons of
/// these tests leave their instances running on exit, so a failing test must not leak them.
struct Leftovers(Vec<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for id in &self.0 {
            for pid in instance_processes(id) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// The workspaces of a kill-point scenario.
struct Cast {
    /// Restarted (secret write) or stopped to reach a cycle's kill points.
    main: String,
    /// Starts on `sim` and is switched to the backend at the same time as `mover` (switch
    /// kill points only: `sim` instances die with the daemon, so its boot recovery runs a
    /// cycle, which would reach the cycle kill points).
    arriver: Option<String>,
    /// Stopped, then switched to `sim` to reach the release kill points.
    rester: String,
    /// Switched from the backend to `sim` to reach a switch's kill points. (Everything starts
    /// on the backend: `sim` instances die with the daemon, and their recovery cycles would
    /// reach the cycle kill points at boot.)
    mover: String,
    /// Deleted to reach the delete's kill points.
    doomed: String,
}

async fn running(api: &Api, id: &str) -> Value {
    eventually(
        WAIT,
        &format!("{id} to run, settled, with no switch"),
        || async {
            let doc = api.workspace(id).await;
            if steward_tests::is_settled(&doc) && doc["switch"].is_null() {
                Ok(doc)
            } else {
                Err(format!("{doc} / {}", summarize(&api.events(id).await)))
            }
        },
    )
    .await
}

async fn gone(api: &Api, id: &str) {
    eventually(WAIT, &format!("{id} to be deleted"), || async {
        let reply = api.get(&format!("/v1/workspaces/{id}")).await;
        if reply.status == 404 {
            Ok(())
        } else {
            Err(reply.text)
        }
    })
    .await;
}

async fn instances(backend: &Backend, id: &str, expected: usize) {
    eventually(
        WAIT,
        &format!("{expected} live instance(s) of {id}"),
        || async {
            match backend.live(id) {
                n if n == expected => Ok(()),
                n => Err(format!("{n} live")),
            }
        },
    )
    .await;
}

/// Starts the set-up daemon, creates the cast, lets it settle, and stops the daemon
/// gracefully (the instances stay: `leave_running`, containers). Returns the data dir and
/// the port the next daemons must use.
async fn set_up(backend: &Backend, point: &str) -> (Workdir, SocketAddr, Cast) {
    let config = backend.config();
    let mut daemon = Daemon::start(&config).await;
    let api = daemon.client();
    let main = id_of(&api.create(&backend.body("main")).await);
    let doomed = id_of(&api.create(&backend.body("doomed")).await);
    let mover = id_of(&api.create(&backend.body("mover")).await);
    let rester = id_of(&api.create(&backend.body("rester")).await);
    let arriver = if point.starts_with("switch.") && !point.starts_with("switch.release") {
        let mut body = backend.body("arriver");
        body["provider"] = json!("sim");
        Some(id_of(&api.create(&body).await))
    } else {
        None
    };
    for id in [&main, &doomed, &mover, &rester]
        .into_iter()
        .chain(arriver.as_ref())
    {
        running(&api, id).await;
    }
    api.post_empty(&format!("/v1/workspaces/{rester}/stop"))
        .await
        .expect(202);
    api.wait_phase_within(&rester, "stopped", WAIT).await;
    let dir = daemon.dir();
    let addr = daemon.addr();
    daemon.stop_gracefully().await;
    (
        dir,
        addr,
        Cast {
            main,
            arriver,
            rester,
            mover,
            doomed,
        },
    )
}

/// Kills a daemon at `point` while it serves the intent that reaches it, restarts it, and
/// checks every guarantee.
async fn killed_at(backend: Backend, point: &str) {
    let (dir, addr, cast) = set_up(&backend, point).await;
    let mut everyone = vec![
        cast.main.clone(),
        cast.mover.clone(),
        cast.doomed.clone(),
        cast.rester.clone(),
    ];
    everyone.extend(cast.arriver.clone());
    let _leftovers = Leftovers(everyone.clone());
    let config = backend.config();
    let armed = format!("{point}=return");
    let mut doomed_daemon = Launch::new(&config)
        .dir(dir.clone())
        .listen(Some(addr))
        .env("FAILPOINTS", &armed)
        .start()
        .await;
    let api = doomed_daemon.client();
    // The instances of the previous run were adopted: nothing was replaced.
    for id in [&cast.main, &cast.doomed, &cast.mover] {
        let doc = running(&api, id).await;
        assert_eq!(doc["generation"], 1, "adopted, not replaced: {doc}");
        assert_eq!(backend.live(id), 1);
    }

    // The intent that reaches the kill point. Its answer may or may not arrive: every kill
    // point lies after the commit that decided the step, so it counts as acknowledged.
    let switch = |id: &str, to: &str| {
        api.request(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{id}/switch-provider"),
        )
        .json(&json!({ "provider": to }))
        .send()
    };
    if point.starts_with("switch.release") {
        let _ = switch(&cast.rester, "sim").await;
    } else if point.starts_with("switch.") {
        let arriver = cast.arriver.as_deref().expect("an arriver");
        let _ = tokio::join!(
            switch(&cast.mover, "sim"),
            switch(arriver, backend.provider())
        );
    } else if point.starts_with("cycle.stop.") {
        let _ = api
            .request(
                reqwest::Method::POST,
                &format!("/v1/workspaces/{}/stop", cast.main),
            )
            .send()
            .await;
    } else if point.starts_with("cycle.remove.") {
        let _ = api
            .request(
                reqwest::Method::DELETE,
                &format!("/v1/workspaces/{}", cast.doomed),
            )
            .send()
            .await;
    } else {
        let _ = api
            .request(
                reqwest::Method::PUT,
                &format!("/v1/workspaces/{}/secrets/S", cast.main),
            )
            .json(&json!({ "value": "v1" }))
            .send()
            .await;
    }
    let status = doomed_daemon.wait_exit(WAIT).await;
    assert_eq!(
        status.signal(),
        Some(9),
        "the daemon was meant to die at {point}, not {status}"
    );

    let orphan = backend.plant_orphan(&dir.path().join("data"));
    let _orphan = Leftovers(vec![orphan.clone()]);
    let daemon = Launch::new(&config)
        .dir(dir.clone())
        .listen(Some(addr))
        .start()
        .await;
    let api = daemon.client();
    // The boot survey removed the orphan: one reconcile pass.
    instances(&backend, &orphan, 0).await;

    // main: restarted with the new secret, or stopped.
    if point.starts_with("cycle.stop.") {
        api.wait_phase_within(&cast.main, "stopped", WAIT).await;
        instances(&backend, &cast.main, 0).await;
    } else {
        running(&api, &cast.main).await;
        instances(&backend, &cast.main, 1).await;
        let expected = if point.starts_with("switch.") || point.starts_with("cycle.remove.") {
            "v0"
        } else {
            "v1"
        };
        assert_eq!(
            backend.secret_in_instance(&cast.main).as_deref(),
            Some(expected),
            "the committed secret reached the instance"
        );
    }
    // mover and arriver: switched if their switch was claimed before the kill (then it
    // completed), else untouched; never an instance left behind on the provider left.
    let movers = [(Some(cast.mover.clone()), backend.provider(), "sim")];
    let arriver = [(cast.arriver.clone(), "sim", backend.provider())];
    for (id, from, to) in movers.into_iter().chain(arriver) {
        let Some(id) = id else { continue };
        let doc = running(&api, &id).await;
        let events = api.events(&id).await;
        let claimed = !of_type(&events, "switch_started").is_empty();
        let expected = if claimed { to } else { from };
        assert_eq!(doc["provider"], expected, "{doc} / {}", summarize(&events));
        if claimed {
            assert_eq!(
                of_type(&events, "switch_completed").len(),
                1,
                "{}",
                summarize(&events)
            );
        }
        let on_backend = usize::from(expected == backend.provider());
        instances(&backend, &id, on_backend).await;
    }
    // rester: released from the backend and recorded on sim if its switch ran, still
    // stopped either way.
    let rester = api.wait_phase_within(&cast.rester, "stopped", WAIT).await;
    if point.starts_with("switch.release") {
        eventually(WAIT, "the rester's switch to complete", || async {
            let doc = api.workspace(&cast.rester).await;
            if doc["provider"] == "sim" && doc["switch"].is_null() {
                Ok(())
            } else {
                Err(doc.to_string())
            }
        })
        .await;
        eventually(
            WAIT,
            "nothing of the rester left on the backend",
            || async {
                match backend.any(&cast.rester) {
                    0 => Ok(()),
                    n => Err(format!("{n} instance(s), stopped ones included")),
                }
            },
        )
        .await;
    } else {
        assert_eq!(rester["provider"], backend.provider(), "{rester}");
    }
    instances(&backend, &cast.rester, 0).await;
    // doomed: deleted (with its instance) or untouched.
    if point.starts_with("cycle.remove.") {
        gone(&api, &cast.doomed).await;
        instances(&backend, &cast.doomed, 0).await;
    } else {
        running(&api, &cast.doomed).await;
        instances(&backend, &cast.doomed, 1).await;
    }
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    clean_up(&api, &backend, &everyone).await;
}

/// Deletes the workspaces that are left and waits for their instances to be gone (the
/// daemons leave instances running on exit in these tests).
async fn clean_up(api: &Api, backend: &Backend, ids: &[&str]) {
    for id in ids {
        let reply = api.delete(&format!("/v1/workspaces/{id}")).await;
        assert!(matches!(reply.status, 200 | 202 | 404), "{reply:?}");
    }
    for id in ids {
        gone(api, id).await;
        instances(backend, id, 0).await;
    }
}

/// One test per kill point and backend.
macro_rules! kill_points {
    ($($name:ident => $point:literal),* $(,)?) => {
        mod process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::killed_at(super::Backend::Process, $point).await;
                }
            )*
        }
        mod docker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = super::Backend::docker() {
                        super::killed_at(backend, $point).await;
                    }
                }
            )*
        }
    };
}

kill_points!(
    before_remove_old => "cycle.remove_old.before",
    before_stop => "cycle.stop.before",
    switch_before_release => "switch.release.before",
    switch_after_release => "switch.release.after",
    after_remove_old => "cycle.remove_old.after",
    before_start => "cycle.start.before",
    after_start => "cycle.start.after",
    after_stop => "cycle.stop.after",
    before_remove => "cycle.remove.before",
    after_remove => "cycle.remove.after",
    switch_claimed => "switch.claimed",
    switch_before_remove_old => "switch.remove_old.before",
    switch_after_remove_old => "switch.remove_old.after",
    switch_before_start => "switch.start.before",
    switch_after_start => "switch.start.after",
);

/// A small deterministic generator (xorshift): the "random" kill moments are the same on
/// every run, so a failure can be replayed.
struct Moments(u64);

impl Moments {
    fn next(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        range.start + self.0 % (range.end - range.start)
    }
}

/// Restart storms (restarts and secret writes on every workspace at once), each cut short by
/// a SIGKILL at a pseudo-random moment — after a seeded number of answered requests, so the
/// moment is the same on every run whatever the machine's speed; after each restart of the daemon every workspace
/// converges with exactly one live instance whose environment holds the last acknowledged
/// secret value (or a later one: a write may commit and lose its answer to the kill).
async fn storms(backend: Backend) {
    let config = backend.config();
    let mut daemon = Daemon::start(&config).await;
    let addr = daemon.addr();
    let dir = daemon.dir();
    let api = daemon.client();
    let ids: Vec<String> = join_all((0..4).map(|i| {
        let api = api.clone();
        let body = backend.body(&format!("storm-{i}"));
        async move { id_of(&api.create(&body).await) }
    }))
    .await;
    let _leftovers = Leftovers(ids.clone());
    for id in &ids {
        running(&api, id).await;
    }
    let mut acknowledged: BTreeMap<String, u64> = ids.iter().map(|id| (id.clone(), 0)).collect();
    let mut moments = Moments(0x5eed_cafe);
    for round in 1..=3u64 {
        let api = daemon.client();
        let kill_after = moments.next(20..400);
        let answered = AtomicU64::new(0);
        let kill_moment = Notify::new();
        let count_answer = || {
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                kill_moment.notify_one();
            }
        };
        let storm = join_all(ids.iter().map(|id| {
            let api = api.clone();
            let id = id.clone();
            async move {
                let mut last = None;
                // Bounded, and long enough that the kill lands in the middle of it.
                for i in 0..1000u64 {
                    let value = round * 1000 + i;
                    let written = api
                        .request(
                            reqwest::Method::PUT,
                            &format!("/v1/workspaces/{id}/secrets/S"),
                        )
                        .json(&json!({ "value": format!("{value}") }))
                        .send()
                        .await;
                    match written {
                        Ok(r) if r.status().as_u16() == 202 => last = Some(value),
                        _ => break,
                    }
                    count_answer();
                    let restarted = api
                        .request(
                            reqwest::Method::POST,
                            &format!("/v1/workspaces/{id}/restart"),
                        )
                        .send()
                        .await;
                    if restarted.is_err() {
                        break;
                    }
                    count_answer();
                }
                (id, last)
            }
        }));
        let killer = async {
            let reached = tokio::time::timeout(WAIT, kill_moment.notified()).await;
            assert!(
                reached.is_ok(),
                "round {round}: the storm never got {kill_after} answers"
            );
            daemon.kill_hard().await;
        };
        let (results, ()) = tokio::join!(storm, killer);
        for (id, last) in results {
            if let Some(value) = last {
                acknowledged.insert(id, value);
            }
        }
        daemon = Launch::new(&config)
            .dir(dir.clone())
            .listen(Some(addr))
            .start()
            .await;
        let api = daemon.client();
        for id in &ids {
            running(&api, id).await;
            instances(&backend, id, 1).await;
            let value: u64 = backend
                .secret_in_instance(id)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(
                value >= acknowledged[id],
                "round {round}: {id} runs with S={value}, but {} was acknowledged",
                acknowledged[id]
            );
        }
    }
    let api = daemon.client();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    clean_up(&api, &backend, &refs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_restart_storms_cut_by_sigkill_converge() {
    storms(Backend::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_restart_storms_cut_by_sigkill_converge() {
    if let Some(backend) = Backend::docker() {
        storms(backend).await;
    }
}
