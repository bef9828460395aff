//! The `process` provider against real child processes.
//!
//! Every wait is on a condition, with a bound; nothing sleeps a fixed time in place of one.
//! `/proc` is read to see whether a process runs: a zombie counts as gone, since orphans
//! are reparented to a PID 1 that may never reap them.

use secrecy::SecretString;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use steward_domain::{Generation, WorkspaceId};
use steward_provider::process::{ProcessConfig, ProcessProvider};
use steward_provider::{InstanceSpec, Liveness, LogLine, LogQuery, Provider, ProviderError};
use tempfile::TempDir;

const BOUND: Duration = Duration::from_secs(10);

/// A provider logging and recording into a fresh temporary directory.
struct Fixture {
    provider: ProcessProvider,
    dir: TempDir,
}

/// How a daemon run of [`Fixture::previous_run`] ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its runtime is dropped, and the provider with it, without `shutdown`: a crash.
    Crash,
    /// `shutdown`, then the runtime is dropped: a clean exit.
    Shutdown,
}

impl Fixture {
    fn new() -> Self {
        Self::with(ProcessConfig::default())
    }

    fn with(config: ProcessConfig) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = ProcessConfig {
            log_dir: dir.path().join("logs"),
            state_dir: dir.path().join("process"),
            ..config
        };
        Self {
            provider: ProcessProvider::new("process", config),
            dir,
        }
    }

    /// The next daemon run: a provider on the same directories, built after the previous one
    /// is dropped as it is.
    fn restart(&mut self) {
        self.provider = ProcessProvider::new("process", self.provider.config().clone());
    }

    /// A daemon run before this one, on the same directories: a provider built in a runtime
    /// of its own starts `specs`, then the run ends as `end` says. Returns their pids.
    fn previous_run(&self, specs: &[&Spec], end: End) -> Vec<u32> {
        let config = self.provider.config().clone();
        let specs: Vec<InstanceSpec> = specs.iter().map(|s| s.0.clone()).collect();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (provider, pids) = runtime.block_on(async {
                let provider = ProcessProvider::new("process", config);
                let mut pids = Vec::new();
                for spec in &specs {
                    provider.start(spec).await.expect("start");
                    pids.push(provider.pid(spec.workspace_id).expect("a tracked child"));
                }
                if end == End::Shutdown {
                    provider.shutdown().await;
                }
                (provider, pids)
            });
            // The supervisors die with the runtime, the provider after them; the children,
            // in groups of their own, live on.
            drop(runtime);
            drop(provider);
            pids
        })
        .join()
        .expect("the previous run")
    }

    fn state_dir(&self) -> &Path {
        &self.provider.config().state_dir
    }

    /// Names of the files in the state directory, sorted.
    fn records(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.state_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_unstable();
        names
    }

    /// Writes a record as a previous run of this boot would have.
    fn write_record(&self, id: WorkspaceId, generation: u64, pid: u32, starttime: u64) -> String {
        self.write_record_of(&boot_id(), id, generation, pid, starttime)
    }

    /// Writes a record as a previous run would have, in the boot `boot`.
    fn write_record_of(
        &self,
        boot: &str,
        id: WorkspaceId,
        generation: u64,
        pid: u32,
        starttime: u64,
    ) -> String {
        std::fs::create_dir_all(self.state_dir()).expect("state dir");
        let name = format!("{id}.{generation}.{pid}.record");
        let text = format!(
            "workspace={id}\ngeneration={generation}\npid={pid}\nstarttime={starttime}\nboot_id={boot}\nstarted_at_ms=0\n"
        );
        std::fs::write(self.state_dir().join(&name), text).expect("record written");
        name
    }

    /// Writes a provisional record as a start in the boot `boot` would have before its spawn,
    /// in the documented format; `tag` makes the name unique (16 hex digits).
    fn write_provisional(
        &self,
        boot: &str,
        id: WorkspaceId,
        generation: u64,
        nonce: &str,
        tag: &str,
    ) -> String {
        std::fs::create_dir_all(self.state_dir()).expect("state dir");
        let name = format!("{id}.{generation}.{tag}.pending");
        let text = format!(
            "workspace={id}\ngeneration={generation}\nnonce={nonce}\nboot_id={boot}\nstarted_at_ms=0\n"
        );
        std::fs::write(self.state_dir().join(&name), text).expect("provisional record written");
        name
    }

    async fn listed(&self) -> Vec<(WorkspaceId, Liveness)> {
        let mut listed: Vec<(WorkspaceId, Liveness)> = self
            .provider
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|s| (s.workspace_id, s.liveness))
            .collect();
        listed.sort_unstable_by_key(|(id, _)| *id);
        listed
    }

    fn grace_ms(stop_grace_ms: u64) -> Self {
        Self::with(ProcessConfig {
            stop_grace: Duration::from_millis(stop_grace_ms),
            ..ProcessConfig::default()
        })
    }

    fn pid(&self, id: WorkspaceId) -> u32 {
        self.provider.pid(id).expect("a tracked child")
    }

    /// The texts of the workspace's log file, one a line (its stamps left out).
    fn log(&self, id: WorkspaceId) -> String {
        let stored = std::fs::read_to_string(self.provider.log_path(id)).unwrap_or_default();
        stored
            .lines()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default())
            .map(|text| format!("{text}\n"))
            .collect()
    }

    /// The lines the child wrote (the daemon's own `=== steward:` lines left out).
    fn output(&self, id: WorkspaceId) -> Vec<String> {
        self.log(id)
            .lines()
            .filter(|l| !l.starts_with("=== steward:"))
            .map(str::to_owned)
            .collect()
    }

    /// What the child wrote, once its group is gone and all of it has been read.
    async fn settled_output(&self, id: WorkspaceId) -> Vec<String> {
        read_out(&self.provider, id).await;
        self.output(id)
    }

    async fn liveness(&self, id: WorkspaceId) -> Liveness {
        self.provider.liveness(id).await.expect("liveness")
    }

    async fn wait_dead(&self, id: WorkspaceId, generation: u64) {
        let deadline = Instant::now() + BOUND;
        while self.liveness(id).await != Liveness::Dead(Generation(generation)) {
            assert!(Instant::now() < deadline, "workspace {id} never died");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits until `provider` has read all the output of `id`'s instances (their groups closed
/// their pipes).
async fn read_out(provider: &ProcessProvider, id: WorkspaceId) {
    let deadline = Instant::now() + BOUND;
    while provider.reading_output(id) {
        assert!(
            Instant::now() < deadline,
            "the output of {id} is never read out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Test builder of instance specs.
struct Spec(InstanceSpec);

impl Spec {
    fn new(argv: &[&str]) -> Self {
        Self(InstanceSpec {
            workspace_id: WorkspaceId::from(uuid::Uuid::new_v4()),
            generation: Generation(1),
            image: None,
            command: Some(argv.iter().map(|a| (*a).to_owned()).collect()),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
        })
    }

    fn sh(script: &str) -> Self {
        Self::new(&["sh", "-c", script])
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.0.env.insert(key.to_owned(), value.to_owned());
        self
    }

    fn secret(mut self, key: &str, value: &str) -> Self {
        self.0
            .secrets
            .insert(key.to_owned(), SecretString::from(value.to_owned()));
        self
    }

    fn generation(mut self, generation: u64) -> Self {
        self.0.generation = Generation(generation);
        self
    }

    fn id(&self) -> WorkspaceId {
        self.0.workspace_id
    }
}

/// Waits for `condition`, at most [`BOUND`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `condition` holds throughout `window`: for what must *not* happen (a signal
/// nobody should send), where no event marks the moment it would have.
async fn holds_throughout(what: &str, window: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(condition(), "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(condition(), "{what} stopped holding");
}

/// `(state, pgrp)` of a process, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` exists and is not a zombie.
fn runs(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Live members of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(s, g)| g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// Start time of a process, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
fn starttime(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 1..];
    rest.split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("starttime")
}

/// The id of the current boot.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_owned()
}

/// Another boot's id.
const EARLIER_BOOT: &str = "00000000-1111-2222-3333-444444444444";

/// A fresh nonce in the provider's format: 128 bits, 32 lowercase hex digits.
fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The value of `STEWARD_PROCESS_NONCE` in the environment of `pid`.
fn nonce_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(b"STEWARD_PROCESS_NONCE=")?;
        String::from_utf8(value.to_vec()).ok()
    })
}

/// Session id of a process (`/proc/<pid>/stat`, field 6).
fn session(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// `sleep 30` with `nonce` in its environment, in a process group of its own (as the provider
/// starts its children) or, with `own_group` false, in the test's group.
fn sleeper(nonce: &str, own_group: bool) -> std::process::Child {
    let mut command = std::process::Command::new("sleep");
    command
        .arg("30")
        .env("STEWARD_PROCESS_NONCE", nonce)
        .stdin(std::process::Stdio::null());
    if own_group {
        command.process_group(0);
    }
    let child = command.spawn().expect("sleep");
    // `spawn` returns once the child has let go of the parent's memory, in the middle of its
    // `exec`: until the exec is done its environment reads empty, and a scan for its nonce
    // would miss it.
    let deadline = Instant::now() + BOUND;
    while nonce_of(child.id()).as_deref() != Some(nonce) {
        assert!(
            Instant::now() < deadline,
            "the sleeper never showed its nonce"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

/// Whether a child of the test still runs (not reaped, not a zombie).
fn still_running(child: &mut std::process::Child) -> bool {
    matches!(child.try_wait(), Ok(None)) && runs(child.id())
}

/// SIGKILL to one process, from outside the provider.
fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn no_proc_entry(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_started_process_is_alive_and_stop_ends_it_promptly() {
    let f = Fixture::new();
    let spec = Spec::new(&["sleep", "30"]);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(1)));
    let pid = f.pid(id);
    assert!(runs(pid));
    assert_eq!(stat(pid).map(|(_, g)| g), Some(pid), "a group of its own");
    assert_eq!(f.records(), [format!("{id}.1.{pid}.record")]);
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(f.state_dir()), 0o700);
    assert_eq!(mode(&f.state_dir().join(&f.records()[0])), 0o600);

    let began = Instant::now();
    f.provider.stop(id).await.expect("stop");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "sleep dies of SIGTERM, long before the 5 s grace: {:?}",
        began.elapsed()
    );
    assert!(no_proc_entry(pid), "the child is gone and reaped");
    assert_eq!(f.liveness(id).await, Liveness::Absent);
    assert!(f.provider.list().await.expect("list").is_empty());
    assert!(f.records().is_empty(), "the record goes with the child");

    // Idempotent.
    f.provider.stop(id).await.expect("second stop");
    f.provider.remove(id).await.expect("remove after stop");
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let f = Fixture::grace_ms(300);
    let spec = Spec::sh(r#"trap "" TERM; echo ready; sleep 30"#);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    let pid = f.pid(id);
    eventually("the trap to be set", || f.output(id) == ["ready"]).await;

    let began = Instant::now();
    f.provider.remove(id).await.expect("remove");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL only after the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "and soon after it: {took:?}");
    assert!(no_proc_entry(pid));
    assert!(group_members(pid).is_empty(), "its sleep is gone too");
    assert_eq!(f.liveness(id).await, Liveness::Absent);
    assert!(
        f.log(id).contains("exited (signal: 9"),
        "the log records the kill: {}",
        f.log(id)
    );
}

#[tokio::test]
async fn the_child_sees_its_env_and_secrets_and_nothing_of_the_daemon() {
    let f = Fixture::new();
    let spec = Spec::sh(r#"echo "FOO=$FOO SECRET=$SECRET HOME=$HOME""#)
        .env("FOO", "bar")
        .secret("SECRET", "canary-3f9a");
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    f.wait_dead(id, 1).await;
    assert_eq!(
        f.settled_output(id).await,
        ["FOO=bar SECRET=canary-3f9a HOME="]
    );
    assert!(f.provider.exit_status(id).is_some_and(|s| s.success()));
    assert!(!format!("{:?}", f.provider).contains("canary"));
    assert!(!format!("{:?}", spec.0).contains("canary"));

    let log = std::fs::metadata(f.provider.log_path(id)).expect("log file");
    assert_eq!(log.permissions().mode() & 0o777, 0o600);

    // The whole environment, without a shell adding its own variables. The nonce of the
    // start is the provider's: a spec cannot choose it.
    let spec = Spec::new(&["env"])
        .env("FOO", "bar")
        .env("STEWARD_PROCESS_NONCE", "chosen-by-the-spec")
        .secret("SECRET", "canary-3f9a");
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start env");
    f.wait_dead(id, 1).await;
    let output = f.settled_output(id).await;
    let names: HashSet<&str> = output
        .iter()
        .filter_map(|line| line.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(
        names,
        HashSet::from(["PATH", "FOO", "SECRET", "STEWARD_PROCESS_NONCE"]),
        "{output:?}"
    );
    assert!(output.contains(&"SECRET=canary-3f9a".to_owned()));
    let nonce = output
        .iter()
        .find_map(|line| line.strip_prefix("STEWARD_PROCESS_NONCE="))
        .expect("the nonce");
    assert!(
        nonce.len() == 32
            && nonce
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "128 random bits in lowercase hex, not the spec's value: {nonce}"
    );

    // Without a state directory nothing is recorded, and there is no nonce either.
    let bare = ProcessProvider::new(
        "process",
        ProcessConfig {
            state_dir: PathBuf::new(),
            ..f.provider.config().clone()
        },
    );
    let spec = Spec::new(&["env"]);
    bare.start(&spec.0).await.expect("start env");
    let deadline = Instant::now() + BOUND;
    while bare.liveness(spec.id()).await.expect("liveness") != Liveness::Dead(Generation(1)) {
        assert!(Instant::now() < deadline, "env never exited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    read_out(&bare, spec.id()).await;
    let output = f.output(spec.id());
    assert!(
        output.iter().all(|line| line.starts_with("PATH=")),
        "{output:?}"
    );
}

#[tokio::test]
async fn arguments_are_passed_literally_never_interpolated() {
    let f = Fixture::new();
    let marker = PathBuf::from(format!("/tmp/should-not-exist-{}", uuid::Uuid::new_v4()));
    let substitution = format!("$(touch {})", marker.display());
    let backticks = format!("`touch {}`", marker.display());
    let chained = format!("; touch {}", marker.display());
    let spec = Spec::new(&["/bin/echo", &substitution, &backticks, &chained]);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    f.wait_dead(id, 1).await;
    assert_eq!(
        f.settled_output(id).await,
        [format!("{substitution} {backticks} {chained}")]
    );
    assert!(!marker.exists(), "nothing ran the substitution");
}

#[tokio::test]
async fn kill_leaves_a_dead_instance_that_remove_clears_and_list_reports_both() {
    let f = Fixture::new();
    let doomed = Spec::new(&["sleep", "30"]);
    let other = Spec::new(&["sleep", "30"]).generation(4);
    f.provider.start(&doomed.0).await.expect("start");
    f.provider.start(&other.0).await.expect("start other");
    let pid = f.pid(doomed.id());

    f.provider.kill(doomed.id()).await.expect("kill");
    assert_eq!(f.liveness(doomed.id()).await, Liveness::Dead(Generation(1)));
    assert!(!runs(pid));
    let status = f.provider.exit_status(doomed.id()).expect("exit status");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let mut expected = vec![
        (doomed.id(), Liveness::Dead(Generation(1))),
        (other.id(), Liveness::Alive(Generation(4))),
    ];
    expected.sort_unstable_by_key(|(id, _)| *id);
    assert_eq!(f.listed().await, expected);

    f.provider.kill(doomed.id()).await.expect("kill again");
    f.provider.remove(doomed.id()).await.expect("remove");
    assert_eq!(f.liveness(doomed.id()).await, Liveness::Absent);
    f.provider.remove(doomed.id()).await.expect("remove again");
    f.provider.stop(other.id()).await.expect("stop other");
    assert!(f.provider.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn stop_takes_the_descendants_of_the_child_along() {
    let f = Fixture::new();
    let spec = Spec::sh("sleep 30 & wait");
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    let pid = f.pid(id);
    eventually("the background sleep", || group_members(pid).len() == 2).await;
    let descendant = group_members(pid)
        .into_iter()
        .find(|p| *p != pid)
        .expect("a descendant");

    f.provider.stop(id).await.expect("stop");
    assert!(no_proc_entry(pid));
    assert!(!runs(descendant), "the descendant is gone (or a zombie)");
    assert!(group_members(pid).is_empty());
}

#[tokio::test]
async fn a_descendant_that_ignores_sigterm_gets_the_grace_period_then_sigkill() {
    let f = Fixture::grace_ms(300);
    let spec = Spec::sh(r#"(trap "" TERM; echo ready; sleep 30) & wait"#);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    let pid = f.pid(id);
    eventually("the trap to be set", || f.output(id) == ["ready"]).await;

    let began = Instant::now();
    f.provider.stop(id).await.expect("stop");
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(group_members(pid).is_empty(), "the straggler got SIGKILL");
}

#[tokio::test]
async fn when_the_child_exits_on_its_own_what_it_left_in_its_group_is_killed() {
    let f = Fixture::new();
    let spec = Spec::sh("sleep 30 & echo $!");
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    f.wait_dead(id, 1).await;
    let mut straggler = None;
    eventually("the straggler's pid in the log", || {
        straggler = f.output(id).first().and_then(|l| l.parse::<u32>().ok());
        straggler.is_some()
    })
    .await;
    let straggler = straggler.expect("pid");
    eventually("the straggler to be killed", || !runs(straggler)).await;
    assert!(f.provider.exit_status(id).is_some_and(|s| s.success()));
    f.provider.remove(id).await.expect("remove");
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error_and_leaves_nothing() {
    let f = Fixture::new();
    for program in [
        format!("/nonexistent/program-{}", uuid::Uuid::new_v4()),
        format!("no-such-program-{}", uuid::Uuid::new_v4()),
    ] {
        let spec = Spec::new(&[&program, "arg"]);
        let began = Instant::now();
        match f.provider.start(&spec.0).await {
            Err(ProviderError::InvalidSpec(message)) => {
                assert!(
                    message.contains(&program) && message.contains("not found"),
                    "{message}"
                );
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
        assert!(began.elapsed() < Duration::from_secs(2));
        assert_eq!(f.liveness(spec.id()).await, Liveness::Absent);
    }
    assert!(f.provider.list().await.expect("list").is_empty());
    assert!(f.records().is_empty());

    // A file that is not executable.
    let file = tempfile::NamedTempFile::new().expect("file");
    let path = file.path().to_str().expect("utf-8 path");
    assert!(matches!(
        f.provider.start(&Spec::new(&[path]).0).await,
        Err(ProviderError::InvalidSpec(m)) if m.contains("permission denied")
    ));
    assert!(
        f.records().is_empty(),
        "a failed spawn deletes its provisional record"
    );
}

#[tokio::test]
async fn the_command_falls_back_to_the_default_and_without_one_is_required() {
    let f = Fixture::new();
    let mut spec = Spec::new(&[]);
    spec.0.command = None;
    assert!(matches!(
        f.provider.start(&spec.0).await,
        Err(ProviderError::InvalidSpec(m)) if m.contains("default_command")
    ));
    assert_eq!(f.liveness(spec.id()).await, Liveness::Absent);

    let f = Fixture::with(ProcessConfig {
        default_command: vec!["/bin/echo".to_owned(), "from-default".to_owned()],
        ..ProcessConfig::default()
    });
    f.provider
        .start(&spec.0)
        .await
        .expect("start with the default");
    f.wait_dead(spec.id(), 1).await;
    assert_eq!(f.settled_output(spec.id()).await, ["from-default"]);
}

#[tokio::test]
async fn starting_a_running_workspace_again_fails_and_a_dead_one_is_replaced() {
    let f = Fixture::new();
    let spec = Spec::new(&["sleep", "30"]);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    let first = f.pid(id);
    let again = Spec(InstanceSpec {
        generation: Generation(2),
        ..spec.0.clone()
    });
    assert!(matches!(
        f.provider.start(&again.0).await,
        Err(ProviderError::AlreadyExists(1))
    ));
    assert_eq!(f.pid(id), first, "the running child is untouched");
    assert!(runs(first));

    f.provider.kill(id).await.expect("kill");
    f.provider
        .start(&again.0)
        .await
        .expect("start over a dead child");
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(2)));
    assert_ne!(f.pid(id), first);
    let log = f.log(id);
    assert!(log.contains("generation 1 starting") && log.contains("generation 2 starting"));
    f.provider.stop(id).await.expect("stop");
}

#[tokio::test]
async fn shutdown_stops_every_child_and_refuses_new_ones() {
    let f = Fixture::grace_ms(300);
    let specs = [
        Spec::new(&["sleep", "30"]),
        Spec::sh(r#"trap "" TERM; echo ready; sleep 30"#),
    ];
    for spec in &specs {
        f.provider.start(&spec.0).await.expect("start");
    }
    eventually("the trap to be set", || {
        f.output(specs[1].id()) == ["ready"]
    })
    .await;
    let pids: Vec<u32> = specs.iter().map(|s| f.pid(s.id())).collect();

    let began = Instant::now();
    f.provider.shutdown().await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "in parallel, each within its grace: {:?}",
        began.elapsed()
    );
    for pid in pids {
        assert!(no_proc_entry(pid) && group_members(pid).is_empty());
    }
    assert!(f.provider.list().await.expect("list").is_empty());
    assert!(matches!(
        f.provider.start(&Spec::new(&["sleep", "30"]).0).await,
        Err(ProviderError::Engine(_))
    ));
}

#[tokio::test]
async fn with_leave_running_shutdown_leaves_the_children_alone() {
    let f = Fixture::with(ProcessConfig {
        leave_running: true,
        ..ProcessConfig::default()
    });
    let specs = [Spec::new(&["sleep", "30"]), Spec::new(&["sleep", "30"])];
    for spec in &specs {
        f.provider.start(&spec.0).await.expect("start");
    }
    f.provider.shutdown().await;
    for spec in &specs {
        assert!(runs(f.pid(spec.id())));
        assert_eq!(f.liveness(spec.id()).await, Liveness::Alive(Generation(1)));
    }
    assert_eq!(f.records().len(), 2, "the records stay, for the next run");
    for spec in &specs {
        let pid = f.pid(spec.id());
        f.provider.stop(spec.id()).await.expect("clean up");
        assert!(no_proc_entry(pid));
    }
    assert!(f.records().is_empty());
}

#[tokio::test]
async fn a_start_that_cannot_be_recorded_fails_without_spawning_anything() {
    let mut f = Fixture::new();
    let blocker = f.dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("a file where the state directory should be");
    f.provider = ProcessProvider::new(
        "process",
        ProcessConfig {
            state_dir: blocker,
            ..f.provider.config().clone()
        },
    );
    let spec = Spec::new(&["sleep", "30"]);
    let id = spec.id();
    assert!(matches!(
        f.provider.start(&spec.0).await,
        Err(ProviderError::Engine(m)) if m.contains("recording")
    ));
    assert_eq!(f.liveness(id).await, Liveness::Absent);
    assert!(
        f.log(id).is_empty(),
        "the provisional record comes before the log and the spawn: {}",
        f.log(id)
    );
}

#[tokio::test]
async fn children_left_by_a_crashed_daemon_are_adopted_and_stopped_with_their_groups() {
    let mut f = Fixture::grace_ms(300);
    let polite = Spec::sh("sleep 30 & wait").generation(2);
    let stubborn = Spec::sh(r#"trap "" TERM; echo ready; sleep 30"#).generation(5);
    let pids = f.previous_run(&[&polite, &stubborn], End::Crash);
    for pid in &pids {
        assert!(runs(*pid), "a child outlives the run that started it");
    }
    assert_eq!(f.records().len(), 2);
    eventually("the background sleep", || group_members(pids[0]).len() == 2).await;

    f.restart();
    // What it wrote while no daemon ran waited in its pipe, and is read on now.
    eventually("the trap to be set", || {
        f.output(stubborn.id()) == ["ready"]
    })
    .await;
    let mut expected = vec![
        (polite.id(), Liveness::Alive(Generation(2))),
        (stubborn.id(), Liveness::Alive(Generation(5))),
    ];
    expected.sort_unstable_by_key(|(id, _)| *id);
    assert_eq!(f.listed().await, expected, "adopted before anything asks");
    assert_eq!(f.pid(polite.id()), pids[0]);
    assert_eq!(f.pid(stubborn.id()), pids[1]);

    let began = Instant::now();
    f.provider.stop(polite.id()).await.expect("stop");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "SIGTERM ends it, long before the 300 ms grace is over: {:?}",
        began.elapsed()
    );
    assert!(!runs(pids[0]) && group_members(pids[0]).is_empty());
    assert_eq!(f.liveness(polite.id()).await, Liveness::Absent);
    assert_eq!(
        f.records(),
        [format!("{}.5.{}.record", stubborn.id(), pids[1])]
    );

    let began = Instant::now();
    f.provider.stop(stubborn.id()).await.expect("stop");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL only after the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "and soon after it: {took:?}");
    assert!(!runs(pids[1]) && group_members(pids[1]).is_empty());
    assert!(f.records().is_empty());
    assert!(f.log(stubborn.id()).contains("generation 5 exited"));

    f.restart();
    assert!(f.listed().await.is_empty(), "nothing left to adopt");
}

#[tokio::test]
async fn an_adopted_child_that_dies_is_dead_until_removed_and_a_new_generation_starts() {
    let mut f = Fixture::new();
    let spec = Spec::sh("sleep 30 & wait").generation(3);
    let id = spec.id();
    let pid = f.previous_run(&[&spec], End::Crash)[0];
    eventually("the background sleep", || group_members(pid).len() == 2).await;
    f.restart();
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(3)));

    kill_9(pid);
    f.wait_dead(id, 3).await;
    assert_eq!(
        f.provider.exit_status(id),
        None,
        "its status went to its parent"
    );
    eventually("what it left in its group to be killed", || {
        group_members(pid).is_empty()
    })
    .await;
    eventually("its record to go with its group", || f.records().is_empty()).await;
    assert_eq!(f.liveness(id).await, Liveness::Dead(Generation(3)));
    f.provider.remove(id).await.expect("remove");
    assert_eq!(f.liveness(id).await, Liveness::Absent);

    let next = Spec::new(&["sleep", "30"]).generation(4);
    let next = Spec(InstanceSpec {
        workspace_id: id,
        ..next.0
    });
    f.provider.start(&next.0).await.expect("start generation 4");
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(4)));
    let new_pid = f.pid(id);
    assert_ne!(new_pid, pid);
    assert_eq!(f.records(), [format!("{id}.4.{new_pid}.record")]);
    f.provider.stop(id).await.expect("stop");
    assert!(f.records().is_empty());
}

#[tokio::test]
async fn records_of_gone_or_reused_pids_are_deleted_and_their_processes_never_signaled() {
    let mut f = Fixture::new();
    let workspace = || WorkspaceId::from(uuid::Uuid::new_v4());
    // Gone: a process that ran, exited and was reaped.
    let mut gone = std::process::Command::new("true").spawn().expect("true");
    gone.wait().expect("reaped");
    // Reused: a live group leader that is not the recorded process (another start time).
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .expect("sleep");
    // The very process, but no group leader (it is in the test's group).
    let mut member = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    f.write_record(workspace(), 1, gone.id(), 1);
    f.write_record(workspace(), 1, stranger.id(), starttime(stranger.id()) + 1);
    f.write_record(workspace(), 1, member.id(), starttime(member.id()));
    // The daemon's own pid: only a forged record could name it.
    let me = std::process::id();
    f.write_record(workspace(), 1, me, starttime(me));
    std::fs::write(f.state_dir().join("garbage.record"), "not a record").expect("garbage");
    std::fs::write(f.state_dir().join("notes.txt"), "not ours").expect("notes");

    f.restart();
    assert!(f.listed().await.is_empty(), "none of them is adopted");
    assert_eq!(
        f.records(),
        ["notes.txt"],
        "stale records go, other files stay"
    );
    f.provider.shutdown().await;
    assert!(
        runs(stranger.id()) && runs(member.id()),
        "nobody got a signal"
    );
    assert!(
        matches!(stranger.try_wait(), Ok(None)) && matches!(member.try_wait(), Ok(None)),
        "still running"
    );

    // The same stranger, recorded with its true start time, is adopted: the start time alone
    // told the two records apart.
    let id = workspace();
    f.write_record(id, 2, stranger.id(), starttime(stranger.id()));
    f.restart();
    assert_eq!(f.listed().await, [(id, Liveness::Alive(Generation(2)))]);
    f.provider.stop(id).await.expect("stop");
    let status = stranger.wait().expect("reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15),
        "SIGTERM from the adopter"
    );
    assert_eq!(f.records(), ["notes.txt"]);

    member.kill().expect("clean up");
    member.wait().expect("reaped");
}

#[tokio::test]
async fn the_cleanup_of_an_older_generation_never_removes_the_record_of_a_newer_one() {
    let mut f = Fixture::new();
    let old = Spec::new(&["sleep", "30"]).generation(1);
    let id = old.id();
    let new = Spec(InstanceSpec {
        generation: Generation(2),
        ..old.0.clone()
    });
    // Two runs each left a live child of the workspace: the first run's record was out of
    // sight of the second (which would otherwise have adopted its child).
    let old_pid = f.previous_run(&[&old], End::Crash)[0];
    let hidden = tempfile::tempdir().expect("hiding place");
    let old_record = format!("{id}.1.{old_pid}.record");
    std::fs::rename(
        f.state_dir().join(&old_record),
        hidden.path().join(&old_record),
    )
    .expect("hide the record");
    let new_pid = f.previous_run(&[&new], End::Crash)[0];
    std::fs::rename(
        hidden.path().join(&old_record),
        f.state_dir().join(&old_record),
    )
    .expect("restore the record");
    let new_record = format!("{id}.2.{new_pid}.record");
    assert_eq!(f.records().len(), 2);

    f.restart();
    assert_eq!(f.listed().await, [(id, Liveness::Alive(Generation(2)))]);
    assert_eq!(f.pid(id), new_pid);
    eventually("the superseded generation to be stopped", || {
        !runs(old_pid) && f.records() == [new_record.clone()]
    })
    .await;
    assert!(runs(new_pid));

    // A stale record of an older generation beside the newer one's goes alone too.
    f.write_record(id, 1, old_pid, 1);
    f.restart();
    assert_eq!(f.listed().await, [(id, Liveness::Alive(Generation(2)))]);
    assert_eq!(f.records(), [new_record]);
    f.provider.stop(id).await.expect("stop");
    assert!(f.records().is_empty());
}

#[tokio::test]
async fn shutdown_stops_adopted_children_too() {
    let mut f = Fixture::new();
    let specs = [Spec::new(&["sleep", "30"]), Spec::new(&["sleep", "30"])];
    let pids = f.previous_run(&[&specs[0], &specs[1]], End::Crash);
    f.restart();
    assert_eq!(f.listed().await.len(), 2);
    f.provider.shutdown().await;
    for pid in pids {
        assert!(!runs(pid) && group_members(pid).is_empty());
    }
    assert!(f.records().is_empty());
    f.restart();
    assert!(f.listed().await.is_empty());
}

#[tokio::test]
async fn after_a_shutdown_with_leave_running_the_next_run_adopts_the_children() {
    let mut f = Fixture::with(ProcessConfig {
        leave_running: true,
        ..ProcessConfig::default()
    });
    let specs = [Spec::new(&["sleep", "30"]), Spec::new(&["sleep", "30"])];
    let pids = f.previous_run(&[&specs[0], &specs[1]], End::Shutdown);
    assert_eq!(f.records().len(), 2);
    f.restart();
    for (spec, pid) in specs.iter().zip(&pids) {
        assert!(runs(*pid));
        assert_eq!(f.liveness(spec.id()).await, Liveness::Alive(Generation(1)));
        assert_eq!(f.pid(spec.id()), *pid);
    }
    // This run leaves them too; the one after still finds them.
    f.provider.shutdown().await;
    f.restart();
    for (spec, pid) in specs.iter().zip(&pids) {
        assert_eq!(f.pid(spec.id()), *pid);
        f.provider.stop(spec.id()).await.expect("stop");
        assert!(!runs(*pid));
    }
    assert!(f.records().is_empty());
}

#[tokio::test]
async fn a_child_whose_start_a_crash_cut_short_is_found_by_its_nonce_and_adopted() {
    let mut f = Fixture::new();
    let spec = Spec::sh("sleep 30 & wait").generation(3);
    let id = spec.id();
    let pid = f.previous_run(&[&spec], End::Crash)[0];
    let record = format!("{id}.3.{pid}.record");
    assert_eq!(
        f.records(),
        [record.as_str()],
        "the provisional record went once the full one was durable"
    );
    eventually("the background sleep", || group_members(pid).len() == 2).await;
    let nonce = nonce_of(pid).expect("the child carries its start's nonce");
    let descendant = group_members(pid)
        .into_iter()
        .find(|p| *p != pid)
        .expect("a descendant");
    // Inherited, but no group leader. (Forked by the shell, it may be in the middle of its
    // `exec`, when its environment reads empty: hence a wait.)
    eventually("the descendant carrying the nonce", || {
        nonce_of(descendant).as_deref() == Some(nonce.as_str())
    })
    .await;

    // A crash after the full record, before the provisional one was deleted: both name the
    // child, which is adopted once.
    let pending = f.write_provisional(&boot_id(), id, 3, &nonce, "00000000000000a1");
    f.restart();
    assert_eq!(f.listed().await, [(id, Liveness::Alive(Generation(3)))]);
    assert_eq!(f.pid(id), pid);
    assert_eq!(
        f.records(),
        [record.as_str()],
        "the provisional record is gone"
    );
    // Adopted once: a second adoption would stop it as a superseded instance. Five looks of
    // its supervisor (every 100 ms) give such a stop time to show.
    holds_throughout(
        "the adopted child running",
        Duration::from_millis(500),
        || runs(pid) && runs(descendant),
    )
    .await;

    // A crash between the spawn and the full record: only the provisional record is left.
    std::fs::remove_file(f.state_dir().join(&record)).expect("remove the full record");
    assert_ne!(
        f.write_provisional(&boot_id(), id, 3, &nonce, "00000000000000a2"),
        pending
    );
    f.restart();
    assert_eq!(
        f.listed().await,
        [(id, Liveness::Alive(Generation(3)))],
        "adopted before anything asks"
    );
    assert_eq!(f.pid(id), pid);
    assert_eq!(
        f.records(),
        [record.as_str()],
        "its full record replaces the provisional one"
    );

    // The run after that knows it by that record.
    f.restart();
    assert_eq!(f.listed().await, [(id, Liveness::Alive(Generation(3)))]);
    assert_eq!(f.pid(id), pid);

    f.provider.stop(id).await.expect("stop");
    assert!(!runs(pid) && group_members(pid).is_empty());
    assert!(!runs(descendant));
    assert_eq!(f.liveness(id).await, Liveness::Absent);
    eventually("every record to be gone", || f.records().is_empty()).await;
    f.restart();
    assert!(f.listed().await.is_empty(), "nothing left to adopt");
}

#[tokio::test]
async fn provisional_records_without_their_child_are_deleted_and_nothing_is_adopted() {
    let mut f = Fixture::new();
    let workspace = || WorkspaceId::from(uuid::Uuid::new_v4());
    let boot = boot_id();
    // A start that never spawned: nobody carries its nonce.
    f.write_provisional(&boot, workspace(), 1, &nonce(), "00000000000000b1");
    // A group leader that carries another nonce.
    let mut other = sleeper(&nonce(), true);
    f.write_provisional(&boot, workspace(), 1, &nonce(), "00000000000000b2");
    // The right nonce, but no group leader (it is in the test's group).
    let member_nonce = nonce();
    let mut member = sleeper(&member_nonce, false);
    f.write_provisional(&boot, workspace(), 1, &member_nonce, "00000000000000b3");
    // The right nonce on a group leader that started a session of its own, as a program that
    // daemonizes does: not the child, which never calls setsid.
    let daemon_nonce = nonce();
    let mut daemonized = std::process::Command::new("setsid")
        .args(["sleep", "30"])
        .env("STEWARD_PROCESS_NONCE", &daemon_nonce)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("setsid");
    f.write_provisional(&boot, workspace(), 1, &daemon_nonce, "00000000000000b4");
    eventually("the session of its own", || {
        session(daemonized.id()) == Some(daemonized.id())
    })
    .await;
    // Malformed: a nonce too short to be one of ours.
    let short = f.write_provisional(&boot, workspace(), 1, "abc", "00000000000000b5");
    assert_eq!(f.records().len(), 5, "{short}");

    f.restart();
    assert!(f.listed().await.is_empty(), "none of them is adopted");
    assert!(
        f.records().is_empty(),
        "every provisional record is deleted"
    );
    f.provider.shutdown().await;
    for child in [&mut other, &mut member, &mut daemonized] {
        assert!(still_running(child), "nobody got a signal");
        child.kill().expect("clean up");
        child.wait().expect("reaped");
    }
}

#[tokio::test]
async fn records_of_an_earlier_boot_are_deleted_and_their_processes_never_signaled() {
    let mut f = Fixture::new();
    let workspace = || WorkspaceId::from(uuid::Uuid::new_v4());
    // Leaders whose pid and start time a record of an earlier boot happens to match.
    let mut recorded = sleeper(&nonce(), true);
    let stale = f.write_record_of(
        EARLIER_BOOT,
        workspace(),
        1,
        recorded.id(),
        starttime(recorded.id()),
    );
    let stale_nonce = nonce();
    let mut carrier = sleeper(&stale_nonce, true);
    f.write_provisional(
        EARLIER_BOOT,
        workspace(),
        1,
        &stale_nonce,
        "00000000000000c1",
    );
    assert_eq!(f.records().len(), 2, "{stale}");

    f.restart();
    assert!(f.listed().await.is_empty(), "none of them is adopted");
    assert!(
        f.records().is_empty(),
        "records of another boot are deleted"
    );
    f.provider.shutdown().await;
    assert!(
        still_running(&mut recorded) && still_running(&mut carrier),
        "nobody got a signal"
    );

    // The same processes, recorded in this boot, are adopted: the boot id alone told the
    // records apart.
    let (by_record, by_nonce) = (workspace(), workspace());
    f.write_record(by_record, 2, recorded.id(), starttime(recorded.id()));
    f.write_provisional(&boot_id(), by_nonce, 4, &stale_nonce, "00000000000000c2");
    f.restart();
    let mut expected = vec![
        (by_record, Liveness::Alive(Generation(2))),
        (by_nonce, Liveness::Alive(Generation(4))),
    ];
    expected.sort_unstable_by_key(|(id, _)| *id);
    assert_eq!(f.listed().await, expected);
    assert_eq!(f.pid(by_nonce), carrier.id());
    f.provider.shutdown().await;
    for child in [&mut recorded, &mut carrier] {
        let status = child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15),
            "SIGTERM from the adopter"
        );
    }
    assert!(f.records().is_empty());
}

#[tokio::test]
async fn a_child_found_by_its_nonce_keeps_its_provisional_record_if_no_full_one_can_be_written() {
    let mut f = Fixture::new();
    let id = WorkspaceId::from(uuid::Uuid::new_v4());
    let nonce = nonce();
    let mut child = sleeper(&nonce, true);
    let pending = f.write_provisional(&boot_id(), id, 2, &nonce, "00000000000000d1");
    // A directory where its full record would go: that write fails.
    let blocker = format!("{id}.2.{}.record", child.id());
    std::fs::create_dir(f.state_dir().join(&blocker)).expect("blocker");

    f.restart();
    assert_eq!(f.listed().await, [(id, Liveness::Alive(Generation(2)))]);
    assert_eq!(f.pid(id), child.id());
    let mut expected = vec![blocker.clone(), pending];
    expected.sort_unstable();
    assert_eq!(f.records(), expected, "the provisional record stands in");

    f.provider.stop(id).await.expect("stop");
    let status = child.wait().expect("reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15),
        "SIGTERM from the adopter"
    );
    assert_eq!(f.records(), [blocker], "it went with the child");
}

/// Every line the provider answers for `query` (not following).
async fn logs(provider: &ProcessProvider, id: WorkspaceId, query: LogQuery) -> Vec<LogLine> {
    use futures::StreamExt;
    provider
        .logs(id, query)
        .await
        .expect("logs")
        .collect()
        .await
}

/// The next line a follower gets, within [`BOUND`].
async fn next(stream: &mut steward_provider::LogStream) -> Option<LogLine> {
    use futures::StreamExt;
    tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("a line within the bound")
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l.text.as_str())
        .filter(|t| !t.starts_with("=== steward:"))
        .collect()
}

#[tokio::test]
async fn logs_interleave_stdout_and_stderr_in_order_with_times_and_generations() {
    let f = Fixture::new();
    let spec = Spec::sh("echo one; echo two >&2; echo three; printf 'no newline'");
    let id = spec.id();
    let before = std::time::SystemTime::now();
    f.provider.start(&spec.0).await.expect("start");
    f.wait_dead(id, 1).await;
    read_out(&f.provider, id).await;

    let all = logs(&f.provider, id, LogQuery::default()).await;
    assert_eq!(texts(&all), ["one", "two", "three", "no newline"]);
    assert!(all
        .iter()
        .all(|l| l.generation == Generation(1) && l.at >= before));
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    assert_eq!(
        all.first().map(|l| l.text.as_str()),
        Some("=== steward: generation 1 starting")
    );

    let tail = LogQuery {
        tail: Some(2),
        ..LogQuery::default()
    };
    let last = logs(&f.provider, id, tail).await;
    assert_eq!(last.len(), 2);
    assert!(last[1].text.contains("exited"), "{last:?}");

    // A second generation; `generation` and `since` select.
    let second = spec.generation(2);
    let second = Spec(InstanceSpec {
        command: Some(vec!["/bin/echo".to_owned(), "second".to_owned()]),
        ..second.0
    });
    let between = std::time::SystemTime::now();
    f.provider.start(&second.0).await.expect("start again");
    f.wait_dead(id, 2).await;
    read_out(&f.provider, id).await;
    let only = |generation| LogQuery {
        generation: Some(Generation(generation)),
        ..LogQuery::default()
    };
    assert_eq!(
        texts(&logs(&f.provider, id, only(1)).await),
        ["one", "two", "three", "no newline"]
    );
    assert_eq!(texts(&logs(&f.provider, id, only(2)).await), ["second"]);
    let since = LogQuery {
        since: Some(between),
        ..LogQuery::default()
    };
    assert_eq!(texts(&logs(&f.provider, id, since).await), ["second"]);

    // A workspace that never ran has no output, which is not an error.
    let none = WorkspaceId::from(uuid::Uuid::new_v4());
    assert!(logs(&f.provider, none, LogQuery::default())
        .await
        .is_empty());
}

#[tokio::test]
async fn a_follower_gets_each_new_line_as_it_is_written_across_generations() {
    let f = Fixture::new();
    let dir = f.dir.path().join("lines");
    std::fs::create_dir(&dir).expect("a directory");
    // The child writes a line each time a file appears: the test decides when.
    let script = format!(
        "echo first; for n in 1 2 3; do while [ ! -e {0}/$n ]; do sleep 0.01; done; echo line-$n; done; sleep 30",
        dir.display()
    );
    let spec = Spec::sh(&script);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    eventually("the first line", || f.output(id) == ["first"]).await;

    let follow = LogQuery {
        follow: true,
        tail: Some(1),
        ..LogQuery::default()
    };
    let mut stream = f.provider.logs(id, follow).await.expect("follow");
    assert_eq!(
        next(&mut stream).await.map(|l| l.text),
        Some("first".to_owned())
    );
    for n in 1..=3 {
        std::fs::write(dir.join(n.to_string()), "").expect("a file");
        assert_eq!(
            next(&mut stream).await.map(|l| l.text),
            Some(format!("line-{n}"))
        );
    }
    // The follow goes on across a restart: the next generation's lines come too.
    f.provider.remove(id).await.expect("remove");
    let next_gen = Spec(InstanceSpec {
        generation: Generation(2),
        command: Some(vec!["/bin/echo".to_owned(), "reborn".to_owned()]),
        ..spec.0.clone()
    });
    f.provider.start(&next_gen.0).await.expect("start again");
    let mut seen = Vec::new();
    while !seen.contains(&"reborn".to_owned()) {
        let line = next(&mut stream).await.expect("a line");
        seen.push(line.text);
    }
    assert!(
        seen.iter().any(|t| t.contains("generation 1 exited")),
        "{seen:?}"
    );

    // Deleting the workspace ends the stream and its files go.
    f.wait_dead(id, 2).await;
    read_out(&f.provider, id).await;
    f.provider.remove(id).await.expect("remove");
    f.provider.forget_logs(id).await;
    while let Some(line) = next(&mut stream).await {
        assert!(line.text.starts_with("=== steward:"), "{line:?}");
    }
    assert!(!f.provider.log_path(id).exists());
    let logs_dir = f.provider.config().log_dir.clone();
    let left: Vec<_> = std::fs::read_dir(&logs_dir)
        .expect("the log directory")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(&id.to_string()))
        .collect();
    assert!(
        left.is_empty(),
        "nothing of the workspace is left: {left:?}"
    );
    assert!(logs(&f.provider, id, LogQuery::default()).await.is_empty());
}

#[tokio::test]
async fn the_log_is_rotated_past_its_cap_and_old_generations_go_with_it() {
    let f = Fixture::with(ProcessConfig {
        log_max_bytes: 4096,
        ..ProcessConfig::default()
    });
    let spec = Spec::sh(
        "i=0; while [ $i -lt 400 ]; do echo \"line $i of a chatty instance\"; i=$((i+1)); done",
    );
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    f.wait_dead(id, 1).await;
    read_out(&f.provider, id).await;
    let second = Spec(InstanceSpec {
        generation: Generation(2),
        ..spec.0.clone()
    });
    f.provider.start(&second.0).await.expect("start again");
    f.wait_dead(id, 2).await;
    read_out(&f.provider, id).await;

    let on_disk: u64 = std::fs::read_dir(&f.provider.config().log_dir)
        .expect("the log directory")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        on_disk <= 2 * 4096 + 1024,
        "about twice the cap at most: {on_disk} bytes"
    );
    let kept = logs(&f.provider, id, LogQuery::default()).await;
    assert!(!kept.is_empty());
    assert!(
        kept.iter().all(|l| l.generation == Generation(2)),
        "generation 1 rotated away"
    );
    assert_eq!(
        kept.last().map(|l| l.text.as_str()),
        Some("=== steward: generation 2 exited (exit status: 0)")
    );
    let texts = texts(&kept);
    assert_eq!(texts.last(), Some(&"line 399 of a chatty instance"));
    let first: usize = texts[0]
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a numbered line");
    assert_eq!(
        texts.len(),
        400 - first,
        "no line lost between the two files"
    );
    let gone = f
        .provider
        .logs(
            id,
            LogQuery {
                generation: Some(Generation(1)),
                ..LogQuery::default()
            },
        )
        .await;
    assert!(matches!(gone, Err(ProviderError::OutputGone(_))));
}
