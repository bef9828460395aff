//! Probe actors: a small fixed set (one per provider) that, every `health.interval`, asks
//! its provider once for all instances (`list`) and sends each workspace actor a `Probe`
//! with what it saw. Probes never decide: the workspace's machine does (threshold, debounce,
//! settle, generation, booting), so a probe can never restart a booting instance.

use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use steward_provider::Provider;

use crate::Registry;

/// Probes every workspace of one provider.
pub(crate) struct Prober {
    pub(crate) registry: Registry,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) interval: Duration,
    /// A round still running when the next tick comes is not doubled up.
    pub(crate) busy: bool,
}

impl Actor for Prober {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.round(ctx));
    }
}

impl Prober {
    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            metrics::counter!("steward_probe_rounds_skipped_total", "provider" => self.provider.name().to_owned())
                .increment(1);
            return;
        }
        self.busy = true;
        let registry = self.registry.clone();
        let provider = self.provider.clone();
        // A round's reports are spread over a tenth of the interval at most.
        let spread = self.interval / 10;
        ctx.spawn(
            async move { registry.probe(provider.as_ref(), spread).await }
                .into_actor(self)
                .map(|_, act, _| act.busy = false),
        );
    }
}
