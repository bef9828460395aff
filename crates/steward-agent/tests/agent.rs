//! The agent against a fake control plane: in-process through the library, and the real
//! binary for signals and exit codes.

mod fake_control;

use std::future::pending;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_control::{agent_env, FakeControl, HEARTBEAT, REGISTER, TOKEN};
use serde_json::{json, Value};
use steward_agent::{run, Agent, Config, Exit};
use steward_testkit::eventually;

const RUN_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait on a condition.
const WAIT: Duration = Duration::from_secs(10);

fn config(control_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut env = agent_env(control_url);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_env_map(&env).expect("valid test config")
}

async fn get_json(url: String) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_retried_until_the_control_plane_answers_then_heartbeats_flow() {
    // Reserve the control plane's address, but serve nothing there yet.
    let reserved = TcpListener::bind("127.0.0.1:0").expect("reserve a port");
    let control_addr = reserved.local_addr().expect("addr");
    drop(reserved);

    let agent = Agent::bind(config(&format!("http://{control_addr}"), &[])).expect("bind");
    let agent_url = format!("http://{}", agent.local_addr());
    assert_eq!(agent.url(), agent_url);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let health = eventually(WAIT, "the agent's /health", || {
        get_json(format!("{agent_url}/health"))
    })
    .await;
    assert_eq!(health["registered"], false);

    // The daemon comes up, and is still overloaded for its first two answers.
    let listener = TcpListener::bind(control_addr).expect("rebind the reserved port");
    let control = FakeControl::start_on(listener, |path, n| match path {
        REGISTER if n < 2 => 503,
        _ => 200,
    });
    eventually(WAIT, "two heartbeats", || async {
        (control.calls_to(HEARTBEAT).len() >= 2).then_some(())
    })
    .await;

    let calls = control.calls();
    let registers: Vec<_> = calls.iter().take_while(|c| c.path == REGISTER).collect();
    assert_eq!(registers.len(), 3, "two 503s, then success: {calls:?}");
    for call in &calls {
        assert_eq!(
            call.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
    }
    assert!(registers
        .iter()
        .all(|c| c.body == json!({ "url": agent_url })));
    let heartbeats = &calls[registers.len()..];
    assert!(heartbeats
        .iter()
        .all(|c| c.path == HEARTBEAT && c.body == json!({})));

    let health = get_json(format!("{agent_url}/health"))
        .await
        .expect("health");
    assert_eq!(health["registered"], true);
    assert_eq!(health["generation"], 7);
    assert_eq!(health["workspace_id"], fake_control::WORKSPACE_ID);
    assert_eq!(health["pid"], std::process::id());
    assert_eq!(health["model"], "small-1");

    // The daemon delivers a restart context to the registered URL.
    let context = json!({ "generation": 7, "previous_generation": 6, "causes": ["manual"] });
    let resp = reqwest::Client::new()
        .post(format!("{agent_url}/context"))
        .bearer_auth(TOKEN)
        .json(&context)
        .send()
        .await
        .expect("post context");
    assert_eq!(resp.status(), 200);
    let listed = get_json(format!("{agent_url}/context"))
        .await
        .expect("contexts");
    assert_eq!(listed, json!({ "contexts": [context] }));

    stop.send(()).expect("agent still running");
    let exit = tokio::time::timeout(RUN_LIMIT, running)
        .await
        .expect("stops promptly")
        .expect("no panic")
        .expect("no fault");
    assert_eq!(exit, Exit::Shutdown);
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_heartbeat_is_sent_right_after_registration() {
    let control = FakeControl::start(|_, _| 200);
    let config = config(&control.url(), &[("STEWARD_HEARTBEAT_INTERVAL", "1h")]);
    let running = tokio::spawn(run(config, pending()));
    eventually(WAIT, "the first heartbeat", || async {
        (control.calls_to(HEARTBEAT).len() == 1).then_some(())
    })
    .await;
    running.abort();
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_401_means_superseded_and_ends_the_run_with_code_3() {
    let control = FakeControl::start(|path, n| match path {
        HEARTBEAT if n >= 2 => 401,
        _ => 200,
    });
    let exit = tokio::time::timeout(RUN_LIMIT, run(config(&control.url(), &[]), pending()))
        .await
        .expect("run ends")
        .expect("no fault");
    assert_eq!((exit, exit.code()), (Exit::Superseded, 3));
    assert_eq!(
        control.calls_to(HEARTBEAT).len(),
        3,
        "no heartbeat after the 401"
    );
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answers_decide_the_outcome() {
    // (script for register, expected exit or None if the agent should register and keep going)
    let cases: [(&[u16], Option<Exit>); 5] = [
        (&[401], Some(Exit::Superseded)),
        (&[404], Some(Exit::Rejected)),
        (&[503, 422], Some(Exit::Rejected)),
        (&[429, 500, 401], Some(Exit::Superseded)),
        (&[429, 502, 200], None),
    ];
    for (answers, expected) in cases {
        let control = FakeControl::start(move |path, n| match path {
            REGISTER => answers.get(n).copied().unwrap_or(200),
            _ => 200,
        });
        let running = tokio::spawn(run(config(&control.url(), &[]), pending()));
        match expected {
            Some(exit) => {
                let got = tokio::time::timeout(RUN_LIMIT, running)
                    .await
                    .expect("run ends")
                    .expect("no panic")
                    .expect("no fault");
                assert_eq!(got, exit, "{answers:?}");
                assert_eq!(control.calls_to(HEARTBEAT).len(), 0, "{answers:?}");
            }
            None => {
                eventually(WAIT, "a heartbeat", || async {
                    (!control.calls_to(HEARTBEAT).is_empty()).then_some(())
                })
                .await;
                running.abort();
            }
        }
        assert_eq!(
            control.calls_to(REGISTER).len(),
            answers.len(),
            "{answers:?}"
        );
        control.stop().await;
    }
}

fn agent_binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward-agent"));
    cmd.env_clear()
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_0_promptly_on_sigterm_and_never_logs_the_token() {
    let control = FakeControl::start(|_, _| 200);
    let mut child = agent_binary()
        .envs(agent_env(&control.url()))
        .spawn()
        .expect("spawn steward-agent");
    eventually(WAIT, "the binary's heartbeats", || async {
        (control.calls_to(HEARTBEAT).len() >= 2).then_some(())
    })
    .await;

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = eventually(WAIT, "the binary to exit", || {
        let exited = child.try_wait().expect("try_wait");
        async move { exited }
    })
    .await;
    let took = signalled.elapsed();
    let output = child.wait_with_output().expect("collect stderr");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?} to exit");
    assert!(
        stderr.contains("registered with the control plane"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(TOKEN),
        "the token leaked into the logs:\n{stderr}"
    );
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_3_when_superseded() {
    let control = FakeControl::start(|_, _| 401);
    let mut child = agent_binary()
        .envs(agent_env(&control.url()))
        .spawn()
        .expect("spawn steward-agent");
    let status = eventually(WAIT, "the binary to exit", || {
        let exited = child.try_wait().expect("try_wait");
        async move { exited }
    })
    .await;
    assert_eq!(status.code(), Some(3));
    control.stop().await;
}

#[test]
fn binary_exits_2_on_missing_configuration() {
    let output = agent_binary()
        .env("STEWARD_GENERATION", "1")
        .output()
        .expect("run steward-agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("STEWARD_WORKSPACE_ID is not set"),
        "{stderr}"
    );
}
