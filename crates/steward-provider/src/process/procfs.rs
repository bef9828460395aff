//! What `/proc` tells about processes: the identity of a process (pid and start time), whether
//! a process group still has a live member (zombies do not count), and the id of the boot.
//! Without a readable `/proc` (not Linux) nothing is recorded or adopted, and every member
//! of a group counts as live.

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

/// Where Linux publishes the id of the current boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// What tells a process apart from a later one that got the same pid: the pid and the start
/// time of the process, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) pid: Pid,
    pub(super) starttime: u64,
}

impl Identity {
    /// The identity of the process that has `pid` now, if `/proc` shows one.
    pub(super) fn of(pid: Pid) -> Option<Self> {
        read_stat(pid).map(|stat| Self {
            pid,
            starttime: stat.starttime,
        })
    }

    /// Whether this very process (same pid, same start time) still runs, not as a zombie,
    /// and leads its own process group.
    pub(super) fn leads_live_group(self) -> bool {
        read_stat(self.pid).is_some_and(|stat| {
            stat.runs() && stat.pgrp == self.pid.as_raw() && stat.starttime == self.starttime
        })
    }

    /// Whether a record naming this process may be adopted: it leads a live group, and that
    /// group is neither init's nor the daemon's own (which only a forged record could name).
    pub(super) fn adoptable(self) -> bool {
        let daemon = [nix::unistd::getpid(), nix::unistd::getpgrp()];
        self.pid.as_raw() > 1 && !daemon.contains(&self.pid) && self.leads_live_group()
    }
}

/// A boot id as Linux writes it (a UUID); anything else is refused.
pub(super) fn parse_boot_id(text: &str) -> Option<String> {
    let well_formed = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    well_formed.then(|| text.to_owned())
}

/// The id of the current boot, if `/proc` tells it.
pub(super) fn read_boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .and_then(|text| parse_boot_id(text.trim()))
}

/// Whether any process of group `group` still runs (zombies do not count).
pub(super) async fn group_runs(group: Pid) -> bool {
    match killpg(group, None) {
        Err(Errno::ESRCH) => false,
        // `kill` counts zombies as members; look closer.
        _ => tokio::task::spawn_blocking(move || group_has_live_member(group.as_raw()))
            .await
            .unwrap_or(true),
    }
}

/// Whether `/proc` shows a process of group `group` that is not a zombie. Without a readable
/// `/proc` (not Linux), every member counts as live.
fn group_has_live_member(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|stat| stat.pgrp == group && stat.runs())
    })
}

/// What this provider reads of `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) state: char,
    pub(super) pgrp: i32,
    /// The session id: the pid of a process that called `setsid`.
    pub(super) session: i32,
    /// Start time in clock ticks after boot: with the pid, the identity of a process.
    pub(super) starttime: u64,
}

impl Stat {
    /// Neither a zombie nor dead.
    pub(super) fn runs(self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// `/proc/<pid>/stat` of `pid`, if the process exists (zombies do).
pub(super) fn read_stat(pid: Pid) -> Option<Stat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
}

/// Fields 3 (state), 5 (pgrp), 6 (session) and 22 (starttime) of the text of
/// `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session …`, where `comm` may hold spaces
/// and parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 21 lie between the session and the start time.
    let starttime = fields.nth(15)?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        session,
        starttime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLEEP: &str = "19094 (sleep) S 19092 19092 10367 0 -1 4194304 100 0 1 0 0 0 0 0 20 0 \
                         1 0 262173 3133440 389 18446744073709551615 94058393686016";

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let sleep = Stat {
            state: 'S',
            pgrp: 19092,
            session: 10367,
            starttime: 262_173,
        };
        assert_eq!(parse_stat(SLEEP), Some(sleep));
        let odd = SLEEP.replace("(sleep) S", "(a) b (c) Z");
        assert_eq!(
            parse_stat(&odd),
            Some(Stat {
                state: 'Z',
                ..sleep
            })
        );
        assert_eq!(parse_stat("1234 (sleep) S 1 1230 1230 0 -1 4194304"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_own_process_has_an_identity_but_is_never_adoptable() {
        let me = Identity::of(nix::unistd::getpid()).expect("/proc/self");
        assert!(!me.adoptable());
        let init = Identity {
            pid: Pid::from_raw(1),
            ..me
        };
        assert!(!init.adoptable());
    }

    #[test]
    fn the_boot_id_is_read_from_proc() {
        let id = read_boot_id().expect("a boot id on Linux");
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(read_boot_id(), Some(id));
    }
}
