//! Durable state of Steward: workspaces, secrets (encrypted at rest), lifecycle events and
//! idempotency keys, on SQLite (embedded default) or PostgreSQL.
//!
//! Writes go through [`Store::commit`], which hands them to a single writer task that groups
//! the commits of many callers into one transaction (group commit): under load one fsync
//! serves many requests. A commit resolves only once its transaction is durable, so a caller
//! may answer `2xx` right after. Every write about a cycle is fenced by generation
//! (`... WHERE id = ? AND generation = ?`); a fenced-out commit changes nothing and says so.
//!
//! Where to look:
//!
//! | module | what it owns |
//! | --- | --- |
//! | `writer` | opening the store (pool, migrations), the queue and the writer task's loop |
//! | `apply` | how one batch is applied: rounds of grouped fenced `UPDATE`s and event inserts, other commits alone in savepoints |
//! | `sql` | multi-row statements written once for both backends (parameters, padding) |
//! | `codec` | the stored form of every value: state, configuration and agent record as JSON |
//! | `reads` | the read queries |
//! | `durable` | the sync thread of a SQLite database file, and what reads wait for |
//! | `sqlite` | SQLite's connection settings and checkpoints |
//! | `crypto` | the secrets key and the encryption of each secret |
//!
//! The schema (top-level `migrations/`; a migration whose SQL differs per backend has one file
//! in `migrations/sqlite/` and one in `migrations/postgres/`): `workspaces` (`id`,
//! `generation`, `spec`, `state` and `agent` as JSON text, `created_at`, `updated_at`),
//! `secrets` (one encrypted value per `(workspace_id, key)`), `events` (keyed by
//! `(workspace_id, seq)`), `idempotency_keys`.
//!
//! This crate knows nothing of actors, HTTP or providers. sqlx types never leave it.

mod apply;
mod codec;
mod crypto;
mod durable;
mod error;
mod files;
mod reads;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
mod writer;

pub use crypto::{RequestKey, SecretKey};

/// The idempotency key's file name, beside the secrets key.
const REQUEST_KEY_FILE: &str = "idempotency.key";
pub use error::StoreError;

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::path::Path;
use steward_domain::{Generation, MachineState, Timestamp, WorkspaceId, WorkspaceSpec};

/// Options for opening a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Most commits grouped into one transaction.
    pub max_batch: usize,
    /// Connections in the read pool.
    pub max_connections: u32,
    /// SQLite busy timeout.
    pub busy_timeout: std::time::Duration,
}

/// Everything persisted about one workspace.
#[derive(Clone, Debug)]
pub struct WorkspaceRecord {
    /// Id.
    pub id: WorkspaceId,
    /// Configuration.
    pub spec: WorkspaceSpec,
    /// Lifecycle state.
    pub state: MachineState,
    /// Decrypted secrets, by key.
    pub secrets: BTreeMap<String, SecretString>,
    /// Agent channel state.
    pub agent: AgentRecord,
    /// Sequence number of the last event recorded (0 if none): read from `events`, never
    /// written.
    pub last_event_seq: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last update time.
    pub updated_at: Timestamp,
}

/// What the daemon knows of the agent inside the current instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentRecord {
    /// Generation whose token is valid.
    pub generation: Generation,
    /// SHA-256 of that token (stored as hex).
    pub token_hash: Option<[u8; 32]>,
    /// URL the agent registered.
    pub url: Option<String>,
    /// Last heartbeat.
    pub last_heartbeat_at: Option<Timestamp>,
}

/// One lifecycle event, as stored. `(workspace_id, seq)` is unique; `seq` counts from 1 per
/// workspace and is assigned by the workspace's actor.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Per-workspace sequence number.
    pub seq: i64,
    /// Generation it concerns.
    pub generation: Generation,
    /// When.
    pub at: Timestamp,
    /// Event type, e.g. `provision_started`.
    pub kind: String,
    /// Details (a JSON object).
    pub data: serde_json::Value,
}

/// One write inside a commit.
#[derive(Clone, Debug)]
pub enum Write {
    /// A new workspace with its secrets, and the idempotency key that created it, if any.
    InsertWorkspace {
        /// The workspace (its `last_event_seq` is ignored).
        record: Box<WorkspaceRecord>,
        /// `(key, keyed digest of the request body)`: see [`Store::request_digest`].
        idempotency: Option<(String, String)>,
    },
    /// Lifecycle state, fenced: applies only if the stored generation is `expected_generation`.
    SaveState {
        /// Workspace.
        id: WorkspaceId,
        /// Generation the stored row must still have.
        expected_generation: Generation,
        /// New state (its generation may be higher).
        state: MachineState,
        /// Update time.
        at: Timestamp,
    },
    /// Configuration (model, env, provider...), fenced like `SaveState`: applied only if
    /// the stored generation is `expected_generation`.
    SaveSpec {
        /// Workspace.
        id: WorkspaceId,
        /// The generation the stored state must have.
        expected_generation: Generation,
        /// New configuration.
        spec: WorkspaceSpec,
    },
    /// Sets one secret (encrypted before it is written).
    PutSecret {
        /// Workspace.
        id: WorkspaceId,
        /// Key.
        key: String,
        /// Plain value.
        value: SecretString,
    },
    /// Removes one secret (no error if absent).
    DeleteSecret {
        /// Workspace.
        id: WorkspaceId,
        /// Key.
        key: String,
    },
    /// Agent channel state, fenced on the workspace's generation being `agent.generation`.
    SaveAgent {
        /// Workspace.
        id: WorkspaceId,
        /// New agent state.
        agent: AgentRecord,
    },
    /// Appends one event.
    AppendEvent(EventRecord),
    /// Removes the workspace with its secrets, events and idempotency keys.
    DeleteWorkspace {
        /// Workspace.
        id: WorkspaceId,
    },
}

/// How a commit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Every write applied; durable.
    Committed,
    /// A fenced write found another generation: nothing of this commit applied.
    Fenced {
        /// Workspace.
        id: WorkspaceId,
        /// Generation the write expected.
        expected: Generation,
    },
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<writer::Inner>,
    request_key: std::sync::Arc<RequestKey>,
}

impl Store {
    /// Connects, applies migrations, loads or creates the secrets key at `key_path` and the
    /// idempotency key beside it (`idempotency.key`, both mode 0600), and starts the writer
    /// task (on the current tokio runtime).
    pub async fn open(options: StoreOptions, key_path: &Path) -> Result<Store, StoreError> {
        let request_key = RequestKey::load_or_create(&key_path.with_file_name(REQUEST_KEY_FILE))?;
        let inner = writer::open(options, key_path).await?;
        Ok(Store {
            inner,
            request_key: std::sync::Arc::new(request_key),
        })
    }

    /// The digest an idempotent create's body is stored and compared as: an HMAC under the
    /// idempotency key, so the database alone does not let anyone confirm a guessed body.
    pub fn request_digest(&self, body: &[u8]) -> String {
        self.request_key.digest(body)
    }

    /// Commits `writes` atomically (grouped with other callers' commits). Resolves once
    /// durable. Refused with [`StoreError::Overloaded`] like [`Store::enqueue`].
    pub async fn commit(&self, writes: Vec<Write>) -> Result<CommitOutcome, StoreError> {
        self.enqueue(writes).await
    }

    /// Like [`Store::commit`], but queues `writes` before returning, so the commits one
    /// caller enqueues are applied in that order; the future resolves once they are durable.
    /// When the writer is that far behind, the future fails at once with
    /// [`StoreError::Overloaded`] and nothing is written.
    pub fn enqueue(
        &self,
        writes: Vec<Write>,
    ) -> impl std::future::Future<Output = Result<CommitOutcome, StoreError>> + Send + 'static {
        writer::enqueue(&self.inner, writes)
    }

    /// Every workspace, for start-up.
    ///
    /// Like every read, answers only with what is durable: what it saw of commits still being
    /// synced is returned once they are on disk.
    pub async fn load_all(&self) -> Result<Vec<WorkspaceRecord>, StoreError> {
        self.durable(reads::load_all(&self.inner.pool, &self.inner.key).await)
            .await
    }

    /// One workspace.
    pub async fn load(&self, id: WorkspaceId) -> Result<Option<WorkspaceRecord>, StoreError> {
        self.durable(reads::load(&self.inner.pool, &self.inner.key, id).await)
            .await
    }

    /// Events of a workspace with `seq > after`, oldest first, at most `limit`.
    pub async fn events(
        &self,
        id: WorkspaceId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.durable(reads::events(&self.inner.pool, id, after, limit).await)
            .await
    }

    /// The workspace an idempotency key created, with the body digest it was created with
    /// (empty for keys stored before digests were keyed: their bodies are unknown).
    pub async fn idempotency(
        &self,
        key: &str,
    ) -> Result<Option<(WorkspaceId, String)>, StoreError> {
        self.durable(reads::idempotency(&self.inner.pool, key).await)
            .await
    }

    /// `read`, once everything it may have seen is on disk.
    async fn durable<T>(&self, read: Result<T, StoreError>) -> Result<T, StoreError> {
        let read = read?;
        self.inner.readable().await?;
        Ok(read)
    }

    /// Cheap check that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        reads::ping(&self.inner.pool).await
    }

    /// Waits for every commit queued so far, then stops the writer and closes the pool.
    pub async fn close(&self) {
        writer::close(&self.inner).await
    }
}
