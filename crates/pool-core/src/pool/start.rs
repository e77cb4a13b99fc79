//! Starting workers: concurrently, each in a task the pool owns, retried with
//! capped exponential backoff, held back while the crash budget is spent.
//!
//! A start never runs on a caller's future. A caller who gives up while a
//! process boots loses nothing: the worker arrives anyway and serves the next
//! caller. While starts fail and no worker is up, waiters that waiting cannot
//! help are told why ([`Error::Start`](crate::Error::Start)) instead of
//! timing out blind: once a start has failed twice in a row, or when no
//! retry comes before their deadline. A single failure with a retry in time
//! is waited out, as it may be transient.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use super::state::StartTicket;
use crate::clock::Stamp;
use crate::error::StartError;
use crate::live::{Held, Meta};
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::registry::WorkerState;
use crate::worker::{Factory, Worker, WorkerCtx};

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Shared<F, I, W> {
    /// Run a start the state has counted, in a task the pool owns.
    pub fn start(self: &Arc<Self>, ticket: StartTicket) {
        let me = Arc::clone(self);
        self.spawn(async move { me.run_start(ticket).await });
    }

    async fn run_start(self: Arc<Self>, ticket: StartTicket) {
        let id = ticket.id();
        let mut failures: u32 = 0;
        self.publish(&Meta::new(id, None), WorkerState::Starting);
        loop {
            if !self.crash_wait(&ticket).await || ticket.cancelled().is_cancelled() {
                return self.start_ended(ticket);
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
            let began = Stamp::now();
            let made = tokio::select! {
                made = tokio::time::timeout(self.config.create_timeout, self.factory.create(ctx)) => made,
                () = self.kill.cancelled() => return self.start_ended(ticket),
            };
            let err = match made {
                Ok(Ok(worker)) => {
                    let mut meta = Meta::new(id, worker.pid());
                    meta.lanes = worker.capacity().max(1);
                    tracing::info!(pool = %self.name, worker = %id, pid = ?meta.pid, "worker ready");
                    self.publish(&meta, WorkerState::Ready);
                    let now = Stamp::now();
                    let live = Box::new(Held { worker, meta });
                    let fx = self.lock().arrive(ticket, live, now, now.since(began));
                    self.apply(fx);
                    self.drained.notify_waiters();
                    return;
                }
                Ok(Err(e)) => StartError::Failed(e),
                Err(_) => StartError::TimedOut(self.config.create_timeout),
            };
            failures += 1;
            let delay = self.config.start_backoff.jittered(failures);
            tracing::warn!(pool = %self.name, worker = %id, failures, error = %err, ?delay,
                "worker failed to start; retrying with backoff");
            self.lock()
                .start_failed(&ticket, Arc::new(err), Stamp::now() + delay);
            self.drained.notify_waiters();
            if !pause(ticket.cancelled(), delay).await {
                return self.start_ended(ticket);
            }
            self.lock().start_retrying(&ticket);
        }
    }

    /// Wait while the crash budget is spent; false if the start was
    /// cancelled meanwhile.
    async fn crash_wait(&self, ticket: &StartTicket) -> bool {
        let mut told = false;
        loop {
            let delay = self.lock().crash_wait();
            if delay.is_zero() {
                return true;
            }
            if !told {
                tracing::error!(pool = %self.name, worker = %ticket.id(), ?delay,
                    "crash loop: the crash budget is spent; holding this start back");
                told = true;
            }
            if !pause(ticket.cancelled(), delay).await {
                return false;
            }
        }
    }

    /// The start ends without a worker: the pool is closing, or no longer
    /// needs it.
    fn start_ended(&self, ticket: StartTicket) {
        let id = ticket.id();
        self.lock().start_ended(ticket);
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
