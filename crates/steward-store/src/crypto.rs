//! Secrets at rest: the key files, the AEAD around each secret value, and the keyed digest of
//! idempotent request bodies.
//!
//! Owns the secrets key (32 random bytes, base64 in a file of mode 0600) and AES-256-GCM
//! encryption of one value, bound to its row by using the workspace id and secret key as
//! associated data, so a ciphertext copied to another row does not decrypt. It must not log,
//! display or return a plaintext other than as a [`SecretString`]. Beside it, in a file of its
//! own, the idempotency key: bodies of creates (which may carry secrets) are stored only as
//! an HMAC under it.

use crate::StoreError;
use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;
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
        let bytes = load_or_create_key(path, "secrets key")?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| StoreError::KeyFile {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, "expected 32 bytes"),
        })?;
        Ok(SecretKey { cipher })
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

/// The key of the idempotency table's body digests: HMAC-SHA256, so a reader of the
/// database (without this key file) cannot confirm a guessed request body, secrets included.
pub struct RequestKey {
    mac: Hmac<Sha256>,
}

/// The prefix of a keyed body digest; rows written before digests were keyed had a bare
/// SHA-256 hex, which migration 0005 erased.
const DIGEST_SCHEME: &str = "hmac-sha256:";

impl RequestKey {
    /// Reads the key file at `path` or creates it, like [`SecretKey::load_or_create`].
    pub fn load_or_create(path: &Path) -> Result<RequestKey, StoreError> {
        let bytes = load_or_create_key(path, "idempotency key")?;
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&bytes).map_err(|_| StoreError::KeyFile {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, "unusable HMAC key"),
            })?;
        Ok(RequestKey { mac })
    }

    /// The keyed digest of a request body, as stored: `hmac-sha256:<hex>`.
    pub fn digest(&self, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(DIGEST_SCHEME.len() + 2 * tag.len());
        out.push_str(DIGEST_SCHEME);
        for b in tag {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Reads a 32-byte key (base64) from `path`, or creates one (OS random source, mode 0600,
/// parent directories as needed). `what` names it in the log.
fn load_or_create_key(path: &Path, what: &'static str) -> Result<[u8; KEY_LEN], StoreError> {
    let key_file = |source| StoreError::KeyFile {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_shared(path, what);
            parse_key(&text).map_err(key_file)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(path, what).map_err(key_file),
        Err(e) => Err(key_file(e)),
    }
}

fn parse_key(text: &str) -> io::Result<[u8; KEY_LEN]> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let bytes = BASE64.decode(text.trim()).map_err(|_| {
        invalid(format!(
            "expected {KEY_LEN} bytes in base64, found no base64"
        ))
    })?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        invalid(format!(
            "expected {KEY_LEN} bytes in base64, found {len} bytes"
        ))
    })
}

fn create_key(path: &Path, what: &'static str) -> io::Result<[u8; KEY_LEN]> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let mut key = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    // `create_new`: never overwrite a key that appeared meanwhile (it may be in use).
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{}\n", BASE64.encode(key)).as_bytes())?;
    file.sync_all()?;
    // The file's directory entry must be durable before anything is written with the key.
    File::open(dir)?.sync_all()?;
    tracing::info!(path = %path.display(), key = what, "created a new key file");
    Ok(key)
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

/// Warns when other users may read a key file (an operator may have copied it carelessly).
fn warn_if_shared(path: &Path, what: &'static str) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), key = what, mode = format!("{mode:o}"), "key file is readable by others; chmod 600 it");
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
