//! Lanes: workers that serve many callers at once ([`Worker::capacity`]
//! above 1, a process that multiplexes its requests).
//!
//! **The choice.** Such a worker still counts as one worker everywhere a
//! count means processes (`size`, `max_overflow`, the hard cap, `idle`,
//! `busy`), and the pool keeps it to check, retire and shut down. A caller
//! gets a *lane* of it instead ([`Worker::lane`]): a handle sharing its
//! resource, which the caller's checkout holds and gives back. While none
//! is out the worker is idle, in the idle queue, ordered by the idle
//! strategy like any other; once one is out it is busy, and it waits in
//! the `lent` table with the count of its lanes out. A caller takes an idle
//! worker first (no call in flight: the least loaded there is), else a
//! lane of the lent worker with the fewest out, else it waits; so a caller
//! waits only when every worker has all its lanes out. A returning lane
//! serves the callers waiting for its worker's session first, then the
//! general queue, and its worker goes back to the idle queue once its last
//! lane is back.
//!
//! *Rejected:* a slot entry per lane in the idle queue (the counts would be
//! lanes, not processes, and the idle strategy would pack one process
//! full before touching another); a shared handle behind a semaphore
//! outside the pool (the waiter queue, its strategies, sessions and the
//! cap would not see it).
//!
//! **What does not change.** A lane is checked (`is_broken`) when it comes
//! back and cancelled when its call is cut off; a broken lane takes its
//! worker out of service (its other lanes then find it broken too, and
//! only come back); a worker that asks to retire is lent no more lanes,
//! and retires as any worker does once its last lane is back. A worker's
//! session keys are the worker's: several sessions can share it, and a
//! strict session is pinned to it, not to a lane.
//!
//! [`Worker::capacity`]: crate::Worker::capacity
//! [`Worker::lane`]: crate::Worker::lane

use super::*;

/// A worker with lanes out, and how many.
pub(super) struct Lent<Wk> {
    pub live: Live<Wk>,
    pub out: usize,
    /// It asked to retire: it is lent no more lanes, and retires once its
    /// last one is back.
    pub retire: Option<Retire>,
}

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// A lane of `owner`, with a record of its own; `None` if the worker is
    /// beyond use.
    fn lane_of(owner: &Live<Wk>) -> Option<Live<Wk>> {
        let worker = owner.worker.lane()?;
        Some(Box::new(Held {
            worker,
            meta: owner.meta.for_lane(),
        }))
    }

    /// `owner` was just lent (and counted busy): the caller gets its first
    /// lane, and the worker waits in the lent table. A worker that gives no
    /// lane goes to the caller whole, who will find it broken.
    #[cold]
    pub(super) fn first_lane(&mut self, owner: Live<Wk>) -> Live<Wk> {
        let Some(lane) = Self::lane_of(&owner) else {
            return owner;
        };
        self.lanes_out += 1;
        self.lent.push(Lent {
            live: owner,
            out: 1,
            retire: None,
        });
        lane
    }

    /// Whether more lanes of `lent` may go out: it has room, does not
    /// retire (or its replacement is not serving yet), and the pool is open
    /// and not over its cap.
    fn lendable(&self, lent: &Lent<Wk>) -> bool {
        lent.out < lent.live.meta.lanes
            && lent.retire.is_none()
            && !self.closed
            && self.retiring.get(&lent.live.meta.id) != Some(&true)
            && self.live() <= self.capacity()
    }

    /// No worker is idle: a lane of the lent worker with the fewest out,
    /// if one has room.
    #[inline]
    pub fn take_lane(&mut self, caller: Caller<'_>) -> Option<Live<Wk>> {
        if self.lent.is_empty() {
            return None;
        }
        let at = (0..self.lent.len())
            .filter(|&i| self.lendable(&self.lent[i]))
            .min_by_key(|&i| self.lent[i].out)?;
        self.lend_lane(at, caller)
    }

    /// A lane of session `owner`'s worker for `caller`, if it is lent and
    /// has room.
    pub(super) fn lane_for_session(
        &mut self,
        owner: WorkerId,
        caller: Caller<'_>,
    ) -> Option<Live<Wk>> {
        let at = self.lent.iter().position(|l| l.live.meta.id == owner)?;
        if !self.lendable(&self.lent[at]) {
            return None;
        }
        self.lend_lane(at, caller)
    }

    /// A lane of `self.lent[at]` for `caller`, who binds its session to the
    /// worker.
    fn lend_lane(&mut self, at: usize, caller: Caller<'_>) -> Option<Live<Wk>> {
        let lane = Self::lane_of(&self.lent[at].live)?;
        let mut lent = self.lent.swap_remove(at);
        if let Some(a) = caller.affinity() {
            self.bind(&a.key, &mut lent.live.meta, caller.arrival());
        }
        lent.out += 1;
        self.lanes_out += 1;
        self.lent.push(lent);
        Some(lane)
    }

    /// A worker with lanes is free for callers (it arrived, passed a
    /// check, or its last lane came back): it lends lanes to the callers
    /// waiting, as many as it has room for, and goes to the idle queue if
    /// none was waiting. Callers it serves are woken here, under the lock
    /// (the path is rare enough).
    #[cold]
    pub(super) fn hand_off_lanes(&mut self, owner: Live<Wk>, at: Stamp) -> Option<Waker> {
        let mut lent = Lent {
            live: owner,
            out: 0,
            retire: None,
        };
        self.lend_to_waiters(&mut lent, at);
        if lent.out > 0 {
            self.lent.push(lent);
            return None;
        }
        let mut live = lent.live;
        self.busy -= 1;
        if live.meta.affine {
            self.sessions.prune(&mut live.meta);
            self.sessions.set_idle(live.meta.id, true);
        }
        self.idle.push(IdleWorker(live));
        None
    }

    /// Lend `lent`'s free lanes to waiting callers: its session's first,
    /// then the general queue's.
    fn lend_to_waiters(&mut self, lent: &mut Lent<Wk>, at: Stamp) {
        // A lane made for a caller that turned out not to take it.
        let mut spare = None;
        while self.lendable(lent) {
            let lane = match spare.take().or_else(|| Self::lane_of(&lent.live)) {
                Some(lane) => lane,
                // Beyond use: whoever next looks finds it broken.
                None => return,
            };
            let id = lent.live.meta.id;
            let pinned = if lent.live.meta.affine {
                self.sessions.pop_pinned(id)
            } else {
                None
            };
            let cell = match pinned {
                Some(waiter) => {
                    if let Some(a) = waiter.affinity() {
                        self.bind(&a.key, &mut lent.live.meta, at);
                    }
                    waiter.cell()
                }
                None => {
                    let Some(waiter) = self.waiters.pop(()) else {
                        return;
                    };
                    match self.admit(waiter, &mut lent.live, at) {
                        Some(cell) => cell,
                        None => {
                            spare = Some(lane);
                            continue;
                        }
                    }
                }
            };
            lent.out += 1;
            self.lanes_out += 1;
            if let Some(waker) = self.cells.deposit(cell, Ok((lane, at))) {
                waker.wake();
            }
        }
    }

    /// Workers with lanes held back at the cap (`lendable` asks that live
    /// workers be within it) may lend again once a worker leaves, a start
    /// ends or the pool grows: nothing else would hand their free lanes to
    /// the callers already waiting, who would wait for a lane to come back
    /// (or forever, if none was out to come back).
    pub(super) fn lend_spare(&mut self) {
        if self.lent.is_empty() || self.waiters.is_empty() {
            return;
        }
        let at = Stamp::now();
        let mut lent = std::mem::take(&mut self.lent);
        for l in &mut lent {
            if self.waiters.is_empty() {
                break;
            }
            self.lend_to_waiters(l, at);
        }
        lent.append(&mut self.lent);
        self.lent = lent;
    }

    /// A lane of worker `id` came back from a call that ended: its worker
    /// lends it on, or, once its last lane is back, re-enters service as
    /// any returning worker does (idle, retire, or stop).
    pub fn lane_returned(
        &mut self,
        id: WorkerId,
        at: Stamp,
        parent: &CancellationToken,
    ) -> Effects<Wk> {
        self.lanes_out -= 1;
        let Some(i) = self.lent.iter().position(|l| l.live.meta.id == id) else {
            // Its worker left service meanwhile (broken, killed).
            return Effects::default();
        };
        let mut lent = self.lent.swap_remove(i);
        lent.out -= 1;
        lent.live.meta.tasks += 1;
        if lent.retire.is_none() {
            lent.retire = lent.live.worker.retire_reason();
        }
        if lent.out > 0 {
            self.lend_to_waiters(&mut lent, at);
            self.lent.push(lent);
            return Effects::default();
        }
        let Lent {
            mut live, retire, ..
        } = lent;
        live.meta.idle_since = at;
        match self.reenter(live, retire, at, parent) {
            Reentry::Served(wake) => Effects {
                wake,
                ..Effects::default()
            },
            Reentry::Decided(fx) => fx,
        }
    }

    /// A lane left in an abandoned waiter's cell comes back unused.
    pub(super) fn lane_unused(&mut self, id: WorkerId, at: Stamp) -> Option<Waker> {
        self.lanes_out -= 1;
        let i = self.lent.iter().position(|l| l.live.meta.id == id)?;
        let mut lent = self.lent.swap_remove(i);
        lent.out -= 1;
        if lent.out > 0 {
            self.lend_to_waiters(&mut lent, at);
            self.lent.push(lent);
            return None;
        }
        self.hand_off_lanes(lent.live, at)
    }

    /// A lane of worker `id` is beyond use, or was killed with its call:
    /// the worker leaves service (see `discard`), if it has not already.
    pub fn discard_lane(
        &mut self,
        id: WorkerId,
        reason: StopReason,
        parent: &CancellationToken,
    ) -> Effects<Wk> {
        self.lanes_out -= 1;
        let Some(i) = self.lent.iter().position(|l| l.live.meta.id == id) else {
            return Effects::default();
        };
        let lent = self.lent.swap_remove(i);
        self.discard(lent.live, reason, parent)
    }

    /// Calls in flight: workers checked out whole, and lanes out.
    pub(super) fn in_flight(&self) -> usize {
        self.busy - self.lent.len() + self.lanes_out
    }

    #[cfg(any(test, feature = "testing"))]
    /// The lent table agrees with itself and with the waiters.
    pub(super) fn check_lanes(&self) -> Result<(), String> {
        let out: usize = self.lent.iter().map(|l| l.out).sum();
        if out > self.lanes_out {
            return Err(format!(
                "{out} lanes out in the lent table, {} counted",
                self.lanes_out
            ));
        }
        for l in &self.lent {
            if l.out == 0 || l.out > l.live.meta.lanes {
                return Err(format!(
                    "worker {} lent with {} of its {} lanes out",
                    l.live.meta.id, l.out, l.live.meta.lanes
                ));
            }
            if self.lendable(l) && !self.waiters.is_empty() {
                return Err(format!(
                    "worker {} has room for {} more callers while {} wait",
                    l.live.meta.id,
                    l.live.meta.lanes - l.out,
                    self.waiters.len()
                ));
            }
        }
        Ok(())
    }
}
