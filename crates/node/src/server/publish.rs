//! Keeping a served pool's endpoint in the registry: its load goes out when
//! it changes, at most once per interval, so a busy pool costs the registry
//! a bounded number of writes and a quiet one costs none.

use std::sync::Arc;
use std::time::Duration;

use cenote_core::{EndpointEntry, Load, Registry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::servable::Served;

/// One pool's endpoint, kept up to date.
pub(crate) struct Publisher {
    pub registry: Arc<dyn Registry>,
    /// The entry as last written.
    pub entry: EndpointEntry,
    pub pool: Arc<dyn Served>,
    /// Woken by calls starting and ending.
    pub changed: Arc<Notify>,
    /// At most one write per interval.
    pub interval: Duration,
    /// How often the load is looked at without a wake-up, for changes that
    /// do not come through the node (local callers, workers starting).
    pub idle_check: Duration,
}

impl Publisher {
    /// Write the entry with the load of now.
    pub async fn publish(&mut self) -> Result<(), cenote_core::RegistryError> {
        let mut entry = self.entry.clone();
        entry.load = self.pool.load();
        self.registry.put_endpoint(entry.clone()).await?;
        self.entry = entry;
        Ok(())
    }

    /// Publish changes until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep(self.idle_check) => {}
                () = stop.cancelled() => return,
            }
            let load: Load = self.pool.load();
            if load == self.entry.load {
                continue;
            }
            if let Err(e) = self.publish().await {
                // The registry reports its own outages; a failed write is
                // tried again at the next change or check.
                tracing::debug!(service = %self.entry.service, error = %e, "load not published");
            }
            // The rate limit. A change made meanwhile left a permit in
            // `changed`, so the latest load goes out right after.
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
