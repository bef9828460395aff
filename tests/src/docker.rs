//! Docker helpers shared by the tests that run the daemon against the real engine: a
//! per-test owner label (whose containers are removed when it is dropped) and the engine and
//! image check that fails loudly under CI.

use std::process::Command;

/// The local agent image `make image` builds.
pub const IMAGE: &str = "steward-agent:dev";

/// Runs `docker` with `args`; returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `docker` with `args`, which must succeed (a test step, not an observation).
pub fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether the engine and the agent image are there; fails loudly under CI.
pub fn engine_ready() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let image = up && !docker(&["images", "-q", IMAGE]).is_empty();
    if up && image {
        return true;
    }
    let why = if up {
        format!("image {IMAGE} missing: run `make image`")
    } else {
        "no Docker engine".to_owned()
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "docker tests cannot run under CI: {why}"
    );
    eprintln!("skipping docker test: {why}");
    false
}

/// A per-test owner; removes every container carrying it when dropped.
pub struct Owner(pub String);

impl Owner {
    /// A fresh owner label, unique to this test.
    pub fn new() -> Self {
        Self(format!(
            "steward-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
    }

    /// The `docker ps` filter of this owner's containers.
    pub fn filter(&self) -> String {
        format!("label=io.steward.owner={}", self.0)
    }

    /// Containers of ours as `name state` lines (`all`: stopped ones too).
    pub fn containers(&self, all: bool) -> Vec<String> {
        let filter = self.filter();
        let mut args = vec![
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Names}} {{.State}}",
        ];
        if all {
            args.push("-a");
        }
        docker(&args).lines().map(str::to_owned).collect()
    }

    /// How many containers of this owner run.
    pub fn running(&self) -> usize {
        self.containers(false).len()
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &self.filter()]);
        for id in ids.lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

impl Default for Owner {
    fn default() -> Self {
        Self::new()
    }
}

impl Owner {
    /// Running containers of workspace `id` under this owner.
    pub fn running_of(&self, id: &str) -> usize {
        let workspace = format!("label=io.steward.workspace={id}");
        docker(&[
            "ps",
            "-q",
            "--filter",
            &self.filter(),
            "--filter",
            &workspace,
        ])
        .lines()
        .count()
    }
}
