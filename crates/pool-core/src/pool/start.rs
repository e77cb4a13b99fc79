//! Starting workers: concurrently, each in a task the pool owns, retried with
//! capped exponential backoff, held back by the crash-loop budget.
//!
//! A start never runs on a caller's future. A caller who gives up while a
//! process boots loses nothing: the worker arrives anyway and serves the next
//! caller. While starts fail and no worker is up, waiters are told why
//! ([`Error::Start`](crate::Error::Start)) instead of timing out blind.

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Shared, Wk};
use super::state::{Live, Meta, Slot};
use crate::error::{Error, StartError};
use crate::queue::Strategy;
use crate::registry::WorkerState;
use crate::worker::{Factory, Worker, WorkerCtx, WorkerId};

impl<F: Factory, I: Strategy, W: Strategy> Shared<F, I, W> {
    /// Start a worker into `slot` (already counted `starting`). A restart
    /// (replacement after a crash) is charged to the crash budget.
    pub fn start(self: &Arc<Self>, slot: Slot, is_restart: bool) {
        let me = Arc::clone(self);
        let id = self.next_id();
        self.spawn(async move { me.run_start(slot, id, is_restart).await });
    }

    async fn run_start(self: Arc<Self>, slot: Slot, id: WorkerId, is_restart: bool) {
        let mut failures: u32 = 0;
        self.publish(&Meta::new(id, None), WorkerState::Starting);
        loop {
            if is_restart || failures > 0 {
                let delay = self.lock().restart_delay(self.config.crash_budget);
                if !delay.is_zero() {
                    tracing::error!(pool = %self.name, worker = %id, ?delay,
                        "crash loop: restart budget spent, holding the next start back");
                    if !self.pause(delay).await {
                        return self.abandon_start(slot, id, failures > 0);
                    }
                }
            }
            if self.closing.is_cancelled() {
                return self.abandon_start(slot, id, failures > 0);
            }
            let ctx = WorkerCtx {
                pool: Arc::clone(&self.name),
                id,
                attempt: failures,
            };
            let made = tokio::select! {
                made = tokio::time::timeout(self.config.create_timeout, self.factory.create(ctx)) => made,
                () = self.closing.cancelled() => return self.abandon_start(slot, id, failures > 0),
            };
            let err = match made {
                Ok(Ok(worker)) => {
                    if failures > 0 {
                        self.lock().failing -= 1;
                    }
                    let meta = Meta::new(id, worker.pid());
                    tracing::info!(pool = %self.name, worker = %id, pid = ?meta.pid, "worker ready");
                    self.publish(&meta, WorkerState::Ready);
                    return self.arrive(Live { worker, meta, slot });
                }
                Ok(Err(e)) => StartError::Failed(e),
                Err(_) => StartError::TimedOut(self.config.create_timeout),
            };
            failures += 1;
            self.start_failed(id, failures, Arc::new(err));
            let delay = self.config.start_backoff.jittered(failures);
            if !self.pause(delay).await {
                return self.abandon_start(slot, id, true);
            }
        }
    }

    fn start_failed(
        &self,
        id: WorkerId,
        failures: u32,
        err: Arc<StartError<<Wk<F> as Worker>::Error>>,
    ) {
        tracing::warn!(pool = %self.name, worker = %id, failures, error = %err,
            "worker failed to start; retrying with backoff");
        let mut st = self.lock();
        st.totals.start_failures += 1;
        st.totals.restarts += 1;
        if failures == 1 {
            st.failing += 1;
        }
        st.last_start_error = Some(Arc::clone(&err));
        if st.nobody_can_serve() {
            st.fail_waiters(|| Error::Start(Arc::clone(&err)));
        }
    }

    /// The pool is closing: give the slot back without a worker.
    fn abandon_start(&self, slot: Slot, id: WorkerId, failing: bool) {
        {
            let mut st = self.lock();
            st.starting -= 1;
            if failing {
                st.failing -= 1;
            }
            st.free_slot(slot);
        }
        self.drained.notify_waiters();
        if let Some(reg) = &self.registry {
            reg.remove_worker(id);
        }
        tracing::debug!(pool = %self.name, worker = %id, "start abandoned: pool closing");
    }

    /// Sleep unless the pool starts closing; false if it did.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.closing.cancelled() => false,
        }
    }
}
