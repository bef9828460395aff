//! Results: latency summaries, and the two forms every measurement is printed in — one JSON
//! line on stdout (for machines) and one markdown table row (for `docs/PERFORMANCE.md`),
//! printed together at the end of a subcommand.
//!
//! It computes and formats; it measures nothing and never decides whether a target holds
//! beyond the arithmetic of the ratio it is given.

use serde_json::{json, Value};
use std::time::Duration;

/// Order statistics of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank; with fewer than 100 samples this is the maximum).
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// The summary of `samples` (all zero when there are none).
    pub fn of(samples: &[Duration]) -> Summary {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        if ms.is_empty() {
            return Summary::default();
        }
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let index = (q * ms.len() as f64).ceil() as usize;
            ms[index.clamp(1, ms.len()) - 1]
        };
        Summary {
            n: ms.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            min: ms[0],
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }

    /// As JSON, milliseconds rounded to microseconds.
    pub fn json(&self) -> Value {
        json!({
            "n": self.n,
            "p50_ms": round3(self.p50),
            "p90_ms": round3(self.p90),
            "p99_ms": round3(self.p99),
            "min_ms": round3(self.min),
            "max_ms": round3(self.max),
            "mean_ms": round3(self.mean),
        })
    }
}

/// `x` rounded to three decimals (microseconds, for values in milliseconds).
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// `numerator / denominator`, or NaN (printed as `null`) when the denominator is zero.
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}

/// "holds" or "MISSES" for a ratio that must stay at or below `limit`.
pub fn at_most(value: f64, limit: f64) -> &'static str {
    if value <= limit {
        "holds"
    } else {
        "MISSES"
    }
}

/// "holds" or "MISSES" for a ratio that must reach `limit`.
pub fn at_least(value: f64, limit: f64) -> &'static str {
    if value >= limit {
        "holds"
    } else {
        "MISSES"
    }
}

/// What a subcommand prints: JSON lines as results come in, markdown rows at the end.
#[derive(Debug, Default)]
pub struct Report {
    header: Vec<String>,
    rows: Vec<String>,
}

impl Report {
    /// A report whose markdown table has these columns.
    pub fn new(columns: &[&str]) -> Report {
        let header = vec![
            format!("| {} |", columns.join(" | ")),
            format!("|{}", columns.iter().map(|_| "---:|").collect::<String>()),
        ];
        Report {
            header,
            rows: Vec::new(),
        }
    }

    /// Prints one JSON line now.
    pub fn json(&self, value: &Value) {
        println!("{value}");
    }

    /// Adds a markdown row (printed by [`Report::finish`]).
    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(format!("| {} |", cells.join(" | ")));
    }

    /// Prints the markdown table.
    pub fn finish(self) {
        println!();
        for line in self.header.iter().chain(&self.rows) {
            println!("{line}");
        }
    }
}

/// Milliseconds with one decimal, for table cells.
pub fn ms(x: f64) -> String {
    format!("{x:.1} ms")
}

/// A ratio with two decimals and a multiplication sign, for table cells.
pub fn times(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}×")
    } else {
        "n/a".to_owned()
    }
}

/// A JSON number, or `null` for NaN and infinities.
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(round3(x))
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&samples);
        assert_eq!((s.n, s.p50, s.p90, s.p99), (100, 50.0, 90.0, 99.0));
        assert_eq!((s.min, s.max), (1.0, 100.0));
        let few: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let s = Summary::of(&few);
        assert_eq!(
            (s.p50, s.p99),
            (5.0, 10.0),
            "p99 of 10 samples is the maximum"
        );
        assert_eq!(Summary::of(&[]).n, 0);
    }

    #[test]
    fn ratios_and_verdicts() {
        assert!(ratio(1.0, 0.0).is_nan());
        assert_eq!(num(f64::NAN), Value::Null);
        assert_eq!(at_most(1.05, 1.05), "holds");
        assert_eq!(at_most(1.06, 1.05), "MISSES");
        assert_eq!(at_least(0.89, 0.9), "MISSES");
        assert_eq!(times(1.234), "1.23×");
    }
}
