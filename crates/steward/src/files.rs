//! Files the daemon keeps in its data directory: its lock (one daemon per data directory),
//! the admin token (generated on first start, owner-only) and the address it listens on
//! (written atomically once bound).

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rand::RngCore;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "steward.lock";

/// The data directory (and a SQLite database kept outside it), held by this daemon: an
/// exclusive `flock` on a lock file, which the kernel releases when the process ends, however
/// it ends (a crash or `kill -9` leaves no stale lock behind). Held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _locks: Vec<Flock<File>>,
}

/// Creates the data directory if missing, locks it, and only then makes it owner-only (it
/// holds the database, the admin token and the keys). A second daemon on the same data
/// directory — or on the same SQLite file through another one — fails here, before it reads,
/// writes or adopts anything; the error names the daemon holding it.
pub fn lock_data_dir(dir: &Path, database_url: &str) -> anyhow::Result<DataDirLock> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let mut locks = vec![lock(&dir.join(LOCK_FILE), "data directory", dir)?];
    if let Some(db) = sqlite_file(database_url) {
        let outside = match (db.parent().map(fs::canonicalize), fs::canonicalize(dir)) {
            (Some(Ok(parent)), Ok(dir)) => parent != dir,
            _ => true,
        };
        if outside {
            let mut name = db.as_os_str().to_owned();
            name.push(".lock");
            locks.push(lock(Path::new(&name), "SQLite database", &db)?);
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict data dir {} to its owner", dir.display()))?;
    Ok(DataDirLock { _locks: locks })
}

/// Takes the exclusive lock of `path` (created 0600 if missing) without waiting, then writes
/// this process's id into it for the next daemon's error message.
fn lock(path: &Path, what: &str, held: &Path) -> anyhow::Result<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            anyhow::bail!(
                "another steward daemon{pid} is using the {what} {}: stop it first, or give \
                 this daemon its own --data-dir (lock held on {}); nothing was changed",
                held.display(),
                path.display()
            );
        }
        Err((_, errno)) => {
            return Err(std::io::Error::from(errno))
                .with_context(|| format!("cannot lock {}", path.display()))
        }
    };
    locked.set_len(0)?;
    locked.rewind()?;
    writeln!(locked, "{}", std::process::id())?;
    Ok(locked)
}

/// The file of a SQLite database URL (`sqlite://PATH?…`, `sqlite:PATH`); `None` for another
/// database or an in-memory one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// A stable id of this installation (its data dir), generated on first start: `install.id`.
pub fn install_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("install.id");
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim().to_owned();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let mut bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Path of the admin token file.
pub fn admin_token_path(dir: &Path) -> PathBuf {
    dir.join("admin.token")
}

/// Reads the admin token file, generating a fresh 256-bit token (mode 0600) if missing.
pub fn load_or_create_admin_token(dir: &Path) -> anyhow::Result<String> {
    let path = admin_token_path(dir);
    if path.exists() {
        let token =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let token = token.trim().to_owned();
        anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{token}")?;
    Ok(token)
}

/// Writes the bound address to `<dir>/listen.addr` atomically (write then rename), so a
/// reader never sees a partial address.
pub fn write_listen_addr(dir: &Path, addr: &str) -> anyhow::Result<()> {
    let tmp = dir.join("listen.addr.tmp");
    fs::write(&tmp, addr)?;
    fs::rename(&tmp, dir.join("listen.addr"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_dir_refuses_a_second_holder_and_names_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let url = format!("sqlite://{}?mode=rwc", data.join("steward.db").display());
        let held = lock_data_dir(&data, &url).expect("the first lock");
        let refused = lock_data_dir(&data, &url).expect_err("a second holder is refused");
        let message = format!("{refused:#}");
        assert!(message.contains("another steward daemon"), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(held);
        lock_data_dir(&data, &url).expect("free again once released");
    }

    #[test]
    fn a_sqlite_file_outside_the_data_dir_is_locked_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("shared.db").display()
        );
        let _held = lock_data_dir(&dir.path().join("a"), &url).expect("the first lock");
        let refused = lock_data_dir(&dir.path().join("b"), &url)
            .expect_err("another data dir on the same database is refused");
        assert!(
            format!("{refused:#}").contains("SQLite database"),
            "{refused:#}"
        );
        assert_eq!(
            sqlite_file("sqlite::memory:"),
            None,
            "an in-memory database has no file"
        );
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn the_admin_token_is_generated_once_and_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_admin_token(dir.path()).expect("create");
        assert_eq!(first.len(), 64);
        let mode = fs::metadata(admin_token_path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_or_create_admin_token(dir.path()).expect("reuse"),
            first
        );
    }
}
