//! The records of live children in the state directory, from which the next run adopts them
//! after a daemon crash.
//!
//! Children do not die with the daemon (own group, never killed on drop). So that the next run
//! knows them, every child has a record in [`ProcessConfig::state_dir`](super::ProcessConfig::state_dir):
//! `<workspace>.<generation>.<pid>.record` (mode `0600`, new directories `0700`), holding the
//! workspace, the generation, the pid (= group id), the process start time in clock ticks
//! after boot (`/proc/<pid>/stat`, field 22), the boot id (`/proc/sys/kernel/random/boot_id`)
//! and the wall-clock start. It is written atomically (temporary file, fsync, rename, fsync of
//! the directory) before `start` reports success, so a start the daemon acknowledged is never
//! forgotten, and it is removed by the child's supervisor once nothing of its group runs. One
//! file per child, named after its pid: the cleanup of one child can never remove another's
//! record, not even that of a newer generation of the same workspace.
//!
//! The pid is known only once the child runs, so a crash between the spawn and that record
//! would leave a child nobody knows of, and the next run would start a second instance beside
//! it. Hence a *provisional* record comes first: before spawning, `start` durably writes
//! `<workspace>.<generation>.<tag>.pending` (same modes; `tag` is 64 random bits, so that one
//! start's cleanup never removes another's), holding the workspace, the generation, the
//! start's nonce (the value of [`NONCE_VAR`](super::NONCE_VAR) in the child's environment), the boot id and the
//! wall-clock start. Once the full record is durable the provisional one is deleted. A start
//! that cannot write its provisional record fails without spawning anything; one whose spawn
//! fails deletes it; one whose full record cannot be written kills the child, whose
//! provisional record then goes with its group (so that a crash before the kill lands still
//! leaves the child findable).

use super::procfs::{parse_boot_id, Identity};
use nix::unistd::Pid;
use rand::RngCore;
use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use steward_domain::{Generation, WorkspaceId};

/// A child's record in the state directory: enough to find it again after a daemon crash,
/// and to tell it from a later process that got the same pid. Stored as `key=value` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) workspace: WorkspaceId,
    pub(super) generation: Generation,
    pub(super) identity: Identity,
    /// The boot it was written in: its pid and start time mean nothing in another.
    pub(super) boot_id: String,
    /// Wall-clock start, for inspection.
    pub(super) started_at: SystemTime,
}

impl Record {
    /// One file per child: a child's cleanup can never remove another's record.
    fn file_name(&self) -> String {
        format!(
            "{}.{}.{}.record",
            self.workspace, self.generation, self.identity.pid
        )
    }

    fn to_text(&self) -> String {
        format!(
            "workspace={}\ngeneration={}\npid={}\nstarttime={}\nboot_id={}\nstarted_at_ms={}\n",
            self.workspace,
            self.generation,
            self.identity.pid,
            self.identity.starttime,
            self.boot_id,
            millis_since_epoch(self.started_at)
        )
    }

    /// The record `text` holds: every key once, nothing else.
    fn parse(text: &str) -> Option<Self> {
        let fields = fields(
            text,
            &[
                "workspace",
                "generation",
                "pid",
                "starttime",
                "boot_id",
                "started_at_ms",
            ],
        )?;
        let pid: i32 = fields.get("pid")?.parse().ok()?;
        Some(Self {
            workspace: fields.get("workspace")?.parse().ok()?,
            generation: Generation(fields.get("generation")?.parse().ok()?),
            identity: Identity {
                pid: Some(pid).filter(|pid| *pid > 0).map(Pid::from_raw)?,
                starttime: fields.get("starttime")?.parse().ok()?,
            },
            boot_id: parse_boot_id(fields.get("boot_id")?)?,
            started_at: parse_millis(fields.get("started_at_ms")?)?,
        })
    }
}

/// The record of a start, written before the spawn: the child is not known yet, only the
/// nonce it will carry in its environment ([`NONCE_VAR`](super::NONCE_VAR)). Stored as `key=value` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Provisional {
    pub(super) workspace: WorkspaceId,
    pub(super) generation: Generation,
    /// 128 random bits, 32 lowercase hex digits.
    pub(super) nonce: String,
    /// The boot it was written in: a process of another boot is never its child.
    pub(super) boot_id: String,
    /// Wall-clock start, for inspection.
    pub(super) started_at: SystemTime,
}

impl Provisional {
    fn to_text(&self) -> String {
        format!(
            "workspace={}\ngeneration={}\nnonce={}\nboot_id={}\nstarted_at_ms={}\n",
            self.workspace,
            self.generation,
            self.nonce,
            self.boot_id,
            millis_since_epoch(self.started_at)
        )
    }

    /// The provisional record `text` holds: every key once, nothing else.
    fn parse(text: &str) -> Option<Self> {
        let fields = fields(
            text,
            &[
                "workspace",
                "generation",
                "nonce",
                "boot_id",
                "started_at_ms",
            ],
        )?;
        let nonce = *fields.get("nonce")?;
        let well_formed = nonce.len() == 32
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        Some(Self {
            workspace: fields.get("workspace")?.parse().ok()?,
            generation: Generation(fields.get("generation")?.parse().ok()?),
            nonce: Some(nonce.to_owned()).filter(|_| well_formed)?,
            boot_id: parse_boot_id(fields.get("boot_id")?)?,
            started_at: parse_millis(fields.get("started_at_ms")?)?,
        })
    }
}

/// The `key=value` lines of `text`, if each of `keys` is there once and nothing else is.
fn fields<'a>(text: &'a str, keys: &[&str]) -> Option<HashMap<&'a str, &'a str>> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=')?;
        if !keys.contains(&key) || fields.insert(key, value).is_some() {
            return None;
        }
    }
    (fields.len() == keys.len()).then_some(fields)
}

fn millis_since_epoch(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn parse_millis(text: &str) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(text.parse().ok()?))
}

/// `BYTES` random bytes from the operating system's generator, as lowercase hex.
pub(super) fn random_hex<const BYTES: usize>() -> io::Result<String> {
    let mut bytes = [0u8; BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `record` into `dir` (`0700` where new) atomically and durably; returns its path.
pub(super) fn write_record(dir: &Path, record: &Record) -> io::Result<PathBuf> {
    write_durably(dir, &record.file_name(), &record.to_text())
}

/// Writes `provisional` into `dir` as [`write_record`] does, under a name of its own
/// (`<workspace>.<generation>.<64 random bits>.pending`); returns its path.
pub(super) fn write_provisional(dir: &Path, provisional: &Provisional) -> io::Result<PathBuf> {
    let name = format!(
        "{}.{}.{}.pending",
        provisional.workspace,
        provisional.generation,
        random_hex::<8>()?
    );
    write_durably(dir, &name, &provisional.to_text())
}

/// Puts `text` at `dir/name` (`dir` `0700` where new) atomically and durably.
fn write_durably(dir: &Path, name: &str, text: &str) -> io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    replace_durably(dir, &temporary, &path, text.as_bytes()).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })?;
    Ok(path)
}

/// Puts `contents` at `path` in `dir` through `temporary` (`0600`): written, fsynced, renamed
/// into place, and the directory fsynced, so that `path` holds either nothing or all of it,
/// even after a crash.
fn replace_durably(dir: &Path, temporary: &Path, path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(temporary, path)?;
    File::open(dir)?.sync_all()
}

/// Every record in `dir`, with its path. A temporary file of an interrupted write counts too:
/// the start that wrote it was cut short by a crash, and its child, if its record is whole and
/// names it, is adopted like any other. A file that does not hold a record is deleted; any
/// other file is left alone.
pub(super) fn read_records(dir: &Path) -> Vec<(PathBuf, Record)> {
    read_entries(dir, "record", Record::parse)
}

/// Every provisional record in `dir`, with its path, as [`read_records`] reads records (a
/// temporary file of an interrupted write is resolved too: no process carries its nonce).
pub(super) fn read_provisionals(dir: &Path) -> Vec<(PathBuf, Provisional)> {
    read_entries(dir, "pending", Provisional::parse)
}

/// The files of `dir` named `*.<kind>` or `*.<kind>.tmp` that `parse` accepts, with their
/// paths; the ones it refuses are deleted.
fn read_entries<T>(dir: &Path, kind: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<(PathBuf, T)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the process records");
            return Vec::new();
        }
    };
    let (suffix, temporary) = (format!(".{kind}"), format!(".{kind}.tmp"));
    let mut found = Vec::new();
    for path in entries.flatten().map(|entry| entry.path()) {
        let is_ours = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(&suffix) || name.ends_with(&temporary));
        if !is_ours {
            continue;
        }
        match std::fs::read_to_string(&path).map(|text| parse(&text)) {
            Ok(Some(entry)) => found.push((path, entry)),
            Ok(None) => {
                tracing::warn!(path = %path.display(), "removing a malformed process record");
                remove_record(&path);
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read a process record")
            }
        }
    }
    found
}

/// Deletes a record; one already gone is fine, any other failure is only logged (at worst,
/// the next run finds the record stale).
pub(super) fn remove_record(path: &Path) {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), %error, "cannot remove a process record");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A record of a fresh workspace's generation 7, pid 4321.
    fn record() -> Record {
        Record {
            workspace: WorkspaceId::from(uuid::Uuid::new_v4()),
            generation: Generation(7),
            identity: Identity {
                pid: Pid::from_raw(4321),
                starttime: 98_765,
            },
            boot_id: BOOT_ID.to_owned(),
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    const BOOT_ID: &str = "5b9c7e0a-2d1f-4c3b-9a8e-7f6d5c4b3a21";

    /// A provisional record of a fresh workspace's generation 7.
    fn provisional() -> Provisional {
        Provisional {
            workspace: WorkspaceId::from(uuid::Uuid::new_v4()),
            generation: Generation(7),
            nonce: "0123456789abcdef0123456789abcdef".to_owned(),
            boot_id: BOOT_ID.to_owned(),
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn records_read_back_as_written_and_anything_else_is_refused() {
        let record = record();
        let text = record.to_text();
        assert_eq!(Record::parse(&text), Some(record.clone()));
        assert_eq!(
            record.file_name(),
            format!("{}.7.4321.record", record.workspace)
        );

        assert_eq!(Record::parse(""), None);
        assert_eq!(Record::parse(&text.replace("pid=4321", "pid=0")), None);
        assert_eq!(Record::parse(&text.replace("pid=4321", "pid=-5")), None);
        assert_eq!(
            Record::parse(&format!("{text}pid=4321\n")),
            None,
            "a key twice"
        );
        assert_eq!(Record::parse(&format!("{text}extra=1\n")), None);
        assert_eq!(Record::parse(&text[..text.len() / 2]), None, "cut short");
        let without_boot = text.replace(&format!("boot_id={BOOT_ID}\n"), "");
        assert_eq!(Record::parse(&without_boot), None, "a boot id is required");
        assert_eq!(Record::parse(&text.replace(BOOT_ID, "not a boot id")), None);
    }

    #[test]
    fn provisional_records_read_back_as_written_and_anything_else_is_refused() {
        let provisional = provisional();
        let text = provisional.to_text();
        assert!(text.contains("nonce=0123456789abcdef0123456789abcdef\n"));
        assert_eq!(Provisional::parse(&text), Some(provisional.clone()));

        let nonce = &provisional.nonce;
        for bad in [
            "",
            "0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(
                Provisional::parse(&text.replace(nonce, bad)),
                None,
                "nonce {bad:?}"
            );
        }
        let without_boot = text.replace(&format!("boot_id={BOOT_ID}\n"), "");
        assert_eq!(Provisional::parse(&without_boot), None);
        assert_eq!(Provisional::parse(&format!("{text}pid=1\n")), None);
        assert_eq!(
            Provisional::parse(&record().to_text()),
            None,
            "a full record"
        );
        assert_eq!(Record::parse(&text), None, "not a full record");
    }

    #[test]
    fn provisional_records_get_names_of_their_own() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let provisional = provisional();
        let first = write_provisional(dir.path(), &provisional).expect("written");
        let second = write_provisional(dir.path(), &provisional).expect("written again");
        assert_ne!(first, second);
        let name = first.file_name().and_then(|n| n.to_str()).expect("a name");
        let prefix = format!("{}.7.", provisional.workspace);
        let tag = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".pending"))
            .expect("<workspace>.<generation>.<tag>.pending");
        assert!(tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!name.contains(&provisional.nonce), "the nonce stays inside");
        let mut read = read_provisionals(dir.path());
        read.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = vec![(first, provisional.clone()), (second, provisional)];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, expected);
        assert!(read_records(dir.path()).is_empty());
    }

    #[test]
    fn records_are_written_atomically_with_private_modes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = dir.path().join("state");
        let record = record();
        let path = write_record(&state, &record).expect("written");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(&state)
            .expect("state dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [record.file_name().as_str()], "no temporary left");
        assert_eq!(read_records(&state), [(path, record)]);
    }
}
