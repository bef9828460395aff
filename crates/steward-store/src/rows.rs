//! Rows as the database stores them, their conversion to and from the domain types, and the
//! read queries.
//!
//! Owns every textual encoding of the schema (causes as a comma list, JSON in TEXT,
//! generations as BIGINT) in both directions, so the writer and the readers cannot disagree.
//! It must not write: every write goes through the writer task.

use crate::error::database;
use crate::writer::Inner;
use crate::{AgentRecord, EventRecord, StoreError, WorkspaceRecord};
use secrecy::SecretString;
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use steward_domain::{
    Cause, CauseSet, Cycle, Desired, Failure, Generation, MachineState, Phase, ReadyWhen,
    ScheduledRetry, Switch, SwitchStage, Timestamp, WorkspaceId, WorkspaceSpec,
};

/// A query on the Any driver, with its arguments.
pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// One column value, owned: statements can be built before they are bound, and a NULL keeps
/// its column's type (PostgreSQL types a `VALUES` list from its parameters). Serializes as
/// the bare JSON string, number or null (rows handed to SQLite as JSON).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Value {
    pub(crate) fn text(value: String) -> Self {
        Value::Text(Some(value))
    }

    pub(crate) fn int(value: i64) -> Self {
        Value::Int(Some(value))
    }

    pub(crate) fn bind(self, query: AnyQuery<'_>) -> AnyQuery<'_> {
        match self {
            Value::Text(value) => query.bind(value),
            Value::Int(value) => query.bind(value),
        }
    }

    pub(crate) fn bind_all<'q>(
        query: AnyQuery<'q>,
        values: impl IntoIterator<Item = Value>,
    ) -> AnyQuery<'q> {
        values
            .into_iter()
            .fold(query, |query, value| value.bind(query))
    }
}

/// Configuration columns of `workspaces`.
#[derive(sqlx::FromRow)]
pub(crate) struct SpecColumns {
    name: String,
    provider: String,
    image: Option<String>,
    command: Option<String>,
    env: String,
    model: Option<String>,
}

impl SpecColumns {
    pub(crate) fn new(spec: &WorkspaceSpec) -> Result<Self, StoreError> {
        Ok(Self {
            name: spec.name.clone(),
            provider: spec.provider.clone(),
            image: spec.image.clone(),
            command: spec.command.as_ref().map(to_json).transpose()?,
            env: to_json(&spec.env)?,
            model: spec.model.clone(),
        })
    }

    /// Binds, in order: name, provider, image, command, env, model.
    pub(crate) fn bind(self, query: AnyQuery<'_>) -> AnyQuery<'_> {
        Value::bind_all(query, self.values())
    }

    /// The values [`SpecColumns::bind`] binds.
    pub(crate) fn values(self) -> [Value; 6] {
        [
            Value::text(self.name),
            Value::text(self.provider),
            Value::Text(self.image),
            Value::Text(self.command),
            Value::text(self.env),
            Value::Text(self.model),
        ]
    }

    /// NULLs of the types of [`SpecColumns::values`].
    pub(crate) const NULLS: [Value; 6] = [const { Value::Text(None) }; 6];

    fn parse(self) -> Result<WorkspaceSpec, StoreError> {
        Ok(WorkspaceSpec {
            name: self.name,
            provider: self.provider,
            image: self.image,
            command: self.command.as_deref().map(from_json).transpose()?,
            env: from_json(&self.env)?,
            model: self.model,
        })
    }
}

/// Lifecycle columns of `workspaces`.
#[derive(sqlx::FromRow)]
pub(crate) struct StateColumns {
    ready_when: String,
    phase: String,
    desired: String,
    generation: i64,
    observed_generation: i64,
    pending: String,
    failure_reason: Option<String>,
    failure_generation: Option<i64>,
    backoff_attempt: i64,
    recent_failures: String,
    last_cycle_started_at: Option<i64>,
    last_cycle_ended_at: Option<i64>,
    healthy_since: Option<i64>,
    retry_at: Option<i64>,
    retry_causes: String,
    cycle_generation: Option<i64>,
    cycle_causes: String,
    cycle_started_at: Option<i64>,
    switch_state: Option<String>,
}

/// `workspaces.switch_state`: the switch in progress, as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct SwitchColumn {
    from: String,
    to: String,
    from_ready: String,
    to_ready: String,
    stage: String,
    rollback: bool,
}

impl SwitchColumn {
    fn new(switch: &Switch) -> Self {
        Self {
            from: switch.from.clone(),
            to: switch.to.clone(),
            from_ready: switch.from_ready.as_str().to_owned(),
            to_ready: switch.to_ready.as_str().to_owned(),
            stage: switch.stage.as_str().to_owned(),
            rollback: switch.rollback,
        }
    }

    fn parse(self) -> Result<Switch, StoreError> {
        let ready = |s: &str| ReadyWhen::parse(s).ok_or_else(|| unknown("ready_when", s));
        Ok(Switch {
            from_ready: ready(&self.from_ready)?,
            to_ready: ready(&self.to_ready)?,
            stage: SwitchStage::parse(&self.stage)
                .ok_or_else(|| unknown("switch stage", &self.stage))?,
            from: self.from,
            to: self.to,
            rollback: self.rollback,
        })
    }
}

impl StateColumns {
    pub(crate) fn new(state: &MachineState) -> Result<Self, StoreError> {
        let millis: Vec<i64> = state.recent_failures.iter().map(|t| t.0).collect();
        Ok(Self {
            ready_when: state.ready_when.as_str().to_owned(),
            phase: state.phase.as_str().to_owned(),
            desired: state.desired.as_str().to_owned(),
            generation: generation_column(state.generation)?,
            observed_generation: generation_column(state.observed_generation)?,
            pending: join_causes(state.pending),
            failure_reason: state
                .failure
                .as_ref()
                .map(|f| crate::failure::encode(&f.reason, f.consecutive))
                .transpose()?,
            failure_generation: state
                .failure
                .as_ref()
                .map(|f| generation_column(f.generation))
                .transpose()?,
            backoff_attempt: i64::from(state.backoff_attempt),
            recent_failures: to_json(&millis)?,
            last_cycle_started_at: state.last_cycle_started_at.map(|t| t.0),
            last_cycle_ended_at: state.last_cycle_ended_at.map(|t| t.0),
            healthy_since: state.healthy_since.map(|t| t.0),
            retry_at: state.retry.map(|r| r.at.0),
            retry_causes: state
                .retry
                .map(|r| join_causes(r.causes))
                .unwrap_or_default(),
            cycle_generation: state
                .cycle
                .map(|c| generation_column(c.generation))
                .transpose()?,
            cycle_causes: state
                .cycle
                .map(|c| join_causes(c.causes))
                .unwrap_or_default(),
            cycle_started_at: state.cycle.map(|c| c.started_at.0),
            switch_state: state
                .switch
                .as_ref()
                .map(|s| to_json(&SwitchColumn::new(s)))
                .transpose()?,
        })
    }

    /// Binds, in order: ready_when, phase, desired, generation, observed_generation, pending,
    /// failure_reason, failure_generation, backoff_attempt, recent_failures,
    /// last_cycle_started_at, last_cycle_ended_at, healthy_since, retry_at, retry_causes,
    /// cycle_generation, cycle_causes, cycle_started_at, switch_state.
    pub(crate) fn bind(self, query: AnyQuery<'_>) -> AnyQuery<'_> {
        Value::bind_all(query, self.values())
    }

    /// The values [`StateColumns::bind`] binds.
    pub(crate) fn values(self) -> [Value; 19] {
        [
            Value::text(self.ready_when),
            Value::text(self.phase),
            Value::text(self.desired),
            Value::int(self.generation),
            Value::int(self.observed_generation),
            Value::text(self.pending),
            Value::Text(self.failure_reason),
            Value::Int(self.failure_generation),
            Value::int(self.backoff_attempt),
            Value::text(self.recent_failures),
            Value::Int(self.last_cycle_started_at),
            Value::Int(self.last_cycle_ended_at),
            Value::Int(self.healthy_since),
            Value::Int(self.retry_at),
            Value::text(self.retry_causes),
            Value::Int(self.cycle_generation),
            Value::text(self.cycle_causes),
            Value::Int(self.cycle_started_at),
            Value::Text(self.switch_state),
        ]
    }

    /// NULLs of the types of [`StateColumns::values`].
    pub(crate) const NULLS: [Value; 19] = {
        const T: Value = Value::Text(None);
        const I: Value = Value::Int(None);
        [T, T, T, I, I, T, T, I, I, T, I, I, I, I, T, I, T, I, T]
    };

    fn parse(self) -> Result<MachineState, StoreError> {
        let failure = match (self.failure_reason, self.failure_generation) {
            (Some(column), Some(generation)) => {
                let parked = self.phase == Phase::Failed.as_str();
                let (reason, consecutive) = crate::failure::decode(&column, parked)?;
                Some(Failure {
                    reason,
                    generation: generation_value(generation)?,
                    consecutive,
                })
            }
            (None, None) => None,
            _ => return Err(corrupt("failure_reason and failure_generation disagree")),
        };
        let millis: Vec<i64> = from_json(&self.recent_failures)?;
        Ok(MachineState {
            phase: Phase::parse(&self.phase).ok_or_else(|| unknown("phase", &self.phase))?,
            desired: Desired::parse(&self.desired)
                .ok_or_else(|| unknown("desired", &self.desired))?,
            ready_when: ReadyWhen::parse(&self.ready_when)
                .ok_or_else(|| unknown("ready_when", &self.ready_when))?,
            generation: generation_value(self.generation)?,
            observed_generation: generation_value(self.observed_generation)?,
            pending: parse_causes(&self.pending)?,
            failure,
            backoff_attempt: u32::try_from(self.backoff_attempt)
                .map_err(|_| unknown("backoff_attempt", &self.backoff_attempt.to_string()))?,
            recent_failures: millis.into_iter().map(Timestamp).collect(),
            last_cycle_started_at: self.last_cycle_started_at.map(Timestamp),
            last_cycle_ended_at: self.last_cycle_ended_at.map(Timestamp),
            healthy_since: self.healthy_since.map(Timestamp),
            retry: match self.retry_at {
                Some(at) => Some(ScheduledRetry {
                    at: Timestamp(at),
                    causes: parse_causes(&self.retry_causes)?,
                }),
                None => None,
            },
            cycle: match (self.cycle_generation, self.cycle_started_at) {
                (Some(generation), Some(started_at)) => Some(Cycle {
                    generation: generation_value(generation)?,
                    causes: parse_causes(&self.cycle_causes)?,
                    started_at: Timestamp(started_at),
                }),
                (None, None) => None,
                _ => return Err(corrupt("cycle_generation and cycle_started_at disagree")),
            },
            switch: self
                .switch_state
                .as_deref()
                .map(|column| from_json::<SwitchColumn>(column)?.parse().map(Box::new))
                .transpose()?,
        })
    }
}

/// Agent channel columns of `workspaces`.
#[derive(sqlx::FromRow)]
pub(crate) struct AgentColumns {
    agent_generation: i64,
    agent_token_hash: Option<String>,
    agent_url: Option<String>,
    agent_last_heartbeat_at: Option<i64>,
}

impl AgentColumns {
    pub(crate) fn new(agent: &AgentRecord) -> Result<Self, StoreError> {
        Ok(Self {
            agent_generation: generation_column(agent.generation)?,
            agent_token_hash: agent.token_hash.as_ref().map(to_hex),
            agent_url: agent.url.clone(),
            agent_last_heartbeat_at: agent.last_heartbeat_at.map(|t| t.0),
        })
    }

    /// Binds, in order: agent_generation, agent_token_hash, agent_url,
    /// agent_last_heartbeat_at.
    pub(crate) fn bind(self, query: AnyQuery<'_>) -> AnyQuery<'_> {
        Value::bind_all(query, self.values())
    }

    /// The values [`AgentColumns::bind`] binds.
    pub(crate) fn values(self) -> [Value; 4] {
        [
            Value::int(self.agent_generation),
            Value::Text(self.agent_token_hash),
            Value::Text(self.agent_url),
            Value::Int(self.agent_last_heartbeat_at),
        ]
    }

    /// NULLs of the types of [`AgentColumns::values`].
    pub(crate) const NULLS: [Value; 4] = [
        Value::Int(None),
        Value::Text(None),
        Value::Text(None),
        Value::Int(None),
    ];

    fn parse(self) -> Result<AgentRecord, StoreError> {
        Ok(AgentRecord {
            generation: generation_value(self.agent_generation)?,
            token_hash: self
                .agent_token_hash
                .as_deref()
                .map(|hex| {
                    from_hex(hex).ok_or_else(|| corrupt("agent_token_hash is not 64 hex digits"))
                })
                .transpose()?,
            url: self.agent_url,
            last_heartbeat_at: self.agent_last_heartbeat_at.map(Timestamp),
        })
    }
}

/// A row of `workspaces`.
#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    id: String,
    #[sqlx(flatten)]
    spec: SpecColumns,
    #[sqlx(flatten)]
    state: StateColumns,
    #[sqlx(flatten)]
    agent: AgentColumns,
    last_event_seq: i64,
    created_at: i64,
    updated_at: i64,
}

impl WorkspaceRow {
    fn parse(self, secrets: BTreeMap<String, SecretString>) -> Result<WorkspaceRecord, StoreError> {
        Ok(WorkspaceRecord {
            id: workspace_id(&self.id)?,
            spec: self.spec.parse()?,
            state: self.state.parse()?,
            secrets,
            agent: self.agent.parse()?,
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

pub(crate) async fn load_all(inner: &Inner) -> Result<Vec<WorkspaceRecord>, StoreError> {
    let mut conn = inner.pool.acquire().await.map_err(database)?;
    let rows: Vec<WorkspaceRow> = sqlx::query_as("SELECT * FROM workspaces ORDER BY created_at")
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
            let decrypted = decrypt_all(inner, id, secrets.remove(&row.id).unwrap_or_default())?;
            row.parse(decrypted)
        })
        .collect()
}

pub(crate) async fn load(
    inner: &Inner,
    id: WorkspaceId,
) -> Result<Option<WorkspaceRecord>, StoreError> {
    let key = id.to_string();
    let mut conn = inner.pool.acquire().await.map_err(database)?;
    let Some(row) = sqlx::query_as::<_, WorkspaceRow>("SELECT * FROM workspaces WHERE id = $1")
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(database)?
    else {
        return Ok(None);
    };
    let secret_rows: Vec<SecretRow> =
        sqlx::query_as("SELECT workspace_id, key, ciphertext FROM secrets WHERE workspace_id = $1")
            .bind(&key)
            .fetch_all(&mut *conn)
            .await
            .map_err(database)?;
    row.parse(decrypt_all(inner, id, secret_rows)?).map(Some)
}

pub(crate) async fn events(
    inner: &Inner,
    id: WorkspaceId,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRecord>, StoreError> {
    // Events are in the order written, a workspace's among everyone's; every 64th of each
    // workspace is indexed. Read forward from the nearest indexed one at or before `after + 1`,
    // and no further than the workspace's last event.
    let key = id.to_string();
    let mut conn = inner.pool.acquire().await.map_err(database)?;
    let last: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT last_event_seq, last_event_id FROM workspaces WHERE id = $1")
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(database)?;
    let Some((last_seq, Some(last_id))) = last else {
        return Ok(Vec::new());
    };
    let wanted = limit.min(last_seq.saturating_sub(after.max(0)));
    if wanted <= 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT workspace_id, seq, generation, at, kind, data FROM events \
         WHERE workspace_id = $1 AND seq > $2 AND id <= $4 AND id >= COALESCE( \
           (SELECT id FROM events WHERE workspace_id = $1 AND seq % 64 = 1 AND seq <= $2 + 1 \
            ORDER BY seq DESC LIMIT 1), 0) \
         ORDER BY id LIMIT $3",
    )
    .bind(&key)
    .bind(after.max(0))
    .bind(wanted)
    .bind(last_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(database)?;
    rows.into_iter().map(EventRow::parse).collect()
}

pub(crate) async fn idempotency(
    inner: &Inner,
    key: &str,
) -> Result<Option<(WorkspaceId, String)>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT workspace_id, body_hash FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&inner.pool)
            .await
            .map_err(database)?;
    row.map(|(id, hash)| Ok((workspace_id(&id)?, hash)))
        .transpose()
}

pub(crate) async fn ping(inner: &Inner) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(&inner.pool)
        .await
        .map_err(database)?;
    Ok(())
}

fn decrypt_all(
    inner: &Inner,
    id: WorkspaceId,
    rows: Vec<SecretRow>,
) -> Result<BTreeMap<String, SecretString>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let value = inner.key.decrypt(id, &row.key, &row.ciphertext)?;
            Ok((row.key, value))
        })
        .collect()
}

/// A generation as stored (BIGINT).
pub(crate) fn generation_column(generation: Generation) -> Result<i64, StoreError> {
    i64::try_from(generation.0)
        .map_err(|_| StoreError::Corrupt(format!("generation {generation} exceeds BIGINT")))
}

/// JSON text of a value (for `TEXT` columns holding JSON).
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("json: {e}")))
}

fn generation_value(column: i64) -> Result<Generation, StoreError> {
    u64::try_from(column)
        .map(Generation)
        .map_err(|_| unknown("generation", &column.to_string()))
}

fn workspace_id(column: &str) -> Result<WorkspaceId, StoreError> {
    WorkspaceId::from_str(column).map_err(|_| unknown("workspace id", column))
}

fn parse_causes(column: &str) -> Result<CauseSet, StoreError> {
    column
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| Cause::parse(name).ok_or_else(|| unknown("cause", name)))
        .collect()
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str) -> Result<T, StoreError> {
    serde_json::from_str(column).map_err(|e| corrupt(&format!("json {column:?}: {e}")))
}

fn to_hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

fn unknown(what: &str, value: &str) -> StoreError {
    corrupt(&format!("unknown {what} {value:?}"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// The stored form of a set of causes: comma-separated names, `''` for none.
fn join_causes(causes: CauseSet) -> String {
    causes
        .iter()
        .map(Cause::as_str)
        .collect::<Vec<_>>()
        .join(",")
}
