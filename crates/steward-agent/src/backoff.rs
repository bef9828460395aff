//! Delays between registration attempts: exponential growth with jitter.
//!
//! Pure: no clock, no sleeping, and the random source is a parameter, so the bounds are
//! property-tested. The caller owns the timer.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": attempt `n` waits a random time in
/// `[c/2, c]` where `c = min(cap, base * 2^n)`. The fixed half keeps retries from
/// hammering a daemon that is starting; the random half keeps a fleet of agents from
/// retrying in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose first ceiling is `base` and whose ceilings never exceed `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.cap)
    }

    /// The delay before the next attempt; each call moves one step up.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let half = self.ceiling() / 2;
        self.attempt = self.attempt.saturating_add(1);
        half + rng.gen_range(Duration::ZERO..=half)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn ceilings_double_from_base_up_to_cap() {
        let mut backoff = Backoff::new(BASE, CAP);
        let mut rng = StdRng::seed_from_u64(1);
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = backoff.ceiling();
                backoff.next_delay(&mut rng);
                u64::try_from(c.as_millis()).expect("small")
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    proptest! {
        #[test]
        fn every_delay_is_within_half_and_full_ceiling(seed: u64, steps in 0usize..200) {
            let mut backoff = Backoff::new(BASE, CAP);
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..steps {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay(&mut rng);
                prop_assert!(ceiling <= CAP);
                prop_assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} vs {ceiling:?}");
            }
        }
    }
}
