//! The store's error type. It owns the translation of sqlx errors into [`StoreError`] so that
//! no sqlx type appears in the crate's public API; it must not carry secret values (sqlx and
//! AEAD errors never include bound parameters or plaintexts).

use std::path::PathBuf;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be reached.
    #[error("database: {0}")]
    Database(String),
    /// A unique key already exists: a workspace id, an event `seq`, or an idempotency key
    /// (two concurrent creates with the same key: look the key up again).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A secret could not be decrypted: wrong secrets key, or a ciphertext altered or moved.
    #[error("secrets: {0}")]
    Crypto(String),
    /// The secrets key file could not be read or written, or does not hold a key.
    #[error("secrets key file {}: {source}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A value does not fit the schema: a stored row that does not parse, or a generation
    /// beyond `BIGINT`.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Too many commits are waiting for the writer: shed load (`503`).
    #[error("the store is overloaded: too many commits waiting")]
    Overloaded,
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

/// Translates a sqlx error, telling unique-key violations apart.
pub(crate) fn database(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            StoreError::Conflict(e.message().to_owned())
        }
        _ => StoreError::Database(error.to_string()),
    }
}
