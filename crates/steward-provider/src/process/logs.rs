//! The output of a workspace's processes: captured through a pipe, stamped, kept in a rotated
//! file, handed to followers as it is written.
//!
//! ## How output is captured
//!
//! Each child's stdout and stderr are one named pipe, `<log_dir>/<workspace>.<generation>.pipe`
//! (mode `0600`), opened read-write for the child, so that the two streams interleave in the
//! order the child writes them. A task of the daemon (the *pump*) reads the pipe, cuts the
//! output into lines (at most [`MAX_LINE`] bytes each), stamps each with the time it was read
//! and the generation, and appends them to the workspace's journal. The pump ends when every
//! process of the instance has closed the pipe (the group is gone), and removes the pipe.
//!
//! The child's end is read-write on purpose: the child itself holds a reader, so a write never
//! fails (no `SIGPIPE`, no `EPIPE`) when the daemon is not there. If the daemon dies, what the
//! child writes waits in the pipe (64 KiB on Linux; beyond that the child's writes block) until
//! the next run adopts the child and opens the pipe again: nothing is lost, and an adopted
//! child's output is read on. A crash loses only what a pump had read and not yet written.
//!
//! ## The journal
//!
//! One file per workspace, across generations: `<log_dir>/<workspace>.log` (mode `0600`), one
//! line per line of output, `<unix nanoseconds> <generation> <text>`, plus the daemon's own
//! `=== steward:` lines at each start and exit. When it grows past `log_max_bytes` it becomes
//! `<workspace>.log.1` (replacing the older one) and a new file starts: a workspace keeps at
//! most about twice `log_max_bytes` on disk. Both files go when the workspace is deleted
//! ([`crate::Provider::forget_logs`]).
//!
//! Followers subscribe under the journal's lock, after reading what it holds, so a line is
//! either in what they read or in what they receive, never both nor neither. A follower that
//! falls more than [`FOLLOW_BACKLOG`] lines behind skips what it missed.

use crate::logs::{pieces, LogLine, LogQuery, LogStream, MAX_LINE};
use crate::ProviderError;
use dashmap::DashMap;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use steward_domain::{Generation, WorkspaceId};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::broadcast;

/// Lines a follower may fall behind by before it skips some.
const FOLLOW_BACKLOG: usize = 1024;

/// The journals of every workspace this provider ran, by workspace.
#[derive(Debug)]
pub(super) struct Journals {
    dir: PathBuf,
    max_bytes: u64,
    by_workspace: DashMap<WorkspaceId, Arc<Journal>>,
}

impl Journals {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes: max_bytes.max(1),
            by_workspace: DashMap::new(),
        }
    }

    /// The journal of `id` (made on first use; nothing is read or written until needed).
    pub(super) fn of(&self, id: WorkspaceId) -> Arc<Journal> {
        Arc::clone(
            self.by_workspace
                .entry(id)
                .or_insert_with(|| {
                    Arc::new(Journal {
                        dir: self.dir.clone(),
                        path: self.dir.join(format!("{id}.log")),
                        max_bytes: self.max_bytes,
                        pumps: AtomicUsize::new(0),
                        state: Mutex::new(State::default()),
                    })
                })
                .value(),
        )
    }

    /// Whether a pump still reads output of `id` (its instance's group has not closed it).
    pub(super) fn pumping(&self, id: WorkspaceId) -> bool {
        self.by_workspace
            .get(&id)
            .is_some_and(|j| j.pumps.load(Ordering::Acquire) > 0)
    }

    /// Drops the journal of `id`: its files are deleted, its followers' streams end, and
    /// a pump still running writes nothing more.
    pub(super) fn forget(&self, id: WorkspaceId) {
        let journal = self.by_workspace.remove(&id).map(|(_, j)| j);
        let journal = journal.unwrap_or_else(|| self.of_removed(id));
        let mut state = journal.lock();
        state.forgotten = true;
        state.live = None;
        state.file = None;
        for path in [journal.path.clone(), journal.rotated()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(workspace = %id, path = %path.display(), %error, "could not delete a log file");
                }
            }
        }
    }

    /// A journal for files that no journal in memory names (a workspace this run never ran).
    fn of_removed(&self, id: WorkspaceId) -> Arc<Journal> {
        let journal = self.of(id);
        self.by_workspace.remove(&id);
        journal
    }

    /// Opens the pipe of a new instance: returns the child's end (read-write, for its stdout
    /// and stderr) and the daemon's (read-only, non-blocking) for [`pump`].
    pub(super) fn open_pipe(
        &self,
        id: WorkspaceId,
        generation: Generation,
    ) -> io::Result<(File, pipe::Receiver, PathBuf)> {
        make_dir(&self.dir)?;
        let path = self.pipe_path(id, generation);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(io::Error::from)?;
        let opened = (|| {
            let child = OpenOptions::new().read(true).write(true).open(&path)?;
            let daemon = pipe::OpenOptions::new().open_receiver(&path)?;
            Ok((child, daemon))
        })();
        match opened {
            Ok((child, daemon)) => Ok((child, daemon, path)),
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
    }

    /// The pipe of an instance of a previous run, if it is still there (for its adoption).
    pub(super) fn reopen_pipe(
        &self,
        id: WorkspaceId,
        generation: Generation,
    ) -> Option<(pipe::Receiver, PathBuf)> {
        let path = self.pipe_path(id, generation);
        match pipe::OpenOptions::new().open_receiver(&path) {
            Ok(daemon) => Some((daemon, path)),
            Err(error) => {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(workspace = %id, %generation, %error, "cannot reopen the output pipe of an adopted process; its output is not read");
                }
                None
            }
        }
    }

    /// Deletes the pipes of instances that are not in `live` (left by a run that ended while
    /// they ran, whose processes are gone).
    pub(super) fn sweep_pipes(&self, live: &[(WorkspaceId, Generation)]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let keep: Vec<PathBuf> = live.iter().map(|(w, g)| self.pipe_path(*w, *g)).collect();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pipe") && !keep.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    fn pipe_path(&self, id: WorkspaceId, generation: Generation) -> PathBuf {
        self.dir.join(format!("{id}.{generation}.pipe"))
    }
}

/// One workspace's output, every generation.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    path: PathBuf,
    max_bytes: u64,
    /// Pumps running for this workspace.
    pumps: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The current file, open for appending (opened on the first write).
    file: Option<File>,
    /// Its size.
    size: u64,
    /// The sender of the followers, while some follow.
    live: Option<broadcast::Sender<LogLine>>,
    /// The workspace is gone: nothing more is written.
    forgotten: bool,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// The file where the journal lives (tests and inspection).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends lines of `generation`, written now, and hands them to followers.
    pub(super) fn append<'a>(
        &self,
        generation: Generation,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> io::Result<()> {
        let at = SystemTime::now();
        let nanos = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut state = self.lock();
        if state.forgotten {
            return Ok(());
        }
        if state.file.is_none() {
            let (file, size) = self.open()?;
            state.file = Some(file);
            state.size = size;
        }
        let mut lines = Vec::new();
        let mut pending = String::new();
        for text in texts {
            for piece in pieces(text) {
                let record = format!("{nanos} {generation} {piece}\n");
                // Rotated before a line that would take the file past its cap.
                let size = state.size + pending.len() as u64;
                if size > 0 && size + record.len() as u64 > self.max_bytes {
                    self.write(&mut state, &pending)?;
                    pending.clear();
                    self.rotate(&mut state)?;
                }
                pending.push_str(&record);
                if state.live.is_some() {
                    lines.push(LogLine {
                        at,
                        generation,
                        text: piece.to_owned(),
                    });
                }
            }
        }
        self.write(&mut state, &pending)?;
        if let Some(live) = &state.live {
            for line in lines {
                if live.send(line).is_err() {
                    state.live = None;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Appends `records` to the current file (opened if need be).
    fn write(&self, state: &mut State, records: &str) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if state.file.is_none() {
            let (file, size) = self.open()?;
            state.file = Some(file);
            state.size = size;
        }
        if let Some(file) = state.file.as_mut() {
            file.write_all(records.as_bytes())?;
        }
        state.size += records.len() as u64;
        Ok(())
    }

    /// The current file becomes the rotated one (replacing it); the next write starts anew.
    fn rotate(&self, state: &mut State) -> io::Result<()> {
        state.file = None;
        state.size = 0;
        match std::fs::rename(&self.path, self.rotated()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Appends a line of the daemon's own; a failure is only logged.
    pub(super) fn note(&self, id: WorkspaceId, generation: Generation, text: &str) {
        if let Err(error) = self.append(generation, [text]) {
            tracing::warn!(workspace = %id, %generation, %error, "could not write to the instance log");
        }
    }

    fn open(&self) -> io::Result<(File, u64)> {
        make_dir(&self.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        // `mode` applies only to a new file; an older one is tightened too.
        file.set_permissions(Permissions::from_mode(0o600))?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// The lines kept (the rotated file, then the current one), oldest first.
    fn kept(&self) -> io::Result<Vec<LogLine>> {
        let mut lines = Vec::new();
        for path in [self.rotated(), self.path.clone()] {
            let mut text = String::new();
            match File::open(&path) {
                Ok(mut file) => {
                    let mut bytes = Vec::new();
                    file.read_to_end(&mut bytes)?;
                    text = String::from_utf8_lossy(&bytes).into_owned();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            lines.extend(text.lines().filter_map(parse));
        }
        Ok(lines)
    }

    /// The lines `query` selects and, when following, a subscription taken under the same
    /// lock (so nothing falls between them).
    fn read(
        &self,
        query: LogQuery,
    ) -> Result<(Vec<LogLine>, Option<broadcast::Receiver<LogLine>>), ProviderError> {
        let mut state = self.lock();
        let kept = self.kept().map_err(|e| {
            ProviderError::Engine(format!("reading log file {}: {e}", self.path.display()))
        })?;
        if let Some(wanted) = query.generation {
            if kept
                .first()
                .is_some_and(|oldest| wanted < oldest.generation)
            {
                return Err(ProviderError::OutputGone(format!(
                    "the output of generation {wanted} is no longer kept (rotated away)"
                )));
            }
        }
        let live = (query.follow && !state.forgotten).then(|| {
            state
                .live
                .get_or_insert_with(|| broadcast::channel(FOLLOW_BACKLOG).0)
                .subscribe()
        });
        Ok((query.select(kept), live))
    }

    /// See [`crate::Provider::logs`].
    pub(super) async fn stream(
        self: Arc<Self>,
        query: LogQuery,
    ) -> Result<LogStream, ProviderError> {
        let (kept, live) = tokio::task::spawn_blocking(move || self.read(query))
            .await
            .map_err(|e| ProviderError::Engine(format!("reading a log file: {e}")))??;
        Ok(match live {
            Some(live) => crate::logs::kept_then_live(kept, live, query),
            None => Box::pin(futures::stream::iter(kept)),
        })
    }

    /// Reads the pipe of `generation`'s instance into the journal until every writer has
    /// closed it, then removes it. Run as a task of its own.
    pub(super) async fn pump(
        self: Arc<Self>,
        id: WorkspaceId,
        generation: Generation,
        mut pipe: pipe::Receiver,
        path: PathBuf,
    ) {
        self.pumps.fetch_add(1, Ordering::AcqRel);
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = pipe.read(&mut buffer).await;
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(workspace = %id, %generation, %error, "reading an instance's output failed; the rest of it is lost");
                    break;
                }
            };
            pending.extend_from_slice(&buffer[..n]);
            let complete = match pending.iter().rposition(|&b| b == b'\n') {
                Some(last) => last + 1,
                // A line longer than we keep is cut.
                None if pending.len() >= MAX_LINE => pending.len(),
                None => continue,
            };
            let chunk: Vec<u8> = pending.drain(..complete).collect();
            self.write_chunk(id, generation, &chunk);
            // Give a chatty instance's followers (and other tasks) a turn between chunks.
            tokio::task::yield_now().await;
        }
        if !pending.is_empty() {
            self.write_chunk(id, generation, &pending);
        }
        drop(pipe);
        let _ = std::fs::remove_file(&path);
        self.pumps.fetch_sub(1, Ordering::AcqRel);
    }

    fn write_chunk(&self, id: WorkspaceId, generation: Generation, chunk: &[u8]) {
        let text = String::from_utf8_lossy(chunk);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        if let Err(error) = self.append(generation, lines) {
            tracing::warn!(workspace = %id, %generation, %error, "could not write an instance's output to its log");
        }
    }
}

/// One stored line: `<unix nanoseconds> <generation> <text>`.
fn parse(stored: &str) -> Option<LogLine> {
    let (nanos, rest) = stored.split_once(' ')?;
    let (generation, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let nanos: u128 = nanos.parse().ok()?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let at =
        SystemTime::UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos % 1_000_000_000).ok()?);
    Some(LogLine {
        at,
        generation: Generation(generation.parse().ok()?),
        text: text.to_owned(),
    })
}

/// Creates the log directory (`0700` where new).
fn make_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_line_reads_back_with_its_time_generation_and_text() {
        let line = parse("1765155723123456789 7 hello  world").expect("a line");
        assert_eq!(line.generation, Generation(7));
        assert_eq!(line.text, "hello  world");
        assert_eq!(
            line.at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .ok(),
            Some(1_765_155_723_123_456_789)
        );
        assert_eq!(parse("1 2 ").map(|l| l.text), Some(String::new()));
        assert_eq!(parse("1 2").map(|l| l.text), Some(String::new()));
        assert!(parse("garbage").is_none());
    }
}
