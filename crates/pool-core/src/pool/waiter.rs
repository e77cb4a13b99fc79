//! [`Acquire`]: the future of one checkout, from "is a worker idle?" to a
//! [`Checkout`] in hand, and the Drop that makes giving up safe at any
//! moment. A worker found broken on the way is replaced, and the caller
//! waits on for another within the same deadline.
//!
//! Its first poll looks at the pool under the lock: it takes an idle
//! worker, or fails at once (closed, saturated, nothing can start), or
//! queues the caller as a waiter with its task's waker (see `handoff`: no
//! allocation per wait). Later polls collect what was left in its cell. A
//! caller with a session key is routed first (see `state`): its session's
//! idle worker, a typed failure, or a wait pinned to its busy worker.
//!
//! Dropped while queued, it takes the lock and finds one of two things:
//! its entry still queued, wherever it is (it removes it, by the place its
//! cell records), or a worker left in its cell (it passes it on to the next
//! waiter or the idle queue). Either way no worker is lost and no entry
//! lingers until a later pop.
//!
//! There is no timer per waiter: each waiter carries its deadline, and the
//! pool's maintenance tick turns away those past it (at most 1/16 of
//! `checkout_timeout` late). Only a checkout whose deadline comes sooner
//! than the pool's `checkout_timeout` (its own timeout, or a call's whole
//! budget), or a hint waiting a bounded time for its session's worker, pays
//! for a timer of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use super::checkout::Checkout;
use super::handoff::Grant;
use super::options::CheckoutOptions;
use super::shared::{Home, Shared, Wk, WkError};
use super::state::{SessionRoute, State};
use crate::affinity::AffinityMode;
use crate::clock::Stamp;
use crate::entry::{Caller, CellId};
use crate::error::Error;
use crate::live::StopReason;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::worker::{Factory, Worker};

/// A checkout under way. Borrows the pool rather than holding a clone of
/// its `Arc`: every wait would otherwise bump a reference count that all
/// callers contend on.
pub(crate) struct Acquire<'a, F: Factory, I: IdleStrategy, W: WaitStrategy> {
    shared: &'a Arc<Shared<F, I, W>>,
    opts: &'a CheckoutOptions,
    asked: Stamp,
    /// How long it may wait, from `asked` (resolved by its budget).
    wait: Duration,
    /// Its cell, while queued.
    cell: Option<CellId>,
    /// While queued: the checkout's own timeout, or the end of a hint's
    /// wait for its session's worker, whichever is set and sooner.
    timer: Option<Pin<Box<Sleep>>>,
    /// While a hint waits for its session's busy worker: until when.
    hint_until: Option<Stamp>,
}

impl<'a, F: Factory, I: IdleStrategy, W: WaitStrategy> Acquire<'a, F, I, W> {
    pub fn new(
        shared: &'a Arc<Shared<F, I, W>>,
        opts: &'a CheckoutOptions,
        asked: Stamp,
        wait: Duration,
    ) -> Self {
        Acquire {
            shared,
            opts,
            asked,
            wait,
            cell: None,
            timer: None,
            hint_until: None,
        }
    }

    /// The checkout as queues see it.
    fn caller(&self) -> Caller<'a> {
        Caller {
            arrival: self.asked,
            timeout: self.wait,
            priority: self.opts.priority,
            affinity: self.opts.affinity.as_ref(),
        }
    }

    /// First poll: take an idle worker, fail at once, or queue.
    fn first(&mut self, cx: &Context<'_>) -> Option<Grant<Wk<F>>> {
        let shared = self.shared;
        let (asked, caller) = (self.asked, self.caller());
        let mut st = shared.lock();
        if st.closed() {
            return Some(Err(Error::Closed));
        }
        if caller.affinity().is_some() {
            if let Some(decided) = self.route_session(&mut st, caller, cx) {
                return decided;
            }
        }
        if let Some(live) = st.take_idle(caller) {
            return Some(Ok((live, asked)));
        }
        if let Some(lane) = st.take_lane(caller) {
            return Some(Ok((lane, asked)));
        }
        if let Some(a) = caller.affinity() {
            if a.mode == AffinityMode::FailFast {
                return Some(Err(Error::Busy { key: a.key.clone() }));
            }
        }
        if let Some(err) = st.start_error(caller.deadline()) {
            return Some(Err(Error::Start(err)));
        }
        if let Some(err) = self.saturated(&mut st) {
            return Some(Err(err));
        }
        if let Some(ticket) = st.grow_for_waiter(&shared.closing) {
            drop(st);
            tracing::debug!(pool = %shared.name, "no idle worker: starting one on demand");
            shared.start(ticket);
            st = shared.lock();
            // A worker (or a lane) may have come back meanwhile.
            if let Some(live) = st.take_idle(caller).or_else(|| st.take_lane(caller)) {
                return Some(Ok((live, asked)));
            }
        }
        let Some(cell) = st.push_waiter(cx.waker(), caller) else {
            return Some(Err(self.no_cell(&mut st)));
        };
        drop(st);
        self.queued(cell, None);
        None
    }

    /// The slab of waiters' cells is full (4 billion callers wait): this
    /// one is turned away as if `max_waiters` were.
    #[cold]
    fn no_cell(&self, st: &mut State<Wk<F>, I, W>) -> Error<WkError<F>> {
        Error::Saturated {
            waiting: st.reject(),
        }
    }

    /// First poll of a checkout with a session key: served by its idle
    /// worker, failed, or queued for its busy worker (`Some`: decided, with
    /// `Some(None)` for queued); `None` to be served as any caller.
    #[cold]
    fn route_session(
        &mut self,
        st: &mut State<Wk<F>, I, W>,
        caller: Caller<'_>,
        cx: &Context<'_>,
    ) -> Option<Option<Grant<Wk<F>>>> {
        match st.route_session(caller) {
            SessionRoute::Served(live) => Some(Some(Ok((live, self.asked)))),
            SessionRoute::Failed(err) => Some(Some(Err(err))),
            SessionRoute::Wait { owner, hint_until } => {
                if let Some(err) = self.saturated(st) {
                    return Some(Some(Err(err)));
                }
                let Some(cell) = st.pin_waiter(cx.waker(), caller, owner) else {
                    return Some(Some(Err(self.no_cell(st))));
                };
                self.queued(cell, hint_until);
                Some(None)
            }
            SessionRoute::Any => None,
        }
    }

    /// `max_waiters` callers wait already: the error this one gets.
    #[inline]
    fn saturated(
        &self,
        st: &mut State<Wk<F>, I, W>,
    ) -> Option<Error<<Wk<F> as crate::Worker>::Error>> {
        if st.waiting() < self.shared.config.max_waiters {
            return None;
        }
        let waiting = st.reject();
        tracing::debug!(pool = %self.shared.name, waiting, "caller rejected: pool saturated");
        Some(Error::Saturated { waiting })
    }

    /// Now queued in `cell`; a hint waits for its session's worker until
    /// `hint_until`.
    #[inline]
    fn queued(&mut self, cell: CellId, hint_until: Option<Stamp>) {
        self.cell = Some(cell);
        self.hint_until = hint_until;
        self.arm_timer();
    }

    /// Set the timer to the hint's end, else to the checkout's deadline if
    /// it is sooner than the pool's own (which the maintenance tick keeps).
    #[inline]
    fn arm_timer(&mut self) {
        let until = match self.hint_until {
            Some(hint) => Some(hint),
            None if self.wait < self.shared.config.checkout_timeout => {
                Some(self.caller().deadline())
            }
            None => None,
        };
        match until {
            // The common wait: none of its own (and none set before).
            None if self.timer.is_none() => {}
            None => self.timer = None,
            Some(t) => self.set_timer(t),
        }
    }

    fn set_timer(&mut self, until: Stamp) {
        self.timer = Some(Box::pin(tokio::time::sleep_until(until.to_instant())));
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Future for Acquire<'_, F, I, W> {
    type Output = Result<Checkout<Wk<F>>, Error<WkError<F>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (the timer is boxed).
        let me = self.get_mut();
        loop {
            let (live, taken) = match me.poll_grant(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(got)) => got,
            };
            let mut live = live;
            if live.worker.is_broken() {
                me.shared.discard(live, StopReason::Broken);
                continue;
            }
            tracing::trace!(pool = %me.shared.name, worker = %live.meta.id, "worker checked out");
            // Taken at once, `taken` is `asked`: no second look at the clock.
            let waited = taken.nanos_since(me.asked);
            let home: Arc<dyn Home<Wk<F>>> = Arc::clone(me.shared) as _;
            return Poll::Ready(Ok(Checkout::new(live, home, waited, taken)));
        }
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Acquire<'_, F, I, W> {
    /// A worker (counted busy) or the error this checkout ends with.
    #[inline]
    fn poll_grant(&mut self, cx: &mut Context<'_>) -> Poll<Grant<Wk<F>>> {
        let Some(cell) = self.cell else {
            if let Some(done) = self.first(cx) {
                return Poll::Ready(done);
            }
            return self.poll_timer(cx);
        };
        let got = self.shared.lock().collect(cell, cx.waker());
        if let Some(grant) = got {
            self.cell = None;
            return Poll::Ready(grant);
        }
        self.poll_timer(cx)
    }

    /// While queued: has the hint's wait or the checkout's own timeout
    /// passed? (Most waits have no timer of their own: decided inline.)
    #[inline]
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Grant<Wk<F>>> {
        if self.timer.is_none() || self.cell.is_none() {
            return Poll::Pending;
        }
        self.poll_armed_timer(cx)
    }

    fn poll_armed_timer(&mut self, cx: &mut Context<'_>) -> Poll<Grant<Wk<F>>> {
        let (Some(timer), Some(cell)) = (self.timer.as_mut(), self.cell) else {
            return Poll::Pending;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self.hint_until.take().is_some() {
            // The hint waited long enough for its session's worker: any
            // worker will do now.
            let (ticket, got) = {
                let mut st = self.shared.lock();
                let ticket = st.give_up_hint(cell, &self.shared.closing);
                (ticket, st.collect(cell, cx.waker()))
            };
            if let Some(ticket) = ticket {
                self.shared.start(ticket);
            }
            if let Some(grant) = got {
                self.cell = None;
                return Poll::Ready(grant);
            }
            self.arm_timer();
            return self.poll_timer(cx);
        }
        let mut st = self.shared.lock();
        if let Some(err) = st.time_out_waiter(cell) {
            self.cell = None;
            return Poll::Ready(Err(err));
        }
        // An outcome was left just now: take it.
        match st.collect(cell, cx.waker()) {
            Some(grant) => {
                self.cell = None;
                Poll::Ready(grant)
            }
            None => Poll::Pending,
        }
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Drop for Acquire<'_, F, I, W> {
    #[inline]
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            self.abandon(cell);
        }
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Acquire<'_, F, I, W> {
    /// Dropped while queued in `cell`: out of its queue, or what was left
    /// in its cell passed on.
    #[cold]
    fn abandon(&mut self, cell: CellId) {
        let next = self.shared.lock().abandon_waiter(cell);
        if let Some(waker) = next {
            waker.wake();
        }
    }
}
