//! Closing a pool, in the order a user expects:
//!
//! 1. stop taking work — new callers and every waiter get `Closed`;
//! 2. shut down the idle workers, and cancel recycles and starts waiting out
//!    a backoff;
//! 3. let in-flight work and starts under way finish, up to
//!    `shutdown_grace` (a worker that arrives now is shut down at once, so
//!    whatever its start spawned is reaped, not orphaned);
//! 4. when the grace runs out, cut off calls and starts still running, and
//!    wait for their workers to come back to be killed;
//! 5. wait for every worker's shutdown, shut the factory down (what it
//!    holds, such as a fork server), then leave the registry.
//!
//! A worker held through `get()` by code that never lets go cannot be taken
//! back; `close` warns and the worker is killed when its guard drops.
//!
//! Closing twice is harmless: the second call waits like the first.

use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::worker::Factory;

/// How long past the grace `close` waits for workers' shutdowns to report.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Shared<F, I, W> {
    pub async fn close(self: &Arc<Self>) {
        let grace = self.config.shutdown_grace;
        let now = tokio::time::Instant::now();

        let idle = {
            let mut st = self.lock();
            let first = !st.closed();
            let idle = st.close();
            if first {
                tracing::info!(pool = %self.name, busy = st.busy(), "pool closing");
            }
            idle
        };
        self.closing.cancel();
        for out in idle {
            let _ = self.stop_worker(out);
        }

        self.wait_until(now + grace, |st| st.at_rest()).await;
        self.kill.cancel();
        // Calls cut off by `kill` return their workers (to be killed) only
        // when their callers' tasks next run. Every worker leaving `busy` or
        // `starting` is counted `stopping` under the same lock, until its
        // shutdown has returned: so when all three are zero, no worker of
        // this pool is left anywhere.
        let settled = self
            .wait_until(tokio::time::Instant::now() + grace + SHUTDOWN_SLACK, |st| {
                st.drained()
            })
            .await;
        self.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_SLACK, self.tasks.wait()).await;
        // The gauges' last sample: the pool as it is left.
        self.lock().sample_levels();
        if !settled {
            let busy = self.lock().busy();
            tracing::warn!(pool = %self.name, busy,
                "close: workers still checked out past the grace; they are killed when returned");
        }
        let _ = tokio::time::timeout(SHUTDOWN_SLACK, self.factory.shutdown()).await;
        if let Some(reg) = &self.registry {
            reg.unregister().await;
        }
        tracing::info!(pool = %self.name, "pool closed");
    }
}
