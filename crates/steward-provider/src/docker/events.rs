//! Following the engine's event stream for deaths of our containers.
//!
//! One background task per engine (see `host.rs`) subscribes to `die` events of containers
//! carrying our owner label, and publishes each as an [`InstanceDeath`], unless the provider
//! caused it itself ([`Quiet`]). When the stream breaks (the engine restarts, the socket goes away) it
//! reconnects with backoff, asking the engine to replay what happened since the last event it
//! saw, so a short break loses nothing the engine still remembers. The first subscription
//! replays from the moment the provider was created: a death between `connect` and the stream
//! opening is not lost either. It never panics; it ends when the provider is dropped.
//!
//! Probes remain the fallback: deaths the engine forgot (it keeps a bounded, in-memory log)
//! are found by them.

use super::engine::Engine;
use super::labels;
use crate::InstanceDeath;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use steward_domain::WorkspaceId;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

/// First and longest pause before reconnecting a broken stream.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stream that stayed up this long was healthy: the next break starts the backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// The task's inputs.
pub(super) struct Follower {
    /// The engine to follow.
    pub(super) engine: Arc<Engine>,
    /// Value of our owner label.
    pub(super) owner: String,
    /// Where deaths are published.
    pub(super) deaths: broadcast::Sender<InstanceDeath>,
    /// Ends the task when the provider (which holds the sender) is dropped.
    pub(super) stop: oneshot::Receiver<()>,
    /// Deaths the provider causes itself.
    pub(super) quiet: Arc<Quiet>,
}

/// Containers this provider is stopping or removing itself: their deaths are its own doing,
/// not crashes, and are not reported (they would count as dropped health restarts).
#[derive(Debug, Default)]
pub(super) struct Quiet(dashmap::DashMap<String, Instant>);

impl Quiet {
    /// How long a mark waits for its container's death.
    const FOR: Duration = Duration::from_secs(60);

    /// The death of container `id` that is about to follow is expected.
    pub(super) fn expect(&self, id: &str) {
        self.0.retain(|_, at| at.elapsed() < Self::FOR);
        self.0.insert(id.to_owned(), Instant::now());
    }

    /// Whether the death of container `id` was expected (consumes the mark).
    fn expected(&self, id: &str) -> bool {
        self.0
            .remove(id)
            .is_some_and(|(_, at)| at.elapsed() < Self::FOR)
    }
}

/// Position in the engine's event log: the last event seen, to resume after it.
#[derive(Debug, Default)]
struct Cursor {
    /// Unix time of the last event, in nanoseconds.
    at_nanos: i64,
    /// Containers whose event at exactly `at_nanos` was already published (a replay from
    /// `at_nanos` repeats them).
    ids_at: Vec<String>,
}

impl Cursor {
    fn starting_now() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            at_nanos: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
            ids_at: Vec::new(),
        }
    }

    /// The `since` parameter: seconds with a fractional part, as the engine accepts it.
    fn since(&self) -> String {
        let nanos = self.at_nanos.max(0);
        format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
    }

    /// Whether the event is new; records it if so.
    fn advance(&mut self, at_nanos: i64, id: &str) -> bool {
        if at_nanos < self.at_nanos
            || (at_nanos == self.at_nanos && self.ids_at.iter().any(|i| i == id))
        {
            return false;
        }
        if at_nanos > self.at_nanos {
            self.at_nanos = at_nanos;
            self.ids_at.clear();
        }
        self.ids_at.push(id.to_owned());
        true
    }
}

impl Follower {
    /// Runs until the provider is dropped.
    pub(super) async fn run(self) {
        let Follower {
            engine,
            owner,
            deaths,
            stop,
            quiet,
        } = self;
        tokio::select! {
            _ = stop => {}
            () = follow(&engine, &owner, &deaths, &quiet) => {}
        }
        tracing::debug!(owner, "docker event follower stopped");
    }
}

/// Follows the stream forever, reconnecting with backoff.
async fn follow(
    engine: &Engine,
    owner: &str,
    deaths: &broadcast::Sender<InstanceDeath>,
    quiet: &Quiet,
) {
    let mut cursor = Cursor::starting_now();
    let mut backoff = BACKOFF_MIN;
    let mut failures: u32 = 0;
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["die".to_owned()]),
        (
            "label".to_owned(),
            vec![format!("{}={owner}", labels::OWNER)],
        ),
    ]);
    loop {
        let opened = Instant::now();
        let broke = match engine.client_for_stream().await {
            Err(failure) => engine.error(failure, "following docker events").to_string(),
            Ok(docker) => {
                let options = EventsOptions {
                    since: Some(cursor.since()),
                    until: None,
                    filters: Some(filters.clone()),
                };
                let mut stream = docker.events(Some(options));
                let mut announced = false;
                loop {
                    match stream.next().await {
                        Some(Ok(event)) => {
                            if !announced {
                                announced = true;
                                failures = 0;
                                backoff = BACKOFF_MIN;
                            }
                            publish(event, owner, &mut cursor, deaths, quiet);
                        }
                        Some(Err(error)) => {
                            break engine
                                .error(engine.classify(error), "following docker events")
                                .to_string()
                        }
                        None => break "the engine closed the event stream".to_owned(),
                    }
                }
            }
        };
        if opened.elapsed() >= HEALTHY_AFTER {
            failures = 0;
            backoff = BACKOFF_MIN;
        }
        failures += 1;
        // The first break is worth a warning; an engine that stays down is not worth one
        // every few seconds.
        if failures == 1 {
            tracing::warn!(owner, error = %broke, retry_in_ms = backoff.as_millis() as u64, "docker event stream broken; reconnecting");
        } else {
            tracing::debug!(owner, error = %broke, failures, retry_in_ms = backoff.as_millis() as u64, "docker event stream still broken");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Publishes a `die` event of one of our containers as a death, once.
fn publish(
    event: EventMessage,
    owner: &str,
    cursor: &mut Cursor,
    deaths: &broadcast::Sender<InstanceDeath>,
    quiet: &Quiet,
) {
    if event.typ != Some(EventMessageTypeEnum::CONTAINER) || event.action.as_deref() != Some("die")
    {
        return;
    }
    let actor = event.actor.unwrap_or_default();
    let id = actor.id.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    if attributes.get(labels::OWNER).map(String::as_str) != Some(owner) {
        return;
    }
    let at_nanos = event
        .time_nano
        .or(event.time.map(|s| s.saturating_mul(1_000_000_000)))
        .unwrap_or(0);
    if !cursor.advance(at_nanos, &id) || quiet.expected(&id) {
        return;
    }
    let name = attributes.get("name").map(String::as_str).unwrap_or("");
    let Some(workspace_id) = attributes
        .get(labels::WORKSPACE)
        .and_then(|w| w.parse::<WorkspaceId>().ok())
    else {
        tracing::warn!(
            container = name,
            "a container of ours died without a valid workspace label"
        );
        return;
    };
    let generation = labels::generation(&attributes);
    let exit_code = attributes.get("exitCode").map(String::as_str).unwrap_or("");
    tracing::info!(workspace = %workspace_id, %generation, container = name, exit_code, "instance container died");
    // No receiver is fine: nobody listens yet, probes will see it.
    let _ = deaths.send(InstanceDeath {
        workspace_id,
        generation,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;
    use steward_domain::Generation;

    fn die(owner: &str, workspace: &str, generation: &str, at: i64, id: &str) -> EventMessage {
        event("die", owner, workspace, generation, at, id)
    }

    fn event(
        action: &str,
        owner: &str,
        workspace: &str,
        generation: &str,
        at: i64,
        id: &str,
    ) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: Some(HashMap::from([
                    (labels::OWNER.to_owned(), owner.to_owned()),
                    (labels::WORKSPACE.to_owned(), workspace.to_owned()),
                    (labels::GENERATION.to_owned(), generation.to_owned()),
                ])),
            }),
            time_nano: Some(at),
            ..EventMessage::default()
        }
    }

    #[test]
    fn die_events_of_ours_become_deaths_once() {
        let (tx, mut rx) = broadcast::channel(8);
        let mut cursor = Cursor::default();
        let ws = uuid::Uuid::new_v4();
        publish(
            die("me", &ws.to_string(), "4", 10, "a"),
            "me",
            &mut cursor,
            &tx,
            &Quiet::default(),
        );
        // A replay repeats it; another owner's and a malformed one are ignored.
        publish(
            die("me", &ws.to_string(), "4", 10, "a"),
            "me",
            &mut cursor,
            &tx,
            &Quiet::default(),
        );
        publish(
            die("other", &ws.to_string(), "4", 11, "b"),
            "me",
            &mut cursor,
            &tx,
            &Quiet::default(),
        );
        publish(
            die("me", "not-a-uuid", "4", 12, "c"),
            "me",
            &mut cursor,
            &tx,
            &Quiet::default(),
        );
        // Same instant, another container: new.
        publish(
            die("me", &ws.to_string(), "5", 12, "d"),
            "me",
            &mut cursor,
            &tx,
            &Quiet::default(),
        );
        let got: Vec<InstanceDeath> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let workspace_id = WorkspaceId::from(ws);
        assert_eq!(
            got,
            [
                InstanceDeath {
                    workspace_id,
                    generation: Generation(4)
                },
                InstanceDeath {
                    workspace_id,
                    generation: Generation(5)
                },
            ]
        );
    }

    #[test]
    fn since_is_seconds_with_nanoseconds() {
        let cursor = Cursor {
            at_nanos: 1_700_000_000_000_000_042,
            ids_at: Vec::new(),
        };
        assert_eq!(cursor.since(), "1700000000.000000042");
    }
}
