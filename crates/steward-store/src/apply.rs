//! How a batch of commits is applied: one transaction, each commit with the outcome it would
//! have alone, in queue order.
//!
//! Most commits are a workspace's lifecycle: fenced writes of its state, configuration or
//! agent record, then its events. Those are applied grouped, a few statements for many
//! commits:
//!
//! 1. The batch is cut into **rounds** of at most one commit per workspace, in queue order (a
//!    workspace's second commit goes in the next round, and so on). Other commits — creates,
//!    deletes, secrets, a commit over several workspaces or one whose writes the grouped way
//!    does not take — are applied between the rounds, alone, each in a savepoint.
//! 2. Per round, one multi-row fenced `UPDATE workspaces … FROM (VALUES …) … RETURNING id`
//!    writes every commit whose stored generation is the one it expects. A commit whose
//!    workspace is not returned was fenced out: its outcome is `Fenced`, and nothing of it is
//!    written.
//! 3. Then one multi-row `INSERT INTO events` writes the events of the commits that held.
//!
//! Nothing is guessed: each fence is checked by the database, in the order the commits came.
//! If a grouped statement fails (an event's `seq` already stored, a workspace that is gone),
//! the transaction is rolled back and the batch applied again commit by commit, each in a
//! savepoint, which pins the error on the commit that caused it.
//!
//! An ownership fence (several daemons sharing one PostgreSQL database, each write also
//! checking that this daemon still owns the workspace's partition) slots into step 2: the
//! `UPDATE`'s `WHERE` gains `AND partitions.epoch = v.epoch` over a join on the workspace's
//! partition, and a commit not returned is then fenced on either; the one-by-one path
//! ([`apply_one`]) checks the same in its fenced `UPDATE`s.

use crate::codec::{encode_agent, encode_spec, encode_state, generation_column, to_json};
use crate::error::database;
use crate::sql::{Dialect, MultiRow, Value};
use crate::{CommitOutcome, EventRecord, SecretKey, StoreError, Write};
use secrecy::ExposeSecret;
use sqlx::{Acquire, AnyConnection, Executor, Row as _};
use std::collections::{HashMap, HashSet};
use steward_domain::{Generation, WorkspaceId};

/// Each commit's outcome.
pub(crate) type Outcomes = Vec<Result<CommitOutcome, StoreError>>;

/// What the writer did, for tests to observe how batches were applied.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Counters {
    /// Rounds applied grouped.
    pub(crate) rounds: std::sync::atomic::AtomicUsize,
    /// Commits applied alone, each in its savepoint.
    pub(crate) alone: std::sync::atomic::AtomicUsize,
    /// Batches applied again commit by commit after a grouped statement failed.
    pub(crate) retried: std::sync::atomic::AtomicUsize,
}

/// Applies `batch` (each commit's writes) in one transaction on `conn` and commits it. The
/// error means the transaction itself failed: nothing of the batch is committed.
pub(crate) async fn batch(
    conn: &mut AnyConnection,
    key: &SecretKey,
    batch: &[&[Write]],
    #[cfg(test)] counters: &Counters,
) -> sqlx::Result<Outcomes> {
    let apply = Apply {
        key,
        dialect: Dialect::of(conn),
        #[cfg(test)]
        counters,
    };
    let mut tx = conn.begin().await?;
    match apply.grouped(&mut tx, batch).await? {
        Ok(outcomes) => {
            tx.commit().await?;
            Ok(outcomes)
        }
        Err(e) => {
            tx.rollback().await?;
            tracing::debug!(error = %e, size = batch.len(), "store batch applied again commit by commit");
            #[cfg(test)]
            counters
                .retried
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut tx = conn.begin().await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for writes in batch {
                outcomes.push(apply.alone(&mut tx, writes).await?);
            }
            tx.commit().await?;
            Ok(outcomes)
        }
    }
}

struct Apply<'a> {
    key: &'a SecretKey,
    dialect: Dialect,
    #[cfg(test)]
    counters: &'a Counters,
}

/// A lifecycle commit, ready to be applied grouped: everything it writes about its one
/// workspace, encoded.
struct Lifecycle<'a> {
    /// Index of the commit in the batch.
    index: usize,
    id: WorkspaceId,
    /// The generation its first fenced write expects stored (`None`: events only).
    fence: Option<Generation>,
    /// New `generation`, `state` and `updated_at`, if it saves the state.
    state: Option<(i64, String, i64)>,
    spec: Option<String>,
    agent: Option<String>,
    events: Vec<&'a EventRecord>,
}

impl<'a> Lifecycle<'a> {
    /// `writes` as a lifecycle commit, if they are one: fenced writes, then events, of one
    /// workspace, each fence after the first expecting the generation the writes before it
    /// leave (otherwise the commit is applied alone, which says which write was fenced).
    fn of(index: usize, writes: &'a [Write]) -> Option<Lifecycle<'a>> {
        let mut commit = Lifecycle {
            index,
            id: writes.first().map(workspace_of)?,
            fence: None,
            state: None,
            spec: None,
            agent: None,
            events: Vec::new(),
        };
        let mut current = None;
        for write in writes {
            if workspace_of(write) != commit.id {
                return None;
            }
            let expected = match write {
                Write::SaveState {
                    expected_generation,
                    ..
                }
                | Write::SaveSpec {
                    expected_generation,
                    ..
                } => *expected_generation,
                Write::SaveAgent { agent, .. } => agent.generation,
                Write::AppendEvent(event) => {
                    generation_column(event.generation).ok()?;
                    commit.events.push(event);
                    continue;
                }
                _ => return None,
            };
            if !commit.events.is_empty() || current.is_some_and(|g| g != expected) {
                return None;
            }
            commit.fence.get_or_insert(expected);
            current = Some(expected);
            match write {
                Write::SaveState { state, at, .. } => {
                    let (json, generation) = encode_state(state).ok()?;
                    commit.state = Some((generation, json, at.0));
                    current = Some(state.generation);
                }
                Write::SaveSpec { spec, .. } => commit.spec = Some(encode_spec(spec).ok()?),
                Write::SaveAgent { agent, .. } => commit.agent = Some(encode_agent(agent).ok()?),
                _ => unreachable!("matched above"),
            }
        }
        if let Some(fence) = commit.fence {
            generation_column(fence).ok()?;
        }
        Some(commit)
    }

    /// Its row of [`UPDATE`].
    fn update_row(&self) -> Result<Vec<Value>, StoreError> {
        let fence = self.fence.map(generation_column).transpose()?;
        let (generation, state, at) = match &self.state {
            Some((generation, state, at)) => (Some(*generation), Some(state.clone()), Some(*at)),
            None => (None, None, None),
        };
        Ok(vec![
            Value::Text(Some(self.id.to_string())),
            Value::Int(fence),
            Value::Int(generation),
            Value::Text(state),
            Value::Text(self.spec.clone()),
            Value::Text(self.agent.clone()),
            Value::Int(at),
        ])
    }
}

/// The workspace a write is about.
fn workspace_of(write: &Write) -> WorkspaceId {
    match write {
        Write::InsertWorkspace { record, .. } => record.id,
        Write::SaveState { id, .. }
        | Write::SaveSpec { id, .. }
        | Write::PutSecret { id, .. }
        | Write::DeleteSecret { id, .. }
        | Write::SaveAgent { id, .. }
        | Write::DeleteWorkspace { id } => *id,
        Write::AppendEvent(event) => event.workspace_id,
    }
}

/// The fenced write of a round: each row `(id, expected generation, new generation, state,
/// spec, agent, updated_at)`, a NULL keeping what is stored; returns the workspaces whose
/// fence held.
static UPDATE: MultiRow = MultiRow::new(7, |values| {
    format!(
        "WITH v (wid, expected, generation, state, spec, agent, updated_at) AS (VALUES {values}) \
         UPDATE workspaces SET \
         generation = COALESCE(v.generation, workspaces.generation), \
         state = COALESCE(v.state, workspaces.state), \
         spec = COALESCE(v.spec, workspaces.spec), \
         agent = COALESCE(v.agent, workspaces.agent), \
         updated_at = COALESCE(v.updated_at, workspaces.updated_at) \
         FROM v WHERE workspaces.id = v.wid AND workspaces.generation = v.expected \
         RETURNING id"
    )
});

/// The events of a round.
static INSERT_EVENTS: MultiRow = MultiRow::new(6, |values| {
    format!(
        "WITH v (workspace_id, seq, generation, at, kind, data) AS (VALUES {values}) \
         INSERT INTO events (workspace_id, seq, generation, at, kind, data) \
         SELECT workspace_id, seq, generation, at, kind, data FROM v \
         WHERE workspace_id IS NOT NULL"
    )
});

/// The row of `events` of `event`.
fn event_row(event: &EventRecord) -> Result<Vec<Value>, StoreError> {
    Ok(vec![
        Value::Text(Some(event.workspace_id.to_string())),
        Value::Int(Some(event.seq)),
        Value::Int(Some(generation_column(event.generation)?)),
        Value::Int(Some(event.at.0)),
        Value::Text(Some(event.kind.clone())),
        Value::Text(Some(to_json(&event.data)?)),
    ])
}

impl Apply<'_> {
    /// Applies `batch` inside `tx`, lifecycle commits in rounds. The outer error means the
    /// transaction is broken; the inner one, that a grouped statement failed (the caller
    /// rolls back and applies the batch commit by commit).
    async fn grouped(
        &self,
        tx: &mut AnyConnection,
        batch: &[&[Write]],
    ) -> sqlx::Result<Result<Outcomes, StoreError>> {
        let mut outcomes: Vec<Option<Result<CommitOutcome, StoreError>>> =
            (0..batch.len()).map(|_| None).collect();
        let mut pending: Vec<Lifecycle<'_>> = Vec::new();
        for (index, writes) in batch.iter().enumerate() {
            if writes.is_empty() {
                outcomes[index] = Some(Ok(CommitOutcome::Committed));
                continue;
            }
            if let Some(commit) = Lifecycle::of(index, writes) {
                pending.push(commit);
                continue;
            }
            // What came before it is written first: it may depend on it.
            if let Err(e) = self
                .rounds(tx, std::mem::take(&mut pending), &mut outcomes)
                .await
            {
                return Ok(Err(e));
            }
            outcomes[index] = Some(self.alone(tx, writes).await?);
        }
        if let Err(e) = self.rounds(tx, pending, &mut outcomes).await {
            return Ok(Err(e));
        }
        Ok(Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every commit has an outcome"))
            .collect()))
    }

    /// Applies `commits` (in queue order) round by round, recording each one's outcome.
    async fn rounds(
        &self,
        tx: &mut AnyConnection,
        commits: Vec<Lifecycle<'_>>,
        outcomes: &mut [Option<Result<CommitOutcome, StoreError>>],
    ) -> Result<(), StoreError> {
        let mut rounds: Vec<Vec<Lifecycle<'_>>> = Vec::new();
        let mut seen: HashMap<WorkspaceId, usize> = HashMap::new();
        for commit in commits {
            let round = seen.entry(commit.id).or_insert(0);
            if *round == rounds.len() {
                rounds.push(Vec::new());
            }
            rounds[*round].push(commit);
            *round += 1;
        }
        for round in rounds {
            #[cfg(test)]
            self.counters
                .rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let held = self.update(tx, &round).await?;
            let mut events = Vec::new();
            for commit in &round {
                outcomes[commit.index] = Some(Ok(match commit.fence {
                    Some(expected) if !held.contains(&commit.id.to_string()) => {
                        CommitOutcome::Fenced {
                            id: commit.id,
                            expected,
                        }
                    }
                    _ => {
                        for event in &commit.events {
                            events.push(event_row(event)?);
                        }
                        CommitOutcome::Committed
                    }
                }));
            }
            for statement in INSERT_EVENTS.statements(self.dialect, events) {
                tx.execute(statement.query()).await.map_err(database)?;
            }
        }
        Ok(())
    }

    /// The fenced `UPDATE` of a round; the ids of the workspaces whose fence held.
    async fn update(
        &self,
        tx: &mut AnyConnection,
        round: &[Lifecycle<'_>],
    ) -> Result<HashSet<String>, StoreError> {
        let rows = round
            .iter()
            .filter(|commit| commit.fence.is_some())
            .map(Lifecycle::update_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut held = HashSet::with_capacity(rows.len());
        for statement in UPDATE.statements(self.dialect, rows) {
            let returned = statement
                .query()
                .fetch_all(&mut *tx)
                .await
                .map_err(database)?;
            for row in returned {
                held.insert(row.try_get::<String, _>(0).map_err(database)?);
            }
        }
        Ok(held)
    }

    /// Applies one commit in a savepoint: all its writes, or none if one is fenced or fails.
    /// The outer error means the transaction is broken.
    async fn alone(
        &self,
        tx: &mut AnyConnection,
        writes: &[Write],
    ) -> sqlx::Result<Result<CommitOutcome, StoreError>> {
        #[cfg(test)]
        self.counters
            .alone
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut savepoint = tx.begin().await?;
        let mut outcome = Ok(CommitOutcome::Committed);
        for write in writes {
            outcome = apply_one(&mut savepoint, self.key, write).await;
            if !matches!(outcome, Ok(CommitOutcome::Committed)) {
                break;
            }
        }
        match outcome {
            Ok(CommitOutcome::Committed) => savepoint.commit().await?,
            Ok(CommitOutcome::Fenced { .. }) | Err(_) => savepoint.rollback().await?,
        }
        Ok(outcome)
    }
}

/// Applies one write; `Fenced` if its generation fence does not hold.
async fn apply_one(
    conn: &mut AnyConnection,
    key: &SecretKey,
    write: &Write,
) -> Result<CommitOutcome, StoreError> {
    let fenced = |id, expected| CommitOutcome::Fenced { id, expected };
    match write {
        Write::InsertWorkspace {
            record,
            idempotency,
        } => {
            let id = record.id.to_string();
            let (state, generation) = encode_state(&record.state)?;
            sqlx::query(
                "INSERT INTO workspaces (id, generation, spec, state, agent, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(generation)
            .bind(encode_spec(&record.spec)?)
            .bind(state)
            .bind(encode_agent(&record.agent)?)
            .bind(record.created_at.0)
            .bind(record.updated_at.0)
            .execute(&mut *conn)
            .await
            .map_err(database)?;
            for (name, value) in &record.secrets {
                put_secret(conn, key, record.id, name, value.expose_secret()).await?;
            }
            if let Some((idempotency_key, body_hash)) = idempotency {
                sqlx::query(
                    "INSERT INTO idempotency_keys (key, workspace_id, body_hash, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(idempotency_key)
                .bind(&id)
                .bind(body_hash)
                .bind(record.created_at.0)
                .execute(&mut *conn)
                .await
                .map_err(database)?;
            }
        }
        Write::SaveState {
            id,
            expected_generation,
            state,
            at,
        } => {
            let (json, generation) = encode_state(state)?;
            let done = sqlx::query(
                "UPDATE workspaces SET generation = $1, state = $2, updated_at = $3 \
                 WHERE id = $4 AND generation = $5",
            )
            .bind(generation)
            .bind(json)
            .bind(at.0)
            .bind(id.to_string())
            .bind(generation_column(*expected_generation)?)
            .execute(&mut *conn)
            .await
            .map_err(database)?;
            if done.rows_affected() == 0 {
                return Ok(fenced(*id, *expected_generation));
            }
        }
        Write::SaveSpec {
            id,
            expected_generation,
            spec,
        } => {
            let done =
                sqlx::query("UPDATE workspaces SET spec = $1 WHERE id = $2 AND generation = $3")
                    .bind(encode_spec(spec)?)
                    .bind(id.to_string())
                    .bind(generation_column(*expected_generation)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
            if done.rows_affected() == 0 {
                return Ok(fenced(*id, *expected_generation));
            }
        }
        Write::SaveAgent { id, agent } => {
            let done =
                sqlx::query("UPDATE workspaces SET agent = $1 WHERE id = $2 AND generation = $3")
                    .bind(encode_agent(agent)?)
                    .bind(id.to_string())
                    .bind(generation_column(agent.generation)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
            if done.rows_affected() == 0 {
                return Ok(fenced(*id, agent.generation));
            }
        }
        Write::PutSecret {
            id,
            key: name,
            value,
        } => put_secret(conn, key, *id, name, value.expose_secret()).await?,
        Write::DeleteSecret { id, key } => {
            sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND key = $2")
                .bind(id.to_string())
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(database)?;
        }
        Write::AppendEvent(event) => {
            // `(workspace_id, seq)` is unique, and the workspace must be stored.
            let mut query = sqlx::query(
                "INSERT INTO events (workspace_id, seq, generation, at, kind, data) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            );
            for value in event_row(event)? {
                query = value.bind(query);
            }
            query.execute(&mut *conn).await.map_err(database)?;
        }
        Write::DeleteWorkspace { id } => {
            let id = id.to_string();
            for statement in [
                "DELETE FROM secrets WHERE workspace_id = $1",
                "DELETE FROM events WHERE workspace_id = $1",
                "DELETE FROM idempotency_keys WHERE workspace_id = $1",
                "DELETE FROM workspaces WHERE id = $1",
            ] {
                sqlx::query(statement)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
            }
        }
    }
    Ok(CommitOutcome::Committed)
}

/// Inserts or replaces one secret, encrypted.
async fn put_secret(
    conn: &mut AnyConnection,
    key: &SecretKey,
    id: WorkspaceId,
    name: &str,
    value: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO secrets (workspace_id, key, ciphertext) VALUES ($1, $2, $3) \
         ON CONFLICT (workspace_id, key) DO UPDATE SET ciphertext = excluded.ciphertext",
    )
    .bind(id.to_string())
    .bind(name)
    .bind(key.encrypt(id, name, value)?)
    .execute(&mut *conn)
    .await
    .map_err(database)?;
    Ok(())
}
