//! What only SQLite needs: per-connection settings, the database file's path, and the
//! checkpoints that copy the write-ahead log back into the database file.
//!
//! With `synchronous = NORMAL` a `COMMIT` writes the log without syncing it; `durable.rs`
//! syncs it off the writer's path. SQLite's automatic checkpoints are off: a checkpoint runs
//! every second beside the writer ([`Checkpoints`]), and the writer finishes it between two
//! batches ([`finish_checkpoint`]) so that the log starts over instead of growing.

use crate::durable::{DatabaseFile, Watermark};
use crate::error::database;
use crate::StoreError;
use sqlx::{AnyConnection, AnyPool, Executor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Per-connection settings. WAL lets readers run beside the writer. `synchronous` is `NORMAL`
/// for a database file: a `COMMIT` writes the log without syncing it, and the writer's
/// commits are answered only once `durable.rs` has synced the log (a commit is never
/// answered before it is on disk, and the writer does not wait for the disk between
/// batches). `FULL` (sync inside every `COMMIT`) where there is no file to sync.
pub(crate) async fn configure_sqlite(
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
    // storm (docs/PERFORMANCE.md, "What was tried").
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
    /// The checkpoints of the database behind `pool`; `file` is its database file, if any,
    /// with the watermark a failed sync breaks.
    pub(crate) fn new(pool: AnyPool, file: Option<(DatabaseFile, Arc<Watermark>)>) -> Self {
        Checkpoints {
            pool,
            catch_up: AtomicBool::new(false),
            file,
        }
    }

    /// Runs a checkpoint every [`CHECKPOINT_EVERY`] (the first one a period after opening)
    /// until the pool closes.
    pub(crate) async fn every_second(self: Arc<Self>) {
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
    pub(crate) fn take_catch_up(&self) -> bool {
        self.catch_up.swap(false, Ordering::AcqRel)
    }

    /// Describes a failed checkpoint; an I/O error breaks the store: a sync SQLite made on
    /// its own descriptor may have failed, and Linux reports a failed write-back only once,
    /// so the sync thread could not be trusted to see it.
    pub(crate) fn failed(&self, e: &sqlx::Error) -> String {
        let reason = format!("SQLite checkpoint: {e}");
        match self.file.as_ref().filter(|_| is_io_error(e)) {
            Some((_, watermark)) => watermark.set_broken(reason),
            None => reason,
        }
    }
}

/// Whether SQLite reported an I/O error (what the disk holds is then unknown).
pub(crate) fn is_io_error(e: &sqlx::Error) -> bool {
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
pub(crate) async fn finish_checkpoint(conn: &mut AnyConnection, checkpoints: &Checkpoints) {
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
pub(crate) async fn database_path(
    pool: &AnyPool,
    on_disk: bool,
) -> Result<Option<PathBuf>, StoreError> {
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

/// The database file of a `sqlite:` URL, unless it is in memory.
pub(crate) fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}
