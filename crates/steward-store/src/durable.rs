//! Durability of SQLite commits, off the writer's path.
//!
//! With `synchronous = FULL`, SQLite syncs the write-ahead log inside every `COMMIT`: the
//! writer waits for the disk before it may start the next batch, and under load most of a
//! batch's time was that wait. Here the writer's connection commits with
//! `synchronous = NORMAL` (the log is written, not synced) and hands the batch's answers to
//! this task, which syncs the log file itself and only then answers. While one sync runs the
//! writer applies the next batches; the next sync covers all of them. The sync runs on a
//! thread of its own, which answers the callers itself (no hop through the async runtime). A caller still hears
//! `Committed` only once its commit is on disk.
//!
//! Why a sync of the file is enough: `COMMIT` has returned, so the batch's frames are in the
//! log file, and `fsync` of any descriptor of that file writes all of it (a checkpoint that
//! reset the log in between had synced the database file first, as `NORMAL` checkpoints do).
//! The file is opened again for each sync (a log deleted and created again when every
//! connection closed is never missed), and the directory is synced once per log file, as
//! SQLite does for a log it creates.
//!
//! If a sync fails, what the disk holds is unknown (Linux may drop the pages that failed to
//! write): every commit not yet answered, and every later one, fails loudly with
//! [`StoreError::Database`]; the daemon must be restarted to write again.

use crate::{CommitOutcome, StoreError};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A committed batch's callers and their outcomes, waiting for the sync that makes them
/// durable.
pub(crate) type Settled = Vec<(
    oneshot::Sender<Result<CommitOutcome, StoreError>>,
    Result<CommitOutcome, StoreError>,
)>;

/// Why the log can no longer be trusted, once a sync failed (shared with the writer, which
/// then refuses every batch).
pub(crate) type Broken = Arc<Mutex<Option<String>>>;

/// The SQLite write-ahead log of a database file, and the file it was last synced as.
pub(crate) struct Wal {
    path: PathBuf,
    dir: PathBuf,
    /// Device and inode of the log file whose directory entry is synced.
    known: Option<(u64, u64)>,
}

impl Wal {
    pub(crate) fn of(database: &Path) -> Wal {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        let dir = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        Wal {
            path: PathBuf::from(path),
            dir,
            known: None,
        }
    }

    /// Writes the log file to disk (and its directory entry, the first time this file is
    /// seen). No log file means nothing is in one: the last connection to close checkpointed
    /// it into the database file, and synced that.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        file.sync_all()?;
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        if self.known != Some(identity) {
            File::open(&self.dir)?.sync_all()?;
            self.known = Some(identity);
        }
        Ok(())
    }
}

/// Starts the thread that syncs the log for every group of settled batches, then answers
/// their callers, in commit order, until the writer drops the sender.
pub(crate) fn spawn(
    wal: Wal,
    broken: Broken,
) -> std::io::Result<(mpsc::Sender<Settled>, JoinHandle<()>)> {
    let (settled, waiting) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("steward-sync".into())
        .spawn(move || sync_then_answer(wal, &waiting, &broken))?;
    Ok((settled, thread))
}

fn sync_then_answer(mut wal: Wal, waiting: &mpsc::Receiver<Settled>, broken: &Broken) {
    while let Ok(first) = waiting.recv() {
        let mut ready = vec![first];
        ready.extend(waiting.try_iter());
        let already = broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let failure = match already {
            Some(reason) => Some(reason),
            None => {
                let started = std::time::Instant::now();
                let synced = wal.sync();
                metrics::histogram!("steward_store_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
                synced.err().map(|e| {
                    let reason = format!(
                        "cannot sync the write-ahead log {}: {e}; commits since the last sync \
                         may be lost, restart the daemon",
                        wal.path.display()
                    );
                    tracing::error!(error = %reason, "store write-ahead log sync failed");
                    *broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                    reason
                })
            }
        };
        for (reply, outcome) in ready.into_iter().flatten() {
            let outcome = match &failure {
                Some(reason) => Err(StoreError::Database(reason.clone())),
                None => outcome,
            };
            // A caller that went away still had its writes committed.
            let _ = reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_sits_beside_its_database() {
        let wal = Wal::of(Path::new("data/steward.db"));
        assert_eq!(wal.path, Path::new("data/steward.db-wal"));
        assert_eq!(wal.dir, Path::new("data"));
        assert_eq!(Wal::of(Path::new("steward.db")).dir, Path::new("."));
    }

    #[test]
    fn no_log_file_is_nothing_to_sync_and_a_new_one_syncs_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        let mut wal = Wal::of(&db);
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
        let broken = Broken::default();
        let (settled, thread) =
            spawn(Wal::of(&not_a_dir.join("s.db")), Arc::clone(&broken)).expect("spawned");
        let (reply, answer) = oneshot::channel();
        settled
            .send(vec![(reply, Ok(CommitOutcome::Committed))])
            .expect("queued");
        drop(settled);
        thread.join().expect("the sync thread ends with its sender");
        let Err(StoreError::Database(message)) = answer.await.expect("answered") else {
            panic!("a commit whose sync failed was answered as committed");
        };
        assert!(message.contains("restart the daemon"), "{message}");
        assert!(broken.lock().expect("not poisoned").is_some());
    }
}
