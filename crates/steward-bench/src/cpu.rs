//! Where the CPU went during a measured window, from `/proc`: the machine's busy share, and
//! the CPU time of the daemon, of the engine (`dockerd`, `containerd`, the per-container
//! `containerd-shim*` processes alive at both ends of the window) and of the agents
//! (`steward-agent`, likewise). Processes that start and end inside a window (`runc`, short
//! lived shims and agents) are not seen per process; the machine's share covers them.
//!
//! Linux only; every reading that fails is simply absent (`None`).

use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs;
use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (`_SC_CLK_TCK`; 100 on every Linux we run on).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    /// Busy and total ticks of all CPUs (`/proc/stat`).
    machine: Option<(u64, u64)>,
    /// The daemon's ticks (user + system).
    daemon: Option<u64>,
    /// Ticks of the processes of interest, by pid: (group, ticks).
    processes: HashMap<u32, (&'static str, u64)>,
}

impl Sample {
    /// Reads `/proc` now; `daemon` is the daemon's pid, if it runs.
    pub fn take(daemon: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            machine: machine(),
            daemon: daemon.and_then(|pid| ticks(pid).map(|(_, t)| t)),
            processes: processes(),
        }
    }

    /// The window from `self` to `later`, as JSON: CPU seconds per second (1.0 = one core).
    pub fn until(&self, later: &Sample) -> Value {
        let seconds = later.at.duration_since(self.at).as_secs_f64();
        let rate = |ticks: u64| -> f64 {
            if seconds > 0.0 {
                (ticks as f64 / TICKS_PER_SECOND / seconds * 1000.0).round() / 1000.0
            } else {
                0.0
            }
        };
        let machine = match (self.machine, later.machine) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                let share = (busy1 - busy0) as f64 / (total1 - total0) as f64;
                Some((share * 1000.0).round() / 1000.0)
            }
            _ => None,
        };
        let daemon = match (self.daemon, later.daemon) {
            (Some(a), Some(b)) => Some(rate(b.saturating_sub(a))),
            _ => None,
        };
        let mut groups: HashMap<&str, u64> = HashMap::new();
        for (pid, (group, t1)) in &later.processes {
            if let Some((_, t0)) = self.processes.get(pid) {
                *groups.entry(group).or_default() += t1.saturating_sub(*t0);
            }
        }
        json!({
            "window_s": (seconds * 1000.0).round() / 1000.0,
            "machine_busy_share": machine,
            "cores": std::thread::available_parallelism().map(usize::from).ok(),
            "cpu_s_per_s": {
                "daemon": daemon,
                "dockerd": groups.get("dockerd").map(|t| rate(*t)),
                "containerd": groups.get("containerd").map(|t| rate(*t)),
                "shims_alive_throughout": groups.get("shim").map(|t| rate(*t)),
                "agents_alive_throughout": groups.get("agent").map(|t| rate(*t)),
            },
        })
    }
}

/// Busy and total ticks over all CPUs.
fn machine() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// (command name, user + system ticks) of a process.
fn ticks(pid: u32) -> Option<(String, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, of the whole line).
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The engine's and the agents' processes now.
fn processes() -> HashMap<u32, (&'static str, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (comm, t) = ticks(pid)?;
            let group = match comm.as_str() {
                "dockerd" => "dockerd",
                "containerd" => "containerd",
                c if c.starts_with("containerd-shim") => "shim",
                "steward-agent" => "agent",
                _ => return None,
            };
            Some((pid, (group, t)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let (comm, _) = ticks(std::process::id()).expect("own stat");
        assert!(!comm.is_empty());
        let a = Sample::take(Some(std::process::id()));
        let b = Sample::take(Some(std::process::id()));
        assert!(a.until(&b)["cpu_s_per_s"]["daemon"].is_number());
    }
}
