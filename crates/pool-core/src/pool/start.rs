//! Starting workers: concurrently, each in a task the pool owns, retried with
//! capped exponential backoff, held back by the crash-loop budget.
//!
//! A start never runs on a caller's future. A caller who gives up while a
//! process boots loses nothing: the worker arrives anyway and serves the next
//! caller. While starts fail and no worker is up, waiters are told why
//! ([`Error::Start`](crate::Error::Start)) instead of timing out blind.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::live::{Held, Meta};
use super::shared::{Shared, Wk};
use super::state::StartTicket;
use crate::clock::Stamp;
use crate::error::StartError;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::registry::WorkerState;
use crate::worker::{Factory, Worker, WorkerCtx, WorkerId};

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Shared<F, I, W> {
    /// Run a start the state has counted, in a task the pool owns.
    pub fn start(self: &Arc<Self>, ticket: StartTicket) {
        let me = Arc::clone(self);
        self.spawn(async move { me.run_start(ticket).await });
    }

    async fn run_start(self: Arc<Self>, ticket: StartTicket) {
        let StartTicket {
            id,
            cancel,
            is_restart,
        } = ticket;
        let mut failures: u32 = 0;
        self.publish(&Meta::new(id, None), WorkerState::Starting);
        loop {
            if is_restart || failures > 0 {
                let delay = self.lock().restart_delay(self.config.crash_budget);
                if !delay.is_zero() {
                    tracing::error!(pool = %self.name, worker = %id, ?delay,
                        "crash loop: restart budget spent, holding the next start back");
                    if !pause(&cancel, delay).await {
                        return self.start_ended(id);
                    }
                }
            }
            if cancel.is_cancelled() {
                return self.start_ended(id);
            }
            let ctx = WorkerCtx {
                pool: Arc::clone(&self.name),
                id,
                attempt: failures,
            };
            // A start under way is not dropped when it is cancelled (the
            // pool shrank or began closing): its worker arrives and is shut
            // down properly, so nothing it spawned outlives the pool. Only
            // when the close grace runs out is it cut off.
            let made = tokio::select! {
                made = tokio::time::timeout(self.config.create_timeout, self.factory.create(ctx)) => made,
                () = self.kill.cancelled() => return self.start_ended(id),
            };
            let err = match made {
                Ok(Ok(worker)) => {
                    let meta = Meta::new(id, worker.pid());
                    tracing::info!(pool = %self.name, worker = %id, pid = ?meta.pid, "worker ready");
                    self.publish(&meta, WorkerState::Ready);
                    let fx = self
                        .lock()
                        .arrive(id, Box::new(Held { worker, meta }), Stamp::now());
                    return self.apply(fx);
                }
                Ok(Err(e)) => StartError::Failed(e),
                Err(_) => StartError::TimedOut(self.config.create_timeout),
            };
            failures += 1;
            self.start_failed(id, failures, Arc::new(err));
            let delay = self.config.start_backoff.jittered(failures);
            if !pause(&cancel, delay).await {
                return self.start_ended(id);
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
        self.lock().start_failed(id, err);
    }

    /// The start ends without a worker: the pool is closing, or no longer
    /// needs it.
    fn start_ended(&self, id: WorkerId) {
        self.lock().start_ended(id);
        self.drained.notify_waiters();
        if let Some(reg) = &self.registry {
            reg.remove_worker(id);
        }
        tracing::debug!(pool = %self.name, worker = %id, "start ended without a worker: pool closing or shrunk");
    }
}

/// Sleep `d` unless `cancel` fires first; false if it did.
pub(crate) async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}
