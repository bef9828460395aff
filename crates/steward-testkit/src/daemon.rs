//! The one daemon launcher: the real `steward` binary as a child process on 127.0.0.1, in a
//! directory of its own, driven from outside only — its HTTP API, the files it documents
//! (`listen.addr`, `admin.token`) and its log.
//!
//! Layout of a daemon's directory: `steward.toml` (the config it was given), `data/` (its
//! data dir), `steward.log` (stdout and stderr of every run in that directory, appended).
//! A test can stop a daemon and start the next one on the same directory ([`Daemon::dir`]).
//!
//! Two faces: the end-to-end tests call [`Daemon::start`] (and friends), which fail the test
//! with the log's tail when the daemon does not come up; the benches call [`Daemon::spawn`]
//! and [`Daemon::wait_up`], which return errors and let them time start-up themselves.
//!
//! Dropping a daemon that still runs stops it gracefully (SIGTERM, so it stops the instances
//! it started), then kills it if it does not exit within 10 s; when the test is failing, the
//! tail of its log is printed.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::client::Api;
use crate::wait::{TimedOut, Wait};

/// How long [`Daemon::start`] waits for the daemon to come up, and [`Daemon::stop_gracefully`]
/// for it to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped daemon gets to exit after SIGTERM before it is killed.
const DROP_GRACE: Duration = Duration::from_secs(10);

/// Path of the daemon binary the tests run: `$STEWARD_BIN`, else `debug/steward` under the
/// workspace's target directory (`$CARGO_TARGET_DIR` if set). Build it first
/// (`cargo build -p steward`; `make test` does).
pub fn steward_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STEWARD_BIN") {
        return PathBuf::from(bin);
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    target.join("debug").join("steward")
}

/// A failure to launch, reach or stop a daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The daemon exited while it was expected to come up.
    #[error("steward exited during start-up with {status}; log tail:\n{log_tail}")]
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The daemon did not come up in time.
    #[error("steward did not come up ({what}): {waited}; log tail:\n{log_tail}")]
    NotUp {
        /// The step it did not reach.
        what: &'static str,
        /// The deadline and the last observation.
        waited: TimedOut,
        /// The end of its log.
        log_tail: String,
    },
    /// The daemon is not running (already stopped or killed).
    #[error("the daemon is not running")]
    NotRunning,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// A daemon's directory: a temporary one (removed once no daemon or test holds it) or a
/// path the caller owns.
#[derive(Clone, Debug)]
pub struct Workdir {
    path: PathBuf,
    _temp: Option<Arc<TempDir>>,
}

impl Workdir {
    /// A fresh temporary directory.
    pub fn temp() -> Result<Workdir, DaemonError> {
        let temp = tempfile::Builder::new()
            .prefix("steward-test-")
            .tempdir()
            .map_err(io("create a temporary directory"))?;
        Ok(Workdir {
            path: temp.path().to_owned(),
            _temp: Some(Arc::new(temp)),
        })
    }

    /// `path`, which the caller creates and removes.
    pub fn at(path: impl Into<PathBuf>) -> Workdir {
        Workdir {
            path: path.into(),
            _temp: None,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The daemon's data directory in it.
    pub fn data(&self) -> PathBuf {
        self.path.join("data")
    }

    /// The daemon's log file in it.
    pub fn log(&self) -> PathBuf {
        self.path.join("steward.log")
    }
}

/// How to launch a daemon: [`Launch::new`] and the setters, then [`Launch::spawn`] (returns at
/// once) or [`Launch::start`] (returns once it is up, or fails the test).
#[derive(Clone, Debug)]
pub struct Launch {
    bin: PathBuf,
    dir: Option<Workdir>,
    config: String,
    listen: Option<SocketAddr>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// The test binary ([`steward_bin`]) with `config` (TOML) in a fresh temporary directory,
    /// on a free port.
    pub fn new(config: impl Into<String>) -> Launch {
        Launch {
            bin: steward_bin(),
            dir: None,
            config: config.into(),
            listen: None,
            env: Vec::new(),
        }
    }

    /// Another binary (a release build, say).
    pub fn bin(self, bin: impl Into<PathBuf>) -> Launch {
        Launch {
            bin: bin.into(),
            ..self
        }
    }

    /// In `dir`, reusing its data directory if it has one (a restarted daemon).
    pub fn dir(self, dir: Workdir) -> Launch {
        Launch {
            dir: Some(dir),
            ..self
        }
    }

    /// On `addr` instead of a free port (a daemon restarted where its agents expect it).
    pub fn listen(self, addr: Option<SocketAddr>) -> Launch {
        Launch {
            listen: addr,
            ..self
        }
    }

    /// With an extra environment variable (e.g. `FAILPOINTS`).
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Spawns `steward serve` and returns at once; see [`Daemon::wait_up`].
    pub fn spawn(self) -> Result<Daemon, DaemonError> {
        let dir = match self.dir {
            Some(dir) => dir,
            None => Workdir::temp()?,
        };
        let data = dir.data();
        fs::create_dir_all(&data).map_err(io("create the data dir"))?;
        let config_path = dir.path().join("steward.toml");
        fs::write(&config_path, &self.config).map_err(io("write the config file"))?;
        // A stale address from the previous run must not pass for this one's.
        match fs::remove_file(data.join("listen.addr")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove a stale listen.addr")(e)),
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.log())
            .map_err(io("open the log file"))?;
        let log_err = log.try_clone().map_err(io("clone the log file handle"))?;
        let listen = self
            .listen
            .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let spawned_wall = SystemTime::now();
        let spawned = Instant::now();
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(listen)
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!(
                "spawn {} (build it first: `cargo build -p steward`, or set STEWARD_BIN)",
                self.bin.display()
            )))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Daemon {
            child: Some(child),
            dir,
            spawned,
            spawned_wall,
            addr: None,
            token: String::new(),
            http,
        })
    }

    /// Spawns the daemon and waits (at most [`PROCESS_TIMEOUT`]) until it listens, has
    /// written its admin token and answers `GET /healthz`; fails the test otherwise.
    pub async fn start(self) -> Daemon {
        let mut daemon = self.spawn().unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = daemon.wait_up(PROCESS_TIMEOUT).await {
            panic!("{e}");
        }
        daemon
    }
}

/// One `steward serve` process.
pub struct Daemon {
    child: Option<Child>,
    dir: Workdir,
    spawned: Instant,
    spawned_wall: SystemTime,
    addr: Option<SocketAddr>,
    token: String,
    http: reqwest::Client,
}

impl Daemon {
    /// Starts a daemon with `config` (TOML) in a fresh temporary directory; see
    /// [`Launch::start`].
    pub async fn start(config: &str) -> Daemon {
        Launch::new(config).start().await
    }

    /// Starts a daemon with `config` in `dir`, reusing its data directory.
    pub async fn start_in(dir: Workdir, config: &str) -> Daemon {
        Launch::new(config).dir(dir).start().await
    }

    /// Waits (looking every `step`, at most `timeout`) until the daemon has written
    /// `listen.addr` and `admin.token`, and returns when `listen.addr` was first seen. It
    /// does not call the API: the caller decides what "up" means.
    pub async fn wait_listening(
        &mut self,
        step: Duration,
        timeout: Duration,
    ) -> Result<Instant, DaemonError> {
        let data = self.dir.data();
        let child = self.child.as_mut().ok_or(DaemonError::NotRunning)?;
        let found = Wait::up_to(timeout)
            .every(step)
            .until(|| {
                let exited = child.try_wait();
                let addr = fs::read_to_string(data.join("listen.addr"))
                    .ok()
                    .and_then(|text| text.trim().parse::<SocketAddr>().ok());
                let seen = Instant::now();
                let token = fs::read_to_string(data.join("admin.token")).unwrap_or_default();
                std::future::ready(match (exited, addr) {
                    (Ok(Some(status)), _) => Ok(Err(status)),
                    (Err(e), _) => Err(format!("cannot poll the process: {e}")),
                    (Ok(None), Some(addr)) if !token.trim().is_empty() => {
                        Ok(Ok((seen, addr, token.trim().to_owned())))
                    }
                    (Ok(None), Some(_)) => Err("listen.addr written, admin.token not yet".into()),
                    (Ok(None), None) => Err("no listen.addr yet".to_owned()),
                })
            })
            .await;
        match found {
            Ok(Ok((seen, addr, token))) => {
                self.addr = Some(addr);
                self.token = token;
                Ok(seen)
            }
            Ok(Err(status)) => {
                self.child = None;
                Err(DaemonError::Exited {
                    status,
                    log_tail: self.log_tail(100),
                })
            }
            Err(waited) => Err(DaemonError::NotUp {
                what: "listen.addr and admin.token",
                waited,
                log_tail: self.log_tail(100),
            }),
        }
    }

    /// Waits (at most `timeout` in all) until the daemon listens and `GET /healthz` answers
    /// 200; returns a client carrying the admin token.
    pub async fn wait_up(&mut self, timeout: Duration) -> Result<Api, DaemonError> {
        let started = tokio::time::Instant::now();
        self.wait_listening(Duration::from_millis(10), timeout)
            .await?;
        let api = self.client();
        let left = timeout.saturating_sub(started.elapsed());
        let healthy = Wait::up_to(left)
            .every(Duration::from_millis(10))
            .until(|| async {
                match api.try_get("/healthz").await {
                    Ok(reply) if reply.status == 200 => Ok(()),
                    Ok(reply) => Err(format!("HTTP {}: {}", reply.status, reply.text)),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        match healthy {
            Ok(()) => Ok(api),
            Err(waited) => Err(DaemonError::NotUp {
                what: "GET /healthz = 200",
                waited,
                log_tail: self.log_tail(100),
            }),
        }
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: Signal) -> Result<(), DaemonError> {
        let pid = self.pid().ok_or(DaemonError::NotRunning)?;
        let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| DaemonError::NotRunning)?);
        match signal::kill(pid, signal) {
            // Already gone: waiting reaps it.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io(format!("send {signal} to steward"))(e.into())),
        }
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after that, with a warning).
    /// Returns the exit status and how long the orderly shutdown took.
    pub async fn terminate(
        &mut self,
        grace: Duration,
    ) -> Result<(ExitStatus, Duration), DaemonError> {
        let started = Instant::now();
        self.signal(Signal::SIGTERM)?;
        let mut child = self.child.take().ok_or(DaemonError::NotRunning)?;
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => Ok((status.map_err(io("wait for steward"))?, started.elapsed())),
            Err(_) => {
                eprintln!("warning: steward ignored SIGTERM for {grace:?}; killing it");
                child.kill().await.map_err(io("kill steward"))?;
                let status = child.wait().await.map_err(io("wait for steward"))?;
                Ok((status, started.elapsed()))
            }
        }
    }

    /// SIGTERM; asserts the daemon exits with success within [`PROCESS_TIMEOUT`].
    pub async fn stop_gracefully(&mut self) {
        let started = Instant::now();
        let (status, took) = self
            .terminate(PROCESS_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("stop steward: {e}"));
        assert!(
            status.success() && took < PROCESS_TIMEOUT,
            "steward exited with {status} after SIGTERM ({:?}); log tail:\n{}",
            started.elapsed(),
            self.log_tail(200)
        );
    }

    /// Kills the daemon with SIGKILL, as a crash would (no chance to flush anything), and
    /// waits until it is gone.
    pub async fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().await.expect("SIGKILL the daemon and reap it");
    }

    /// Waits (at most `timeout`) for the daemon to exit on its own, e.g. at a kill point, and
    /// returns how it ended; fails the test if it does not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the daemon is running");
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                self.child = None;
                status.expect("wait for steward")
            }
            Err(_) => panic!(
                "steward did not exit within {timeout:?}; log tail:\n{}",
                self.log_tail(100)
            ),
        }
    }

    /// Its directory; pass it to [`Daemon::start_in`] or [`Launch::dir`] to start the next
    /// daemon on the same data.
    pub fn dir(&self) -> Workdir {
        self.dir.clone()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.data()
    }

    /// Its log file (stdout and stderr of every run in its directory).
    pub fn log_path(&self) -> PathBuf {
        self.dir.log()
    }

    /// The address it listens on.
    ///
    /// Panics before [`Daemon::wait_listening`] found it.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the daemon is not listening yet")
    }

    /// The admin token it wrote (empty before it listens).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// When it was spawned (monotonic clock).
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// When it was spawned (wall clock, to compare with its log's timestamps).
    pub fn spawned_wall(&self) -> SystemTime {
        self.spawned_wall
    }

    /// A client carrying the admin token.
    pub fn client(&self) -> Api {
        Api::new(
            self.http.clone(),
            format!("http://{}", self.addr()),
            Some(self.token.clone()),
        )
    }

    /// A client with no token at all.
    pub fn anonymous(&self) -> Api {
        self.client().with_token(None)
    }

    /// Everything written to its log so far (all runs in its directory).
    pub fn logs(&self) -> String {
        fs::read(self.dir.log())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of [`Daemon::logs`].
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs();
        let all: Vec<&str> = logs.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Graceful first, so the daemon stops the instances it started (local processes
            // would otherwise outlive the test); killed (kill_on_drop) if it does not exit in
            // time. A drop cannot await: the exit is polled, bounded by DROP_GRACE.
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
                let deadline = Instant::now() + DROP_GRACE;
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- steward log ({}), last 80 lines ----\n{}\n---- end of log ----",
                self.dir.log().display(),
                self.log_tail(80)
            );
        }
    }
}
