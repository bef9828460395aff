//! Health restarts without self-fire: probes report, the workspace's machine decides.
//! Windows are wide compared with the probe interval, and every wait is on a condition.

use serde_json::{json, Value};
use std::time::Duration;
use steward_tests::{eventually, generation_of, of_type, summarize, Api, Daemon};

struct Knobs {
    start_delay_ms: u64,
    boot_pending_ms: u64,
    crash_after_ms: u64,
    debounce: &'static str,
    max_failures: u32,
}

fn config(k: &Knobs) -> String {
    format!(
        r#"default_provider = "sim"
[providers.sim]
start_delay = "{start}ms"
stop_delay = "10ms"
boot_pending = "{boot}ms"
crash_after = "{crash}ms"
[restart]
debounce_window = "{debounce}"
settle_window = "0s"
[health]
interval = "50ms"
failure_threshold = 2
[backoff]
initial = "100ms"
max = "5s"
jitter = 0.0
max_failures = {max_failures}
"#,
        start = k.start_delay_ms,
        boot = k.boot_pending_ms,
        crash = k.crash_after_ms,
        debounce = k.debounce,
        max_failures = k.max_failures,
    )
}

async fn actor(api: &Api, id: &str) -> Value {
    api.get(&format!("/v1/admin/actors/{id}")).await.expect(200)
}

fn dropped(actor: &Value, reason: &str) -> u64 {
    actor["counters"]["dropped"]["health"][reason]
        .as_u64()
        .unwrap_or(0)
}

fn health_cycles(events: &[Value]) -> usize {
    of_type(events, "provision_started")
        .into_iter()
        .filter(|e| {
            e["causes"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("health")))
        })
        .count()
}

/// Waits until the probes have reported the instance of the current generation alive.
async fn wait_probed_alive(api: &Api, id: &str) {
    eventually(
        Duration::from_secs(20),
        "a probe to see the instance alive",
        || async {
            let a = actor(api, id).await;
            let alive = a["last_probe"]["report"] == "alive"
                && a["last_probe"]["generation"] == a["generation"]
                && a["cycle"].is_null();
            if alive {
                Ok(())
            } else {
                Err(a.to_string())
            }
        },
    )
    .await;
}

async fn health_cycle_count(api: &Api, id: &str) -> usize {
    health_cycles(&api.events(id).await)
}

async fn wait_health_cycles(api: &Api, id: &str, expected: usize) {
    eventually(Duration::from_secs(20), "the health restarts", || async {
        let n = health_cycle_count(api, id).await;
        if n == expected {
            Ok(())
        } else {
            Err(format!("{n} health cycles, expected {expected}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_secret_write_on_a_booting_cloud_vm_gives_exactly_one_cycle() {
    // The incident: instances look "not running" for 1.5 s after each start, probes run every
    // 50 ms. A config write must not turn into a re-provision loop.
    let knobs = Knobs {
        start_delay_ms: 300,
        boot_pending_ms: 1500,
        crash_after_ms: 0,
        debounce: "200ms",
        max_failures: 5,
    };
    let daemon = Daemon::start(&config(&knobs)).await;
    let api = daemon.client();
    let id = api.create_named("incident").await;
    api.wait_settled(&id).await;
    wait_probed_alive(&api, &id).await;
    let before = api.events(&id).await.len();

    api.put(
        &format!("/v1/workspaces/{id}/secrets/API_KEY"),
        &json!({ "value": "rotated" }),
    )
    .await
    .expect(202);
    api.wait_settled(&id).await;
    wait_probed_alive(&api, &id).await;

    let events = api.events(&id).await;
    let after = &events[before..];
    assert_eq!(
        of_type(after, "provision_started").len(),
        1,
        "exactly one cycle: {}",
        summarize(after)
    );
    assert_eq!(
        health_cycles(&events),
        0,
        "no health restart: {}",
        summarize(after)
    );
    let a = actor(&api, &id).await;
    assert!(
        dropped(&a, "cycle_in_flight") >= 1,
        "reports during the cycle are dropped: {a}"
    );
    assert!(
        dropped(&a, "pending") >= 1,
        "reports while booting are dropped: {a}"
    );
    let recorded = after
        .iter()
        .filter(|e| e["type"] == "restart_dropped")
        .count();
    assert!(
        recorded >= 2,
        "drops are recorded as events: {}",
        summarize(after)
    );
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"steward_restart_dropped_total{cause="health",reason="pending"}"#),
        "drops are counted in metrics:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_drill_restarts_once_then_debounces_then_restarts_again() {
    let knobs = Knobs {
        start_delay_ms: 50,
        boot_pending_ms: 0,
        crash_after_ms: 0,
        debounce: "2s",
        max_failures: 5,
    };
    let daemon = Daemon::start(&config(&knobs)).await;
    let api = daemon.client();
    let id = api.create_named("drill").await;
    api.wait_settled(&id).await;
    api.wait_debounce_passed(&id).await;

    // A death after the window: exactly one health restart, after the threshold.
    api.post_empty(&format!("/v1/admin/workspaces/{id}/kill"))
        .await
        .expect(202);
    wait_health_cycles(&api, &id, 1).await;
    api.wait_settled(&id).await;
    wait_probed_alive(&api, &id).await;

    // A second death inside the new debounce window: dropped, counted, recorded, visible.
    api.post_empty(&format!("/v1/admin/workspaces/{id}/kill"))
        .await
        .expect(202);
    eventually(Duration::from_secs(20), "a debounce drop", || async {
        let a = actor(&api, &id).await;
        if dropped(&a, "debounce") >= 1 {
            Ok(())
        } else {
            Err(a.to_string())
        }
    })
    .await;
    assert_eq!(
        health_cycle_count(&api, &id).await,
        1,
        "the death inside the window was not acted on"
    );
    let events = api.events(&id).await;
    assert!(
        events.iter().any(|e| e["type"] == "restart_dropped"
            && e["reason"] == "debounce"
            && e["cause"] == "health"),
        "{}",
        summarize(&events)
    );
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"steward_restart_dropped_total{cause="health",reason="debounce"}"#),
        "{metrics}"
    );

    // Manual intents are never debounced, even inside the window.
    let reply = api.restart(&id).await;
    assert!(
        reply["outcome"] == "started" || reply["outcome"] == "coalesced",
        "{reply}"
    );
    api.wait_settled(&id).await;
    let events = api.events(&id).await;
    let manual_cycle = of_type(&events, "provision_started").into_iter().any(|e| {
        generation_of(e) >= generation_of(&reply)
            && e["causes"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("manual")))
    });
    assert!(
        manual_cycle,
        "the manual restart ran: {}",
        summarize(&events)
    );

    // After the window, a further death restarts again.
    api.wait_debounce_passed(&id).await;
    api.post_empty(&format!("/v1/admin/workspaces/{id}/kill"))
        .await
        .expect(202);
    wait_health_cycles(&api, &id, 2).await;
    api.wait_settled(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_workspace_backs_off_then_parks_until_a_user_restarts_it() {
    // Every instance dies 100 ms after it starts.
    let knobs = Knobs {
        start_delay_ms: 20,
        boot_pending_ms: 0,
        crash_after_ms: 100,
        debounce: "150ms",
        max_failures: 3,
    };
    let daemon = Daemon::start(&config(&knobs)).await;
    let api = daemon.client();
    let id = api.create_named("crashloop").await;
    let parked = api
        .wait_phase_within(&id, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(parked["failure"]["reason"], "crash_loop", "{parked}");

    let events = api.events(&id).await;
    let delays: Vec<u64> = of_type(&events, "backoff_scheduled")
        .into_iter()
        .map(|e| e["delay_ms"].as_u64().expect("delay_ms"))
        .collect();
    assert!(delays.len() >= 3, "{}", summarize(&events));
    assert!(
        delays.windows(2).all(|w| w[0] < w[1]),
        "backoff delays grow: {delays:?}"
    );
    assert!(health_cycles(&events) >= 3, "{}", summarize(&events));
    let failed_at = events
        .iter()
        .rposition(|e| e["type"] == "failed")
        .expect("failed event");

    // Parked: nothing happens by itself any more…
    let parked_generation = generation_of(&parked);
    // …until a user intent revives it.
    api.restart(&id).await;
    eventually(
        Duration::from_secs(20),
        "the revived workspace to come up",
        || async {
            let events = api.events(&id).await;
            let up = events[failed_at..].iter().any(|e| {
                e["type"] == "provision_succeeded" && generation_of(e) > parked_generation
            });
            if up {
                Ok(())
            } else {
                Err(summarize(&events))
            }
        },
    )
    .await;
}

/// A probe round over more workspaces than one slice of reports (32) hands a report to every
/// one of them: the round is spread over a tenth of the interval, none is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_round_in_slices_reports_on_every_workspace() {
    let daemon = Daemon::start(
        r#"default_provider = "sim"
[providers.sim]
start_delay = "10ms"
stop_delay = "10ms"
[restart]
debounce_window = "5s"
[health]
interval = "1s"
"#,
    )
    .await;
    let api = daemon.client();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(api.create_named(&format!("sliced-{i}")).await);
    }
    for id in &ids {
        api.wait_settled(id).await;
    }
    let mut seen = Vec::new();
    for id in &ids {
        wait_probed_alive(&api, id).await;
        seen.push(actor(&api, id).await["last_probe"]["at"].clone());
    }
    // The map no longer changes: every later round hands out the same slices.
    for (id, before) in ids.iter().zip(seen) {
        eventually(
            Duration::from_secs(10),
            "a later round to report",
            || async {
                let at = actor(&api, id).await["last_probe"]["at"].clone();
                if at != before {
                    Ok(())
                } else {
                    Err(format!("{id}: no report since {before}"))
                }
            },
        )
        .await;
    }
}
