//! Secrets at rest: the key file and the AEAD around each secret value.
//!
//! Owns the secrets key (32 random bytes, base64 in a file of mode 0600) and AES-256-GCM
//! encryption of one value, bound to its row by using the workspace id and secret key as
//! associated data, so a ciphertext copied to another row does not decrypt. It must not log,
//! display or return a plaintext other than as a [`SecretString`].

use crate::StoreError;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use secrecy::SecretString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use steward_domain::WorkspaceId;

/// Length of an AES-256 key.
const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce, stored in front of each ciphertext.
const NONCE_LEN: usize = 12;

/// The key that encrypts secrets at rest (AES-256-GCM). It never leaves this type.
pub struct SecretKey {
    cipher: Aes256Gcm,
}

impl SecretKey {
    /// Reads the key file at `path`, or creates it if it does not exist: 32 bytes from the
    /// OS random source, base64-encoded, mode 0600, parent directories created as needed.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, StoreError> {
        let key_file = |source| StoreError::KeyFile {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_shared(path);
                Self::parse(&text).map_err(key_file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path).map_err(key_file),
            Err(e) => Err(key_file(e)),
        }
    }

    fn parse(text: &str) -> io::Result<SecretKey> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let bytes = BASE64.decode(text.trim()).map_err(|_| {
            invalid(format!(
                "expected {KEY_LEN} bytes in base64, found no base64"
            ))
        })?;
        if bytes.len() != KEY_LEN {
            return Err(invalid(format!(
                "expected {KEY_LEN} bytes in base64, found {} bytes",
                bytes.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| invalid(format!("expected {KEY_LEN} bytes")))?;
        Ok(SecretKey { cipher })
    }

    fn create(path: &Path) -> io::Result<SecretKey> {
        let dir = parent_dir(path);
        std::fs::create_dir_all(dir)?;
        let key = Aes256Gcm::generate_key(OsRng);
        // `create_new`: never overwrite a key that appeared meanwhile (it may encrypt rows).
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{}\n", BASE64.encode(key)).as_bytes())?;
        file.sync_all()?;
        // The file's directory entry must be durable before any row is encrypted with it.
        File::open(dir)?.sync_all()?;
        tracing::info!(path = %path.display(), "created a new secrets key");
        Ok(SecretKey {
            cipher: Aes256Gcm::new(&key),
        })
    }

    /// Encrypts the `value` of secret `key` of workspace `id`: base64 of nonce || ciphertext.
    pub(crate) fn encrypt(
        &self,
        id: WorkspaceId,
        key: &str,
        value: &str,
    ) -> Result<String, StoreError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(id, key);
        let payload = Payload {
            msg: value.as_bytes(),
            aad: aad.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(&nonce, payload)
            .map_err(|_| StoreError::Crypto(format!("cannot encrypt secret {key} of {id}")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(BASE64.encode(out))
    }

    /// Decrypts what [`SecretKey::encrypt`] produced for the same workspace and key.
    pub(crate) fn decrypt(
        &self,
        id: WorkspaceId,
        key: &str,
        encoded: &str,
    ) -> Result<SecretString, StoreError> {
        let failed = || {
            StoreError::Crypto(format!(
                "secret {key} of {id} does not decrypt (another secrets key, or altered)"
            ))
        };
        let bytes = BASE64.decode(encoded).map_err(|_| failed())?;
        let (nonce, ciphertext) = bytes.split_at_checked(NONCE_LEN).ok_or_else(failed)?;
        let aad = associated_data(id, key);
        let payload = Payload {
            msg: ciphertext,
            aad: aad.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| failed())?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| failed())
    }
}

/// Binds a ciphertext to its row. A UUID never contains `/`, so the pair is unambiguous.
fn associated_data(id: WorkspaceId, key: &str) -> String {
    format!("{id}/{key}")
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Warns when other users may read the key file (an operator may have copied it carelessly).
fn warn_if_shared(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "secrets key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_value_round_trips_only_in_its_own_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SecretKey::load_or_create(&dir.path().join("key")).expect("key");
        let (a, b) = (
            WorkspaceId::from(uuid::Uuid::new_v4()),
            WorkspaceId::from(uuid::Uuid::new_v4()),
        );
        let sealed = key.encrypt(a, "TOKEN", "s3cr3t").expect("encrypt");
        assert!(!sealed.contains("s3cr3t"));
        let opened = key.decrypt(a, "TOKEN", &sealed).expect("decrypt");
        assert_eq!(opened.expose_secret(), "s3cr3t");
        assert!(matches!(
            key.decrypt(b, "TOKEN", &sealed),
            Err(StoreError::Crypto(_))
        ));
        assert!(matches!(
            key.decrypt(a, "OTHER", &sealed),
            Err(StoreError::Crypto(_))
        ));
        assert!(matches!(
            key.decrypt(a, "TOKEN", "garbage"),
            Err(StoreError::Crypto(_))
        ));
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/dir/key");
        let first = SecretKey::load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        let sealed = first.encrypt(id, "K", "v").expect("encrypt");
        let again = SecretKey::load_or_create(&path).expect("reused");
        assert_eq!(
            again
                .decrypt(id, "K", &sealed)
                .expect("decrypt")
                .expose_secret(),
            "v"
        );
    }

    #[test]
    fn a_garbled_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (content, expected) in [
            ("not base64 at all!", "found no base64"),
            (BASE64.encode([7u8; 16]).as_str(), "found 16 bytes"),
            ("", "found 0 bytes"),
        ] {
            let path = dir.path().join("key");
            std::fs::write(&path, content).expect("write");
            let err = SecretKey::load_or_create(&path).err().expect("refused");
            assert!(matches!(err, StoreError::KeyFile { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
