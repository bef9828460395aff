//! Named kill points between the steps of a cycle and of a provider switch, for crash tests.
//!
//! Compiled to nothing unless the `failpoints` feature is on (it is off in release builds
//! and in `make run`). With the feature, the daemon arms the points named in the
//! `FAILPOINTS` environment variable (`name=return;other=return`, the `fail` crate's syntax):
//! reaching an armed point kills the daemon with SIGKILL on the spot — no destructor, no
//! flush, exactly like a crash.
//!
//! Points (`<scope>` is `switch` while a provider switch is in progress, else `cycle`):
//! - `<scope>.<step>.before`: the commit that decided the provider operation is durable, the
//!   operation has not started (`<step>`: `remove_old`, `start`, `stop`, `remove`, `release`);
//! - `<scope>.<step>.after`: the operation finished, its completion is not yet recorded;
//! - `switch.claimed`: the switch is committed, the client has not been answered.

/// Whether this build has kill points.
pub const COMPILED: bool = cfg!(feature = "failpoints");

/// Arms the kill points named in `FAILPOINTS`. Returns whether any is armed; an error if
/// some are asked for but this build has none (a crash test must not pass by accident).
pub fn arm_from_env() -> Result<bool, String> {
    let asked = std::env::var("FAILPOINTS").unwrap_or_default();
    if asked.trim().is_empty() {
        return Ok(false);
    }
    if !COMPILED {
        return Err("FAILPOINTS is set but this build has no kill points \
             (build with --features steward/failpoints)"
            .to_owned());
    }
    #[cfg(feature = "failpoints")]
    {
        // Leaked on purpose: the scenario must stay set up for the life of the process.
        std::mem::forget(fail::FailScenario::setup());
    }
    Ok(true)
}

/// Passes kill point `name`: if it is armed, the daemon dies here.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn pass(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::eval(name, |_| {
        tracing::warn!(point = name, "kill point reached: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    });
}

/// Passes `<scope>.<step>.<when>`; the name is only built in builds that have kill points.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn pass_step(scope: &str, step: &str, when: &str) {
    #[cfg(feature = "failpoints")]
    pass(&format!("{scope}.{step}.{when}"));
}
