//! Docker helpers shared by the tests that run the daemon against the real engine: a
//! per-test owner label (whose containers are removed when it is dropped), the engine and
//! image check that fails loudly under CI, and a watch on the engine's event stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerCreateBody, EventMessage};
use bollard::query_parameters::{CreateContainerOptions, EventsOptions, RemoveContainerOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::eventually;

/// The engine's socket.
const SOCKET: &str = "/var/run/docker.sock";
/// The label that makes a container one daemon's.
const OWNER_LABEL: &str = "io.steward.owner";
/// The label naming a container's workspace.
const WORKSPACE_LABEL: &str = "io.steward.workspace";
/// The label of [`ContainerWatch::caught_up`]'s markers.
const MARKER_LABEL: &str = "io.steward.test-marker";

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

/// What the engine's event stream said about one owner's containers.
#[derive(Default)]
struct Seen {
    /// Container id → workspace, for the containers that run now.
    running: HashMap<String, String>,
    /// Workspace → the most of its containers that ran at once.
    most: BTreeMap<String, usize>,
    /// Every lifecycle event, in order, as `workspace action container`.
    log: Vec<String>,
    /// The markers seen (see [`ContainerWatch::caught_up`]).
    markers: HashSet<String>,
    /// Why the stream ended, if it did.
    ended: Option<String>,
}

/// Follows the engine's event stream for one owner's containers and records, per workspace,
/// each container's `create`, `start`, `die` and `destroy`, and the most containers of one
/// workspace that ran at once — every moment the engine saw, not samples of `docker ps`.
///
/// Start it before the daemon creates any container of the owner: it counts from an empty
/// state (events from its start time on are replayed by the engine, so the moment the stream
/// is established does not matter).
pub struct ContainerWatch {
    owner: String,
    docker: Docker,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl ContainerWatch {
    /// Starts following the events of `owner`'s containers.
    pub fn start(owner: &Owner) -> ContainerWatch {
        let docker = Docker::connect_with_unix(SOCKET, 120, API_DEFAULT_VERSION)
            .expect("connect to the Docker engine");
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                (
                    "label".to_owned(),
                    vec![format!("{OWNER_LABEL}={}", owner.0)],
                ),
            ])),
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut stream = docker.events(Some(options));
        let recorder = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let ended = loop {
                match stream.next().await {
                    Some(Ok(event)) => record(&recorder, event),
                    Some(Err(e)) => break format!("the event stream failed: {e}"),
                    None => break "the engine closed the event stream".to_owned(),
                }
            };
            recorder.lock().expect("watch state").ended = Some(ended);
        });
        ContainerWatch {
            owner: owner.0.clone(),
            docker,
            seen,
            task,
        }
    }

    /// Returns once every event the engine emitted before this call has been recorded: it
    /// creates a marker container of the owner (never started) and waits for its `create`
    /// event, which the engine delivers after every earlier one; then removes it.
    pub async fn caught_up(&self) {
        let marker = uuid::Uuid::new_v4().simple().to_string();
        let body = ContainerCreateBody {
            image: Some(IMAGE.to_owned()),
            labels: Some(HashMap::from([
                (OWNER_LABEL.to_owned(), self.owner.clone()),
                (MARKER_LABEL.to_owned(), marker.clone()),
            ])),
            ..ContainerCreateBody::default()
        };
        let name = format!("{}-marker-{marker}", self.owner);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..CreateContainerOptions::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .expect("create the marker container");
        eventually(Duration::from_secs(30), "the marker's create event", || {
            let seen = self.seen.lock().expect("watch state");
            let result = if seen.markers.contains(&marker) {
                Ok(())
            } else if let Some(ended) = &seen.ended {
                Err(format!("the watch ended: {ended}"))
            } else {
                Err(format!("{} events so far", seen.log.len()))
            };
            std::future::ready(result)
        })
        .await;
        let remove = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        // The daemon may have swept it already (ours, no workspace): gone is gone.
        let _ = self.docker.remove_container(&name, Some(remove)).await;
    }

    /// Workspace → the most of its containers that ran at once, up to now.
    pub async fn most_running(&self) -> BTreeMap<String, usize> {
        self.caught_up().await;
        self.seen.lock().expect("watch state").most.clone()
    }

    /// Asserts that no workspace ever had two containers running at once, up to now, and
    /// that the watch saw `workspace` run at all (a watch that saw nothing proves nothing).
    pub async fn assert_never_two_running(&self, workspace: &str) {
        let most = self.most_running().await;
        let seen = self.seen.lock().expect("watch state");
        let log = seen.log.join("\n");
        assert!(
            most.get(workspace).is_some_and(|n| *n >= 1),
            "the watch never saw a container of {workspace} run; events:\n{log}"
        );
        for (id, n) in &most {
            assert!(
                *n <= 1,
                "{n} containers of workspace {id} ran at once; events:\n{log}"
            );
        }
    }
}

impl Drop for ContainerWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(seen: &Mutex<Seen>, event: EventMessage) {
    let actor = event.actor.unwrap_or_default();
    let container = actor.id.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    let action = event.action.unwrap_or_default();
    let mut seen = seen.lock().expect("watch state");
    if let Some(marker) = attributes.get(MARKER_LABEL) {
        seen.markers.insert(marker.clone());
        return;
    }
    let Some(workspace) = attributes.get(WORKSPACE_LABEL).cloned() else {
        return;
    };
    match action.as_str() {
        "start" => {
            seen.running.insert(container.clone(), workspace.clone());
        }
        "die" | "destroy" => {
            seen.running.remove(&container);
        }
        "create" => {}
        _ => return,
    }
    let short = &container[..container.len().min(12)];
    seen.log.push(format!("{workspace} {action} {short}"));
    let now = seen.running.values().filter(|w| **w == workspace).count();
    let most = seen.most.entry(workspace).or_default();
    *most = (*most).max(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, container: &str, labels: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(container.to_owned()),
                attributes: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            ..EventMessage::default()
        }
    }

    fn play(events: &[(&str, &str, &str)]) -> Seen {
        let seen = Mutex::new(Seen::default());
        for (action, container, workspace) in events {
            record(
                &seen,
                event(action, container, &[(WORKSPACE_LABEL, workspace)]),
            );
        }
        seen.into_inner().expect("watch state")
    }

    #[test]
    fn a_replacement_after_the_death_is_one_at_a_time() {
        let seen = play(&[
            ("create", "a", "w"),
            ("start", "a", "w"),
            ("die", "a", "w"),
            ("destroy", "a", "w"),
            ("create", "b", "w"),
            ("start", "b", "w"),
        ]);
        assert_eq!(seen.most["w"], 1);
        assert_eq!(seen.log.len(), 6);
    }

    #[test]
    fn a_start_before_the_previous_death_is_two_at_once() {
        let seen = play(&[
            ("start", "a", "w"),
            ("start", "c", "other"),
            ("start", "b", "w"),
            ("die", "a", "w"),
        ]);
        assert_eq!(seen.most["w"], 2);
        assert_eq!(seen.most["other"], 1, "counted per workspace");
    }

    #[test]
    fn markers_are_noted_not_counted() {
        let seen = Mutex::new(Seen::default());
        record(&seen, event("create", "m", &[(MARKER_LABEL, "x1")]));
        let seen = seen.into_inner().expect("watch state");
        assert!(seen.markers.contains("x1") && seen.most.is_empty());
    }
}
