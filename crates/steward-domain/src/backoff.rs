//! Exponential backoff with jitter: pure arithmetic, the random number is an argument.

use std::time::Duration;

/// How failed cycles are retried, and when the breaker parks a workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Fraction of the delay that is randomised away (`0.0` = none, `1.0` = full jitter).
    pub jitter: f64,
    /// After this long `running`, the attempt counter resets.
    pub reset_after: Duration,
    /// More failures than this inside `failure_window`, or in a row without the workspace
    /// running in between, park it in `failed`.
    pub max_failures: u32,
    /// The window over which failures are counted.
    pub failure_window: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.2,
            reset_after: Duration::from_secs(600),
            max_failures: 5,
            failure_window: Duration::from_secs(600),
        }
    }
}

impl BackoffPolicy {
    /// Delay before retry number `attempt` (0-based): `initial * 2^attempt`, capped at `max`,
    /// then shortened by up to `jitter` of itself according to `random` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let cut = base.mul_f64((self.jitter * random.clamp(0.0, 1.0)).clamp(0.0, 1.0));
        base.saturating_sub(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_initial_and_caps_at_max() {
        let p = BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        };
        let delays: Vec<u64> = (0..12).map(|a| p.delay(a, 0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    proptest! {
        #[test]
        fn jitter_only_shortens_within_its_fraction(attempt in 0u32..64, r in 0.0f64..1.0) {
            let p = BackoffPolicy::default();
            let full = p.delay(attempt, 0.0);
            let d = p.delay(attempt, r);
            prop_assert!(d <= full);
            prop_assert!(d >= full.mul_f64(1.0 - p.jitter) );
        }

        #[test]
        fn with_default_jitter_each_delay_exceeds_the_previous_until_the_cap(
            attempt in 0u32..8, r1 in 0.0f64..1.0, r2 in 0.0f64..1.0,
        ) {
            let p = BackoffPolicy::default();
            prop_assert!(p.delay(attempt + 1, r2) > p.delay(attempt, r1));
        }
    }
}
