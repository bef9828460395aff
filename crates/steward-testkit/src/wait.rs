//! Waiting on a condition instead of sleeping a fixed time: [`eventually`] polls until the
//! condition holds or a deadline passes, and then fails saying what it waited for and what
//! it saw last.
//!
//! Deadlines and steps run on tokio's clock, so a test with a paused clock
//! (`#[tokio::test(start_paused = true)]`) waits in virtual time and a test against a real
//! daemon in real time. Each evaluation of the condition is bounded by the deadline too: a
//! condition that hangs fails the wait instead of hanging the test.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// Step between two evaluations unless [`Wait::every`] says otherwise.
pub const DEFAULT_STEP: Duration = Duration::from_millis(20);

/// What a condition returns: either the value the wait returns, or a description of what
/// it saw instead (shown when the wait times out).
///
/// Implemented for `bool` (true holds; the value is `()`), `Option<T>` (`Some` holds) and
/// `Result<T, E>` (`Ok` holds; the error is the description, so a condition can say why it
/// does not hold yet).
pub trait Check {
    /// What the wait returns once the condition holds.
    type Value;
    /// `Ok(value)` when the condition holds, else a description of what was seen.
    fn check(self) -> Result<Self::Value, String>;
}

impl Check for bool {
    type Value = ();
    fn check(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was false".to_owned())
        }
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn check(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".to_owned())
    }
}

impl<T, E: Display> Check for Result<T, E> {
    type Value = T;
    fn check(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// A wait that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?}; last observation: {last}")]
pub struct TimedOut {
    /// The deadline that passed.
    pub timeout: Duration,
    /// What the condition said the last time it was evaluated.
    pub last: String,
}

/// How long to wait and how often to look. Most callers want [`eventually`]; this is for a
/// different step (a condition expensive to evaluate) or for a wait whose timeout is an
/// error to handle rather than a test failure ([`Wait::until`]).
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    timeout: Duration,
    step: Duration,
}

impl Wait {
    /// Waits at most `timeout`, looking every [`DEFAULT_STEP`].
    pub fn up_to(timeout: Duration) -> Wait {
        Wait {
            timeout,
            step: DEFAULT_STEP,
        }
    }

    /// Looks every `step` instead.
    pub fn every(self, step: Duration) -> Wait {
        Wait { step, ..self }
    }

    /// Evaluates `condition` until it holds and returns its value, or [`TimedOut`] with the
    /// last observation once the deadline passes. The condition is evaluated at least once.
    pub async fn until<C, F, Fut>(self, mut condition: F) -> Result<C::Value, TimedOut>
    where
        C: Check,
        F: FnMut() -> Fut,
        Fut: Future<Output = C>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let last = match tokio::time::timeout_at(deadline, condition()).await {
                Ok(outcome) => match outcome.check() {
                    Ok(value) => return Ok(value),
                    Err(last) => last,
                },
                Err(_) => "the condition itself did not answer before the deadline".to_owned(),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(TimedOut {
                    timeout: self.timeout,
                    last,
                });
            }
            tokio::time::sleep(self.step.min(deadline - now)).await;
        }
    }

    /// Like [`Wait::until`], and fails the test (panics) on a timeout, naming `what` it
    /// waited for.
    #[track_caller]
    pub fn eventually<'a, C, F, Fut>(
        self,
        what: &'a str,
        condition: F,
    ) -> impl Future<Output = C::Value> + 'a
    where
        C: Check + 'a,
        F: FnMut() -> Fut + 'a,
        Fut: Future<Output = C> + 'a,
    {
        let caller = std::panic::Location::caller();
        async move {
            match self.until(condition).await {
                Ok(value) => value,
                Err(e) => panic!("{caller}: waiting for {what}: {e}"),
            }
        }
    }
}

/// Waits (at most `timeout`, looking every 20 ms) until `condition` holds, and returns its
/// value. On a timeout the test fails with `what` and the condition's last observation, so
/// it says what it waited for and what it saw instead.
///
/// ```no_run
/// # async fn example(api: steward_testkit::Api, id: String) {
/// use std::time::Duration;
/// use steward_testkit::eventually;
///
/// let doc = eventually(Duration::from_secs(30), "the workspace to run", || async {
///     let doc = api.workspace(&id).await;
///     if doc["phase"] == "running" { Ok(doc) } else { Err(doc.to_string()) }
/// })
/// .await;
/// # }
/// ```
#[track_caller]
pub fn eventually<'a, C, F, Fut>(
    timeout: Duration,
    what: &'a str,
    condition: F,
) -> impl Future<Output = C::Value> + 'a
where
    C: Check + 'a,
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = C> + 'a,
{
    Wait::up_to(timeout).eventually(what, condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = Cell::new(0);
        let value = eventually(Duration::from_secs(1), "the third call", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_reports_the_last_observation() {
        let calls = Cell::new(0);
        let err = Wait::up_to(Duration::from_millis(100))
            .every(Duration::from_millis(10))
            .until(|| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { Err::<(), _>(format!("saw {n}")) }
            })
            .await
            .expect_err("never holds");
        assert_eq!(err.timeout, Duration::from_millis(100));
        assert_eq!(err.last, format!("saw {}", calls.get()));
        assert!(calls.get() >= 10, "polled every step: {}", calls.get());
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_hangs_is_cut_at_the_deadline() {
        let err = Wait::up_to(Duration::from_secs(1))
            .until(std::future::pending::<bool>)
            .await
            .expect_err("hangs");
        assert!(err.last.contains("did not answer"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for the impossible")]
    async fn eventually_fails_the_test_naming_what_it_waited_for() {
        eventually(Duration::from_millis(50), "the impossible", || async {
            false
        })
        .await;
    }
}
