//! Cancelling and recycling: the async repair a worker gets, off any
//! caller's path, before it may serve again.
//!
//! * **Cancel** — a call ran past its deadline, or its caller dropped it:
//!   the worker is asked to let go of it ([`Worker::cancel`]) within
//!   `cancel_grace`, which the worker enforces (the pool keeps a backstop). One that does serves on, warm; one that does not is
//!   killed and replaced, and the kill is the pool's choice, not charged to
//!   the crash budget. A worker that cannot cancel is killed after a late
//!   call, and recycled after a dropped one, as before cancelling existed.
//! * **Recycle** — the same repair without a cancel: for a dropped call on a
//!   worker that cannot cancel, and for idle workers due a health check.

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Shared, Wk};
use crate::clock::Stamp;
use crate::live::{Live, StopReason};
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::registry::WorkerState;
use crate::worker::{Cancel, Factory, Worker};

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Shared<F, I, W> {
    /// Cancel what a caller left in flight on a busy worker: its call ran
    /// past its deadline (`late`), or the caller dropped it. Until the worker
    /// lets go it stays busy: nobody else is handed a worker that may still
    /// be running a dead caller's job.
    pub fn cancel(self: &Arc<Self>, live: Live<Wk<F>>, late: bool) {
        self.publish(&live.meta, WorkerState::Recycling);
        let me = Arc::clone(self);
        self.spawn(async move { me.run_cancel(live, late).await });
    }

    async fn run_cancel(self: Arc<Self>, mut live: Live<Wk<F>>, late: bool) {
        let grace = self.config.cancel_grace;
        // The worker enforces `grace`; this is the backstop (see `cancel`).
        let backstop = grace + self.config.recycle_timeout;
        let outcome = if grace.is_zero() {
            // No grace: kill at once, without asking.
            Cancel::Failed
        } else {
            tokio::select! {
                r = tokio::time::timeout(backstop, live.worker.cancel(grace)) => r.unwrap_or(Cancel::Failed),
                // The close grace ran out: nothing may keep running.
                () = self.kill.cancelled() => Cancel::Failed,
            }
        };
        match outcome {
            Cancel::Freed => {
                tracing::debug!(pool = %self.name, worker = %live.meta.id, late, "abandoned call cancelled; worker serves on");
                self.lock().count_cancelled();
                live.meta.checked_at = Stamp::now();
                self.reenter(live, None);
            }
            // A lane cannot be recycled alone: its worker is others' too.
            Cancel::Unsupported if !late && !live.meta.lane => self.recycle(live),
            Cancel::Failed | Cancel::Unsupported => {
                tracing::warn!(pool = %self.name, worker = %live.meta.id, ?grace, late,
                    "abandoned call did not let go; killing its worker");
                self.discard(live, StopReason::Killed);
            }
        }
    }

    /// Recycle a busy worker whose operation was cut off. Until `recycle`
    /// succeeds it stays busy: nobody else can be handed a worker that may
    /// still be running a dead caller's job.
    pub fn recycle(self: &Arc<Self>, live: Live<Wk<F>>) {
        self.publish(&live.meta, WorkerState::Recycling);
        tracing::debug!(pool = %self.name, worker = %live.meta.id, "recycling after an interrupted operation");
        let me = Arc::clone(self);
        self.spawn(async move { me.run_recycle(live).await });
    }

    async fn run_recycle(self: Arc<Self>, mut live: Live<Wk<F>>) {
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.config.recycle_timeout, live.worker.recycle()) => Some(r),
            () = self.closing.cancelled() => None,
        };
        match outcome {
            None => self.discard(live, StopReason::AfterClose),
            Some(Ok(Ok(()))) => {
                live.meta.checked_at = Stamp::now();
                self.reenter(live, None);
            }
            Some(Ok(Err(e))) => {
                tracing::warn!(pool = %self.name, worker = %live.meta.id, error = %e, "recycle failed");
                self.discard(live, StopReason::Broken);
            }
            Some(Err(_)) => {
                tracing::warn!(pool = %self.name, worker = %live.meta.id,
                    timeout = ?self.config.recycle_timeout, "recycle timed out");
                self.discard(live, StopReason::Broken);
            }
        }
    }

    /// One maintenance pass: turn away waiters past their deadline, replace
    /// broken idle workers, retire overflow workers idle too long, and
    /// health-check the rest when due.
    pub fn maintain(self: &Arc<Self>) {
        let work = {
            let mut st = self.lock();
            if st.closed() {
                return;
            }
            st.maintain(
                Stamp::now(),
                self.config.overflow_idle,
                self.config.health_interval,
            )
        };
        for live in work.broken {
            self.discard(live, StopReason::Broken);
        }
        self.apply(work.effects);
        for live in work.due {
            let me = Arc::clone(self);
            self.spawn(async move { me.run_recycle(live).await });
        }
    }

    /// Run [`maintain`](Self::maintain) on a timer until the pool closes. The
    /// task holds the pool weakly, so a forgotten pool is not kept alive by it.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        // Waiters are turned away at most 1/16 of `checkout_timeout` late.
        let mut tick = Duration::from_secs(1)
            .min(self.config.overflow_idle / 2)
            .min(self.config.checkout_timeout / 16);
        if let Some(h) = self.config.health_interval {
            tick = tick.min(h / 2);
        }
        let tick = tick.max(Duration::from_millis(1));
        let weak = Arc::downgrade(self);
        let closing = self.closing.clone();
        self.spawn(async move {
            let mut timer = tokio::time::interval(tick);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = timer.tick() => {}
                    () = closing.cancelled() => return,
                }
                match weak.upgrade() {
                    Some(shared) => shared.maintain(),
                    None => return,
                }
            }
        });
    }
}
