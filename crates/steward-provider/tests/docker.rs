//! The `docker` provider against the real engine.
//!
//! Needs a Docker engine on `/var/run/docker.sock` and `gcc` with a static libc: the test
//! image (`FROM scratch` plus a static `sleeper` that exits 0 on SIGTERM) is built here, once
//! per test binary, since there is no registry to pull from. Without an engine the tests
//! print a notice and pass, except under `CI=true`, where they fail.
//!
//! Each test has its own owner label and name prefix, so tests run in parallel and beside
//! other containers; a guard removes every container of the test when it ends, passed or
//! not. The engine is checked with the `docker` CLI, a witness independent of bollard.

use futures::future::join_all;
use secrecy::SecretString;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use steward_domain::{Generation, WorkspaceId};
use steward_provider::docker::{DockerConfig, DockerProvider};
use steward_provider::{
    InstanceDeath, InstanceSpec, Liveness, LogLine, LogQuery, Provider, ProviderError,
};

/// Upper bound of every wait on a condition.
const BOUND: Duration = Duration::from_secs(20);
/// Label that marks containers a test made by hand that are *not* ours, for the clean-up.
const TEST_RUN: &str = "io.steward.test-run";
const OWNER: &str = "io.steward.owner";
const WORKSPACE: &str = "io.steward.workspace";
const GENERATION: &str = "io.steward.generation";

const SLEEPER_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static volatile sig_atomic_t ticks;
static void on_term(int sig) { (void)sig; _exit(0); }
static void on_usr1(int sig) { (void)sig; ticks++; }
int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    if (argc > 1 && strcmp(argv[1], "talk") == 0) {
        int said = 0;
        signal(SIGUSR1, on_usr1);
        printf("hello on stdout\n");
        fflush(stdout);
        /* The engine reads stdout and stderr apart: apart in time, their order is sure. */
        usleep(100000);
        fprintf(stderr, "hello on stderr\n");
        for (;;) {
            pause();
            while (said < ticks) {
                said++;
                printf("tick %d\n", said);
                fflush(stdout);
            }
        }
    }
    for (;;) pause();
}
"#;
const DOCKERFILE: &str = "FROM scratch\nCOPY sleeper /sleeper\nCMD [\"/sleeper\"]\n";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether the tests can run: an engine answers. Without one, a notice (or a failure under
/// `CI=true`).
fn engine_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no Docker engine answers on /var/run/docker.sock (is the `docker` CLI installed and the engine running?)"
        );
        eprintln!("notice: no Docker engine reachable; docker provider test skipped");
    }
    available
}

/// The test image, built once per test binary (tagged by a hash of its sources, so a
/// rebuild is skipped when the engine has it already).
fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (SLEEPER_C, DOCKERFILE).hash(&mut h);
            h.finish()
        };
        let tag = format!("steward-test-sleeper:{hash:016x}");
        if docker(&["image", "inspect", &tag]).status.success() {
            return tag;
        }
        let dir = tempfile::tempdir().expect("build directory");
        std::fs::write(dir.path().join("sleeper.c"), SLEEPER_C).expect("sleeper.c");
        std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).expect("Dockerfile");
        let gcc = Command::new("gcc")
            .args(["-static", "-O2", "-o", "sleeper", "sleeper.c"])
            .current_dir(dir.path())
            .output()
            .expect("gcc is needed to build the test image");
        assert!(
            gcc.status.success(),
            "gcc -static failed (a static libc is needed): {}",
            String::from_utf8_lossy(&gcc.stderr)
        );
        let dir_arg = dir.path().to_str().expect("utf-8 temp path");
        docker_ok(&["build", "-q", "-t", &tag, dir_arg]);
        tag
    })
}

/// A provider with an owner and name prefix of its own, and the guard that removes every
/// container of the test.
struct Fixture {
    provider: DockerProvider,
    owner: String,
    image: String,
    _cleanup: Cleanup,
}

impl Fixture {
    async fn new() -> Option<Self> {
        Self::with(DockerConfig::default()).await
    }

    /// `config` with this test's owner and prefix, and the `none` network unless it sets
    /// another (so that the network mode seen on a container is provably the configured one,
    /// not the default).
    async fn with(config: DockerConfig) -> Option<Self> {
        if !engine_available() {
            return None;
        }
        let image = test_image().to_owned();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let owner = format!("steward-test-{}", &run[..12]);
        let network_mode = if config.network_mode == DockerConfig::default().network_mode {
            "none".to_owned()
        } else {
            config.network_mode.clone()
        };
        let config = DockerConfig {
            owner: owner.clone(),
            name_prefix: format!("stt-{}-", &run[..8]),
            network_mode,
            stop_timeout: Duration::from_secs(3),
            ..config
        };
        let provider = DockerProvider::connect("docker", config)
            .await
            .expect("connect");
        Some(Self {
            provider,
            _cleanup: Cleanup::run(&owner),
            owner,
            image,
        })
    }

    fn spec(&self) -> Spec {
        Spec(InstanceSpec {
            workspace_id: WorkspaceId::from(uuid::Uuid::new_v4()),
            generation: Generation(1),
            image: Some(self.image.clone()),
            command: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
        })
    }

    fn name(&self, id: WorkspaceId) -> String {
        self.provider.container_name(id)
    }

    /// `docker inspect` of the workspace's container.
    fn inspect(&self, id: WorkspaceId) -> Value {
        inspect(&self.name(id)).expect("the container exists")
    }

    /// A container made by hand with the workspace's name, running the test image (started
    /// when `running`). Returns its id.
    fn by_hand(&self, id: WorkspaceId, labels: &[(&str, &str)], running: bool) -> String {
        self.by_hand_named(&self.name(id), labels, running)
    }

    /// Like `by_hand`, under the container name `name`.
    fn by_hand_named(&self, name: &str, labels: &[(&str, &str)], running: bool) -> String {
        let mut args = vec![if running { "run" } else { "create" }];
        if running {
            args.push("-d");
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain([format!("{TEST_RUN}={}", self.owner)])
            .collect();
        for label in &labels {
            args.extend(["--label", label]);
        }
        args.extend(["--network", "none", "--name", name, &self.image]);
        docker_ok(&args)
    }

    async fn liveness(&self, id: WorkspaceId) -> Liveness {
        self.provider.liveness(id).await.expect("liveness")
    }

    async fn wait_liveness(&self, id: WorkspaceId, wanted: Liveness) {
        let deadline = Instant::now() + BOUND;
        loop {
            let seen = self.liveness(id).await;
            if seen == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workspace {id}: liveness {seen:?}, wanted {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `docker inspect <name>`, or `None` if there is no such container.
fn inspect(name: &str) -> Option<Value> {
    let out = docker(&["inspect", "--type", "container", name]);
    if !out.status.success() {
        return None;
    }
    let mut all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    Some(all.remove(0))
}

/// Test builder of instance specs.
struct Spec(InstanceSpec);

impl Spec {
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

    fn image(mut self, image: Option<&str>) -> Self {
        self.0.image = image.map(str::to_owned);
        self
    }

    fn command(mut self, argv: &[&str]) -> Self {
        self.0.command = Some(argv.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    fn id(&self) -> WorkspaceId {
        self.0.workspace_id
    }
}

#[tokio::test]
async fn a_started_container_is_alive_labelled_and_locked_down() {
    let Some(f) = Fixture::with(DockerConfig {
        memory_bytes: Some(64 << 20),
        pids_limit: Some(64),
        ..DockerConfig::default()
    })
    .await
    else {
        return;
    };
    let spec = f
        .spec()
        .generation(3)
        .env("FOO", "bar")
        .secret("API_KEY", "canary-7d2e");
    f.provider.start(&spec.0).await.expect("start");
    assert_eq!(f.liveness(spec.id()).await, Liveness::Alive(Generation(3)));

    let c = f.inspect(spec.id());
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels[OWNER], f.owner.as_str());
    assert_eq!(labels[WORKSPACE], spec.id().to_string().as_str());
    assert_eq!(labels[GENERATION], "3");
    let env: Vec<&str> = c["Config"]["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"FOO=bar"), "{env:?}");
    assert!(env.contains(&"API_KEY=canary-7d2e"), "{env:?}");
    assert_eq!(c["Config"]["StopTimeout"], 3);

    let host = &c["HostConfig"];
    assert_eq!(host["Privileged"], false);
    assert!(host["Binds"].is_null(), "{}", host["Binds"]);
    assert!(host["Mounts"].is_null(), "{}", host["Mounts"]);
    assert!(
        c["Mounts"].as_array().is_none_or(Vec::is_empty),
        "{}",
        c["Mounts"]
    );
    assert!(host["Devices"].as_array().is_none_or(Vec::is_empty));
    assert!(host["CapAdd"].is_null(), "{}", host["CapAdd"]);
    assert_eq!(host["NetworkMode"], "none");
    assert_ne!(host["PidMode"], "host");
    assert_ne!(host["IpcMode"], "host");
    assert_eq!(host["Init"], true);
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["PidsLimit"], 64);

    assert!(!format!("{:?}", f.provider).contains("canary"));
    assert!(!format!("{:?}", spec.0).contains("canary"));
}

#[tokio::test]
async fn stop_and_remove_are_idempotent_and_a_stopped_instance_is_replaced_on_start() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec();
    let id = spec.id();
    // Nothing there yet: every operation succeeds.
    assert_eq!(f.liveness(id).await, Liveness::Absent);
    f.provider.stop(id).await.expect("stop of nothing");
    f.provider.remove(id).await.expect("remove of nothing");
    f.provider.kill(id).await.expect("kill of nothing");

    f.provider.start(&spec.0).await.expect("start");
    let started = Instant::now();
    f.provider.stop(id).await.expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the sleeper stops on SIGTERM, before the stop timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(f.liveness(id).await, Liveness::Dead(Generation(1)));
    assert_eq!(f.inspect(id)["State"]["Status"], "exited");
    f.provider.stop(id).await.expect("second stop");
    assert_eq!(f.liveness(id).await, Liveness::Dead(Generation(1)));

    // The next generation replaces the stopped container, which holds the name.
    let next = Spec(spec.0.clone()).generation(2);
    f.provider.start(&next.0).await.expect("restart");
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(2)));

    f.provider.remove(id).await.expect("remove");
    assert_eq!(f.liveness(id).await, Liveness::Absent);
    assert!(inspect(&f.name(id)).is_none());
    f.provider.remove(id).await.expect("second remove");
    f.provider.stop(id).await.expect("stop after remove");
}

/// `remove` takes every container of ours labelled with the workspace, whatever its name, and
/// never one that is not ours, whatever its name.
#[tokio::test]
async fn remove_takes_every_container_of_ours_and_nothing_else() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec();
    let id = spec.id();
    let workspace = id.to_string();
    let ours = [(OWNER, f.owner.as_str()), (WORKSPACE, workspace.as_str())];

    // The container it started, and a leftover of ours under another name.
    f.provider.start(&spec.0).await.expect("start");
    let started = f.inspect(id)["Id"].as_str().expect("id").to_owned();
    let other_name = format!("{}-old", f.name(id));
    let leftover = f.by_hand_named(&other_name, &ours, true);
    f.provider.remove(id).await.expect("remove");
    assert!(inspect(&started).is_none(), "the started container is gone");
    assert!(inspect(&leftover).is_none(), "and so is the leftover");

    // The container it started was removed behind its back, and another of ours holds the
    // name: that one is removed all the same.
    let next = Spec(spec.0.clone()).generation(2);
    f.provider.start(&next.0).await.expect("start again");
    let started = f.inspect(id)["Id"].as_str().expect("id").to_owned();
    docker_ok(&["rm", "-f", &started]);
    let replacement = f.by_hand(id, &ours, true);
    f.provider
        .remove(id)
        .await
        .expect("remove after a removal by hand");
    assert!(
        inspect(&replacement).is_none(),
        "the container of ours is gone"
    );
    assert_eq!(f.liveness(id).await, Liveness::Absent);

    // The container it started is removed by hand, and a container that is not ours is then
    // named after its id (the engine reads an id it no longer knows as a name): never touched.
    let third = Spec(spec.0.clone()).generation(3);
    f.provider
        .start(&third.0)
        .await
        .expect("start a third time");
    let started = f.inspect(id)["Id"].as_str().expect("id").to_owned();
    docker_ok(&["rm", "-f", &started]);
    let impostor = f.by_hand_named(&started, &[], true);
    f.provider
        .remove(id)
        .await
        .expect("remove: nothing of ours");
    assert!(
        inspect(&impostor).is_some(),
        "a container named after the id of a removed one is not ours to remove"
    );
    docker_ok(&["rm", "-f", &impostor]);

    // Same, but the container now holding the name is not ours: it is never touched.
    let fourth = Spec(spec.0.clone()).generation(4);
    f.provider
        .start(&fourth.0)
        .await
        .expect("start a fourth time");
    let started = f.inspect(id)["Id"].as_str().expect("id").to_owned();
    docker_ok(&["rm", "-f", &started]);
    let foreign = f.by_hand(id, &[(WORKSPACE, workspace.as_str())], true);
    f.provider
        .remove(id)
        .await
        .expect("remove: nothing of ours");
    let after = inspect(&foreign).expect("the foreign container is still there");
    assert_eq!(after["State"]["Running"], true, "and still running");
}

#[tokio::test]
async fn a_missing_image_is_an_invalid_spec_at_once() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec().image(Some("steward-test-absent:never-built"));
    let started = Instant::now();
    let error = f.provider.start(&spec.0).await.expect_err("no such image");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let ProviderError::InvalidSpec(message) = &error else {
        panic!("wanted InvalidSpec, got {error:?}");
    };
    assert!(
        message.contains("steward-test-absent:never-built") && message.contains("not present"),
        "{message}"
    );
    assert_eq!(f.liveness(spec.id()).await, Liveness::Absent);

    let none = f.spec().image(None);
    let error = f.provider.start(&none.0).await.expect_err("no image");
    assert!(
        matches!(&error, ProviderError::InvalidSpec(m) if m == "image is required"),
        "{error:?}"
    );
}

/// A start the engine refuses: joining the network of a container that does not run (an
/// operator's `network_mode`; nothing a workspace can choose).
#[tokio::test]
async fn a_container_that_cannot_start_is_removed() {
    if !engine_available() {
        return;
    }
    let holder = docker_ok(&[
        "create",
        "--label",
        &format!("{TEST_RUN}=net-holder"),
        "--network",
        "none",
        test_image(),
    ]);
    let _holder = Cleanup::containers(vec![holder.clone()]);
    let Some(f) = Fixture::with(DockerConfig {
        network_mode: format!("container:{holder}"),
        ..DockerConfig::default()
    })
    .await
    else {
        return;
    };
    let spec = f.spec();
    let error = f.provider.start(&spec.0).await.expect_err("cannot start");
    assert!(
        error.to_string().contains("non running container"),
        "{error}"
    );
    assert_eq!(f.liveness(spec.id()).await, Liveness::Absent);
    assert!(
        inspect(&f.name(spec.id())).is_none(),
        "the created container is removed"
    );
}

/// With `init`, the engine's init process starts and then fails to run a program that is not
/// in the image: the start succeeds and the instance is dead at once.
#[tokio::test]
async fn a_program_missing_from_the_image_makes_a_dead_instance() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec().command(&["/no-such-program"]);
    f.provider.start(&spec.0).await.expect("init starts");
    f.wait_liveness(spec.id(), Liveness::Dead(Generation(1)))
        .await;
    assert_eq!(f.inspect(spec.id())["State"]["ExitCode"], 127);
}

#[tokio::test]
async fn a_leftover_container_of_ours_is_replaced() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec().generation(5);
    let id = spec.id();
    let workspace = id.to_string();
    // A running leftover of an earlier generation (a daemon that crashed mid-cycle).
    let leftover = f.by_hand(
        id,
        &[
            (OWNER, &f.owner),
            (WORKSPACE, &workspace),
            (GENERATION, "4"),
        ],
        true,
    );
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(4)));

    f.provider
        .start(&spec.0)
        .await
        .expect("start over a leftover");
    assert_eq!(f.liveness(id).await, Liveness::Alive(Generation(5)));
    let now = f.inspect(id);
    assert_ne!(now["Id"], leftover.as_str(), "a new container");
    assert_eq!(now["Config"]["Labels"][GENERATION], "5");

    // A leftover without a generation label reads as generation 0, and is replaced too.
    let other = f.spec().generation(2);
    f.by_hand(other.id(), &[(OWNER, &f.owner)], false);
    assert_eq!(
        f.liveness(other.id()).await,
        Liveness::Booting(Generation(0))
    );
    f.provider
        .start(&other.0)
        .await
        .expect("start over a created leftover");
    assert_eq!(f.liveness(other.id()).await, Liveness::Alive(Generation(2)));
}

#[tokio::test]
async fn a_foreign_container_with_our_name_is_never_touched() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec();
    let id = spec.id();
    let foreign = f.by_hand(id, &[(WORKSPACE, &id.to_string())], true);

    let error = f.provider.start(&spec.0).await.expect_err("name taken");
    let ProviderError::Engine(message) = &error else {
        panic!("wanted Engine, got {error:?}");
    };
    assert!(
        message.contains(&f.name(id)) && message.contains("not labelled"),
        "{message}"
    );
    assert_eq!(f.liveness(id).await, Liveness::Absent, "not ours");
    f.provider.kill(id).await.expect("kill: nothing of ours");
    f.provider.stop(id).await.expect("stop: nothing of ours");
    f.provider
        .remove(id)
        .await
        .expect("remove: nothing of ours");
    assert!(f.provider.list().await.expect("list").is_empty());

    let after = inspect(&f.name(id)).expect("the foreign container is still there");
    assert_eq!(after["Id"], foreign.as_str());
    assert_eq!(after["State"]["Running"], true, "and still running");
}

#[tokio::test]
async fn list_returns_only_containers_of_our_owner() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let a = f.spec().generation(1);
    let b = f.spec().generation(7);
    f.provider.start(&a.0).await.expect("start a");
    f.provider.start(&b.0).await.expect("start b");
    f.provider.stop(a.id()).await.expect("stop a");
    // Another daemon's container, labelled like ours but for another owner.
    let other_owner = format!("{}-other", f.owner);
    let stranger = f.spec();
    f.by_hand(
        stranger.id(),
        &[
            (OWNER, &other_owner),
            (WORKSPACE, &stranger.id().to_string()),
            (GENERATION, "1"),
        ],
        true,
    );

    let mut listed: Vec<(WorkspaceId, Liveness)> = f
        .provider
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.workspace_id, s.liveness))
        .collect();
    listed.sort_by_key(|(id, _)| *id);
    let mut wanted = vec![
        (a.id(), Liveness::Dead(Generation(1))),
        (b.id(), Liveness::Alive(Generation(7))),
    ];
    wanted.sort_by_key(|(id, _)| *id);
    assert_eq!(listed, wanted);
}

#[tokio::test]
async fn a_killed_container_is_dead_and_its_death_is_reported() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let mut deaths = f.provider.deaths().expect("docker reports deaths");
    let spec = f.spec().generation(9);
    let id = spec.id();
    f.provider.start(&spec.0).await.expect("start");
    f.provider.kill(id).await.expect("kill");
    f.wait_liveness(id, Liveness::Dead(Generation(9))).await;
    assert_eq!(f.inspect(id)["State"]["ExitCode"], 137, "SIGKILL");

    let death = tokio::time::timeout(BOUND, deaths.recv())
        .await
        .expect("a death within the bound")
        .expect("the stream is open");
    assert_eq!(
        death,
        InstanceDeath {
            workspace_id: id,
            generation: Generation(9)
        }
    );
    // Killing a dead container is fine.
    f.provider.kill(id).await.expect("second kill");
}

#[tokio::test]
async fn deaths_the_provider_causes_itself_are_not_reported() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let mut deaths = f.provider.deaths().expect("docker reports deaths");
    let stopped = f.spec().generation(1);
    let killed = f.spec().generation(2);
    f.provider.start(&stopped.0).await.expect("start");
    f.provider.start(&killed.0).await.expect("start");
    // A stop and a remove are Steward's own doing; the kill stands for a crash. The stop's
    // death comes first in the engine's log, so if it were reported it would come first here.
    f.provider.stop(stopped.id()).await.expect("stop");
    f.provider.remove(stopped.id()).await.expect("remove");
    f.provider.kill(killed.id()).await.expect("kill");
    let death = tokio::time::timeout(BOUND, deaths.recv())
        .await
        .expect("a death within the bound")
        .expect("the stream is open");
    assert_eq!(
        death.workspace_id,
        killed.id(),
        "only the crash is reported"
    );
}

#[tokio::test]
async fn starts_queue_behind_the_concurrency_cap_and_all_succeed() {
    let Some(f) = Fixture::with(DockerConfig {
        max_concurrent_ops: 1,
        ..DockerConfig::default()
    })
    .await
    else {
        return;
    };
    let specs: Vec<Spec> = (0..5).map(|_| f.spec()).collect();
    let results = join_all(specs.iter().map(|s| f.provider.start(&s.0))).await;
    for (spec, result) in specs.iter().zip(results) {
        result.unwrap_or_else(|e| panic!("start of {}: {e}", spec.id()));
        assert_eq!(f.liveness(spec.id()).await, Liveness::Alive(Generation(1)));
    }
    let listed: BTreeSet<WorkspaceId> = f
        .provider
        .list()
        .await
        .expect("list")
        .iter()
        .map(|s| s.workspace_id)
        .collect();
    assert_eq!(listed, specs.iter().map(Spec::id).collect());
}

/// A provider on a socket that does not exist: connects, and every operation fails fast.
#[tokio::test]
async fn an_unreachable_engine_fails_operations_quickly() {
    let socket = PathBuf::from(format!("/nonexistent-{}/docker.sock", uuid::Uuid::new_v4()));
    let provider = DockerProvider::connect(
        "docker",
        DockerConfig {
            socket: socket.clone(),
            ..DockerConfig::default()
        },
    )
    .await
    .expect("connect does not need the engine");
    assert!(provider.deaths().is_some());
    let id = WorkspaceId::from(uuid::Uuid::new_v4());
    let spec = InstanceSpec {
        workspace_id: id,
        generation: Generation(1),
        image: Some("anything:1".to_owned()),
        command: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    let started = Instant::now();
    let errors = [
        provider.start(&spec).await.err(),
        provider.stop(id).await.err(),
        provider.remove(id).await.err(),
        provider.kill(id).await.err(),
        provider.liveness(id).await.err(),
        provider.list().await.err(),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for error in errors {
        let error = error.expect("an error");
        assert!(
            matches!(&error, ProviderError::Engine(m)
                if m.starts_with(&format!("docker engine unreachable at {}", socket.display()))),
            "{error:?}"
        );
    }
}

/// The engine appears after the provider was made (a symlink to the real socket): the
/// operations and the death stream pick it up without a new provider.
#[tokio::test]
async fn an_engine_that_comes_back_is_used_again() {
    if !engine_available() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().expect("socket directory");
    let socket = dir.path().join("docker.sock");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let owner = format!("steward-test-{}", &run[..12]);
    let provider = DockerProvider::connect(
        "docker",
        DockerConfig {
            socket: socket.clone(),
            owner: owner.clone(),
            name_prefix: format!("stt-{}-", &run[..8]),
            network_mode: "none".to_owned(),
            ..DockerConfig::default()
        },
    )
    .await
    .expect("connect");
    let _guard = Cleanup::run(&owner);
    let mut deaths = provider.deaths().expect("deaths");
    let error = provider.list().await.expect_err("no engine yet");
    assert!(error.to_string().contains("unreachable"), "{error}");

    std::os::unix::fs::symlink(Path::new("/var/run/docker.sock"), &socket).expect("symlink");
    assert_eq!(provider.list().await.expect("list").len(), 0);
    let spec = InstanceSpec {
        workspace_id: WorkspaceId::from(uuid::Uuid::new_v4()),
        generation: Generation(2),
        image: Some(image.to_owned()),
        command: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    provider.start(&spec).await.expect("start");
    provider.kill(spec.workspace_id).await.expect("kill");
    let death = tokio::time::timeout(BOUND + Duration::from_secs(30), deaths.recv())
        .await
        .expect("the event follower reconnects and reports the death")
        .expect("open");
    assert_eq!(death.workspace_id, spec.workspace_id);
    assert_eq!(death.generation, Generation(2));
}

/// Removes containers when dropped, whether the test passed or not.
enum Cleanup {
    /// Every container of a test run: ours (owner label) and those made by hand (test-run
    /// label).
    Run(String),
    /// These containers.
    Containers(Vec<String>),
}

impl Cleanup {
    fn run(owner: &str) -> Self {
        Self::Run(owner.to_owned())
    }

    fn containers(ids: Vec<String>) -> Self {
        Self::Containers(ids)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = match self {
            Cleanup::Containers(ids) => ids.clone(),
            Cleanup::Run(owner) => [OWNER, TEST_RUN]
                .iter()
                .flat_map(|label| {
                    let filter = format!("label={label}={owner}");
                    let out = docker(&["ps", "-aq", "--filter", &filter]);
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// The image's `sleeper talk` prints a line on stdout and one on stderr, then `tick N` on each
/// SIGUSR1: the container's log, from the engine, with its times, tail, follow, and what a
/// stopped container still has.
#[tokio::test]
async fn the_containers_log_is_read_followed_and_kept_while_it_is_stopped() {
    use futures::StreamExt;
    let Some(f) = Fixture::new().await else {
        return;
    };
    let spec = f.spec().command(&["/sleeper", "talk"]);
    let id = spec.id();
    let texts = |lines: &[LogLine]| lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
    let read = |query: LogQuery| {
        let provider = &f.provider;
        async move {
            let lines: Vec<LogLine> = provider
                .logs(id, query)
                .await
                .expect("logs")
                .collect()
                .await;
            lines
        }
    };
    assert!(
        read(LogQuery::default()).await.is_empty(),
        "no container: no output"
    );
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    f.provider.start(&spec.0).await.expect("start");
    let deadline = Instant::now() + BOUND;
    let all = loop {
        let all = read(LogQuery::default()).await;
        if all.len() == 2 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "the first lines never came: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(texts(&all), ["hello on stdout", "hello on stderr"]);
    assert!(all
        .iter()
        .all(|l| l.at >= before && l.generation == Generation(1)));
    let tail = LogQuery {
        tail: Some(1),
        ..LogQuery::default()
    };
    assert_eq!(texts(&read(tail).await), ["hello on stderr"]);
    let later = LogQuery {
        since: Some(all[1].at + Duration::from_nanos(1)),
        ..LogQuery::default()
    };
    assert!(
        read(later).await.is_empty(),
        "since is exact, not whole seconds"
    );

    let follow = LogQuery {
        follow: true,
        tail: Some(0),
        ..LogQuery::default()
    };
    let mut stream = f.provider.logs(id, follow).await.expect("follow");
    for n in 1..=2 {
        docker_ok(&["kill", "--signal", "USR1", &f.name(id)]);
        let line = tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("a followed line within the bound")
            .expect("a line");
        assert_eq!(line.text, format!("tick {n}"));
    }
    // Stopped: the stream ends, and the last output is still there.
    f.provider.stop(id).await.expect("stop");
    let rest: Vec<LogLine> = tokio::time::timeout(BOUND, stream.collect())
        .await
        .expect("the followed log ends with the container");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        texts(&read(LogQuery::default()).await),
        ["hello on stdout", "hello on stderr", "tick 1", "tick 2"]
    );
    // Another generation's output is not the engine's to give.
    let other = LogQuery {
        generation: Some(Generation(7)),
        ..LogQuery::default()
    };
    assert!(matches!(
        f.provider.logs(id, other).await,
        Err(ProviderError::OutputGone(_))
    ));
    f.provider.remove(id).await.expect("remove");
    assert!(read(LogQuery::default()).await.is_empty());
}
