//! One run of the tool: its temporary directory, its owner labels, the engine client, and
//! the clean-up that runs however the run ends.
//!
//! Every container a run makes carries one of two owner labels derived from the run's id
//! (`steward-bench-<id>-s` for the daemon's, `-b` for the baseline's), so the clean-up removes
//! exactly what the run made, and the daemon never mistakes a baseline container for an
//! orphan of its own.

use crate::engine::{self, OWNER_PREFIX};
use anyhow::{bail, Context, Result};
use bollard::Docker;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// What every subcommand needs.
pub struct Session {
    /// Private temporary directory: daemon data dirs, logs, proxy sockets.
    pub dir: TempDir,
    /// `steward-bench-<10 hex>`.
    pub id: String,
    /// The engine's socket.
    pub socket: PathBuf,
    /// A client of the engine (direct).
    pub docker: Docker,
    /// The agent image (present on the engine; never pulled).
    pub image: String,
    /// The daemon binary.
    pub steward: PathBuf,
    /// `max_concurrent_ops` of the daemon and of the capped baselines.
    pub cap: usize,
}

impl Session {
    /// Counting proxies in front of the engine socket for the daemon and for the baseline,
    /// when `via_proxy` (so that both sides pay the same extra hop); else none.
    pub fn proxies(
        &self,
        dir: &std::path::Path,
        via_proxy: bool,
    ) -> Result<(Option<crate::proxy::Proxy>, Option<crate::proxy::Proxy>)> {
        if !via_proxy {
            return Ok((None, None));
        }
        let start = |name: &str| crate::proxy::Proxy::start(&dir.join(name), &self.socket);
        Ok((
            Some(start("daemon-engine.sock")?),
            Some(start("baseline-engine.sock")?),
        ))
    }

    /// The daemon's configuration for this session, on `proxy` if there is one.
    pub fn daemon_config(
        &self,
        proxy: Option<&crate::proxy::Proxy>,
    ) -> crate::daemon::DaemonConfig {
        crate::daemon::DaemonConfig {
            socket: proxy.map_or_else(|| self.socket.clone(), |p| p.path.clone()),
            owner: self.daemon_owner(),
            max_concurrent_ops: self.cap,
            heartbeat: None,
        }
    }

    /// Checks the binary, the engine and the image, and makes the temporary directory.
    pub async fn open(
        steward: PathBuf,
        socket: PathBuf,
        image: String,
        cap: usize,
    ) -> Result<Session> {
        if !steward.is_file() {
            bail!(
                "steward binary not found at {} (cargo build --release -p steward, or --steward)",
                steward.display()
            );
        }
        let docker = engine::connect(&socket).await?;
        docker.inspect_image(&image).await.with_context(|| {
            format!("image {image} is not on the engine: run scripts/image.sh (nothing is pulled)")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("steward-bench-")
            .tempdir()
            .context("create a temporary directory")?;
        let id = format!(
            "{OWNER_PREFIX}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        Ok(Session {
            dir,
            id,
            socket,
            docker,
            image,
            steward,
            cap,
        })
    }

    /// Owner label of the daemon's containers.
    pub fn daemon_owner(&self) -> String {
        format!("{}-s", self.id)
    }

    /// Owner label of the baseline's containers.
    pub fn baseline_owner(&self) -> String {
        format!("{}-b", self.id)
    }

    /// A fresh subdirectory of the run's directory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(path)
    }

    /// The baseline's containers, as the provider's defaults make them.
    pub fn baseline_spec(&self) -> Result<engine::Spec> {
        Ok(engine::Spec {
            owner: self.baseline_owner(),
            image: self.image.clone(),
            network_mode: "host".to_owned(),
            stop_timeout_secs: 10,
            control_url: closed_port_url()?,
            heartbeat: "5000ms".to_owned(),
        })
    }

    /// Removes every container of this run (both owners); returns how many. Repeats until
    /// two passes half a second apart find nothing: an engine call that was in flight when a
    /// daemon was killed (a create, say) may still leave a container behind after the first.
    pub async fn cleanup(&self) -> Result<usize> {
        let owners = [self.daemon_owner(), self.baseline_owner()];
        let mut removed = 0;
        let mut empty_passes = 0;
        for _ in 0..20 {
            let n = engine::remove_owned(&self.docker, &owners).await?;
            removed += n;
            empty_passes = if n == 0 { empty_passes + 1 } else { 0 };
            if empty_passes == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(removed)
    }
}

/// `http://127.0.0.1:<port>` of a port nothing listens on (bound, then released).
fn closed_port_url() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    let port = listener.local_addr().context("local address")?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
}
