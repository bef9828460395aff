//! Adopting the children of a previous run, at start-up.
//!
//! A provider built with a state directory adopts, right away, the children its records name:
//! a record whose process still runs, is not a zombie, leads its own group and has the
//! recorded start time is tracked again as that workspace's instance of that generation, so
//! that `list` at boot includes it. Any other record is stale — its process is gone, or its
//! pid now belongs to another process — and is deleted without signaling anything. So is
//! every record of another boot: after a reboot, pids and start times (counted from boot)
//! name unrelated processes. Of two live records of one workspace, the newest generation is
//! adopted and the older one is stopped.
//!
//! A provisional record of this boot is resolved by one scan of `/proc`: its child is a
//! process that runs (not a zombie), leads its own process group but not its own session
//! (the child is started with `setpgid`, never `setsid`: a program that daemonized itself
//! does not pass for its launcher), is neither init nor the daemon, and whose initial
//! environment (`/proc/<pid>/environ`) holds `STEWARD_PROCESS_NONCE=<nonce>`; of several (a
//! descendant that moved to a group of its own inherits the variable), the earliest started.
//! One found is adopted like the process of a full record (identity: pid and start time) and
//! gets its full record (if that cannot be written, the provisional record stays as its
//! record); either way the provisional record is then deleted. No other process can carry the
//! nonce by chance: 128 bits from the operating system's generator, written only to a `0600`
//! file in a `0700` directory and to the child's environment.
//!
//! How an adopted process is then supervised: see `supervisor.rs`.

use super::procfs::{read_stat, Identity};
use super::records::{read_provisionals, read_records, remove_record, write_record, Record};
use super::supervisor::{GroupSignal, Instance, Leader};
use super::{ProcessProvider, NONCE_VAR};
use dashmap::mapref::entry::Entry as Slot;
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

impl ProcessProvider {
    /// Adopts the live children that the records of previous runs name, and deletes the
    /// records of those that are gone. See the module documentation.
    pub(super) fn adopt(&self) {
        let dir = &self.config.state_dir;
        if dir.as_os_str().is_empty() {
            return;
        }
        let Ok(runtime) = Handle::try_current() else {
            tracing::warn!(
                provider = %self.name,
                "built outside a tokio runtime: the processes of previous runs are not adopted"
            );
            return;
        };
        let mut live = Vec::new();
        for (path, record) in read_records(dir) {
            if record.boot_id != self.boot_id {
                tracing::info!(
                    workspace = %record.workspace,
                    generation = %record.generation,
                    pid = record.identity.pid.as_raw(),
                    "the record of a process is from an earlier boot; removing it"
                );
                remove_record(&path);
            } else if record.identity.adoptable() {
                live.push((path, record));
            } else {
                tracing::info!(
                    workspace = %record.workspace,
                    generation = %record.generation,
                    pid = record.identity.pid.as_raw(),
                    "the process of a previous run is gone (or its pid was reused); removing its record"
                );
                remove_record(&path);
            }
        }
        self.resolve_provisionals(dir, &mut live);
        // The newest generation of each workspace first: it is the one tracked.
        live.sort_by(|(_, a), (_, b)| {
            (a.workspace, b.generation).cmp(&(b.workspace, a.generation))
        });
        let pipes: Vec<_> = live
            .iter()
            .map(|(_, r)| (r.workspace, r.generation))
            .collect();
        self.journals.sweep_pipes(&pipes);
        for (path, record) in live {
            // Its output waited in its pipe while no daemon ran: read on from there.
            let output = self
                .journals
                .reopen_pipe(record.workspace, record.generation)
                .map(|(pipe, pipe_path)| {
                    let journal = self.journals.of(record.workspace);
                    runtime.spawn(journal.pump(
                        record.workspace,
                        record.generation,
                        pipe,
                        pipe_path,
                    ))
                });
            let instance = Instance {
                workspace: record.workspace,
                generation: record.generation,
                group: record.identity.pid,
                started_at: record.started_at,
                record: Some(path),
                leader: Leader::Adopted(record.identity),
                output,
            };
            let tracked = self.supervise(&runtime, instance);
            match self.children.entry(record.workspace) {
                Slot::Vacant(slot) => {
                    slot.insert(tracked);
                    tracing::info!(
                        workspace = %record.workspace,
                        generation = %record.generation,
                        pid = record.identity.pid.as_raw(),
                        "adopted the instance process of a previous run"
                    );
                }
                Slot::Occupied(newer) => {
                    tracing::warn!(
                        workspace = %record.workspace,
                        generation = %record.generation,
                        pid = record.identity.pid.as_raw(),
                        newer_generation = %newer.get().generation,
                        "a superseded instance process of a previous run still runs; stopping it"
                    );
                    tracked.request(GroupSignal::Terminate);
                }
            }
        }
    }

    /// Resolves the provisional records of starts that a crash cut short (see the module
    /// documentation): the child of each one of this boot is looked for by its nonce and, if
    /// found, joins `live` with a full record of its own. Every provisional record is deleted,
    /// unless it has to stand in for a full record that cannot be written.
    fn resolve_provisionals(&self, dir: &Path, live: &mut Vec<(PathBuf, Record)>) {
        let mut pending = Vec::new();
        for (path, provisional) in read_provisionals(dir) {
            if provisional.boot_id == self.boot_id {
                pending.push((path, provisional));
            } else {
                tracing::info!(
                    workspace = %provisional.workspace,
                    generation = %provisional.generation,
                    "a provisional process record is from an earlier boot; removing it"
                );
                remove_record(&path);
            }
        }
        if pending.is_empty() {
            return;
        }
        let nonces: HashSet<&str> = pending.iter().map(|(_, p)| p.nonce.as_str()).collect();
        let found = find_by_nonce(&nonces);
        for (path, provisional) in pending {
            let Some(identity) = found.get(&provisional.nonce).copied() else {
                tracing::info!(
                    workspace = %provisional.workspace,
                    generation = %provisional.generation,
                    "no process carries the nonce of a provisional record (its spawn never happened, or its process is gone); removing it"
                );
                remove_record(&path);
                continue;
            };
            if live.iter().any(|(_, record)| record.identity == identity) {
                // The crash came after the full record was written: that one names the child.
                remove_record(&path);
                continue;
            }
            let record = Record {
                workspace: provisional.workspace,
                generation: provisional.generation,
                identity,
                boot_id: self.boot_id.clone(),
                started_at: provisional.started_at,
            };
            tracing::info!(
                workspace = %record.workspace,
                generation = %record.generation,
                pid = identity.pid.as_raw(),
                "found the process of a start that a crash cut short, by its nonce"
            );
            match write_record(dir, &record) {
                Ok(full) => {
                    remove_record(&path);
                    live.push((full, record));
                }
                Err(error) => {
                    tracing::warn!(
                        workspace = %record.workspace,
                        pid = identity.pid.as_raw(),
                        %error,
                        "cannot write the record of a process found by its nonce; its provisional record stands in"
                    );
                    live.push((path, record));
                }
            }
        }
    }
}

/// For each of `nonces`, the process that is the child of the start with that nonce, if one
/// runs: see the module documentation for what qualifies, and which of several is chosen.
fn find_by_nonce(nonces: &HashSet<&str>) -> HashMap<String, Identity> {
    let mut found: HashMap<String, Identity> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw)
        else {
            continue;
        };
        let Some(stat) = read_stat(pid) else {
            continue;
        };
        let identity = Identity {
            pid,
            starttime: stat.starttime,
        };
        // A session leader called setsid itself: never the child, which only got setpgid.
        if stat.session == pid.as_raw() || !identity.adoptable() {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(nonce) = nonce_in(&environ).filter(|nonce| nonces.contains(nonce)) else {
            continue;
        };
        // Still the process whose environment was read.
        if !identity.leads_live_group() {
            continue;
        }
        let earliest = found.entry(nonce.to_owned()).or_insert(identity);
        if (identity.starttime, pid.as_raw()) < (earliest.starttime, earliest.pid.as_raw()) {
            *earliest = identity;
        }
    }
    found
}

/// The value of [`NONCE_VAR`] in the text of `/proc/<pid>/environ` (`NAME=value` entries,
/// each ended by a NUL byte).
fn nonce_in(environ: &[u8]) -> Option<&str> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry
            .strip_prefix(NONCE_VAR.as_bytes())?
            .strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::records::random_hex;

    #[test]
    fn the_nonce_is_found_in_an_environment_only_under_its_own_name() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let environ = format!("PATH=/bin\0STEWARD_PROCESS_NONCE={nonce}\0FOO=bar\0");
        assert_eq!(nonce_in(environ.as_bytes()), Some(nonce));
        assert_eq!(nonce_in(b"PATH=/bin\0FOO=STEWARD_PROCESS_NONCE=x\0"), None);
        assert_eq!(nonce_in(b"STEWARD_PROCESS_NONCE_X=abc\0"), None);
        assert_eq!(nonce_in(b"XSTEWARD_PROCESS_NONCE=abc\0"), None);
        assert_eq!(nonce_in(b""), None);
        let a = random_hex::<16>().expect("random");
        assert!(a.len() == 32 && a != random_hex::<16>().expect("random"));
    }
}
