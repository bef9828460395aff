//! Durability of SQLite commits, off the writer's path.
//!
//! With `synchronous = FULL`, SQLite syncs the write-ahead log inside every `COMMIT`: the
//! writer waits for the disk before it may start the next batch, and under load most of a
//! batch's time was that wait. Here the writer's connection commits with
//! `synchronous = NORMAL` (the log is written, not synced) and hands the batch's answers to
//! a thread of its own, which syncs the log file and only then answers the callers itself (no
//! hop through the async runtime). While one sync runs the writer applies the next batches;
//! the next sync covers all of them. A caller still hears `Committed` only once its commit is
//! on disk.
//!
//! Why a sync of the file is enough: `COMMIT` has returned, so the batch's frames are in the
//! log file, and `fdatasync` of any descriptor of that file writes all of it, and its size (a
//! checkpoint that reset the log in between had synced the database file first, as `NORMAL`
//! checkpoints do).
//! The log's path is the one SQLite uses (`PRAGMA database_list`, symlinks resolved); the
//! file is opened again for each sync (a log deleted and created again when every connection
//! closed is never missed; with no log, the database file is synced), and the directory is
//! synced once per log file, as SQLite does for a log it creates. The database file itself is
//! opened once, for as long as the store is open ([`DatabaseFile`]): closing a descriptor of
//! it would drop SQLite's locks on it.
//!
//! Readers see a batch's rows as soon as it commits, before its sync: a store read answers
//! only once every batch the writer had started when the read ended is on disk (or rolled
//! back) — see [`Watermark`] — so nothing read from the store can be taken back by a crash.
//! The channel to the sync thread is bounded: when the disk falls behind, the writer waits,
//! its queue fills, and new commits are refused as overloaded rather than piling up.
//!
//! If a sync fails, what the disk holds is unknown (Linux may drop the pages that failed to
//! write): every commit not yet answered, and every later one, fails loudly with
//! [`StoreError::Database`]; the daemon must be restarted to write again.

use crate::{CommitOutcome, StoreError};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A batch's callers and their outcomes, waiting for the sync that makes them durable, with
/// the batch's number (see [`Watermark`]).
pub(crate) struct Settled {
    pub(crate) batch: u64,
    pub(crate) answers: Answers,
}

/// Each caller of a batch and its outcome.
pub(crate) type Answers = Vec<(Reply, Result<CommitOutcome, StoreError>)>;

/// Where one caller hears how its commit went, and since when it has been waiting: answering
/// records the commit's whole time in the store, from the queue to the answer (its batch and,
/// for a SQLite file, its sync included), as `steward_store_commit_seconds`.
pub(crate) struct Reply {
    sender: oneshot::Sender<Result<CommitOutcome, StoreError>>,
    queued_at: Instant,
}

impl Reply {
    /// A reply for a commit queued now.
    pub(crate) fn new(sender: oneshot::Sender<Result<CommitOutcome, StoreError>>) -> Reply {
        Reply {
            sender,
            queued_at: Instant::now(),
        }
    }

    /// How long the commit has been waiting since it was queued.
    pub(crate) fn waited(&self) -> Duration {
        self.queued_at.elapsed()
    }

    /// Answers the caller. One that went away still had its writes committed (or not).
    pub(crate) fn send(self, outcome: Result<CommitOutcome, StoreError>) {
        metrics::histogram!("steward_store_commit_seconds").record(self.waited().as_secs_f64());
        let _ = self.sender.send(outcome);
    }
}

/// Batches the sync thread may have waiting before the writer waits for it.
pub(crate) const WAITING_BATCHES: usize = 16;

/// How far the writer and the disk have got, for readers; and why the log can no longer be
/// trusted, once a sync failed.
pub(crate) struct Watermark {
    /// The number of the last batch the writer started to apply (its rows may be visible).
    started: AtomicU64,
    /// The number of the last batch whose fate is on disk (synced, or rolled back).
    durable: watch::Receiver<u64>,
    broken: Mutex<Option<String>>,
    /// Where a test holds the sync thread, as a disk that has fallen behind would.
    #[cfg(test)]
    pub(crate) disk: DiskGate,
}

/// A gate the sync thread passes just before each sync of the log: a test holding it stands for
/// a disk that does not return from the sync.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct DiskGate {
    /// Syncs that reached the gate.
    arrived: AtomicU64,
    gate: tokio::sync::Mutex<()>,
}

#[cfg(test)]
impl DiskGate {
    /// Holds every sync from now on at the gate, until the guard is dropped.
    pub(crate) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// How many syncs have reached the gate so far.
    pub(crate) fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::Acquire)
    }

    fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        drop(self.gate.blocking_lock());
    }
}

impl Watermark {
    /// Numbers the next batch, before the writer applies it.
    pub(crate) fn start_batch(&self) -> u64 {
        self.started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Nothing can be vouched for any more, because of `cause`: every later commit and read
    /// fails, with the reason returned (logged here, once per cause).
    pub(crate) fn set_broken(&self, cause: impl std::fmt::Display) -> String {
        let reason =
            format!("{cause}; commits since the last sync may be lost, restart the daemon");
        tracing::error!(error = %reason, "the store can no longer vouch for its commits");
        *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        reason
    }

    /// Why nothing can be committed any more, if so.
    pub(crate) fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until every batch started so far is on disk: what a read has just seen is then
    /// durable.
    pub(crate) async fn readable(&self) -> Result<(), StoreError> {
        let target = self.started.load(Ordering::Acquire);
        let mut durable = self.durable.clone();
        if durable.wait_for(|done| *done >= target).await.is_err() {
            return Err(StoreError::Closed);
        }
        match self.broken() {
            Some(reason) => Err(StoreError::Database(reason)),
            None => Ok(()),
        }
    }
}

/// A descriptor of the SQLite database file, open for as long as the store is; its syncs go
/// through it. Closing *any* descriptor of a file releases every POSIX lock the process holds
/// on that file, SQLite's included: a file opened and closed for each sync dropped the shared
/// lock that tells another process's closing connection that the database is still in use,
/// and that connection would then checkpoint and delete the log under this one.
pub(crate) type DatabaseFile = Arc<File>;

/// Opens the database file at `path` once (see [`DatabaseFile`]).
pub(crate) fn database_file(path: &Path) -> std::io::Result<DatabaseFile> {
    File::open(path).map(Arc::new)
}

/// The SQLite write-ahead log of a database file, and the file it was last synced as.
pub(crate) struct Wal {
    database: DatabaseFile,
    path: PathBuf,
    dir: PathBuf,
    /// Device and inode of the log file whose directory entry is synced.
    known: Option<(u64, u64)>,
}

impl Wal {
    /// The log of the database file at `path` (the path SQLite opened it by), open as
    /// `database`.
    pub(crate) fn of(path: &Path, database: DatabaseFile) -> Wal {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut path = path.as_os_str().to_owned();
        path.push("-wal");
        Wal {
            database,
            path: PathBuf::from(path),
            dir,
            known: None,
        }
    }

    /// Writes the log file to disk (and its directory entry, the first time this file is
    /// seen). No log file means nothing is in one (the last connection to close checkpointed
    /// it): the database file is synced instead.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.database.sync_all();
            }
            Err(e) => return Err(e),
        };
        // Data and size (`fdatasync`, as SQLite syncs its own log): the log's modification
        // time is not worth a journal commit on every sync.
        file.sync_data()?;
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        if self.known != Some(identity) {
            // As SQLite does, a directory that cannot be synced is not an error: some
            // filesystems refuse it and keep entries durable their own way.
            if let Err(e) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the directory of the write-ahead log");
            }
            self.known = Some(identity);
        }
        Ok(())
    }
}

/// Starts the thread that syncs the log for every group of settled batches, then answers
/// their callers, in batch order, until the writer drops the sender.
pub(crate) fn spawn(
    wal: Wal,
) -> std::io::Result<(mpsc::Sender<Settled>, Arc<Watermark>, JoinHandle<()>)> {
    let (settled, waiting) = mpsc::channel(WAITING_BATCHES);
    let (durable, seen) = watch::channel(0);
    let watermark = Arc::new(Watermark {
        started: AtomicU64::new(0),
        durable: seen,
        broken: Mutex::new(None),
        #[cfg(test)]
        disk: DiskGate::default(),
    });
    let shared = Arc::clone(&watermark);
    let thread = std::thread::Builder::new()
        .name("steward-sync".into())
        .spawn(move || sync_then_answer(wal, waiting, &durable, &shared))?;
    Ok((settled, watermark, thread))
}

fn sync_then_answer(
    mut wal: Wal,
    mut waiting: mpsc::Receiver<Settled>,
    durable: &watch::Sender<u64>,
    watermark: &Watermark,
) {
    while let Some(first) = waiting.blocking_recv() {
        let mut ready = vec![first];
        while let Ok(more) = waiting.try_recv() {
            ready.push(more);
        }
        let failure = match watermark.broken() {
            Some(reason) => Some(reason),
            None => {
                #[cfg(test)]
                watermark.disk.pass();
                let started = std::time::Instant::now();
                let synced = wal.sync();
                metrics::histogram!("steward_store_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
                synced.err().map(|e| {
                    watermark.set_broken(format_args!(
                        "cannot sync the write-ahead log {}: {e}",
                        wal.path.display()
                    ))
                })
            }
        };
        let last = ready.iter().map(|settled| settled.batch).max().unwrap_or(0);
        durable.send_replace(last);
        for (reply, outcome) in ready.into_iter().flat_map(|settled| settled.answers) {
            let outcome = match (&failure, outcome) {
                (Some(reason), Ok(_)) => Err(StoreError::Database(reason.clone())),
                (_, outcome) => outcome,
            };
            reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any file will do as the database's descriptor where only paths are looked at.
    fn some_file() -> DatabaseFile {
        Arc::new(tempfile::tempfile().expect("tempfile"))
    }

    #[test]
    fn the_log_sits_beside_its_database() {
        let wal = Wal::of(Path::new("data/steward.db"), some_file());
        assert_eq!(wal.path, Path::new("data/steward.db-wal"));
        assert_eq!(wal.dir, Path::new("data"));
        assert_eq!(
            Wal::of(Path::new("steward.db"), some_file()).dir,
            Path::new(".")
        );
    }

    #[test]
    fn no_log_file_syncs_the_database_and_a_new_one_syncs_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        std::fs::write(&db, b"pages").expect("written");
        let mut wal = Wal::of(&db, database_file(&db).expect("opened"));
        wal.sync().expect("synced");
        assert_eq!(wal.known, None);
        std::fs::write(dir.path().join("s.db-wal"), b"frames").expect("written");
        wal.sync().expect("synced");
        assert!(wal.known.is_some());
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_waiting_commit_and_breaks_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The log's directory is a file: opening the log fails with something else than
        // "not found".
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").expect("written");
        let (settled, watermark, thread) =
            spawn(Wal::of(&not_a_dir.join("s.db"), some_file())).expect("spawned");
        let batch = watermark.start_batch();
        let answer = committed(&settled, batch).await;
        drop(settled);
        join(thread).await;
        let Err(StoreError::Database(message)) = answer.await.expect("answered") else {
            panic!("a commit whose sync failed was answered as committed");
        };
        assert!(message.contains("restart the daemon"), "{message}");
        assert!(watermark.broken().is_some());
        // What was read meanwhile cannot be vouched for either.
        assert!(watermark.readable().await.is_err());
    }

    #[tokio::test]
    async fn a_read_waits_until_every_batch_started_before_it_ends_is_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        std::fs::write(&db, b"pages").expect("written");
        let (settled, watermark, thread) =
            spawn(Wal::of(&db, database_file(&db).expect("opened"))).expect("spawned");
        watermark
            .readable()
            .await
            .expect("nothing started: readable at once");
        let batch = watermark.start_batch();
        let mut read = Box::pin(watermark.readable());
        assert!(
            futures::poll!(&mut read).is_pending(),
            "a read answered while a batch it may have seen is not on disk"
        );
        let answer = committed(&settled, batch).await;
        read.await.expect("readable once synced");
        assert!(matches!(answer.await, Ok(Ok(CommitOutcome::Committed))));
        drop(settled);
        join(thread).await;
    }

    /// Hands the sync thread batch `batch`, one commit that applied; its answer comes back.
    async fn committed(
        settled: &mpsc::Sender<Settled>,
        batch: u64,
    ) -> oneshot::Receiver<Result<CommitOutcome, StoreError>> {
        let (reply, answer) = oneshot::channel();
        settled
            .send(Settled {
                batch,
                answers: vec![(Reply::new(reply), Ok(CommitOutcome::Committed))],
            })
            .await
            .expect("queued");
        answer
    }

    async fn join(thread: JoinHandle<()>) {
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joined")
            .expect("the sync thread ends with its sender");
    }
}
