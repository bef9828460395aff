//! The writer's fast path: a run of lifecycle commits applied with one statement per kind of
//! write, however many commits the run holds.
//!
//! A restart storm is thousands of small commits per second, each a fenced state update, an
//! agent credential and an event or two. Applied one statement at a time (with a savepoint
//! per commit for atomicity) the writer spends its time on statement round trips, not on the
//! database. Here a run of such commits is decided first and written after, with no read:
//!
//! 1. each workspace the run touches is assumed to be stored at the generation its first
//!    fenced write expects (the actor that wrote last knows it; a stale one is the rare case);
//!    a workspace it only appends events to is not fenced on its generation, as one by one;
//! 2. the commits are replayed in order from there, exactly as the database would check
//!    their fences one after the other: a fenced commit is dropped whole, so a commit's
//!    writes still apply together or not at all;
//! 3. what survives is written with one multi-row statement per kind: the last state, spec
//!    and agent columns of each workspace (`UPDATE … FROM (VALUES …)`, fenced in SQL on the
//!    generation assumed at the start) and every event, in order (statements of at most 32
//!    rows on SQLite, 256 on PostgreSQL); on SQLite, a batch made only of such commits, of at
//!    most 64 rows, is written by one statement instead ([`commit_in_one_call`]).
//!
//! The fenced `UPDATE`s check the assumptions: each must touch exactly one row per
//! workspace. If one does not (a stale actor wrote, a row is gone), or a statement fails, or
//! a fenced verdict rests on an assumption nothing checked or follows other writes of its
//! commit, the run *diverged*: the caller undoes what the run wrote and applies the batch
//! the slow way, commit by commit, which gives every commit its exact outcome. Only commits made of fenced updates and event
//! appends take this path; anything else (creates, secrets, deletes) goes the slow way
//! between runs.

use crate::error::database;
use crate::rows::{generation_column, to_json, AgentColumns, SpecColumns, StateColumns, Value};
use crate::{CommitOutcome, EventRecord, StoreError, Write};
use sqlx::{AnyConnection, Executor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use steward_domain::{Generation, Timestamp, WorkspaceId};

/// Most rows in one PostgreSQL statement (39 parameters a row, well under its 65 535).
const MAX_ROWS: usize = 256;

/// Whether a commit made of `writes` can be grouped: fenced updates and event appends only.
/// Events alone are grouped too (a probe round under a restart storm records a dropped health
/// report for every workspace in a cycle: a thousand commits of one event each at once); a
/// workspace the run writes only events of is updated unfenced, as one by one.
pub(crate) fn accepts(writes: &[Write]) -> bool {
    writes.iter().all(|write| {
        matches!(
            write,
            Write::SaveState { .. }
                | Write::SaveSpec { .. }
                | Write::SaveAgent { .. }
                | Write::AppendEvent(_)
        )
    })
}

/// Why a run could not be applied as decided: the caller rolls back and goes the slow way.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Diverged {
    /// A grouped statement failed, or a commit's columns did not encode (the error is pinned
    /// on its commit by the slow way).
    #[error("a grouped commit failed: {0}")]
    Failed(StoreError),
    /// A commit would be fenced, but nothing else in the run checks the generation it was
    /// fenced against.
    #[error("workspace {0} was fenced on an assumed generation")]
    Unverified(WorkspaceId),
    /// A commit would be fenced after writes of its own that the replay cannot judge.
    #[error("a commit on workspace {0} was fenced after other writes")]
    BeforeFence(WorkspaceId),
    /// A grouped statement touched another number of rows than the replay predicted.
    #[error("grouped statements touched {actual} rows, {expected} expected")]
    Rows { expected: u64, actual: u64 },
    /// A workspace `UPDATE` of a plan committed in one statement touched another number of
    /// rows than one (its trigger failed the statement, which applied nothing).
    #[error("a grouped statement touched another number of rows than replayed")]
    Miscounted,
    /// An event's `seq` is not after the one before it in the run (one by one, that commit
    /// fails as a conflict).
    #[error("an event of workspace {0} is not after the one before it")]
    OutOfOrder(WorkspaceId),
}

impl From<StoreError> for Diverged {
    fn from(e: StoreError) -> Self {
        Diverged::Failed(e)
    }
}

/// One workspace of the run: its generation and the last columns written of each kind.
struct Row {
    id: WorkspaceId,
    /// Generation the row is assumed to have when the run starts (checked by the fenced
    /// `UPDATE`s: a wrong guess means the run diverged). `None` for a workspace the run
    /// writes only events of: its `UPDATE` is not fenced on the generation.
    stored: Option<i64>,
    /// Generation after the commits replayed so far.
    generation: Option<i64>,
    state: Option<(Box<StateColumns>, Timestamp)>,
    spec: Option<SpecColumns>,
    agent: Option<AgentColumns>,
    /// The `seq` of the workspace's first event the run appends: the stored events must
    /// end before it (checked by the fenced `UPDATE`, as `(workspace_id, seq)` is unique).
    first_event_seq: Option<i64>,
    /// The `seq` of the workspace's last event the run appends.
    last_event_seq: Option<i64>,
    /// Its id.
    last_event_id: Option<i64>,
}

impl Row {
    /// Whether the run leaves anything to write for this workspace.
    fn writes_anything(&self) -> bool {
        self.state.is_some()
            || self.spec.is_some()
            || self.agent.is_some()
            || self.last_event_seq.is_some()
    }
}

/// What one commit changes, once its fences held.
enum Change<'a> {
    State(usize, Box<StateColumns>, Timestamp, i64),
    Spec(usize, SpecColumns),
    Agent(usize, AgentColumns),
    Event(usize, &'a EventRecord),
}

/// What a run (commits that [`accepts`]) will do: each commit's outcome, and the rows that
/// apply what survives (written as statements by [`Plan::execute`], or as one by
/// [`commit_in_one_call`]).
pub(crate) struct Plan {
    dialect: Dialect,
    outcomes: Vec<CommitOutcome>,
    /// Rows of the `UPDATE` ([`UPDATE_WIDTH`] values each).
    updates: Vec<Vec<Value>>,
    /// Rows of `events` ([`EVENT_WIDTH`] values each), in order.
    events: Vec<Vec<Value>>,
}

impl Plan {
    /// Replays `run` and lays out the rows that apply what survives, or says why the run
    /// cannot be decided this way. Each event written takes the next id of `event_ids`.
    pub(crate) fn new(
        dialect: Dialect,
        run: &[&[Write]],
        event_ids: &AtomicI64,
    ) -> Result<Plan, Diverged> {
        let (mut rows, index) = assumed_generations(run)?;
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(run.len());
        for writes in run {
            outcomes.push(replay(writes, &index, &mut rows, &mut events)?);
        }
        // A fenced verdict rests on the assumed generation: only a write in this run checks it.
        for outcome in &outcomes {
            if let CommitOutcome::Fenced { id, .. } = outcome {
                if !rows[index[id]].writes_anything() {
                    return Err(Diverged::Unverified(*id));
                }
            }
        }
        let events = events
            .iter()
            .map(|event| {
                let id = event_ids.fetch_add(1, Ordering::Relaxed);
                // Every event's workspace has a row (`assumed_generations`).
                rows[index[&event.workspace_id]].last_event_id = Some(id);
                event_row(id, event)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            dialect,
            outcomes,
            updates: update_rows(rows),
            events,
        })
    }

    /// Whether [`commit_in_one_call`] may take it: a SQLite plan of at most
    /// [`ONE_CALL_ROWS`] rows.
    pub(crate) fn fits_one_call(&self) -> bool {
        self.dialect == Dialect::Sqlite && self.updates.len() + self.events.len() <= ONE_CALL_ROWS
    }

    /// Runs the plan's statements on `conn`, inside the caller's transaction. Returns each
    /// commit's outcome, or why the run diverged.
    pub(crate) async fn execute(
        self,
        conn: &mut AnyConnection,
    ) -> Result<Vec<CommitOutcome>, Diverged> {
        let mut statements = updates(self.dialect, self.updates);
        statements.extend(inserts(self.dialect, self.events));
        for statement in statements {
            let done = Value::bind_all(sqlx::query(&statement.sql), statement.values)
                .execute(&mut *conn)
                .await
                .map_err(database)?;
            expect_rows(statement.rows, done.rows_affected())?;
        }
        Ok(self.outcomes)
    }
}

/// Most rows (updates and events together) [`commit_in_one_call`] writes in its one
/// statement; a statement text per power of two up to it.
const ONE_CALL_ROWS: usize = 64;

/// The view a plan is written through in one statement, on SQLite: one row per workspace
/// `UPDATE` (the `UPDATE`'s columns, the event columns NULL) or per event (the other way
/// round), turned into writes by [`write_trigger`]. Created on the writer's connection (it
/// lives in that connection's temporary database).
pub(crate) fn write_view() -> String {
    let columns = one_call_columns()
        .iter()
        .map(|name| format!("NULL AS {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("CREATE TEMP VIEW IF NOT EXISTS grouped_write AS SELECT {columns}")
}

/// The trigger behind [`write_view`]: each row inserted into the view updates its workspace
/// (fenced as the `UPDATE` of [`Plan::execute`] is, and failing the statement with
/// `grouped_rows_as_replayed` unless exactly that row is touched) or appends its event.
///
/// SQLite allows no schema name on the tables a trigger writes: `workspaces` and `events`
/// are found in the temporary database first, so nothing may ever create tables of those
/// names there.
pub(crate) fn write_trigger() -> String {
    let (_, set) = update_columns("NEW");
    let event_values = view_event_columns()
        .map(|column| format!("NEW.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "CREATE TEMP TRIGGER IF NOT EXISTS grouped_write_row \
         INSTEAD OF INSERT ON grouped_write BEGIN \
         UPDATE workspaces SET {set} \
         WHERE NEW.id IS NOT NULL AND id = NEW.id \
         AND (NEW.fence IS NULL OR generation = NEW.fence) \
         AND (NEW.first_seq IS NULL OR last_event_seq < NEW.first_seq); \
         SELECT RAISE(ABORT, '{MISCOUNTED}') WHERE NEW.id IS NOT NULL AND changes() <> 1; \
         INSERT INTO events ({EVENT_COLUMNS}) SELECT {event_values} \
         WHERE NEW.event_id IS NOT NULL; \
         END"
    )
}

/// The error [`write_trigger`] raises when an `UPDATE` did not touch its one row.
const MISCOUNTED: &str = "grouped_rows_as_replayed";

/// The columns of [`write_view`]: the `UPDATE`'s, then the event's (prefixed `event_`).
fn one_call_columns() -> Vec<String> {
    let (mut names, _) = update_columns("NEW");
    names.extend(view_event_columns());
    names
}

/// The event's columns as [`write_view`] names them (prefixed `event_`).
fn view_event_columns() -> impl Iterator<Item = String> {
    EVENT_COLUMNS.split(", ").map(|c| format!("event_{c}"))
}

/// On SQLite, commits a plan that [`Plan::fits_one_call`] with one statement: an `INSERT`
/// into [`write_view`], whose trigger applies every row. One statement is its own
/// transaction: it applies whole or not at all, and the connection's thread answers once, so
/// the writer is woken once per batch (a statement list woke it once per statement). `conn`
/// must not be in a transaction. On any error nothing is applied (and no transaction is left
/// open), so the caller can go the slow way on the same connection.
pub(crate) async fn commit_in_one_call(
    conn: &mut AnyConnection,
    plan: Plan,
) -> Result<Vec<CommitOutcome>, Diverged> {
    static TEXTS: SqliteTexts = SqliteTexts::new();
    let rows = plan.updates.len() + plan.events.len();
    if !plan.fits_one_call() {
        // The caller checks `fits_one_call`; were it not to, the slow way still applies it.
        return Err(Diverged::Rows {
            expected: ONE_CALL_ROWS as u64,
            actual: rows as u64,
        });
    }
    let Plan {
        outcomes,
        updates,
        events,
        ..
    } = plan;
    let nulls = |n| std::iter::repeat_n(Value::Int(None), n);
    let size = rows.next_power_of_two();
    let values = updates
        .into_iter()
        .flat_map(|row| row.into_iter().chain(nulls(EVENT_WIDTH)))
        .chain(
            events
                .into_iter()
                .flat_map(|row| nulls(UPDATE_WIDTH).chain(row)),
        )
        .chain(nulls((size - rows) * ONE_CALL_WIDTH));
    let sql = TEXTS.get(size, ONE_CALL_WIDTH, ONE_CALL_ROWS, |values| {
        format!(
            "INSERT INTO temp.grouped_write ({}) VALUES {values}",
            one_call_columns().join(", ")
        )
    });
    match conn
        .execute(Value::bind_all(sqlx::query(sql), values))
        .await
    {
        Ok(_) => Ok(outcomes),
        Err(e) => {
            let miscounted = e
                .as_database_error()
                .is_some_and(|e| e.message().contains(MISCOUNTED));
            Err(if miscounted {
                Diverged::Miscounted
            } else {
                Diverged::Failed(database(e))
            })
        }
    }
}

/// Values in a row of [`write_view`].
const ONE_CALL_WIDTH: usize = UPDATE_WIDTH + EVENT_WIDTH;

/// Replays one commit against the generations so far: keeps its changes if every fence holds.
fn replay<'a>(
    writes: &'a [Write],
    index: &HashMap<WorkspaceId, usize>,
    rows: &mut [Row],
    events: &mut Vec<&'a EventRecord>,
) -> Result<CommitOutcome, Diverged> {
    // Generations this commit has moved so far (a commit may touch several workspaces).
    let mut moved: Vec<(usize, i64)> = Vec::new();
    let mut changes = Vec::with_capacity(writes.len());
    for write in writes {
        let Some((id, expected)) = fence(write) else {
            if let Write::AppendEvent(event) = write {
                // Every workspace with events has a row (`assumed_generations`).
                changes.push(Change::Event(index[&event.workspace_id], event));
            }
            continue;
        };
        let i = index[&id];
        let current = moved
            .iter()
            .rev()
            .find(|(j, _)| *j == i)
            .map_or(rows[i].generation, |(_, generation)| Some(*generation));
        if current != Some(generation_column(expected)?) {
            if !changes.is_empty() {
                // Applied one by one, a write before the fence could fail first (a duplicate
                // event), or rest on another workspace's unchecked generation: only the slow
                // way knows this commit's outcome.
                return Err(Diverged::BeforeFence(id));
            }
            return Ok(CommitOutcome::Fenced { id, expected });
        }
        changes.push(match write {
            Write::SaveState { state, at, .. } => {
                let generation = generation_column(state.generation)?;
                moved.push((i, generation));
                Change::State(i, Box::new(StateColumns::new(state)?), *at, generation)
            }
            Write::SaveSpec { spec, .. } => Change::Spec(i, SpecColumns::new(spec)?),
            Write::SaveAgent { agent, .. } => Change::Agent(i, AgentColumns::new(agent)?),
            _ => unreachable!("matched above"),
        });
    }
    for change in changes {
        match change {
            Change::State(i, columns, at, generation) => {
                rows[i].generation = Some(generation);
                rows[i].state = Some((columns, at));
            }
            Change::Spec(i, columns) => rows[i].spec = Some(columns),
            Change::Agent(i, columns) => rows[i].agent = Some(columns),
            Change::Event(i, event) => {
                let row = &mut rows[i];
                if row.last_event_seq.is_some_and(|last| event.seq <= last) {
                    return Err(Diverged::OutOfOrder(row.id));
                }
                row.first_event_seq.get_or_insert(event.seq);
                row.last_event_seq = Some(event.seq);
                events.push(event);
            }
        }
    }
    Ok(CommitOutcome::Committed)
}

/// The workspace a fenced write is about and the generation it expects stored.
fn fence(write: &Write) -> Option<(WorkspaceId, Generation)> {
    match write {
        Write::SaveState {
            id,
            expected_generation,
            ..
        }
        | Write::SaveSpec {
            id,
            expected_generation,
            ..
        } => Some((*id, *expected_generation)),
        Write::SaveAgent { id, agent } => Some((*id, agent.generation)),
        _ => None,
    }
}

/// One row per workspace the run's fenced writes touch, in first-touched order, assumed to be
/// stored at the generation its first fenced write expects; then one per workspace the run
/// only appends events to, with no generation assumed (its `UPDATE` is not fenced on one);
/// and where each id is. A fenced write whose generation does not encode sends the run the
/// slow way, which pins the error on its commit.
fn assumed_generations(
    run: &[&[Write]],
) -> Result<(Vec<Row>, HashMap<WorkspaceId, usize>), Diverged> {
    let mut rows: Vec<Row> = Vec::new();
    let mut index = HashMap::new();
    let mut add = |id, stored| {
        index.entry(id).or_insert_with(|| {
            rows.push(Row {
                id,
                stored,
                generation: stored,
                state: None,
                spec: None,
                agent: None,
                first_event_seq: None,
                last_event_seq: None,
                last_event_id: None,
            });
            rows.len() - 1
        });
    };
    let writes = || run.iter().flat_map(|writes| writes.iter());
    for (id, expected) in writes().filter_map(fence) {
        // Checked for every fenced write, replayed or not: `None` must mean "not fenced".
        let generation = generation_column(expected)?;
        add(id, Some(generation));
    }
    for write in writes() {
        if let Write::AppendEvent(event) = write {
            add(event.workspace_id, None);
        }
    }
    Ok((rows, index))
}

/// A statement built before it is bound, and how many rows it must touch.
struct Statement {
    sql: Cow<'static, str>,
    values: Vec<Value>,
    rows: usize,
}

/// The columns one `UPDATE` sets: state (with `updated_at`), configuration, agent and where
/// the workspace's events end, each group behind a flag (`s`, `c`, `a`, `e`: 1 to set it, 0
/// to keep what is stored).
const UPDATE_GROUPS: [(&str, &str); 4] = [
    (
        "s",
        "ready_when, phase, desired, generation, observed_generation, pending, \
         failure_reason, failure_generation, backoff_attempt, recent_failures, \
         last_cycle_started_at, last_cycle_ended_at, healthy_since, retry_at, retry_causes, \
         cycle_generation, cycle_causes, cycle_started_at, switch_state, updated_at",
    ),
    ("c", "name, provider, image, command, env, model"),
    (
        "a",
        "agent_generation, agent_token_hash, agent_url, agent_last_heartbeat_at",
    ),
    ("e", "last_event_seq, last_event_id"),
];

/// The values of one row of the `UPDATE`: per group its flag and columns (NULLs when the
/// run left nothing of that group), then the id, the generation it is fenced on (NULL: not
/// fenced, events only) and the `seq` its stored events must end before (NULL without
/// events). Only workspaces with something to write.
fn update_rows(rows: Vec<Row>) -> Vec<Vec<Value>> {
    let flag = |set: bool| Value::int(i64::from(set));
    rows.into_iter()
        .filter(Row::writes_anything)
        .map(|row| {
            let mut values = Vec::with_capacity(UPDATE_WIDTH);
            values.push(flag(row.state.is_some()));
            match row.state {
                Some((columns, at)) => {
                    values.extend(columns.values());
                    values.push(Value::int(at.0));
                }
                None => {
                    values.extend(StateColumns::NULLS);
                    values.push(Value::Int(None));
                }
            }
            values.push(flag(row.spec.is_some()));
            match row.spec {
                Some(columns) => values.extend(columns.values()),
                None => values.extend(SpecColumns::NULLS),
            }
            values.push(flag(row.agent.is_some()));
            match row.agent {
                Some(columns) => values.extend(columns.values()),
                None => values.extend(AgentColumns::NULLS),
            }
            values.push(flag(row.last_event_seq.is_some()));
            values.push(Value::Int(row.last_event_seq));
            values.push(Value::Int(row.last_event_id));
            values.push(Value::text(row.id.to_string()));
            values.push(Value::Int(row.stored));
            values.push(Value::Int(row.first_event_seq));
            values
        })
        .collect()
}

/// The values of one row of `events`, written as event `id`.
fn event_row(id: i64, event: &EventRecord) -> Result<Vec<Value>, StoreError> {
    Ok(vec![
        Value::int(id),
        Value::text(event.workspace_id.to_string()),
        Value::int(event.seq),
        Value::int(generation_column(event.generation)?),
        Value::int(event.at.0),
        Value::text(event.kind.clone()),
        Value::text(to_json(&event.data)?),
    ])
}

const EVENT_COLUMNS: &str = "id, workspace_id, seq, generation, at, kind, data";

/// Parameters in a row of `events`.
const EVENT_WIDTH: usize = 7;

/// Parameters in a row of the `UPDATE`: a flag per group, its columns, the id, the fence, and
/// the first event's `seq` (NULL without events).
const UPDATE_WIDTH: usize = 39;

/// The `UPDATE`'s column names (flags included, then `id, fence`) and its `SET` list, taking
/// each value from the row named `row`.
fn update_columns(row: &str) -> (Vec<String>, String) {
    let mut names = Vec::with_capacity(UPDATE_WIDTH);
    let mut set = Vec::new();
    for (flag, columns) in UPDATE_GROUPS {
        names.push(flag.to_owned());
        for column in columns.split(", ") {
            names.push(column.to_owned());
            set.push(format!(
                "{column} = CASE WHEN {row}.{flag} = 1 THEN {row}.{column} ELSE workspaces.{column} END"
            ));
        }
    }
    names.extend(["id".to_owned(), "fence".to_owned(), "first_seq".to_owned()]);
    debug_assert_eq!(names.len(), UPDATE_WIDTH);
    (names, set.join(", "))
}

/// `UPDATE workspaces … FROM (VALUES …)`: the last state, configuration and agent columns
/// the run left for each workspace, and where its events now end, fenced on the generation
/// the run assumed it starts from (none for a workspace it only appends events to) and on its
/// stored events ending before the run's first.
/// On SQLite `OR FAIL`: a failing row stops the statement without undoing the rows before it,
/// so SQLite keeps no statement journal (the caller rolls the whole transaction back).
fn updates(dialect: Dialect, rows: Vec<Vec<Value>>) -> Vec<Statement> {
    static SQLITE: SqliteTexts = SqliteTexts::new();
    dialect.statements(rows, UPDATE_WIDTH, &SQLITE, |values| {
        let (names, set) = update_columns("v");
        let names = names.join(", ");
        let or_fail = match dialect {
            Dialect::Sqlite => " OR FAIL",
            Dialect::Postgres => "",
        };
        format!(
            "WITH v ({names}) AS (VALUES {values}) \
             UPDATE{or_fail} workspaces SET {set} FROM v \
             WHERE workspaces.id = v.id \
             AND (v.fence IS NULL OR workspaces.generation = v.fence) \
             AND (v.first_seq IS NULL OR workspaces.last_event_seq < v.first_seq)"
        )
    })
}

/// `INSERT INTO events`, every event of the run in order (rows of NULLs, padding, skipped).
fn inserts(dialect: Dialect, events: Vec<Vec<Value>>) -> Vec<Statement> {
    static SQLITE: SqliteTexts = SqliteTexts::new();
    dialect.statements(events, EVENT_WIDTH, &SQLITE, |values| {
        format!(
            "WITH v ({EVENT_COLUMNS}) AS (VALUES {values}) \
             INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM v \
             WHERE workspace_id IS NOT NULL"
        )
    })
}

/// The text of one kind of statement for each size SQLite takes (1, 2, 4 … [`SQLITE_ROWS`]
/// rows), written once per process.
struct SqliteTexts(std::sync::OnceLock<Vec<String>>);

impl SqliteTexts {
    const fn new() -> Self {
        SqliteTexts(std::sync::OnceLock::new())
    }

    /// The text for `rows` (a power of two, at most `most`), built with `sql` around each
    /// size's `VALUES`.
    fn get(&self, rows: usize, width: usize, most: usize, sql: impl Fn(&str) -> String) -> &str {
        let texts = self.0.get_or_init(|| {
            (0..=most.trailing_zeros())
                .map(|i| sql(&Dialect::Sqlite.placeholders(1 << i, width)))
                .collect()
        });
        &texts[rows.trailing_zeros() as usize]
    }
}

fn expect_rows(expected: usize, actual: u64) -> Result<(), Diverged> {
    let expected = expected as u64;
    if actual == expected {
        Ok(())
    } else {
        Err(Diverged::Rows { expected, actual })
    }
}

/// How a backend takes these multi-row statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Parameters `$1, $2, …`; up to [`MAX_ROWS`] rows a statement, as many as there are.
    Postgres,
    /// Parameters `?`, bound in order: sqlx looks up the name of every numbered parameter
    /// when it binds, and SQLite finds a name by a linear scan, so `$N` parameters cost
    /// O(N²) per statement (this dominated the writer with multi-row statements). Up to
    /// [`SQLITE_ROWS`] rows a statement ([`ONE_CALL_ROWS`] for [`commit_in_one_call`]),
    /// padded with NULL rows to a power of two: a connection
    /// prepares a handful of small statements once and keeps them (a statement per batch
    /// size, hundreds of rows each, cost tens of megabytes of prepared statements).
    Sqlite,
}

/// Most rows in one SQLite statement.
const SQLITE_ROWS: usize = 32;

impl Dialect {
    pub(crate) fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name() == "SQLite" {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        }
    }

    /// `rows` (each `width` values) cut into statements; `sql` writes a statement around
    /// its `VALUES` list (on SQLite once per size, kept in `texts`).
    fn statements(
        self,
        rows: Vec<Vec<Value>>,
        width: usize,
        texts: &'static SqliteTexts,
        sql: impl Fn(&str) -> String,
    ) -> Vec<Statement> {
        let chunk = match self {
            Dialect::Postgres => MAX_ROWS,
            Dialect::Sqlite => SQLITE_ROWS,
        };
        rows.chunks(chunk)
            .map(|rows| {
                let size = match self {
                    Dialect::Postgres => rows.len(),
                    Dialect::Sqlite => rows.len().next_power_of_two(),
                };
                let mut values = rows.concat();
                values.resize(size * width, Value::Int(None));
                Statement {
                    sql: match self {
                        Dialect::Postgres => Cow::Owned(sql(&self.placeholders(size, width))),
                        Dialect::Sqlite => Cow::Borrowed(texts.get(size, width, SQLITE_ROWS, &sql)),
                    },
                    rows: rows.len(),
                    values,
                }
            })
            .collect()
    }

    /// `(…), (…)`: `rows` tuples of `width` placeholders.
    fn placeholders(self, rows: usize, width: usize) -> String {
        let mut out = String::with_capacity(rows * width * 5);
        for row in 0..rows {
            out.push_str(if row == 0 { "(" } else { "), (" });
            for column in 0..width {
                if column > 0 {
                    out.push_str(", ");
                }
                match self {
                    Dialect::Postgres => {
                        let _ = write!(out, "${}", row * width + column + 1);
                    }
                    Dialect::Sqlite => out.push('?'),
                }
            }
        }
        out.push(')');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_across_tuples_or_go_in_order() {
        assert_eq!(
            Dialect::Postgres.placeholders(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Dialect::Sqlite.placeholders(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn sqlite_statements_are_few_sizes_and_padded_with_nulls() {
        static TEXTS: SqliteTexts = SqliteTexts::new();
        let rows = |n: usize| (0..n).map(|i| vec![Value::int(i as i64)]).collect();
        let sizes = |dialect: Dialect, n| {
            dialect
                .statements(rows(n), 1, &TEXTS, |values| values.to_owned())
                .iter()
                .map(|s| (s.rows, s.values.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(Dialect::Sqlite, 5), [(5, 8)]);
        assert_eq!(sizes(Dialect::Sqlite, 40), [(32, 32), (8, 8)]);
        assert_eq!(sizes(Dialect::Postgres, 40), [(40, 40)]);
        let padded = Dialect::Sqlite.statements(rows(3), 1, &TEXTS, |values| values.to_owned());
        assert_eq!(padded[0].values[3], Value::Int(None));
    }

    #[test]
    fn the_update_names_every_column_once() {
        let (names, set) = update_columns("v");
        assert_eq!(names.len(), UPDATE_WIDTH);
        assert_eq!(set.matches(" = CASE WHEN ").count(), UPDATE_WIDTH - 7);
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
