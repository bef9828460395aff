//! Opening the store, and the single writer task (group commit).
//!
//! Callers queue a request (their writes and a reply channel) without waiting; the task takes
//! whatever is queued (up to `max_batch`), applies it in one transaction (`apply.rs`), commits
//! once, then answers everyone — on a SQLite database file, through the sync thread
//! (`durable.rs`), once the log is on disk. Readers use the pool directly; nothing but this
//! task writes.

use crate::apply;
use crate::durable::{self, DatabaseFile, Reply, Settled, Wal, Watermark};
use crate::error::database;
use crate::sqlite::{self, Checkpoints};
use crate::{CommitOutcome, SecretKey, StoreError, StoreOptions, Write};
use sqlx::any::{Any, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::AnyPool;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Full batches that may wait behind the one being written before commits are refused.
pub(crate) const QUEUED_BATCHES: usize = 16;

/// The migrations both backends share, from the top-level `migrations/`.
static SHARED: Migrator = sqlx::migrate!("../../migrations");
/// Migrations written once per backend (where their SQL differs), in `migrations/<backend>/`.
static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Every migration of a backend, in version order.
pub(crate) fn migrator(sqlite: bool) -> Migrator {
    let own = if sqlite { &SQLITE } else { &POSTGRES };
    let mut migrations: Vec<_> = SHARED.iter().chain(own.iter()).cloned().collect();
    migrations.sort_by_key(|migration| migration.version);
    Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

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
    /// What the writer did, for tests to observe how batches were applied.
    #[cfg(test)]
    pub(crate) counters: Arc<Counters>,
}

/// What the writer task did so far (tests only).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Counters {
    /// Batches taken from the queue.
    pub(crate) batches: std::sync::atomic::AtomicUsize,
    /// How they were applied.
    pub(crate) applied: apply::Counters,
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
    let on_disk = sqlite::sqlite_file(&options.database_url).is_some();
    if let Some(file) = sqlite::sqlite_file(&options.database_url) {
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
                    sqlite::configure_sqlite(conn, synchronous, busy_timeout_ms).await?;
                }
                Ok(())
            })
        })
        .connect(&options.database_url)
        .await
        .map_err(database)?;
    migrator(is_sqlite)
        .run(&pool)
        .await
        .map_err(|e| StoreError::Database(format!("migrations: {e}")))?;

    let path = sqlite::database_path(&pool, on_disk).await?;
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
        Arc::new(Checkpoints::new(
            pool.clone(),
            database.clone().zip(watermark.clone()),
        ))
    });
    let writer = Writer {
        pool: pool.clone(),
        key: Arc::clone(&key),
        max_batch,
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
    /// Where committed batches wait for their sync (SQLite database files only; elsewhere
    /// `COMMIT` returns once durable and batches are answered at once).
    durable: Option<Durable>,
    /// The checkpoints (SQLite): the writer finishes each between two batches.
    checkpoints: Option<Arc<Checkpoints>>,
    #[cfg(test)]
    counters: Arc<Counters>,
}

/// The sync thread of a SQLite database file (see `durable.rs`).
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
        while let Some(first) = requests.recv().await {
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
            let outcomes = self.apply(&mut conn, &batch).await;
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
                    sqlite::finish_checkpoint(conn, checkpoints).await;
                }
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

    /// Applies `batch` in one transaction on the writer's connection (acquired again if the
    /// last one was dropped after a failure).
    async fn apply(
        &self,
        conn: &mut Option<PoolConnection<Any>>,
        batch: &[Request],
    ) -> sqlx::Result<apply::Outcomes> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(self.pool.acquire().await?),
        };
        let commits: Vec<&[Write]> = batch.iter().map(|request| &request.writes[..]).collect();
        apply::batch(
            conn,
            &self.key,
            &commits,
            #[cfg(test)]
            &self.counters.applied,
        )
        .await
    }

    /// After a batch failed: the connection may be what broke, and an I/O error SQLite
    /// reports breaks the store (SQLite syncs the log itself at times, when it starts over: a
    /// failed write-back it was told of may never reach the sync thread).
    fn failed(&self, conn: &mut Option<PoolConnection<Any>>, e: &sqlx::Error) {
        if let Some(mut broken) = conn.take() {
            broken.close_on_drop();
        }
        if let Some(durable) = self.durable.as_ref().filter(|_| sqlite::is_io_error(e)) {
            durable
                .watermark
                .set_broken(format_args!("SQLite I/O error: {e}"));
        }
    }

    /// Why no batch can be committed any more (the log could not be synced), if so.
    fn broken(&self) -> Option<String> {
        self.durable.as_ref()?.watermark.broken()
    }
}

/// Answers each caller with its outcome.
fn answer(answers: durable::Answers) {
    for (reply, outcome) in answers {
        reply.send(outcome);
    }
}

/// Pairs each request's reply with its outcome; if the batch failed (`Err` says why), every
/// request fails with that message and the failure is logged.
fn settle(batch: Vec<Request>, outcomes: Result<apply::Outcomes, String>) -> durable::Answers {
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
