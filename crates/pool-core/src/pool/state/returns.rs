//! Returns: a worker comes back into service (to the next waiter or the
//! idle queue), retires, or leaves.

use super::*;

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// Give a busy worker, free since `at`, to the next waiter (whose
    /// waker is returned, to be woken once the lock is released), or make it
    /// idle. A session worker serves the callers waiting for it first; a
    /// worker with lanes lends them (see `lanes`).
    #[inline(always)]
    pub fn hand_off(&mut self, live: Live<Wk>, at: Stamp) -> Option<Waker> {
        if live.meta.lanes > 1 {
            return self.hand_off_lanes(live, at);
        }
        if live.meta.affine {
            return self.hand_off_in_session(None, live, at);
        }
        match self.waiters.pop(()) {
            Some(waiter) if waiter.affinity().is_none() => {
                self.cells.deposit(waiter.cell(), Ok((live, at)))
            }
            Some(waiter) => self.hand_off_in_session(Some(waiter), live, at),
            None => {
                self.busy -= 1;
                self.idle.push(IdleWorker(live));
                None
            }
        }
    }

    /// `hand_off` for a session worker, or to a waiter with a session
    /// (`popped`, already out of the general queue).
    #[cold]
    pub(super) fn hand_off_in_session(
        &mut self,
        mut popped: Option<Waiter>,
        mut live: Live<Wk>,
        at: Stamp,
    ) -> Option<Waker> {
        if popped.is_none() && live.meta.affine {
            if let Some(waiter) = self.sessions.pop_pinned(live.meta.id) {
                if let Some(a) = waiter.affinity() {
                    self.bind(&a.key, &mut live.meta, at);
                }
                return self.cells.deposit(waiter.cell(), Ok((live, at)));
            }
        }
        while let Some(waiter) = popped.take().or_else(|| self.waiters.pop(())) {
            if let Some(cell) = self.admit(waiter, &mut live, at) {
                return self.cells.deposit(cell, Ok((live, at)));
            }
        }
        self.busy -= 1;
        if live.meta.affine {
            self.sessions.prune(&mut live.meta);
            self.sessions.set_idle(live.meta.id, true);
        }
        self.idle.push(IdleWorker(live));
        None
    }

    /// Whether a general waiter with a session key may have `live`, which
    /// then serves its session: the waiter's cell if so. A strict session
    /// bound meanwhile to another worker waits for that one instead; one
    /// whose worker is gone fails.
    pub(super) fn admit(
        &mut self,
        waiter: Waiter,
        live: &mut Live<Wk>,
        at: Stamp,
    ) -> Option<CellId> {
        let cell = waiter.cell();
        let Some(a) = waiter.affinity() else {
            return Some(cell);
        };
        if a.mode.is_strict() {
            match self.sessions.owner(&a.key) {
                Some(Owner::Worker(other)) if other != live.meta.id => {
                    match self.sessions.pin(other, waiter) {
                        Ok(key) => self.cells.set_place(cell, Place::Pinned(other, key)),
                        // Not a session worker (unreachable): wait on as any caller.
                        Err(waiter) => self.requeue(waiter),
                    }
                    return None;
                }
                Some(Owner::Lost(reason)) => {
                    let key = a.key.clone();
                    self.tally.affinity_lost();
                    self.fail_waiter(waiter, Error::AffinityLost { key, reason });
                    return None;
                }
                _ => {}
            }
        }
        self.bind(&a.key, &mut live.meta, at);
        Some(cell)
    }

    /// Count one ended checkout.
    #[inline(always)]
    pub fn record(&mut self, served: Served) {
        self.tally.served(served);
    }

    /// Count an abandoned call that its worker let go of.
    pub fn count_cancelled(&mut self) {
        self.tally.cancelled();
    }

    /// Count a call that ran past its deadline.
    pub fn count_call_timeout(&mut self) {
        self.tally.call_timeout();
    }

    /// A busy worker that works comes back into service: to the next
    /// waiter or the idle queue, unless the pool closed or shrank, or the
    /// worker retires (`wants_out`).
    #[inline]
    pub fn reenter(
        &mut self,
        live: Live<Wk>,
        wants_out: Option<Retire>,
        free_since: Stamp,
        parent: &CancellationToken,
    ) -> Reentry<Wk> {
        // The common case, kept short: nothing to decide.
        if wants_out.is_none()
            && !self.closed
            && self.retiring.is_empty()
            && self.live() <= self.capacity()
        {
            return Reentry::Served(self.hand_off(live, free_since));
        }
        Reentry::Decided(self.reenter_slow(live, wants_out, free_since, parent))
    }

    /// `reenter` for anything but the common case: the pool closed or
    /// shrank, the worker retires or is being replaced.
    pub(super) fn reenter_slow(
        &mut self,
        live: Live<Wk>,
        wants_out: Option<Retire>,
        free_since: Stamp,
        parent: &CancellationToken,
    ) -> Effects<Wk> {
        let mut fx = Effects::default();
        if self.closed {
            fx.stop.push(self.leave_busy(live, StopReason::AfterClose));
            return fx;
        }
        match self.retiring.get(&live.meta.id) {
            // Its replacement is serving already.
            Some(true) => {
                fx.stop.push(self.leave_busy(live, StopReason::Replaced));
                return fx;
            }
            // Its replacement is starting: keep serving until it is up.
            Some(false) => {
                fx.wake = self.hand_off(live, free_since);
                return fx;
            }
            None => {}
        }
        if self.live() > self.capacity() {
            // The pool was shrunk while this worker was out.
            fx.stop.push(self.leave_busy(live, StopReason::Shrunk));
            return fx;
        }
        let Some(reason) = wants_out else {
            fx.wake = self.hand_off(live, free_since);
            return fx;
        };
        self.tally.retired(&reason);
        if self.settled_live() > self.size {
            // An overflow worker: no replacement needed.
            fx.stop
                .push(self.leave_busy(live, StopReason::Retired(reason)));
        } else if self.live() < self.capacity() {
            // Room under the cap: serve on until a warm replacement is up.
            let id = live.meta.id;
            if let Some(ticket) = self.begin_start(Some(id), parent) {
                self.retiring.insert(id, false);
                fx.start.push(ticket);
            }
            fx.wake = self.hand_off(live, free_since);
        } else {
            // At the cap: stop first, then start the replacement in its place.
            fx.stop
                .push(self.leave_busy(live, StopReason::Retired(reason)));
            fx.start.extend(self.begin_start(None, parent));
        }
        fx
    }

    /// A busy worker is beyond use (`Broken`, charged to the crash budget:
    /// twice if it had not finished a call) or was killed (`Killed`, the
    /// pool's choice: not charged): it leaves, and a replacement starts in
    /// its place unless the pool is closing, shrinking or already has one
    /// for it.
    pub fn discard(
        &mut self,
        live: Live<Wk>,
        reason: StopReason,
        parent: &CancellationToken,
    ) -> Effects<Wk> {
        match reason {
            StopReason::Broken => {
                self.tally.crashed();
                // Its tasks count the call it broke in, if it broke in one.
                self.crash_guard
                    .charge(if live.meta.tasks <= 1 { 2 } else { 1 });
            }
            StopReason::Killed => self.tally.killed(),
            _ => {}
        }
        let had_replacement = self.retiring.contains_key(&live.meta.id);
        let mut fx = Effects::default();
        fx.stop.push(self.leave_busy(live, reason));
        let wanted =
            !had_replacement && (self.settled_live() < self.size || !self.waiters.is_empty());
        if wanted {
            if let Some(ticket) = self.begin_start(None, parent) {
                self.tally.restarted();
                fx.start.push(ticket);
                return fx;
            }
        }
        if let Some(err) = self.last_start_error.clone() {
            self.fail_hopeless_waiters(&err);
        }
        fx
    }

    /// Take a busy worker out of service.
    pub(super) fn leave_busy(&mut self, live: Live<Wk>, reason: StopReason) -> Leaving<Wk> {
        self.busy -= 1;
        self.leave(live, reason)
    }

    /// A worker already out of the idle queue or `busy` leaves service: it
    /// counts as stopping until its shutdown returns.
    pub(super) fn leave(&mut self, live: Live<Wk>, reason: StopReason) -> Leaving<Wk> {
        self.stopping += 1;
        self.retiring.remove(&live.meta.id);
        if live.meta.affine {
            self.sessions_lost(&live.meta, reason.loss());
        }
        self.lend_spare();
        Leaving { live, reason }
    }

    /// A session worker leaves: its keys are lost. Strict callers waiting
    /// for it fail with `AffinityLost`; hint callers wait on as any caller.
    pub(super) fn sessions_lost(&mut self, meta: &Meta, loss: AffinityLoss) {
        for waiter in self.sessions.worker_left(meta, loss) {
            match waiter.affinity() {
                Some(a) if a.mode.is_strict() => {
                    let key = a.key.clone();
                    self.tally.affinity_lost();
                    self.fail_waiter(waiter, Error::AffinityLost { key, reason: loss });
                }
                _ if self.closed => self.fail_waiter(waiter, Error::Closed),
                _ => self.requeue(waiter),
            }
        }
    }

    /// Take out of the idle queue, in serving order, up to `limit` workers
    /// `pred` picks; session workers among them are no longer idle.
    pub(super) fn take_idle_where(
        &mut self,
        limit: usize,
        pred: &mut dyn FnMut(&mut Live<Wk>) -> bool,
    ) -> Vec<Live<Wk>> {
        let taken = self
            .idle
            .take_matching(limit, &mut |w: &mut IdleWorker<Wk>| pred(&mut w.0));
        taken
            .into_iter()
            .map(|IdleWorker(live)| {
                if live.meta.affine {
                    self.sessions.set_idle(live.meta.id, false);
                }
                live
            })
            .collect()
    }

    /// A worker's shutdown returned (or a cancelled start's task ended).
    pub fn stopped(&mut self) {
        self.stopping -= 1;
    }
}
