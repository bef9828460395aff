//! Probes: a small fixed set of actors (one per provider) that, every `health.interval`, ask
//! their provider once for all instances (`list`) and send each workspace actor on it a
//! `Probe` with what it saw; and, for providers that report deaths as they happen, a follower
//! that turns each into a dead report at once.
//!
//! Probes never decide: the workspace's machine does (threshold, debounce, settle,
//! generation, booting), so a probe can never restart a booting instance. Reports are best
//! effort: a full mailbox skips one (counted). Instances that belong to no workspace
//! (orphans) are removed.

use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::WorkspaceId;
use steward_provider::{InstanceDeath, Liveness, Provider};
use tokio::sync::{broadcast, watch};

use crate::directory::Directory;
use crate::messages::Probe;

/// Probe reports handed to the actors at a time (see [`Prober::round`]).
const PROBE_SLICE: usize = 32;

/// The pause between two slices of a probe round's reports.
const PROBE_SLICE_GAP: Duration = Duration::from_millis(2);

/// Probes every workspace of one provider.
pub(crate) struct Prober {
    directory: Arc<Directory>,
    provider: Arc<dyn Provider>,
    interval: Duration,
    /// Becomes `true` when the daemon shuts down: no health decision during the drain.
    closing: watch::Receiver<bool>,
    /// A round still running when the next tick comes is not doubled up.
    busy: bool,
}

impl Actor for Prober {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}

impl Prober {
    pub(crate) fn new(
        directory: Arc<Directory>,
        provider: Arc<dyn Provider>,
        interval: Duration,
        closing: watch::Receiver<bool>,
    ) -> Self {
        Self {
            directory,
            provider,
            interval,
            closing,
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            metrics::counter!("steward_probe_rounds_skipped_total", "provider" => self.provider.name().to_owned())
                .increment(1);
            return;
        }
        self.busy = true;
        // A round's reports are spread over a tenth of the interval at most.
        let round = Self::round(
            self.directory.clone(),
            self.provider.clone(),
            self.closing.clone(),
            self.interval / 10,
        );
        ctx.spawn(round.into_actor(self).map(|(), act, _| act.busy = false));
    }

    /// One probe round: one `list` call, then a report to each of the provider's workspaces'
    /// actors, and removal of instances that belong to no workspace (orphans).
    ///
    /// The reports are handed out [`PROBE_SLICE`] at a time, [`PROBE_SLICE_GAP`] apart, over
    /// at most `spread` (larger slices if there are more workspaces): under a restart storm
    /// every workspace in a cycle drops its report and records that, and a thousand commits
    /// enqueued at once held the store's writer for 10-25 ms, every request behind them.
    /// A report handed out later is no staler in kind than one handed out at once: the
    /// machine judges it by generation, cycle, debounce and settle windows.
    async fn round(
        directory: Arc<Directory>,
        provider: Arc<dyn Provider>,
        closing: watch::Receiver<bool>,
        spread: Duration,
    ) {
        if *closing.borrow() {
            return;
        }
        let instances = match provider.list().await {
            Ok(instances) => instances,
            Err(e) => {
                metrics::counter!("steward_probe_errors_total", "provider" => provider.name().to_owned())
                    .increment(1);
                tracing::warn!(provider = provider.name(), error = %e, "probe round failed");
                return;
            }
        };
        let seen: HashMap<WorkspaceId, Liveness> = instances
            .into_iter()
            .map(|i| (i.workspace_id, i.liveness))
            .collect();
        for orphan in seen.keys().filter(|id| !directory.contains(**id)) {
            remove_orphan(provider.clone(), *orphan);
        }
        let name = directory.provider_name(provider.name());
        // Taken out of the directory first: no shard of it stays locked across the pauses.
        let targets = directory.on_provider(&name);
        for (n, part) in targets
            .chunks(probe_slice(targets.len(), spread))
            .enumerate()
        {
            if n > 0 {
                tokio::time::sleep(PROBE_SLICE_GAP).await;
                // A shutdown begun meanwhile ends the round: no health decision during the drain.
                if *closing.borrow() {
                    return;
                }
            }
            for (id, addr) in part {
                let liveness = seen.get(id).copied().unwrap_or(Liveness::Absent);
                let probe = Probe {
                    provider: name.clone(),
                    liveness,
                };
                if addr.try_send(probe).is_err() {
                    metrics::counter!("steward_probe_reports_skipped_total").increment(1);
                }
            }
        }
    }
}

/// How many reports of a round of `targets` go in one slice: [`PROBE_SLICE`], or more if
/// the slices, [`PROBE_SLICE_GAP`] apart, would not fit in `spread`.
fn probe_slice(targets: usize, spread: Duration) -> usize {
    let fit = usize::try_from(spread.as_micros() / PROBE_SLICE_GAP.as_micros())
        .unwrap_or(usize::MAX)
        .max(1);
    let slices = targets.div_ceil(PROBE_SLICE).clamp(1, fit);
    targets.div_ceil(slices).max(1)
}

/// Forwards engine-reported deaths to the workspaces' actors (as dead probe reports: the
/// machine still decides, with the same threshold and windows).
pub(crate) async fn follow_deaths(
    directory: Arc<Directory>,
    provider: Arc<str>,
    mut deaths: broadcast::Receiver<InstanceDeath>,
) {
    loop {
        match deaths.recv().await {
            Ok(death) => {
                if let Some(entry) = directory.get(death.workspace_id) {
                    let _ = entry.addr.try_send(Probe {
                        provider: provider.clone(),
                        liveness: Liveness::Dead(death.generation),
                    });
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed instance deaths; probes will catch up");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Removes the instance of `id`, which belongs to no workspace, in the background.
pub(crate) fn remove_orphan(provider: Arc<dyn Provider>, id: WorkspaceId) {
    tracing::info!(provider = provider.name(), workspace = %id, "removing orphan instance");
    actix::spawn(async move {
        if let Err(e) = provider.remove(id).await {
            tracing::warn!(workspace = %id, error = %e, "cannot remove orphan instance");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_round_is_handed_out_in_slices_that_fit_its_spread() {
        let second = Duration::from_secs(1);
        // A few workspaces: all at once.
        assert_eq!(probe_slice(10, second), 10);
        assert_eq!(probe_slice(0, second), 1);
        // A thousand: slices of 32, 64 ms in all.
        assert_eq!(probe_slice(1_000, second), 32);
        // A hundred thousand: 500 slices of 200 still end within the second.
        assert_eq!(probe_slice(100_000, second), 200);
        // No room to spread: all at once.
        assert_eq!(probe_slice(1_000, Duration::ZERO), 1_000);
    }
}
