//! The read queries. They run on the pool, beside the writer, and never write.
//!
//! A workspace's `last_event_seq` is not stored: it is the highest `seq` of its events, found
//! at the end of its range of the `events` key.

use crate::codec::{
    decode_agent, decode_spec, decode_state, from_json, generation_value, workspace_id,
};
use crate::error::database;
use crate::{EventRecord, SecretKey, StoreError, WorkspaceRecord};
use secrecy::SecretString;
use sqlx::AnyPool;
use std::collections::{BTreeMap, HashMap};
use steward_domain::{Timestamp, WorkspaceId};

/// The columns of a workspace a read selects.
const WORKSPACE: &str = "SELECT id, generation, spec, state, agent, created_at, updated_at, \
     COALESCE((SELECT MAX(seq) FROM events WHERE events.workspace_id = workspaces.id), 0) \
     AS last_event_seq FROM workspaces";

/// A row of `workspaces`.
#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    id: String,
    generation: i64,
    spec: String,
    state: String,
    agent: String,
    created_at: i64,
    updated_at: i64,
    last_event_seq: i64,
}

impl WorkspaceRow {
    fn parse(self, secrets: BTreeMap<String, SecretString>) -> Result<WorkspaceRecord, StoreError> {
        Ok(WorkspaceRecord {
            id: workspace_id(&self.id)?,
            spec: decode_spec(&self.spec)?,
            state: decode_state(&self.state, self.generation)?,
            secrets,
            agent: decode_agent(&self.agent)?,
            last_event_seq: self.last_event_seq,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        })
    }
}

/// A row of `secrets`.
#[derive(sqlx::FromRow)]
struct SecretRow {
    workspace_id: String,
    key: String,
    ciphertext: String,
}

/// A row of `events`.
#[derive(sqlx::FromRow)]
struct EventRow {
    workspace_id: String,
    seq: i64,
    generation: i64,
    at: i64,
    kind: String,
    data: String,
}

impl EventRow {
    fn parse(self) -> Result<EventRecord, StoreError> {
        Ok(EventRecord {
            workspace_id: workspace_id(&self.workspace_id)?,
            seq: self.seq,
            generation: generation_value(self.generation)?,
            at: Timestamp(self.at),
            kind: self.kind,
            data: from_json(&self.data)?,
        })
    }
}

/// Every workspace, oldest first.
pub(crate) async fn load_all(
    pool: &AnyPool,
    key: &SecretKey,
) -> Result<Vec<WorkspaceRecord>, StoreError> {
    let mut conn = pool.acquire().await.map_err(database)?;
    let rows: Vec<WorkspaceRow> = sqlx::query_as(&format!("{WORKSPACE} ORDER BY created_at"))
        .fetch_all(&mut *conn)
        .await
        .map_err(database)?;
    let secret_rows: Vec<SecretRow> =
        sqlx::query_as("SELECT workspace_id, key, ciphertext FROM secrets")
            .fetch_all(&mut *conn)
            .await
            .map_err(database)?;
    let mut secrets: HashMap<String, Vec<SecretRow>> = HashMap::new();
    for row in secret_rows {
        secrets
            .entry(row.workspace_id.clone())
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|row| {
            let id = workspace_id(&row.id)?;
            let decrypted = decrypt_all(key, id, secrets.remove(&row.id).unwrap_or_default())?;
            row.parse(decrypted)
        })
        .collect()
}

/// One workspace.
pub(crate) async fn load(
    pool: &AnyPool,
    key: &SecretKey,
    id: WorkspaceId,
) -> Result<Option<WorkspaceRecord>, StoreError> {
    let text = id.to_string();
    let mut conn = pool.acquire().await.map_err(database)?;
    let Some(row) = sqlx::query_as::<_, WorkspaceRow>(&format!("{WORKSPACE} WHERE id = $1"))
        .bind(&text)
        .fetch_optional(&mut *conn)
        .await
        .map_err(database)?
    else {
        return Ok(None);
    };
    let secret_rows: Vec<SecretRow> =
        sqlx::query_as("SELECT workspace_id, key, ciphertext FROM secrets WHERE workspace_id = $1")
            .bind(&text)
            .fetch_all(&mut *conn)
            .await
            .map_err(database)?;
    row.parse(decrypt_all(key, id, secret_rows)?).map(Some)
}

/// Events of a workspace with `seq > after`, oldest first, at most `limit`.
pub(crate) async fn events(
    pool: &AnyPool,
    id: WorkspaceId,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRecord>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT workspace_id, seq, generation, at, kind, data FROM events \
         WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(id.to_string())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(database)?;
    rows.into_iter().map(EventRow::parse).collect()
}

/// The workspace an idempotency key created, with the body hash it was created with.
pub(crate) async fn idempotency(
    pool: &AnyPool,
    key: &str,
) -> Result<Option<(WorkspaceId, String)>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT workspace_id, body_hash FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(database)?;
    row.map(|(id, hash)| Ok((workspace_id(&id)?, hash)))
        .transpose()
}

/// A cheap check that the database answers.
pub(crate) async fn ping(pool: &AnyPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(database)?;
    Ok(())
}

fn decrypt_all(
    key: &SecretKey,
    id: WorkspaceId,
    rows: Vec<SecretRow>,
) -> Result<BTreeMap<String, SecretString>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let value = key.decrypt(id, &row.key, &row.ciphertext)?;
            Ok((row.key, value))
        })
        .collect()
}
