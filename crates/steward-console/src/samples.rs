//! The overview's history: a small ring of samples of the daemon's own counters — the text
//! `/metrics` serves, read every `sample_interval` on a thread of its own (rendering folds
//! the histograms' pending samples, which must not hold up the store writer's thread).
//! Nothing is counted twice: the console reads the figures Prometheus scrapes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Renders the daemon's metrics in the Prometheus text format (`/metrics`).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The figures of one sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub at: Option<SystemTime>,
    /// Workspaces by phase (`steward_workspaces{phase}`).
    pub phases: BTreeMap<String, f64>,
    /// Restart requests so far, every cause (`steward_restart_requests_total`).
    pub restarts: f64,
    /// Restarts folded into a pending cycle so far (`steward_restart_coalesced_total`).
    pub coalesced: f64,
    /// Cycles that ended running so far (`steward_restart_cycles_total{result="succeeded"}`).
    pub cycles_succeeded: f64,
    /// Cycles that failed so far (`steward_restart_cycles_total{result="failed"}`).
    pub cycles_failed: f64,
    /// Health restarts dropped so far, by reason (`steward_restart_dropped_total`).
    pub dropped: BTreeMap<String, f64>,
    /// Stale provider results ignored so far (`steward_stale_results_total`).
    pub stale: f64,
}

/// One line of the text format: name, labels, value.
type Line<'a> = (&'a str, Vec<(&'a str, String)>, f64);

/// Parses the samples of the Prometheus text format (comments and malformed lines skipped).
fn parse(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut rest = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (key, quoted) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in quoted.char_indices() {
            if escaped {
                value.push(if c == 'n' { '\n' } else { c });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i + 1);
                break;
            } else {
                value.push(c);
            }
        }
        labels.push((key.trim(), value));
        rest = quoted[end?..].trim_start_matches(',');
    }
    Some((name, labels, value))
}

fn label<'a>(labels: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

impl Sample {
    /// The figures of a `/metrics` text.
    pub fn from_metrics(text: &str, at: SystemTime) -> Sample {
        let mut sample = Sample {
            at: Some(at),
            ..Sample::default()
        };
        for (name, labels, value) in parse(text) {
            match name {
                "steward_workspaces" => {
                    if let Some(phase) = label(&labels, "phase") {
                        sample.phases.insert(phase.to_owned(), value.max(0.0));
                    }
                }
                "steward_restart_requests_total" => sample.restarts += value,
                "steward_restart_coalesced_total" => sample.coalesced += value,
                "steward_restart_cycles_total" => match label(&labels, "result") {
                    Some("succeeded") => sample.cycles_succeeded += value,
                    Some("failed") => sample.cycles_failed += value,
                    _ => {}
                },
                "steward_restart_dropped_total" => {
                    if let Some(reason) = label(&labels, "reason") {
                        *sample.dropped.entry(reason.to_owned()).or_default() += value;
                    }
                }
                "steward_stale_results_total" => sample.stale += value,
                _ => {}
            }
        }
        sample
    }
}

/// The ring of samples.
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
    capacity: usize,
    taken: AtomicU64,
    source: Option<MetricsSource>,
    interval: Duration,
}

impl Samples {
    /// A ring of `capacity` samples of `source` (none: the overview says metrics are off).
    pub fn new(source: Option<MetricsSource>, interval: Duration, capacity: usize) -> Samples {
        Samples {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            taken: AtomicU64::new(0),
            source,
            interval,
        }
    }

    /// Whether there are metrics to sample.
    pub fn enabled(&self) -> bool {
        self.source.is_some()
    }

    /// Most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes one sample now.
    pub fn take(&self) {
        let Some(source) = &self.source else { return };
        let sample = Sample::from_metrics(&source(), SystemTime::now());
        self.push(sample);
    }

    /// Adds a sample (the oldest goes once the ring is full).
    pub fn push(&self, sample: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(sample);
        self.taken.fetch_add(1, Ordering::Release);
    }

    /// Samples taken so far (changes when a new one arrives).
    pub fn version(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// The samples kept, oldest first.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Samples now and then every interval on a thread of its own, until the ring is dropped.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let ring: Weak<Samples> = Arc::downgrade(self);
        let interval = self.interval;
        std::thread::Builder::new()
            .name("steward-console".into())
            .spawn(move || {
                while let Some(samples) = ring.upgrade() {
                    samples.take();
                    drop(samples);
                    std::thread::sleep(interval);
                }
            })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP steward_workspaces Workspaces by phase.
# TYPE steward_workspaces gauge
steward_workspaces{phase="running"} 7
steward_workspaces{phase="provisioning"} 2
steward_restart_requests_total{cause="manual"} 10
steward_restart_requests_total{cause="health"} 3
steward_restart_coalesced_total 4
steward_restart_cycles_total{result="succeeded"} 9
steward_restart_cycles_total{result="failed"} 1
steward_restart_dropped_total{cause="health",reason="debounce"} 5
steward_restart_dropped_total{cause="health",reason="in_cycle"} 2
steward_http_requests_total{route="/v1/workspaces/{id}",status="202"} 12
steward_odd{a="x\"y,z=\\",b="w"} 1
"#;

    #[test]
    fn the_counters_of_a_metrics_text_become_a_sample() {
        let s = Sample::from_metrics(TEXT, SystemTime::UNIX_EPOCH);
        assert_eq!(s.phases.get("running"), Some(&7.0));
        assert_eq!(s.phases.get("provisioning"), Some(&2.0));
        assert_eq!(s.restarts, 13.0);
        assert_eq!(s.coalesced, 4.0);
        assert_eq!((s.cycles_succeeded, s.cycles_failed), (9.0, 1.0));
        assert_eq!(s.dropped.get("debounce"), Some(&5.0));
        assert_eq!(s.dropped.get("in_cycle"), Some(&2.0));
    }

    #[test]
    fn quoted_label_values_with_escapes_and_separators_parse() {
        let lines = parse(TEXT);
        let odd = lines.iter().find(|l| l.0 == "steward_odd").expect("parsed");
        assert_eq!(
            odd.1,
            vec![("a", "x\"y,z=\\".to_owned()), ("b", "w".to_owned())]
        );
        assert!(parse("garbage\nname{unterminated=\"x 1\n").is_empty());
    }

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let samples = Samples::new(None, Duration::from_secs(1), 3);
        for n in 0..5 {
            samples.push(Sample {
                restarts: f64::from(n),
                ..Sample::default()
            });
        }
        let kept: Vec<f64> = samples.snapshot().iter().map(|s| s.restarts).collect();
        assert_eq!(kept, [2.0, 3.0, 4.0]);
        assert_eq!(samples.version(), 5);
    }
}
