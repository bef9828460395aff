//! Opening the store and the single writer task (group commit).
//!
//! Owns the pool, the secrets key and the one task that writes. Callers queue a request (their
//! writes and a reply channel); the task takes what is queued (up to `max_batch`), applies it
//! in one transaction, commits once, then answers everyone. Runs of lifecycle commits are
//! applied grouped (`grouped.rs`: a few multi-row statements for the whole run); other
//! requests, and every request of a batch whose grouped run diverged, are applied one by one,
//! each inside its own savepoint, so a fenced or failed request rolls back alone. Readers use
//! the pool directly; nothing but this task writes.
//!
//! Placeholders are `$1, $2...` on both backends (but in SQLite's grouped statements, see
//! `grouped.rs`): PostgreSQL's native form, which SQLite reads as numbered parameters (sqlx
//! binds `$N` by its number, tested in `tests.rs`).

use crate::durable::{self, DatabaseFile, Reply, Settled, Wal, Watermark};
use crate::error::database;
use crate::grouped;
use crate::rows::{generation_column, to_json, AgentColumns, SpecColumns, StateColumns};
use crate::{CommitOutcome, SecretKey, StoreError, StoreOptions, Write};
use secrecy::ExposeSecret;
use sqlx::any::{Any, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, AnyConnection, AnyPool, Executor};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use steward_domain::{Generation, WorkspaceId};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Full batches that may wait behind the one being written before commits are refused.
pub(crate) const QUEUED_BATCHES: usize = 16;

/// The schema, from the top-level `migrations/`.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// What a [`Store`] handle shares.
pub(crate) struct Inner {
    /// Connections, for readers and the writer task.
    pub(crate) pool: AnyPool,
    /// Decrypts secrets for readers (the writer task holds its own reference).
    pub(crate) key: Arc<SecretKey>,
    /// How far the disk has got, where commits are synced after they are visible (SQLite
    /// database files): reads wait for it.
    pub(crate) watermark: Option<Arc<Watermark>>,
    /// The SQLite database file, held open for as long as the store is (see [`DatabaseFile`]),
    /// so after [`close`] has closed the pool's connections.
    _database: Option<DatabaseFile>,
    /// Queue of the writer task (bounded: overload is refused, not buffered); `None` once
    /// closed.
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    /// The writer task, awaited by the first `close`.
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// The checkpoints of a SQLite store, for tests to run them by hand.
    #[cfg(test)]
    pub(crate) checkpoints: Option<Arc<Checkpoints>>,
    /// What the writer did, for tests to observe grouping.
    #[cfg(test)]
    pub(crate) counters: Arc<Counters>,
}

/// One caller's commit.
struct Request {
    writes: Vec<Write>,
    reply: Reply,
}

pub(crate) async fn open(options: StoreOptions, key_path: &Path) -> Result<Arc<Inner>, StoreError> {
    sqlx::any::install_default_drivers();
    let key = Arc::new(SecretKey::load_or_create(key_path)?);
    let is_sqlite = options.database_url.starts_with("sqlite:");
    let on_disk = sqlite_file(&options.database_url).is_some();
    if let Some(file) = sqlite_file(&options.database_url) {
        std::fs::create_dir_all(file.parent().unwrap_or(Path::new(""))).map_err(|e| {
            StoreError::Database(format!(
                "cannot create the directory of {}: {e}",
                file.display()
            ))
        })?;
        crate::files::make_private(file).map_err(|e| {
            StoreError::Database(format!("cannot make {} owner-only: {e}", file.display()))
        })?;
    }
    let busy_timeout_ms = options.busy_timeout.as_millis();
    let synchronous = if on_disk { "NORMAL" } else { "FULL" };
    let pool = AnyPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if conn.backend_name() == "SQLite" {
                    configure_sqlite(conn, synchronous, busy_timeout_ms).await?;
                }
                Ok(())
            })
        })
        .connect(&options.database_url)
        .await
        .map_err(database)?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| StoreError::Database(format!("migrations: {e}")))?;

    let path = database_path(&pool, on_disk).await?;
    let database = path
        .as_deref()
        .map(|path| {
            durable::database_file(path)
                .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))
        })
        .transpose()?;
    let durable = match path.as_deref().zip(database.clone()) {
        Some((path, database)) => {
            let mut wal = Wal::of(path, database);
            // What the migrations wrote is on disk before anything else is answered.
            let synced = tokio::task::spawn_blocking(move || wal.sync().map(|()| wal))
                .await
                .map_err(|e| StoreError::Database(format!("sync: {e}")))?;
            let wal = synced.map_err(|e| {
                StoreError::Database(format!("cannot sync the write-ahead log: {e}"))
            })?;
            let (settled, watermark, syncer) = durable::spawn(wal)
                .map_err(|e| StoreError::Database(format!("cannot start the sync thread: {e}")))?;
            Some(Durable {
                settled,
                watermark,
                syncer,
            })
        }
        None => None,
    };
    let watermark = durable.as_ref().map(|d| Arc::clone(&d.watermark));
    let max_batch = options.max_batch.max(1);
    let (queue, requests) = mpsc::channel(max_batch.saturating_mul(QUEUED_BATCHES));
    let checkpoints = is_sqlite.then(|| {
        Arc::new(Checkpoints {
            pool: pool.clone(),
            catch_up: AtomicBool::new(false),
            file: database.clone().zip(watermark.clone()),
        })
    });
    // Events are numbered in the order they are written (see the third migration).
    let last_event_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(&pool)
        .await
        .map_err(crate::error::database)?;
    let writer = Writer {
        pool: pool.clone(),
        key: Arc::clone(&key),
        max_batch,
        event_ids: AtomicI64::new(last_event_id + 1),
        // A purge a previous run left unfinished goes on.
        purge_requested: AtomicBool::new(true),
        durable,
        checkpoints: checkpoints.clone(),
        #[cfg(test)]
        counters: Arc::default(),
    };
    #[cfg(test)]
    let counters = Arc::clone(&writer.counters);
    let task = tokio::spawn(writer.run(requests));
    if let Some(checkpoints) = &checkpoints {
        tokio::spawn(Arc::clone(checkpoints).every_second());
    }
    Ok(Arc::new(Inner {
        pool,
        key,
        watermark,
        _database: database,
        queue: Mutex::new(Some(queue)),
        writer: tokio::sync::Mutex::new(Some(task)),
        #[cfg(test)]
        checkpoints,
        #[cfg(test)]
        counters,
    }))
}

/// Per-connection settings. WAL lets readers run beside the writer. `synchronous` is `NORMAL`
/// for a database file: a `COMMIT` writes the log without syncing it, and the writer's
/// commits are answered only once `durable.rs` has synced the log (a commit is never
/// answered before it is on disk, and the writer does not wait for the disk between
/// batches). `FULL` (sync inside every `COMMIT`) where there is no file to sync.
async fn configure_sqlite(
    conn: &mut AnyConnection,
    synchronous: &str,
    busy_timeout_ms: u128,
) -> sqlx::Result<()> {
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str())
        .await?;
    // Checkpoints run beside the writer (see `checkpoints`), not inside its commits: an
    // automatic checkpoint syncs the database file in the committing call, and every commit
    // waiting in that batch would pay for it.
    conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
    // When the log starts over after a burst of writes, its file is cut back to this size.
    conn.execute(format!("PRAGMA journal_size_limit = {LOG_SIZE_LIMIT}").as_str())
        .await?;
    // A multi-row statement inside a transaction keeps a statement journal (to undo just
    // that statement if it fails); on disk, that is a temporary file opened and written
    // on every large batch.
    conn.execute("PRAGMA temp_store = MEMORY").await?;
    // No memory map of the database file: every page a connection touched would stay mapped,
    // and the daemon's resident memory would grow with the file (the events table has no end),
    // 674 bytes per idle workspace at 100 000 of them. Each connection's page cache is
    // bounded instead (SQLite's default, 2 MiB), and costs nothing measurable under a restart
    // storm (docs/PERFORMANCE.md, fifth pass).
    conn.execute("PRAGMA mmap_size = 0").await?;
    conn.execute(format!("PRAGMA busy_timeout = {busy_timeout_ms}").as_str())
        .await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    Ok(())
}

/// The size, in bytes, the SQLite write-ahead log file is cut back to when the log starts
/// over: above what a second of a restart storm writes (70–100 MiB measured), so that the
/// file is not cut back and grown again every second (blocks freed and allocated: journal
/// commits that the syncs of the log wait for), yet bounded after a burst.
const LOG_SIZE_LIMIT: u64 = 256 << 20;

/// How often the SQLite write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Passes a checkpoint makes at most: each copies what was written during the one before, so
/// that the writer is left little to copy.
const CHECKPOINT_PASSES: usize = 4;

/// A pass this short leaves the writer little to copy: the checkpoint stops there.
const SHORT_PASS: std::time::Duration = std::time::Duration::from_millis(1);

/// SQLite's primary result code for an I/O error (`SQLITE_IOERR`); extended codes keep it in
/// their low byte.
const SQLITE_IOERR: i32 = 10;

/// The checkpoints of a SQLite store: the write-ahead log copied back into the database file.
///
/// A checkpoint runs every second on a reader connection ([`Checkpoints::run`]): `PASSIVE`
/// blocks neither the writer nor the readers, and it does the bulk of the work off the
/// writer's path. But the log only starts over from its beginning when a write begins while
/// every frame in it is copied back, and under a steady stream of writes that never happens:
/// the writer appends frames while the checkpoint copies, and the log file would grow without
/// bound (~70 MB a second in a restart storm, every sync an append). So after each checkpoint
/// the writer is asked to finish it (`catch_up`; a pass cannot tell, it reports the log as it
/// was when it began): between two batches, the writer copies the few frames written
/// meanwhile ([`finish_checkpoint`]), and its next batch starts the log over, unless a
/// reader still holds a snapshot in the log (then the next second tries again).
pub(crate) struct Checkpoints {
    pool: AnyPool,
    /// Set after each checkpoint: the writer finishes it between two batches.
    pub(crate) catch_up: AtomicBool,
    /// A database file, and the watermark that an I/O error breaks. SQLite syncs the database
    /// file only in a pass that reaches the end of the log, which under a steady stream of
    /// writes is the writer's: a checkpoint syncs the file itself after its passes, so that
    /// the writer's sync has only its own few pages to write.
    file: Option<(DatabaseFile, Arc<Watermark>)>,
}

impl Checkpoints {
    /// Runs a checkpoint every [`CHECKPOINT_EVERY`] (the first one a period after opening)
    /// until the pool closes.
    async fn every_second(self: Arc<Self>) {
        let first = tokio::time::Instant::now() + CHECKPOINT_EVERY;
        let mut every = tokio::time::interval_at(first, CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if self.pool.is_closed() {
                return;
            }
            if let Err(e) = self.run().await {
                if self.pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
            }
        }
    }

    /// One checkpoint: up to [`CHECKPOINT_PASSES`] passes on a reader connection, the
    /// database file synced, the writer asked to finish.
    pub(crate) async fn run(&self) -> Result<(), String> {
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        let mut log = None;
        for _ in 0..CHECKPOINT_PASSES {
            let started = std::time::Instant::now();
            let (_, frames, _) =
                sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| self.failed(&e))?;
            log.get_or_insert(frames);
            if started.elapsed() < SHORT_PASS {
                break;
            }
        }
        drop(conn);
        let frames = log.unwrap_or_default();
        metrics::gauge!("steward_store_log_frames").set(frames.max(0) as f64);
        if frames <= 0 {
            return Ok(());
        }
        if let Some((file, watermark)) = &self.file {
            let file = Arc::clone(file);
            let synced = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| e.to_string())?;
            if let Err(e) = synced {
                return Err(watermark.set_broken(format_args!(
                    "cannot sync the database file during a checkpoint: {e}"
                )));
            }
        }
        self.catch_up.store(true, Ordering::Release);
        Ok(())
    }

    /// The same checkpoints, syncing `file` as the database file (a test's failing disk).
    #[cfg(test)]
    pub(crate) fn syncing(&self, file: DatabaseFile) -> Checkpoints {
        Checkpoints {
            pool: self.pool.clone(),
            catch_up: AtomicBool::new(false),
            file: self
                .file
                .as_ref()
                .map(|(_, watermark)| (file, Arc::clone(watermark))),
        }
    }

    /// Whether the writer should finish a checkpoint now (the request is taken).
    fn take_catch_up(&self) -> bool {
        self.catch_up.swap(false, Ordering::AcqRel)
    }

    /// Describes a failed checkpoint; an I/O error breaks the store: a sync SQLite made on
    /// its own descriptor may have failed, and Linux reports a failed write-back only once,
    /// so the sync thread could not be trusted to see it.
    fn failed(&self, e: &sqlx::Error) -> String {
        let reason = format!("SQLite checkpoint: {e}");
        match self.file.as_ref().filter(|_| is_io_error(e)) {
            Some((_, watermark)) => watermark.set_broken(reason),
            None => reason,
        }
    }
}

/// Whether SQLite reported an I/O error (what the disk holds is then unknown).
fn is_io_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_IOERR)
}

/// Copies back what the last checkpoint left in the log, on the writer's connection between
/// two batches: no frame is appended meanwhile, so the next batch starts the log over. This
/// is on the writer's path: a sync of the log (mostly done by the sync thread already), the
/// copy of the frames written since the checkpoint's last pass, and a sync of the database
/// file (written back by the checkpoint already). A failure other than an I/O error only
/// means the log grows until the next try.
async fn finish_checkpoint(conn: &mut AnyConnection, checkpoints: &Checkpoints) {
    let started = std::time::Instant::now();
    match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await
    {
        Ok((busy, frames, copied)) => {
            metrics::histogram!("steward_store_checkpoint_catch_up_seconds")
                .record(started.elapsed().as_secs_f64());
            if busy != 0 || copied < frames {
                tracing::debug!(
                    busy,
                    frames,
                    copied,
                    "the log could not be copied back entirely"
                );
            }
        }
        Err(e) => {
            let reason = checkpoints.failed(&e);
            tracing::warn!(error = %reason, "SQLite checkpoint (catching up) failed");
        }
    }
}

/// The file SQLite opened for the main database (symlinks resolved, the URL decoded), if the
/// store is a SQLite database file.
async fn database_path(pool: &AnyPool, on_disk: bool) -> Result<Option<PathBuf>, StoreError> {
    if !on_disk {
        return Ok(None);
    }
    let file: Option<String> =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(pool)
            .await
            .map_err(database)?;
    Ok(file.filter(|f| !f.is_empty()).map(PathBuf::from))
}

impl Inner {
    /// Waits until what a read has just seen cannot be taken back by a crash (see
    /// [`Watermark::readable`]).
    pub(crate) async fn readable(&self) -> Result<(), StoreError> {
        match &self.watermark {
            Some(watermark) => watermark.readable().await,
            None => Ok(()),
        }
    }
}

/// The database file of a `sqlite:` URL, unless it is in memory.
pub(crate) fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

pub(crate) fn enqueue(
    inner: &Inner,
    writes: Vec<Write>,
) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send + 'static {
    let (reply, answer) = oneshot::channel();
    let queued = match &*inner.queue.lock().unwrap_or_else(PoisonError::into_inner) {
        None => Err(StoreError::Closed),
        Some(queue) => queue
            .try_send(Request {
                writes,
                reply: Reply::new(reply),
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => StoreError::Overloaded,
                TrySendError::Closed(_) => StoreError::Closed,
            }),
    };
    async move {
        queued?;
        // The writer answers every request it takes; no answer means it is gone.
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Commits waiting in the writer's queue.
#[cfg(test)]
pub(crate) fn queued(inner: &Inner) -> usize {
    inner
        .queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map_or(0, |queue| queue.max_capacity() - queue.capacity())
}

pub(crate) async fn close(inner: &Inner) {
    // Held to the end, so a concurrent `close` returns only once everything is closed.
    let mut writer = inner.writer.lock().await;
    drop(
        inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
    );
    if let Some(task) = writer.take() {
        // The task ends once every queued request is answered and the last sender is gone.
        if let Err(e) = task.await {
            tracing::error!(error = %e, "store writer task failed");
        }
    }
    inner.pool.close().await;
}

/// The writer task's state.
struct Writer {
    pool: AnyPool,
    key: Arc<SecretKey>,
    max_batch: usize,
    /// The id of the next event written: ids increase in the order of writing (one taken by
    /// a batch that is then rolled back is not used again).
    event_ids: AtomicI64,
    /// Set when a workspace's delete was applied: its events are to be purged.
    purge_requested: AtomicBool,
    /// Where committed batches wait for their sync (SQLite database files only; elsewhere
    /// `COMMIT` returns once durable and batches are answered at once).
    durable: Option<Durable>,
    /// The checkpoints (SQLite): the writer finishes each between two batches.
    checkpoints: Option<Arc<Checkpoints>>,
    #[cfg(test)]
    counters: Arc<Counters>,
}

/// What the writer task did so far (tests only).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Counters {
    /// Batches taken from the queue.
    pub(crate) batches: std::sync::atomic::AtomicUsize,
    /// Batches applied again request by request after a grouped run diverged.
    pub(crate) diverged: std::sync::atomic::AtomicUsize,
    /// Requests applied one by one (in a savepoint each), whatever the reason.
    pub(crate) one_by_one: std::sync::atomic::AtomicUsize,
    /// Batches committed by one statement (SQLite).
    pub(crate) one_statement: std::sync::atomic::AtomicUsize,
}

/// The sync task of a SQLite database file (see `durable.rs`).
struct Durable {
    settled: mpsc::Sender<Settled>,
    watermark: Arc<Watermark>,
    syncer: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Takes what is queued, batch after batch, on one connection of its own (acquired again
    /// after a batch fails, in case the connection is what broke).
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut conn: Option<PoolConnection<Any>> = None;
        let mut purged_at = std::time::Instant::now();
        loop {
            let first = if self.purge_due() {
                // Idle with events to purge: a step every pause until a request comes.
                tokio::select! {
                    biased;
                    first = requests.recv() => first,
                    () = tokio::time::sleep(PURGE_PAUSE.saturating_sub(purged_at.elapsed())) => {
                        self.purge(&mut conn, &mut purged_at).await;
                        continue;
                    }
                }
            } else {
                requests.recv().await
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            metrics::histogram!("steward_store_batch_size").record(batch.len() as f64);
            let queued = metrics::histogram!("steward_store_queue_seconds");
            for request in &batch {
                queued.record(request.reply.waited().as_secs_f64());
            }
            if let Some(reason) = self.broken() {
                answer(settle(batch, Err(reason)));
                continue;
            }
            // Numbered before its rows can be seen (see `Watermark::readable`).
            let number = self.durable.as_ref().map(|d| d.watermark.start_batch());
            #[cfg(test)]
            self.counters
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = std::time::Instant::now();
            let outcomes = match self.connection(&mut conn).await {
                Ok(conn) => self.apply_batch(conn, &batch).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &outcomes {
                self.failed(&mut conn, e);
            }
            metrics::histogram!("steward_store_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            let answers = settle(batch, outcomes.map_err(|e| e.to_string()));
            match (&self.durable, number) {
                (Some(durable), Some(number)) => {
                    // Failures too go through the sync thread: callers hear of their batch
                    // after every earlier batch is on disk, whatever its outcome.
                    let settled = Settled {
                        batch: number,
                        answers,
                    };
                    if let Err(unsent) = durable.settled.send(settled).await {
                        // The sync thread is gone (it never stops first): nothing more can be
                        // vouched for.
                        let reason = durable
                            .watermark
                            .set_broken("the store's sync thread stopped");
                        for (reply, _) in unsent.0.answers {
                            reply.send(Err(StoreError::Database(reason.clone())));
                        }
                    }
                }
                _ => answer(answers),
            }
            if let (Some(conn), Some(checkpoints)) = (&mut conn, &self.checkpoints) {
                if checkpoints.take_catch_up() {
                    finish_checkpoint(conn, checkpoints).await;
                }
            }
            if self.purge_due() && purged_at.elapsed() >= PURGE_PAUSE {
                self.purge(&mut conn, &mut purged_at).await;
            }
        }
        // Every committed batch is answered once its sync is done.
        if let Some(Durable {
            settled, syncer, ..
        }) = self.durable.take()
        {
            drop(settled);
            let joined = tokio::task::spawn_blocking(move || syncer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("store sync thread failed");
            }
        }
    }

    /// The writer's connection, acquired again if the last one was dropped after a failure.
    async fn connection<'c>(
        &self,
        conn: &'c mut Option<PoolConnection<Any>>,
    ) -> sqlx::Result<&'c mut PoolConnection<Any>> {
        let acquired = match conn.take() {
            Some(acquired) => acquired,
            None => {
                let mut acquired = self.pool.acquire().await?;
                if acquired.backend_name() == "SQLite" {
                    // After the migrations: SQLite checks a trigger against the schema
                    // whenever a table it names is altered.
                    acquired.execute(grouped::write_view().as_str()).await?;
                    acquired.execute(grouped::write_trigger().as_str()).await?;
                }
                acquired
            }
        };
        Ok(conn.insert(acquired))
    }

    /// After a batch or a purge step failed: the connection may be what broke, and an I/O
    /// error SQLite reports breaks the store (SQLite syncs the log itself at times, when it
    /// starts over: a failed write-back it was told of may never reach the sync thread).
    fn failed(&self, conn: &mut Option<PoolConnection<Any>>, e: &sqlx::Error) {
        if let Some(mut broken) = conn.take() {
            broken.close_on_drop();
        }
        if let Some(durable) = self.durable.as_ref().filter(|_| is_io_error(e)) {
            durable
                .watermark
                .set_broken(format_args!("SQLite I/O error: {e}"));
        }
    }

    /// Whether deleted workspaces' events are waiting to be purged (and the store can).
    fn purge_due(&self) -> bool {
        self.purge_requested.load(Ordering::Relaxed) && self.broken().is_none()
    }

    /// One purge step; the request stays set while more may be left.
    async fn purge(
        &self,
        conn: &mut Option<PoolConnection<Any>>,
        purged_at: &mut std::time::Instant,
    ) {
        let more = self.purge_events(conn).await;
        *purged_at = std::time::Instant::now();
        if !more {
            self.purge_requested.store(false, Ordering::Relaxed);
        }
    }

    /// Why no batch can be committed any more (the log could not be synced), if so.
    fn broken(&self) -> Option<String> {
        self.durable.as_ref()?.watermark.broken()
    }

    /// The outcome of each request, once the transaction holding them all is committed.
    ///
    /// Runs of lifecycle commits go the grouped way (a few statements for the whole run); the
    /// other requests go one by one, each in its own savepoint. If a grouped run diverges from
    /// what it predicted, the transaction is rolled back and the batch is applied again one
    /// request at a time, which gives every request its exact outcome.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        batch: &[Request],
    ) -> sqlx::Result<Vec<Result<CommitOutcome, StoreError>>> {
        // A SQLite batch made only of lifecycle commits is planned once: committed by one
        // statement if small, else its plan runs in the transaction below.
        let mut planned = None;
        if conn.backend_name() == "SQLite"
            && batch
                .iter()
                .all(|request| grouped::accepts(&request.writes))
        {
            let run: Vec<&[Write]> = batch.iter().map(|request| &request.writes[..]).collect();
            match grouped::Plan::new(grouped::Dialect::Sqlite, &run, &self.event_ids) {
                Ok(plan) if plan.fits_one_call() => {
                    return match grouped::commit_in_one_call(conn, plan).await {
                        Ok(outcomes) => {
                            #[cfg(test)]
                            self.counters
                                .one_statement
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Ok(outcomes.into_iter().map(Ok).collect())
                        }
                        Err(diverged) => {
                            self.diverged(&diverged, batch.len());
                            self.apply_one_by_one(conn, batch).await
                        }
                    };
                }
                Ok(plan) => planned = Some(plan),
                Err(diverged) => {
                    self.diverged(&diverged, batch.len());
                    return self.apply_one_by_one(conn, batch).await;
                }
            }
        }
        let mut tx = conn.begin().await?;
        let grouped = match planned {
            Some(plan) => plan
                .execute(&mut tx)
                .await
                .map(|outcomes| outcomes.into_iter().map(Ok).collect()),
            None => self.apply_grouped(&mut tx, batch).await?,
        };
        match grouped {
            Ok(outcomes) => {
                tx.commit().await?;
                return Ok(outcomes);
            }
            Err(diverged) => {
                tx.rollback().await?;
                self.diverged(&diverged, batch.len());
            }
        }
        self.apply_one_by_one(conn, batch).await
    }

    fn diverged(&self, diverged: &grouped::Diverged, size: usize) {
        tracing::warn!(error = %diverged, size, "store batch applied again request by request");
        #[cfg(test)]
        self.counters
            .diverged
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The slow way: every request in its own savepoint of one transaction.
    async fn apply_one_by_one(
        &self,
        conn: &mut AnyConnection,
        batch: &[Request],
    ) -> sqlx::Result<Vec<Result<CommitOutcome, StoreError>>> {
        let mut tx = conn.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            outcomes.push(self.apply_request(&mut tx, &request.writes).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Applies `batch` with runs of groupable requests grouped. The outer error means the
    /// transaction itself is broken; the inner one, that a grouped run diverged.
    async fn apply_grouped(
        &self,
        tx: &mut AnyConnection,
        batch: &[Request],
    ) -> sqlx::Result<Result<Vec<Result<CommitOutcome, StoreError>>, grouped::Diverged>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let groupable = |request: &Request| grouped::accepts(&request.writes);
        for part in batch.chunk_by(|a, b| groupable(a) && groupable(b)) {
            if !groupable(&part[0]) {
                outcomes.push(self.apply_request(tx, &part[0].writes).await?);
                continue;
            }
            let run: Vec<&[Write]> = part.iter().map(|request| &request.writes[..]).collect();
            let applied = match grouped::Plan::new(grouped::Dialect::of(tx), &run, &self.event_ids)
            {
                Ok(plan) => plan.execute(tx).await,
                Err(diverged) => Err(diverged),
            };
            match applied {
                Ok(done) => outcomes.extend(done.into_iter().map(Ok)),
                Err(diverged) => return Ok(Err(diverged)),
            }
        }
        Ok(Ok(outcomes))
    }

    /// Applies one request inside a savepoint. The outer error means the transaction itself
    /// is broken (the savepoint could not be opened, released or rolled back).
    async fn apply_request(
        &self,
        tx: &mut AnyConnection,
        writes: &[Write],
    ) -> sqlx::Result<Result<CommitOutcome, StoreError>> {
        #[cfg(test)]
        self.counters
            .one_by_one
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut savepoint = tx.begin().await?;
        let outcome = self.apply(&mut savepoint, writes).await;
        match outcome {
            Ok(CommitOutcome::Committed) => savepoint.commit().await?,
            Ok(CommitOutcome::Fenced { .. }) | Err(_) => savepoint.rollback().await?,
        }
        Ok(outcome)
    }

    /// Applies `writes` in order, stopping at the first fenced or failed one.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        writes: &[Write],
    ) -> Result<CommitOutcome, StoreError> {
        for write in writes {
            if let fenced @ CommitOutcome::Fenced { .. } = self.apply_one(conn, write).await? {
                return Ok(fenced);
            }
        }
        Ok(CommitOutcome::Committed)
    }

    /// Applies one write; `Fenced` if its generation fence does not hold.
    async fn apply_one(
        &self,
        conn: &mut AnyConnection,
        write: &Write,
    ) -> Result<CommitOutcome, StoreError> {
        match write {
            Write::InsertWorkspace {
                record,
                idempotency,
            } => {
                let id = record.id.to_string();
                let query = sqlx::query(
                    "INSERT INTO workspaces (id, \
                     name, provider, image, command, env, model, \
                     ready_when, phase, desired, generation, observed_generation, pending, \
                     failure_reason, failure_generation, backoff_attempt, recent_failures, \
                     last_cycle_started_at, last_cycle_ended_at, healthy_since, \
                     retry_at, retry_causes, cycle_generation, cycle_causes, cycle_started_at, \
                     switch_state, \
                     agent_generation, agent_token_hash, agent_url, agent_last_heartbeat_at, \
                     created_at, updated_at) VALUES ($1, \
                     $2, $3, $4, $5, $6, $7, \
                     $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
                     $23, $24, $25, $26, \
                     $27, $28, $29, $30, \
                     $31, $32)",
                )
                .bind(&id);
                let query = SpecColumns::new(&record.spec)?.bind(query);
                let query = StateColumns::new(&record.state)?.bind(query);
                let query = AgentColumns::new(&record.agent)?.bind(query);
                query
                    .bind(record.created_at.0)
                    .bind(record.updated_at.0)
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
                for (key, value) in &record.secrets {
                    self.put_secret(conn, record.id, key, value.expose_secret())
                        .await?;
                }
                if let Some((key, body_hash)) = idempotency {
                    sqlx::query(
                        "INSERT INTO idempotency_keys (key, workspace_id, body_hash, created_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(key)
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
                let query = sqlx::query(
                    "UPDATE workspaces SET ready_when = $1, phase = $2, desired = $3, \
                     generation = $4, observed_generation = $5, pending = $6, \
                     failure_reason = $7, failure_generation = $8, backoff_attempt = $9, \
                     recent_failures = $10, last_cycle_started_at = $11, \
                     last_cycle_ended_at = $12, healthy_since = $13, retry_at = $14, \
                     retry_causes = $15, cycle_generation = $16, cycle_causes = $17, \
                     cycle_started_at = $18, switch_state = $19, updated_at = $20 \
                     WHERE id = $21 AND generation = $22",
                );
                let done = StateColumns::new(state)?
                    .bind(query)
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
                let query = sqlx::query(
                    "UPDATE workspaces SET name = $1, provider = $2, image = $3, command = $4, \
                     env = $5, model = $6 WHERE id = $7 AND generation = $8",
                );
                let done = SpecColumns::new(spec)?
                    .bind(query)
                    .bind(id.to_string())
                    .bind(generation_column(*expected_generation)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
                if done.rows_affected() == 0 {
                    return Ok(fenced(*id, *expected_generation));
                }
            }
            Write::PutSecret { id, key, value } => {
                self.put_secret(conn, *id, key, value.expose_secret())
                    .await?;
            }
            Write::DeleteSecret { id, key } => {
                sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND key = $2")
                    .bind(id.to_string())
                    .bind(key)
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
            }
            Write::SaveAgent { id, agent } => {
                let query = sqlx::query(
                    "UPDATE workspaces SET agent_generation = $1, agent_token_hash = $2, \
                     agent_url = $3, agent_last_heartbeat_at = $4 \
                     WHERE id = $5 AND generation = $1",
                );
                let done = AgentColumns::new(agent)?
                    .bind(query)
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await
                    .map_err(database)?;
                if done.rows_affected() == 0 {
                    return Ok(fenced(*id, agent.generation));
                }
            }
            Write::AppendEvent(event) => {
                let id = self.event_ids.fetch_add(1, Ordering::Relaxed);
                sqlx::query(
                    "INSERT INTO events (id, workspace_id, seq, generation, at, kind, data) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(event.workspace_id.to_string())
                .bind(event.seq)
                .bind(generation_column(event.generation)?)
                .bind(event.at.0)
                .bind(&event.kind)
                .bind(to_json(&event.data)?)
                .execute(&mut *conn)
                .await
                .map_err(database)?;
                // `(workspace_id, seq)` is unique: each event comes after the last one stored.
                let recorded = sqlx::query(
                    "UPDATE workspaces SET last_event_seq = $1, last_event_id = $3 \
                     WHERE id = $2 AND last_event_seq < $1",
                )
                .bind(event.seq)
                .bind(event.workspace_id.to_string())
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(database)?;
                if recorded.rows_affected() == 0 {
                    return Err(StoreError::Conflict(format!(
                        "event {} of workspace {}: an event with this seq or a later one \
                         is stored, or the workspace is gone",
                        event.seq, event.workspace_id
                    )));
                }
            }
            Write::DeleteWorkspace { id } => {
                let id = id.to_string();
                for statement in [
                    "DELETE FROM secrets WHERE workspace_id = $1",
                    // Its events go in the background (`purge_events`), from its first one
                    // (events are in the order written) to the last one written so far.
                    "INSERT INTO event_purges (workspace_id, next_id, end_id) \
                     SELECT $1, e.id, w.last_event_id FROM events e, workspaces w \
                     WHERE w.id = $1 AND w.last_event_id IS NOT NULL \
                     AND e.workspace_id = $1 AND e.seq % 64 = 1 ORDER BY e.seq LIMIT 1 \
                     ON CONFLICT (workspace_id) DO NOTHING",
                    "DELETE FROM idempotency_keys WHERE workspace_id = $1",
                    "DELETE FROM workspaces WHERE id = $1",
                ] {
                    sqlx::query(statement)
                        .bind(&id)
                        .execute(&mut *conn)
                        .await
                        .map_err(database)?;
                }
                self.purge_requested.store(true, Ordering::Relaxed);
            }
        }
        Ok(CommitOutcome::Committed)
    }

    /// Removes one range of ids of a deleted workspace's events (see `event_purges` in the
    /// third migration), in a transaction of its own; says whether more may be left. A
    /// failure is logged and ends the purge until the next delete or the next start.
    async fn purge_events(&self, conn: &mut Option<PoolConnection<Any>>) -> bool {
        let stepped = match self.connection(conn).await {
            Ok(acquired) => purge_step(acquired).await,
            Err(e) => Err(e),
        };
        stepped.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot purge the events of deleted workspaces");
            self.failed(conn, &e);
            false
        })
    }

    /// Inserts or replaces one secret, encrypted.
    async fn put_secret(
        &self,
        conn: &mut AnyConnection,
        id: WorkspaceId,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (workspace_id, key, ciphertext) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, key) DO UPDATE SET ciphertext = excluded.ciphertext",
        )
        .bind(id.to_string())
        .bind(key)
        .bind(self.key.encrypt(id, key, value)?)
        .execute(&mut *conn)
        .await
        .map_err(database)?;
        Ok(())
    }
}

/// Ids a purge step looks at: a few milliseconds of the writer's time at most.
#[cfg(not(test))]
const PURGE_IDS: i64 = 4096;
#[cfg(test)]
const PURGE_IDS: i64 = 16;

/// The pause between two purge steps: the writer spends at most a small share of its time
/// purging, and commits go first.
const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// One step of [`Writer::purge_events`]: the next [`PURGE_IDS`] ids, for every deleted
/// workspace whose range they fall in (deleting many workspaces costs one pass, not one each).
async fn purge_step(conn: &mut AnyConnection) -> sqlx::Result<bool> {
    let mut tx = conn.begin().await?;
    let from: Option<i64> = sqlx::query_scalar("SELECT MIN(next_id) FROM event_purges")
        .fetch_one(&mut *tx)
        .await?;
    let Some(from) = from else {
        tx.commit().await?;
        return Ok(false);
    };
    let to = from.saturating_add(PURGE_IDS);
    // Below its `next_id`, a workspace has no events left: looking there again is harmless.
    sqlx::query(
        "DELETE FROM events WHERE id >= $1 AND id < $2 AND workspace_id IN \
         (SELECT workspace_id FROM event_purges WHERE next_id < $2)",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    for statement in [
        "DELETE FROM event_purges WHERE next_id < $1 AND end_id < $1",
        "UPDATE event_purges SET next_id = $1 WHERE next_id < $1",
    ] {
        sqlx::query(statement).bind(to).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Answers each caller with its outcome.
fn answer(answers: durable::Answers) {
    for (reply, outcome) in answers {
        reply.send(outcome);
    }
}

/// Pairs each request's reply with its outcome; if the batch failed (`Err` says why), every
/// request fails with that message and the failure is logged.
fn settle(
    batch: Vec<Request>,
    outcomes: Result<Vec<Result<CommitOutcome, StoreError>>, String>,
) -> durable::Answers {
    match outcomes {
        Ok(outcomes) => batch
            .into_iter()
            .map(|request| request.reply)
            .zip(outcomes)
            .collect(),
        Err(message) => {
            tracing::error!(
                error = %message,
                size = batch.len(),
                "store batch failed; none of it was committed"
            );
            batch
                .into_iter()
                .map(|request| (request.reply, Err(StoreError::Database(message.clone()))))
                .collect()
        }
    }
}

fn fenced(id: WorkspaceId, expected: Generation) -> CommitOutcome {
    CommitOutcome::Fenced { id, expected }
}
