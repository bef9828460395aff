//! Files the daemon keeps in its data directory: the admin token (generated on first start,
//! owner-only) and the address it listens on (written atomically once bound).

use anyhow::Context;
use rand::RngCore;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates the data directory if missing and makes it owner-only: it holds the database,
/// the admin token and the secrets key.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict data dir {} to its owner", dir.display()))?;
    Ok(())
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
