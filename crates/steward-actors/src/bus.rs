//! Fan-out of committed lifecycle events to live subscribers (the SSE endpoint).
//! Only events that are durable are published, in commit order per workspace.

use std::sync::Arc;
use steward_store::EventRecord;
use tokio::sync::broadcast;

/// Broadcasts committed events. A slow subscriber that lags behind is told so and can
/// catch up from the store.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<EventRecord>>,
}

impl EventBus {
    /// A bus that buffers up to `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }

    /// Publishes a committed event (no-op without subscribers).
    pub fn publish(&self, event: Arc<EventRecord>) {
        let _ = self.tx.send(event);
    }

    /// A new subscription, starting now.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.tx.subscribe()
    }
}
