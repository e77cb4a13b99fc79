//! [`Acquire`]: the future of one checkout, from "is a worker idle?" to a
//! worker in hand, and the Drop that makes giving up safe at any moment.
//!
//! Its first poll looks at the pool under the lock: it takes an idle
//! worker, or fails at once (closed, saturated, nothing can start), or
//! queues the caller as a waiter with its task's waker (see `handoff`: no
//! allocation per wait). Later polls collect what was left in its cell.
//!
//! Dropped while queued, it takes the lock and finds one of two things:
//! its entry still queued (it removes it, by key), or a worker left in its
//! cell (it passes it on to the next waiter or the idle queue). Either way
//! no worker is lost and no entry lingers until a later pop.
//!
//! There is no timer per waiter: each waiter carries its deadline, and the
//! pool's maintenance tick turns away those past it (at most 1/16 of
//! `checkout_timeout` late). Only a checkout that sets its own timeout pays
//! for a timer of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Sleep;

use super::handoff::Grant;
use super::options::CheckoutOptions;
use super::shared::{Shared, Wk};
use crate::clock::Stamp;
use crate::error::Error;
use crate::queue::{QueueKey, Strategy};
use crate::worker::Factory;

/// A checkout under way. Borrows the pool rather than holding a clone of
/// its `Arc`: every wait would otherwise bump a reference count that all
/// callers contend on.
pub(crate) struct Acquire<'a, F: Factory, I: Strategy, W: Strategy> {
    shared: &'a Arc<Shared<F, I, W>>,
    opts: CheckoutOptions,
    asked: Stamp,
    /// Set while queued as a waiter.
    queued: Option<Queued>,
    /// The checkout's own timeout, when it has one and is queued.
    timer: Option<Pin<Box<Sleep>>>,
}

/// A queued waiter's cell and queue key.
#[derive(Debug, Clone, Copy)]
struct Queued {
    cell: usize,
    key: QueueKey,
}

impl<'a, F: Factory, I: Strategy, W: Strategy> Acquire<'a, F, I, W> {
    pub fn new(shared: &'a Arc<Shared<F, I, W>>, opts: CheckoutOptions, asked: Stamp) -> Self {
        Acquire {
            shared,
            opts,
            asked,
            queued: None,
            timer: None,
        }
    }

    /// First poll: take an idle worker, fail at once, or queue.
    fn first(&mut self, cx: &Context<'_>) -> Option<Grant<Wk<F>>> {
        let shared = self.shared;
        let mut st = shared.lock();
        if st.closed() {
            return Some(Err(Error::Closed));
        }
        if let Some(live) = st.take_idle() {
            return Some(Ok((live, self.asked)));
        }
        if let Some(err) = st.start_error() {
            return Some(Err(Error::Start(err)));
        }
        if st.waiting() >= shared.config.max_waiters {
            let waiting = st.reject();
            tracing::debug!(pool = %shared.name, waiting, "caller rejected: pool saturated");
            return Some(Err(Error::Saturated { waiting }));
        }
        if let Some(ticket) = st.grow_for_waiter(&shared.closing) {
            drop(st);
            tracing::debug!(pool = %shared.name, "no idle worker: starting one on demand");
            shared.start(ticket);
            st = shared.lock();
            // A worker may have come back meanwhile.
            if let Some(live) = st.take_idle() {
                return Some(Ok((live, self.asked)));
            }
        }
        let limit = self.opts.timeout.unwrap_or(shared.config.checkout_timeout);
        let (cell, key) = st.push_waiter(
            cx.waker(),
            self.asked,
            self.asked.add(limit),
            self.opts.priority,
        );
        drop(st);
        self.queued = Some(Queued { cell, key });
        if let Some(limit) = self.opts.timeout {
            self.timer = Some(Box::pin(tokio::time::sleep_until(
                self.asked.add(limit).to_instant(),
            )));
        }
        None
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Future for Acquire<'_, F, I, W> {
    type Output = Grant<Wk<F>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (the timer is boxed).
        let me = self.get_mut();
        let Some(q) = me.queued else {
            if let Some(done) = me.first(cx) {
                return Poll::Ready(done);
            }
            return me.poll_timer(cx);
        };
        let got = me.shared.lock().collect(q.cell, cx.waker());
        if let Some(grant) = got {
            me.queued = None;
            return Poll::Ready(grant);
        }
        me.poll_timer(cx)
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Acquire<'_, F, I, W> {
    /// While queued: has the checkout's own timeout passed?
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Grant<Wk<F>>> {
        let (Some(timer), Some(q)) = (self.timer.as_mut(), self.queued) else {
            return Poll::Pending;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let mut st = self.shared.lock();
        if let Some(err) = st.time_out_waiter(q.cell, q.key) {
            self.queued = None;
            return Poll::Ready(Err(err));
        }
        // An outcome was left just now: take it.
        match st.collect(q.cell, cx.waker()) {
            Some(grant) => {
                self.queued = None;
                Poll::Ready(grant)
            }
            None => Poll::Pending,
        }
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Drop for Acquire<'_, F, I, W> {
    fn drop(&mut self) {
        if let Some(q) = self.queued.take() {
            let next = self.shared.lock().abandon_waiter(q.cell, q.key);
            if let Some(waker) = next {
                waker.wake();
            }
        }
    }
}
