//! Waiting callers: queued, pinned to a session's worker, collected,
//! abandoned, timed out, failed.

use super::*;

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// Queue `caller`, woken through `waker`; returns its cell.
    pub fn push_waiter(&mut self, waker: &Waker, caller: Caller<'_>) -> Option<CellId> {
        let cell = self.cells.open(waker)?;
        let key = self.waiters.push(Waiter::new(cell, caller));
        self.cells.set_place(cell, Place::General(key));
        Some(cell)
    }

    /// Queue `caller` for its session's busy worker `owner`; returns its
    /// cell.
    pub fn pin_waiter(
        &mut self,
        waker: &Waker,
        caller: Caller<'_>,
        owner: WorkerId,
    ) -> Option<CellId> {
        let cell = self.cells.open(waker)?;
        match self.sessions.pin(owner, Waiter::new(cell, caller)) {
            Ok(key) => self.cells.set_place(cell, Place::Pinned(owner, key)),
            // Not a session worker (unreachable: routed under this lock).
            Err(waiter) => self.requeue(waiter),
        }
        Some(cell)
    }

    /// A waiting caller is polled: its outcome, if one was left in its cell.
    pub fn collect(&mut self, cell: CellId, waker: &Waker) -> Option<Grant<Wk>> {
        self.cells.collect(cell, waker)
    }

    /// Take the caller of `cell` out of whichever queue it is in.
    pub(super) fn unqueue(&mut self, cell: CellId) -> Option<Waiter> {
        match self.cells.place(cell)? {
            Place::General(key) => self.waiters.remove(key),
            Place::Pinned(owner, key) => self.sessions.unpin(owner, key),
        }
    }

    /// A waiting caller gives up (its future dropped): out of its queue, or,
    /// if it was already left a worker, that worker goes to the next waiter
    /// (whose waker is returned) or the idle queue.
    pub fn abandon_waiter(&mut self, cell: CellId) -> Option<Waker> {
        self.unqueue(cell);
        match self.cells.close(cell) {
            Some(Ok((live, at))) if live.meta.lane => self.lane_unused(live.meta.id, at),
            Some(Ok((live, at))) => self.hand_off(live, at),
            _ => None,
        }
    }

    /// A waiter's own timer fired: out of its queue, counted as a checkout
    /// timeout, and the error it gets. `None` if it was already left an
    /// outcome, which it then collects.
    pub fn time_out_waiter(&mut self, cell: CellId) -> Option<Error<Wk::Error>> {
        let waiter = self.unqueue(cell)?;
        self.cells.close(cell);
        self.tally.checkout_timeouts(1);
        Some(Error::CheckoutTimeout {
            waited: waiter.arrival().elapsed(),
            last_start_error: self.last_start_error.clone(),
        })
    }

    /// A hint caller waited long enough for its session's worker: it takes
    /// an idle worker if there is one (left in its cell, to collect now), or
    /// joins the general queue, with a start for it if one is wanted.
    pub fn give_up_hint(
        &mut self,
        cell: CellId,
        parent: &CancellationToken,
    ) -> Option<StartTicket> {
        let Some(Place::Pinned(..)) = self.cells.place(cell) else {
            // Served, or moved to the general queue already.
            return None;
        };
        let waiter = self.unqueue(cell)?;
        self.requeue(waiter);
        match self.cells.place(cell) {
            Some(Place::General(_)) => self.grow_for_waiter(parent),
            _ => None,
        }
    }

    /// A caller out of its pinned queue waits on as any caller: served by
    /// an idle worker now (its waker woken) or queued in the general queue.
    pub(super) fn requeue(&mut self, waiter: Waiter) {
        let caller = waiter.caller();
        if let Some(live) = self.take_idle(caller).or_else(|| self.take_lane(caller)) {
            if let Some(waker) = self.cells.deposit(waiter.cell(), Ok((live, Stamp::now()))) {
                waker.wake();
            }
            return;
        }
        let cell = waiter.cell();
        let key = self.waiters.push(waiter);
        self.cells.set_place(cell, Place::General(key));
    }

    /// Turn away every waiter whose deadline has passed; returns how many.
    pub fn expire_waiters(&mut self, now: Stamp) -> usize {
        let mut past = |w: &mut Waiter| w.deadline() <= now;
        let mut expired = self.waiters.take_matching(usize::MAX, &mut past);
        expired.extend(self.sessions.take_pinned(&mut past));
        let n = expired.len();
        for waiter in expired {
            let err = Error::CheckoutTimeout {
                waited: now.since(waiter.arrival()),
                last_start_error: self.last_start_error.clone(),
            };
            // Rare, so woken here rather than after the lock.
            self.fail_waiter(waiter, err);
        }
        self.tally.checkout_timeouts(n as u64);
        n
    }

    /// Leave `err` for a waiter already out of its queue, and wake it (a
    /// rare path: under the lock).
    pub(super) fn fail_waiter(&mut self, waiter: Waiter, err: Error<Wk::Error>) {
        if let Some(waker) = self.cells.deposit(waiter.cell(), Err(err)) {
            waker.wake();
        }
    }

    /// While nobody can serve: fail with `err` the waiters that waiting
    /// cannot help (see [`start_error`](State::start_error)).
    pub(super) fn fail_hopeless_waiters(&mut self, err: &Arc<StartError<Wk::Error>>) {
        let Some(hopeless) = self.hopeless() else {
            return;
        };
        let mut doomed = |w: &mut Waiter| hopeless(w.deadline());
        let mut out = self.waiters.take_matching(usize::MAX, &mut doomed);
        out.extend(self.sessions.take_pinned(&mut doomed));
        for waiter in out {
            self.fail_waiter(waiter, Error::Start(Arc::clone(err)));
        }
    }

    /// Tell every waiter it will not be served.
    pub(super) fn fail_waiters(&mut self, err: impl Fn() -> Error<Wk::Error>) {
        let mut all = self.waiters.take_first(usize::MAX);
        all.extend(self.sessions.take_pinned(&mut |_| true));
        for waiter in all {
            self.fail_waiter(waiter, err());
        }
    }
}
