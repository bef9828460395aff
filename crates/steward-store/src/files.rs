//! The SQLite database's files are owner-only (0600), like the keys beside them: the file
//! itself is created with that mode before SQLite opens it, and an existing one (with its
//! write-ahead log, shared memory and journal) is narrowed. SQLite gives the files it creates
//! later (`-wal`, `-shm`, `-journal`) the database file's mode, so they are 0600 too.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files SQLite keeps beside the database, by suffix.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates `db` (mode 0600) if it is missing, and narrows it and its companions to 0600.
pub(crate) fn make_private(db: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)?;
    let companions = COMPANIONS.iter().map(|suffix| with_suffix(db, suffix));
    for path in std::iter::once(db.to_owned()).chain(companions) {
        match fs::metadata(&path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                tracing::info!(path = %path.display(), "narrowing a database file to its owner (0600)");
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
