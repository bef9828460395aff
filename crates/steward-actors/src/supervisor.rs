//! What a workspace actor tells its supervisor: the one way up from an actor.
//!
//! An actor never calls into the registry (it does not know that type): it sends a
//! [`SupervisorNote`] through the [`Supervisor`] handle it was given, and the registry's
//! supervision task, which owns the receiving end, acts on it. The dependency runs one way:
//! the registry knows actors; actors know a channel.
//!
//! The channel is unbounded on purpose: a note is sent only after a commit (a provider
//! recorded, a workspace purged) or once per actor life (a crash), so their rate is bounded
//! by the store's, and an actor must never wait on (or drop) one.

use actix::Addr;
use steward_domain::WorkspaceId;
use tokio::sync::mpsc;

use crate::workspace::{Commit, WorkspaceActor};

/// A change only the supervisor can carry out.
pub(crate) enum SupervisorNote {
    /// The workspace is recorded on another provider (committed): that provider's probes
    /// report on it from now on.
    ProviderChanged {
        /// The workspace.
        id: WorkspaceId,
        /// The provider it is on now.
        provider: String,
    },
    /// The workspace is gone (its delete is committed) and its actor is stopping: forget it.
    Purged {
        /// The workspace.
        id: WorkspaceId,
        /// The actor that purged it (a newer actor of the same id is never forgotten).
        addr: Addr<WorkspaceActor>,
    },
    /// The actor stopped to be restarted from the store: start its successor once `settled`
    /// (its last commit) has settled, so the successor reads everything it committed.
    Crashed {
        /// The workspace.
        id: WorkspaceId,
        /// How many actors of this workspace crashed, this one included.
        restarts: u32,
        /// The last commit the actor enqueued.
        settled: Commit,
    },
}

/// The handle an actor is given to reach its supervisor. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Supervisor(mpsc::UnboundedSender<SupervisorNote>);

impl Supervisor {
    /// A handle and the receiving end its supervisor drains.
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<SupervisorNote>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    /// Tells the supervisor. A supervisor that is gone (the daemon is stopping) has nothing
    /// left to do with it.
    pub(crate) fn tell(&self, note: SupervisorNote) {
        let _ = self.0.send(note);
    }
}
