//! The CLI client (`steward ws ...`, `steward admin ...`): the real binary run as a user
//! would, against a live daemon. Outputs are read as text (human form) or JSON (`--json`);
//! the daemon's state is cross-checked through the HTTP API. Every run also checks that the
//! admin token never appears in the CLI's output.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::{eventually, id_of, seq_of, sim_config, steward_bin, Daemon};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// Upper bound for one CLI invocation.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a followed event to show up.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);

/// What one CLI invocation produced.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit code 0 and returns stdout.
    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
    }

    /// Asserts the exit code and that stderr mentions `needle`.
    #[track_caller]
    fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "expected exit code {code}: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} on stderr: {self:?}"
        );
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout on failure: {self:?}"
        );
    }

    /// Asserts `secret` appears in neither stream.
    #[track_caller]
    fn never_shows(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "a secret was printed: {self:?}"
        );
    }
}

/// A `steward` command with a clean environment (no `STEWARD_*` from the test runner).
fn steward(args: &[&str]) -> Command {
    let mut command = Command::new(steward_bin());
    command
        .args(args)
        .env_remove("STEWARD_URL")
        .env_remove("STEWARD_ADMIN_TOKEN")
        .env_remove("STEWARD_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `steward` (bounded), optionally feeding `stdin`.
async fn run(args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = steward(args);
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", steward_bin().display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .await
            .expect("write the CLI's stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("steward {args:?} did not finish within {RUN_TIMEOUT:?}"))
        .expect("wait for the CLI");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The CLI pointed at one daemon with explicit `--url` and `--token`.
struct Cli<'a> {
    daemon: &'a Daemon,
    url: String,
}

impl<'a> Cli<'a> {
    fn new(daemon: &'a Daemon) -> Cli<'a> {
        Cli {
            daemon,
            url: format!("http://{}", daemon.addr()),
        }
    }

    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        let mut all = vec!["--url", self.url.as_str(), "--token", self.daemon.token()];
        all.extend_from_slice(args);
        all
    }

    /// Runs with the global options in front; checks the token is never printed.
    async fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None).await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let result = run(&self.args(args), stdin).await;
        result.never_shows(self.daemon.token());
        result
    }

    /// Creates a workspace through the CLI (`--json`) and returns its id.
    async fn create(&self, name: &str) -> String {
        let doc = self
            .run(&["--json", "ws", "create", "--name", name])
            .await
            .json();
        id_of(&doc)
    }
}

/// Reads lines from `lines` until one satisfies `found`, within `timeout`; returns them all.
async fn read_until(
    lines: &mut Lines<BufReader<ChildStdout>>,
    timeout: Duration,
    what: &str,
    found: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let done = found(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Ok(Ok(None)) => panic!("the follow output ended before {what}; got {seen:#?}"),
            Ok(Err(e)) => panic!("reading the follow output: {e}; got {seen:#?}"),
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}; got {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_and_get() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);

    let human = cli
        .run(&[
            "ws",
            "create",
            "--name",
            "cli-human",
            "--model",
            "m1",
            "--env",
            "A=1",
        ])
        .await
        .ok();
    assert!(
        human.starts_with("workspace ") && human.contains(" created: name cli-human"),
        "human create output: {human}"
    );
    let human_id = daemon
        .client()
        .workspaces()
        .await
        .iter()
        .find(|w| w["name"] == "cli-human")
        .map(id_of)
        .expect("the workspace created by the CLI exists");
    assert!(human.contains(&human_id), "the id is printed: {human}");

    // Options after the subcommand, and the command after `--`.
    let doc = run(
        &[
            "ws",
            "create",
            "--name",
            "cli-json",
            "--json",
            "--url",
            &cli.url,
            "--token",
            daemon.token(),
            "--",
            "sleep",
            "600",
        ],
        None,
    )
    .await
    .json();
    assert_eq!(doc["name"], "cli-json");
    assert_eq!(doc["command"], serde_json::json!(["sleep", "600"]));
    let json_id = id_of(&doc);

    let table = cli.run(&["ws", "list"]).await.ok();
    let header = table.lines().next().expect("a header line");
    for column in [
        "ID", "NAME", "PROVIDER", "PHASE", "GEN", "OBSERVED", "PENDING",
    ] {
        assert!(header.contains(column), "header lacks {column}: {table}");
    }
    for (id, name) in [(&human_id, "cli-human"), (&json_id, "cli-json")] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(id.as_str()) && l.contains(name) && l.contains("sim")),
            "list lacks {name}: {table}"
        );
    }
    let listed = cli.run(&["--json", "ws", "list"]).await.json();
    assert_eq!(listed["workspaces"].as_array().map(Vec::len), Some(2));

    daemon.client().wait_settled(&human_id).await;
    let block = cli.run(&["ws", "get", &human_id]).await.ok();
    for line in [
        "id:".to_owned(),
        "name:                cli-human".to_owned(),
        "phase:               running".to_owned(),
        "model:               m1".to_owned(),
        "env:                 A=1".to_owned(),
    ] {
        assert!(block.contains(&line), "get lacks {line:?}: {block}");
    }
    assert!(block.contains(&human_id), "{block}");
    let got = cli.run(&["--json", "ws", "get", &human_id]).await.json();
    assert_eq!(got["id"], human_id.as_str());
    assert_eq!(got["phase"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_prints_started_then_coalesced() {
    // A slow start keeps the first cycle in flight while the second restart arrives.
    let daemon = Daemon::start(&sim_config(1500)).await;
    let cli = Cli::new(&daemon);
    let id = cli.create("restarts").await;
    let settled = daemon.client().wait_settled(&id).await;
    let generation = settled["generation"].as_u64().expect("a generation");

    let first = cli.run(&["ws", "restart", &id]).await.ok();
    assert_eq!(
        first.trim(),
        format!("restart started: generation {}", generation + 1)
    );
    let second = cli.run(&["ws", "restart", &id]).await.ok();
    assert_eq!(
        second.trim(),
        format!("restart coalesced: generation {}", generation + 2)
    );
    let third = cli.run(&["--json", "ws", "restart", &id]).await.json();
    assert_eq!(third["outcome"], "coalesced");
    assert_eq!(third["generation"], generation + 2);

    let done = daemon.client().wait_settled(&id).await;
    assert_eq!(
        done["generation"],
        generation + 2,
        "N restarts, one extra cycle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_stdin_are_never_printed_and_model_changes() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let id = cli.create("secrets").await;
    daemon.client().wait_settled(&id).await;

    let canary = format!("canary-{}", uuid::Uuid::new_v4());
    let set = cli
        .run_with_stdin(
            &["ws", "secret", "set", &id, "API_KEY"],
            Some(&format!("{canary}\n")),
        )
        .await;
    set.never_shows(&canary);
    let line = set.ok();
    assert!(line.starts_with("secret API_KEY set; restart "), "{line}");

    let keys = cli.run(&["ws", "secret", "list", &id]).await;
    keys.never_shows(&canary);
    assert_eq!(keys.ok().lines().collect::<Vec<_>>(), vec!["API_KEY"]);
    let keys = cli
        .run(&["--json", "ws", "secret", "list", &id])
        .await
        .json();
    assert_eq!(keys["keys"], serde_json::json!(["API_KEY"]));

    let get = cli.run(&["ws", "get", &id]).await;
    get.never_shows(&canary);
    assert!(get.ok().contains("secrets:             API_KEY"));

    let model = cli.run(&["ws", "model", "set", &id, "model-2"]).await.ok();
    assert!(
        model.starts_with("model set to model-2; restart "),
        "{model}"
    );
    let doc = daemon.client().wait_settled(&id).await;
    assert_eq!(doc["model"], "model-2");

    let removed = cli.run(&["ws", "secret", "rm", &id, "API_KEY"]).await.ok();
    assert!(removed.starts_with("secret API_KEY removed; "), "{removed}");
    assert_eq!(
        cli.run(&["ws", "secret", "list", &id]).await.ok().trim(),
        "no secrets"
    );
    assert!(
        !daemon.logs().contains(&canary),
        "the secret reached the daemon's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_delete() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let api = daemon.client();
    let id = cli.create("stop-start").await;
    api.wait_settled(&id).await;

    let stop = cli.run(&["ws", "stop", &id]).await.ok();
    assert!(stop.starts_with("stop accepted: generation "), "{stop}");
    api.wait_phase(&id, "stopped").await;

    let start = cli.run(&["ws", "start", &id]).await.ok();
    assert!(start.starts_with("start accepted"), "{start}");
    api.wait_settled(&id).await;

    let delete = cli.run(&["ws", "delete", &id]).await.ok();
    assert!(delete.starts_with("deleted: "), "{delete}");
    steward_tests::eventually(
        Duration::from_secs(30),
        "the deleted workspace to be gone",
        || async {
            let reply = api.get(&format!("/v1/workspaces/{id}")).await;
            if reply.status == 404 {
                Ok(())
            } else {
                Err(format!("HTTP {}: {}", reply.status, reply.text))
            }
        },
    )
    .await;
    cli.run(&["ws", "get", &id]).await.fails(1, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_stand_for_ids_and_lists_are_filtered() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let api = daemon.client();
    let first = cli.create("named-one").await;
    let second = cli.create("named-two").await;
    let other = cli.create("other").await;
    for id in [&first, &second, &other] {
        api.wait_settled(id).await;
    }
    // A name is unique among live workspaces.
    cli.run(&["ws", "create", "--name", "named-one"])
        .await
        .fails(1, "NAME_TAKEN");

    let got = cli.run(&["--json", "ws", "get", "named-two"]).await.json();
    assert_eq!(got["id"], second.as_str());
    cli.run(&["ws", "stop", "named-two"]).await.ok();
    api.wait_phase(&second, "stopped").await;
    let ids = |list: Value| -> Vec<String> {
        list["workspaces"]
            .as_array()
            .expect("a list")
            .iter()
            .map(id_of)
            .collect()
    };
    let stopped = cli
        .run(&["--json", "ws", "list", "--phase", "stopped"])
        .await
        .json();
    assert_eq!(ids(stopped), std::slice::from_ref(&second));
    let named = cli
        .run(&["--json", "ws", "list", "--name", "named-"])
        .await
        .json();
    assert_eq!(ids(named), [first.clone(), second.clone()]);
    let one = cli
        .run(&["--json", "ws", "list", "--limit", "1"])
        .await
        .json();
    assert_eq!(ids(one), std::slice::from_ref(&first));
    let table = cli.run(&["ws", "list", "--phase", "running"]).await.ok();
    assert!(
        table.contains("named-one") && !table.contains("named-two"),
        "{table}"
    );

    cli.run(&["ws", "get", "nobody"])
        .await
        .fails(1, "NOT_FOUND");
    cli.run(&["ws", "delete", "other"]).await.ok();
    cli.run(&["ws", "list", "--phase", "sleeping"])
        .await
        .fails(1, "INVALID_QUERY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_and_follow_live() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let api = daemon.client();
    let id = cli.create("events").await;
    api.wait_settled(&id).await;

    let lines = cli.run(&["ws", "events", &id]).await.ok();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("provision_started") && l.contains("g1")),
        "events lack provision_started g1: {lines}"
    );
    let page = cli.run(&["--json", "ws", "events", &id]).await.json();
    let events = page["events"].as_array().expect("an events array").clone();
    assert!(events.iter().any(|e| e["type"] == "provision_started"));
    let last = seq_of(events.last().expect("at least one event"));
    let after = cli
        .run(&[
            "--json",
            "ws",
            "events",
            &id,
            "--after",
            &(last - 1).to_string(),
        ])
        .await
        .json();
    assert_eq!(after["events"].as_array().map(Vec::len), Some(1), "{after}");

    // Follow from the start: history first, then live events.
    let args = cli.args(&["ws", "events", &id, "--follow"]);
    let mut follower = steward(&args)
        .spawn()
        .expect("spawn steward ws events --follow");
    let stdout = follower.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let last_prefix = format!("{last:>4}  ");
    read_until(
        &mut lines,
        FOLLOW_TIMEOUT,
        "the history to be replayed",
        |l| l.starts_with(&last_prefix),
    )
    .await;

    // The stream is now live: a restart shows up as it happens.
    let restart = api.restart(&id).await;
    let generation = restart["generation"].as_u64().expect("a generation");
    let wanted = format!("g{generation}");
    let seen = read_until(
        &mut lines,
        FOLLOW_TIMEOUT,
        "the live provision_started",
        |l| l.contains("provision_started") && l.split_whitespace().any(|w| w == wanted),
    )
    .await;
    assert!(
        seen.iter()
            .any(|l| l.contains("restart_requested") && l.contains("cause=manual")),
        "the restart request is shown before its cycle: {seen:#?}"
    );
    follower.kill().await.expect("stop the follower");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actors_list_and_detail() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let id = cli.create("actors").await;
    daemon.client().wait_settled(&id).await;

    let table = cli.run(&["admin", "actors"]).await.ok();
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(id.as_str()) && l.contains("running")),
        "{table}"
    );
    let detail = cli.run(&["admin", "actors", &id]).await.ok();
    for key in [
        "phase:",
        "generation:",
        "counters:",
        "mailbox:",
        "transitions:",
    ] {
        assert!(detail.contains(key), "actor detail lacks {key}: {detail}");
    }
    let list = cli.run(&["--json", "admin", "actors"]).await.json();
    assert!(list["actors"]
        .as_array()
        .expect("an actors array")
        .iter()
        .any(|a| a["id"] == id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_alone_locates_the_daemon_and_its_token() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let data_dir = daemon.data_dir();
    let data_dir = data_dir.to_str().expect("a UTF-8 temp path");
    let create = run(
        &[
            "ws",
            "create",
            "--name",
            "by-data-dir",
            "--data-dir",
            data_dir,
        ],
        None,
    )
    .await;
    create.never_shows(daemon.token());
    let line = create.ok();
    assert!(line.contains("created: name by-data-dir"), "{line}");
    let list = run(&["--data-dir", data_dir, "ws", "list"], None).await;
    list.never_shows(daemon.token());
    assert!(list.ok().contains("by-data-dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_messages_and_exit_codes() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let unknown = uuid::Uuid::new_v4().to_string();

    let missing = cli.run(&["ws", "get", &unknown]).await;
    missing.fails(1, "NOT_FOUND");
    missing.fails(1, "HTTP 404");
    assert!(missing.stderr.starts_with("error: "), "{missing:?}");
    cli.run(&["ws", "restart", &unknown])
        .await
        .fails(1, "NOT_FOUND");

    let wrong_token = "not-the-admin-token";
    let url = format!("http://{}", daemon.addr());
    let unauthorized = run(&["--url", &url, "--token", wrong_token, "ws", "list"], None).await;
    unauthorized.fails(1, "UNAUTHORIZED");
    unauthorized.never_shows(wrong_token);
    unauthorized.never_shows(daemon.token());

    // A port nobody listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let closed_url = format!("http://{closed}");
    let unreachable = run(&["--url", &closed_url, "--token", "t", "ws", "list"], None).await;
    unreachable.fails(3, &format!("cannot reach steward at {closed_url}"));
    unreachable.fails(3, "is the daemon running?");

    let empty = tempfile::tempdir().expect("a temporary directory");
    let empty_dir = empty.path().to_str().expect("a UTF-8 temp path");
    let no_token = run(
        &["--url", &url, "--data-dir", empty_dir, "ws", "list"],
        None,
    )
    .await;
    no_token.fails(2, &empty.path().join("admin.token").display().to_string());

    let usage = run(&["ws", "frobnicate"], None).await;
    assert_eq!(usage.code, 2, "clap usage errors exit 2: {usage:?}");
}

/// The fault drill from the CLI: `admin kill` kills the instance; while the debounce window
/// holds the health restart back, `ws get` and `ws list` say the workspace is unhealthy
/// rather than plainly running. An idle actor's inspection shows an empty mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_drill_shows_an_unhealthy_workspace() {
    let config = format!("{}\n[health]\ninterval = \"100ms\"\n", sim_config(20));
    let daemon = Daemon::start(&config).await;
    let cli = Cli::new(&daemon);
    let id = cli.create("drilled").await;
    daemon.client().wait_settled(&id).await;
    let detail = cli.run(&["admin", "actors", &id]).await.ok();
    assert!(
        detail
            .lines()
            .any(|l| l.split_whitespace().eq(["mailbox:", "0"])),
        "an idle actor's mailbox is empty: {detail}"
    );
    let get = cli.run(&["ws", "get", &id]).await.ok();
    assert!(!get.contains("unhealthy"), "{get}");

    let killed = cli.run(&["admin", "kill", &id]).await.ok();
    assert!(
        killed.starts_with("killed the instance of workspace "),
        "{killed}"
    );
    eventually(
        Duration::from_secs(20),
        "ws get to show the workspace unhealthy",
        || async {
            let get = cli.run(&["ws", "get", &id]).await.ok();
            let phase = get.lines().find(|l| l.starts_with("phase:"));
            match phase {
                Some(line) if line.ends_with(" running (unhealthy)") => Ok(()),
                _ => Err(get),
            }
        },
    )
    .await;
    let list = cli.run(&["ws", "list"]).await.ok();
    assert!(
        list.lines()
            .any(|l| l.starts_with(id.as_str()) && l.contains("running (unhealthy)")),
        "{list}"
    );
    let doc = cli.run(&["--json", "ws", "get", &id]).await.json();
    assert_eq!(doc["health"]["last_report"], "dead", "{doc}");

    let json = cli.run(&["--json", "admin", "kill", &id]).await.json();
    assert_eq!(json["status"], "killed", "{json}");
}

/// Under `--json`, a failure is a JSON document on stdout (nothing on stderr), with the
/// same exit code as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_under_json_are_json_on_stdout_with_the_same_exit_code() {
    let daemon = Daemon::start(&sim_config(20)).await;
    let cli = Cli::new(&daemon);
    let unknown = uuid::Uuid::new_v4().to_string();
    let parse = |run: &Run| -> Value {
        assert!(run.stderr.is_empty(), "nothing on stderr: {run:?}");
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {run:?}"))
    };

    let missing = cli.run(&["--json", "ws", "get", &unknown]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    let body = parse(&missing);
    assert_eq!(
        (&body["error"], &body["status"]),
        (&Value::from("NOT_FOUND"), &Value::from(404)),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&unknown)),
        "{body}"
    );
    let kill = cli.run(&["admin", "kill", &unknown, "--json"]).await;
    assert_eq!(
        (kill.code, &parse(&kill)["error"]),
        (1, &Value::from("NOT_FOUND"))
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let closed_url = format!("http://{closed}");
    let unreachable = run(
        &["--url", &closed_url, "--token", "t", "--json", "ws", "list"],
        None,
    )
    .await;
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert_eq!(parse(&unreachable)["error"], "UNREACHABLE");

    let usage = run(&["--json", "ws", "frobnicate"], None).await;
    assert_eq!(usage.code, 2, "{usage:?}");
    assert_eq!(parse(&usage)["error"], "USAGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_flags_answer_once_settled_with_distinct_exit_codes() {
    let daemon = Daemon::start(&sim_config(100)).await;
    let cli = Cli::new(&daemon);
    let created = cli
        .run(&["ws", "create", "--name", "waited", "--wait", "30s"])
        .await
        .ok();
    assert!(created.contains("settled: workspace "), "{created}");
    assert!(created.contains(" is running, generation 1"), "{created}");
    let id = daemon.client().workspaces().await[0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    let restarted = cli.run(&["ws", "restart", &id, "--wait=30s"]).await.ok();
    assert!(
        restarted.contains("is running, generation 2"),
        "{restarted}"
    );

    // The wait runs out: exit 4, the intent goes on.
    let ran_out = cli.run(&["ws", "restart", &id, "--wait", "0ms"]).await;
    assert_eq!(ran_out.code, 4, "{ran_out:?}");
    assert!(ran_out.stderr.contains("the wait ran out"), "{ran_out:?}");
    // Under --json, the daemon's answer is the document on stdout, with the same exit code.
    let json_ran_out = cli
        .run(&["--json", "ws", "restart", &id, "--wait", "0ms"])
        .await;
    assert_eq!(json_ran_out.code, 4, "{json_ran_out:?}");
    let answer: Value = serde_json::from_str(&json_ran_out.stdout).expect("one JSON document");
    assert_eq!(answer["settled"], false, "{answer}");
    let running = cli
        .run(&[
            "--json",
            "ws",
            "wait",
            &id,
            "--for",
            "running",
            "--timeout",
            "30s",
        ])
        .await
        .json();
    assert_eq!(running["settled"], true, "{running}");
    assert_eq!(running["workspace"]["observed_generation"], 4, "{running}");

    // Settled, but not as asked: a running workspace is not going to stop by itself.
    cli.run(&["ws", "wait", &id, "--for", "stopped", "--timeout", "1s"])
        .await
        .fails(5, "is running, not stopped");
    // A bad wait is the daemon's 422, and nothing is applied.
    cli.run(&["ws", "restart", &id, "--wait", "1h"])
        .await
        .fails(1, "INVALID_FIELD");
    let doc = daemon.client().workspace(&id).await;
    assert_eq!(doc["generation"], 4, "{doc}");

    let stopped = cli.run(&["ws", "stop", &id, "--wait", "30s"]).await.ok();
    assert!(stopped.contains("is stopped"), "{stopped}");
    let deleted = cli.run(&["ws", "delete", &id, "--wait", "30s"]).await.ok();
    assert!(
        deleted.contains("settled: the workspace is gone"),
        "{deleted}"
    );
}

/// `steward ws logs` against a daemon running a local process: what it printed (stdout and
/// stderr, in order), `--tail` and `--timestamps`, a follow that sees a new line within
/// a second of its being written and ends when the workspace is deleted, whose log file goes
/// with it; a bad parameter is the API's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_print_follow_and_go_with_the_workspace() {
    let daemon = Daemon::start(
        r#"default_provider = "process"
[providers.sim]
enabled = false
[providers.process]
stop_grace = "1s"
"#,
    )
    .await;
    let cli = Cli::new(&daemon);
    let trigger = daemon.dir().path().join("go");
    let script = format!(
        "echo hello; echo oops >&2; while :; do if [ -e {0} ]; then rm {0}; echo went; fi; sleep 0.05; done",
        trigger.display()
    );
    let doc = daemon
        .client()
        .create(&serde_json::json!({
            "name": "talker",
            "ready_when": "instance",
            "command": ["/bin/sh", "-c", script],
        }))
        .await;
    let id = id_of(&doc);
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    loop {
        let out = cli.run(&["ws", "logs", &id]).await.ok();
        let printed: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with("=== steward:"))
            .collect();
        if printed == ["hello", "oops"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first lines never came: {out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = cli
        .run(&["ws", "logs", &id, "--tail", "1", "--timestamps"])
        .await
        .ok();
    let (time, text) = last
        .trim_end()
        .split_once(' ')
        .expect("a time, then the text");
    assert_eq!(text, "oops");
    assert!(humantime::parse_rfc3339(time).is_ok(), "{last}");
    cli.run(&["ws", "logs", &id, "--tail", "100001"])
        .await
        .fails(1, "INVALID_FIELD");
    cli.run(&["ws", "logs", &id, "--since", "yesterday"])
        .await
        .fails(1, "INVALID_FIELD");

    let args = cli.args(&["ws", "logs", &id, "-f", "--tail", "1"]);
    let mut follower = steward(&args).spawn().expect("spawn steward ws logs -f");
    let stdout = follower.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    read_until(&mut lines, FOLLOW_TIMEOUT, "the last line kept", |l| {
        l == "oops"
    })
    .await;
    // A line written now reaches the follower within a second.
    std::fs::write(&trigger, "").expect("the trigger");
    read_until(&mut lines, Duration::from_secs(1), "the new line", |l| {
        l == "went"
    })
    .await;

    daemon
        .client()
        .delete(&format!("/v1/workspaces/{id}"))
        .await;
    let ended = tokio::time::timeout(FOLLOW_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            assert!(line.starts_with("=== steward:"), "{line}");
        }
    })
    .await;
    assert!(ended.is_ok(), "the follow ends with the workspace");
    let status = tokio::time::timeout(FOLLOW_TIMEOUT, follower.wait())
        .await
        .expect("the follower exits")
        .expect("its status");
    assert!(status.success(), "{status:?}");
    let left: Vec<String> = std::fs::read_dir(daemon.data_dir().join("logs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&id))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the workspace's log files are gone: {left:?}"
    );
}
