//! The pool's state, guarded by one mutex, and the only code that changes
//! its counts.
//!
//! A worker is in exactly one place: the idle queue, `busy` (a caller's
//! [`Checkout`](crate::Checkout), a recycle or a health check), or a start
//! under way (`starts`). Once out of service it is `stopping` until its
//! shutdown returns. Every move between places is one named method here
//! (take idle, hand off, arrive, discard, leave...), run under the lock, so
//! no snapshot sees a worker in two places or in none, and no other file can
//! change a count.
//!
//! **The hard cap.** Users size a pool to bound memory, so at every instant
//!
//! ```text
//! idle + starting + busy  <=  max(size + max_overflow, busy)
//! ```
//!
//! Only [`State::begin_start`] adds a worker, and only below the cap. When
//! `resize` lowers the cap, idle workers above it leave at once, starts no
//! longer needed are cancelled at once (counted `stopping` until their task
//! ends; a worker that arrives from one anyway is shut down), and busy
//! workers above it stop as they come back. A retiring worker gets a warm
//! replacement only when there is room under the cap; otherwise it stops
//! first and its replacement starts in its place.
//!
//! Methods that take workers out or start new ones return [`Effects`]: what
//! to do once the lock is released (send a worker to a waiter, shut workers
//! down, spawn starts). Deciding under the lock and acting outside it keeps
//! the lock short and the decisions atomic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::handoff::{Cells, Grant, Waiter};
use super::live::{Leaving, Live, Served, StopReason};
use crate::clock::Stamp;
use crate::config::CrashBudget;
use crate::error::{Error, StartError};
use crate::histogram::Metrics;
use crate::queue::{PriorityLevel, Queue, QueueKey, Strategy};
use crate::registry::Load;
use crate::status::{Status, Totals};
use crate::worker::{Retire, Worker, WorkerId};

/// A start the state has counted: the only way a new worker can come into
/// the pool. Not `Clone`; the start task hands it back through
/// [`State::arrive`], [`State::start_ended`].
#[derive(Debug)]
pub(crate) struct StartTicket {
    pub id: WorkerId,
    /// Cancelled when the pool closes or no longer needs this start.
    pub cancel: CancellationToken,
    /// A replacement after a crash: charged to the crash budget.
    pub is_restart: bool,
}

/// A start under way, as the state tracks it.
#[derive(Debug)]
struct Start {
    cancel: CancellationToken,
    /// Its last attempt failed; it waits out a backoff before the next.
    failing: bool,
    /// The retiring worker it replaces.
    replaces: Option<WorkerId>,
}

/// What to do once the lock is released.
#[must_use = "effects decided under the lock must be carried out"]
pub(crate) struct Effects<Wk: Worker> {
    /// A waiter that was left a worker, to wake.
    pub wake: Option<Waker>,
    /// Workers to shut down (already counted `stopping`).
    pub stop: Vec<Leaving<Wk>>,
    /// Starts to spawn (already counted `starting`).
    pub start: Vec<StartTicket>,
}

impl<Wk: Worker> Default for Effects<Wk> {
    fn default() -> Self {
        Effects {
            wake: None,
            stop: Vec::new(),
            start: Vec::new(),
        }
    }
}

/// What a returning worker's re-entry needs done after the lock.
pub(crate) enum Reentry<Wk: Worker> {
    /// It went to a waiter (to wake) or the idle queue.
    Served(Option<Waker>),
    /// Anything else: retire, stop, replace.
    Decided(Effects<Wk>),
}

/// Idle workers the maintenance tick took out of the queue (counted busy)
/// or out of service.
pub(crate) struct Maintenance<Wk: Worker> {
    /// Found broken while idle: to be discarded.
    pub broken: Vec<Live<Wk>>,
    /// Due a health check: to be recycled.
    pub due: Vec<Live<Wk>>,
    /// Idle overflow workers retired.
    pub effects: Effects<Wk>,
}

/// Everything the pool's mutex guards.
pub(crate) struct State<Wk: Worker, I: Strategy, W: Strategy> {
    idle: I::Queue<Live<Wk>>,
    waiters: W::Queue<Waiter>,
    /// Where waiting callers' outcomes are left (see `handoff`).
    cells: Cells<Wk>,
    /// Warm size (changed by `resize`).
    size: usize,
    max_overflow: usize,
    /// Starts under way, including those in backoff after a failure.
    starts: BTreeMap<WorkerId, Start>,
    /// How many of `starts` are failing.
    failing: usize,
    /// Workers out of the idle queue: checked out, or being recycled.
    busy: usize,
    /// Workers (and cancelled starts) shutting down.
    stopping: usize,
    /// Workers serving until their warm replacement is up; `true` once it
    /// is, and the worker stops at its next return.
    retiring: HashMap<WorkerId, bool>,
    closed: bool,
    next_id: u64,
    last_start_error: Option<Arc<StartError<Wk::Error>>>,
    /// Recent restarts, for the crash-loop budget.
    restarts: VecDeque<Instant>,
    totals: Totals,
    metrics: Metrics,
}

impl<Wk: Worker, I: Strategy, W: Strategy> State<Wk, I, W> {
    pub fn new(size: usize, max_overflow: usize) -> Self {
        State {
            idle: Default::default(),
            waiters: Default::default(),
            cells: Cells::default(),
            size,
            max_overflow,
            starts: BTreeMap::new(),
            failing: 0,
            busy: 0,
            stopping: 0,
            retiring: HashMap::new(),
            closed: false,
            next_id: 1,
            last_start_error: None,
            restarts: VecDeque::new(),
            totals: Totals::default(),
            metrics: Metrics::default(),
        }
    }

    // ---- reading ----

    /// Live workers: idle, busy and starting.
    pub fn live(&self) -> usize {
        self.idle.len() + self.busy + self.starts.len()
    }

    /// Live workers once every retirement under way is done: a retiring
    /// worker and its warm replacement count as one.
    fn settled_live(&self) -> usize {
        self.live().saturating_sub(self.retiring.len())
    }

    /// The most live workers allowed while any of them is idle or starting.
    pub fn capacity(&self) -> usize {
        self.size + self.max_overflow
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    pub fn busy(&self) -> usize {
        self.busy
    }

    /// No call and no start is under way.
    pub fn at_rest(&self) -> bool {
        self.busy == 0 && self.starts.is_empty()
    }

    /// Nothing of the pool is left: no worker busy, starting or stopping.
    pub fn drained(&self) -> bool {
        self.busy == 0 && self.starts.is_empty() && self.stopping == 0
    }

    /// Every start has made its worker or failed at least once.
    pub fn warm_settled(&self) -> bool {
        self.starts.len() == self.failing
    }

    /// No worker is up and every start is failing: no waiter can be served
    /// until a start succeeds.
    fn nobody_can_serve(&self) -> bool {
        self.idle.is_empty()
            && self.busy == 0
            && !self.starts.is_empty()
            && self.failing == self.starts.len()
    }

    /// The start error a caller should get instead of waiting, if nobody
    /// can serve.
    pub fn start_error(&self) -> Option<Arc<StartError<Wk::Error>>> {
        if self.nobody_can_serve() {
            self.last_start_error.clone()
        } else {
            None
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The counts published as load.
    pub fn load(&self) -> Load {
        Load {
            idle: self.idle.len(),
            busy: self.busy,
            waiting: self.waiters.len(),
            live: self.live(),
        }
    }

    /// A serde snapshot of the pool.
    pub fn status(&self, name: &str, budget: CrashBudget) -> Status {
        let live = self.live();
        Status {
            name: name.to_string(),
            size: self.size,
            max_overflow: self.max_overflow,
            live,
            idle: self.idle.len(),
            busy: self.busy,
            overflow: live.saturating_sub(self.size),
            starting: self.starts.len(),
            retiring: self.retiring.len(),
            stopping: self.stopping,
            waiting: self.waiters.len(),
            closed: self.closed,
            crash_looping: self.crash_looping(budget),
            totals: self.totals.clone(),
            wait: self.metrics.wait(),
            run: self.metrics.run(),
        }
    }

    /// The counts must agree with each other and with the hard cap.
    pub fn check(&self) -> Result<(), String> {
        let live = self.live();
        let ceiling = self.capacity().max(self.busy);
        if live > ceiling {
            return Err(format!(
                "live {live} (idle {} + starting {} + busy {}) over the cap: \
                 max(size {} + max_overflow {}, busy {})",
                self.idle.len(),
                self.starts.len(),
                self.busy,
                self.size,
                self.max_overflow,
                self.busy
            ));
        }
        let failing = self.starts.values().filter(|s| s.failing).count();
        if failing != self.failing {
            return Err(format!(
                "failing {} != failing starts {failing}",
                self.failing
            ));
        }
        if self.closed && !self.waiters.is_empty() {
            return Err(format!("closed with {} waiters", self.waiters.len()));
        }
        if !self.idle.is_empty() && !self.waiters.is_empty() {
            return Err(format!(
                "{} idle workers while {} callers wait",
                self.idle.len(),
                self.waiters.len()
            ));
        }
        Ok(())
    }

    // ---- checkout ----

    /// Take the idle worker the strategy serves next; it is now busy.
    pub fn take_idle(&mut self) -> Option<Live<Wk>> {
        let live = self.idle.pop()?;
        self.busy += 1;
        Some(live)
    }

    /// A caller found no idle worker: start one for it if there is room and
    /// the starts under way do not already cover the callers waiting.
    pub fn grow_for_waiter(&mut self, parent: &CancellationToken) -> Option<StartTicket> {
        if self.starts.len() > self.waiters.len() {
            return None;
        }
        self.begin_start(None, false, parent)
    }

    /// Turn a caller away because `max_waiters` are waiting; how many are.
    pub fn reject(&mut self) -> usize {
        self.totals.rejected += 1;
        self.waiters.len()
    }

    /// Queue a caller that asked at `asked`, waits until `deadline` and is
    /// woken through `waker`; returns its cell and its queue key.
    pub fn push_waiter(
        &mut self,
        waker: &Waker,
        asked: Stamp,
        deadline: Stamp,
        priority: PriorityLevel,
    ) -> (usize, QueueKey) {
        let cell = self.cells.open(waker);
        let key = self.waiters.push(
            Waiter {
                cell,
                asked,
                deadline,
            },
            priority,
        );
        (cell, key)
    }

    /// A waiting caller is polled: its outcome, if one was left in its cell.
    pub fn collect(&mut self, cell: usize, waker: &Waker) -> Option<Grant<Wk>> {
        self.cells.collect(cell, waker)
    }

    /// A waiting caller gives up (its future dropped): out of the queue, or,
    /// if it was already left a worker, that worker goes to the next waiter
    /// (whose waker is returned) or the idle queue.
    pub fn abandon_waiter(&mut self, cell: usize, key: QueueKey) -> Option<Waker> {
        if !self.cells.has_grant(cell) {
            self.waiters.remove(key);
        }
        match self.cells.close(cell) {
            Some(Ok((live, at))) => self.hand_off(live, at),
            _ => None,
        }
    }

    /// A waiter's own timer fired: out of the queue, counted as a checkout
    /// timeout, and the error it gets. `None` if it was already left an
    /// outcome, which it then collects.
    pub fn time_out_waiter(&mut self, cell: usize, key: QueueKey) -> Option<Error<Wk::Error>> {
        if self.cells.has_grant(cell) {
            return None;
        }
        let waiter = self.waiters.remove(key)?;
        self.cells.close(cell);
        self.totals.checkout_timeouts += 1;
        self.totals.timeouts += 1;
        Some(Error::CheckoutTimeout {
            waited: waiter.asked.elapsed(),
            last_start_error: self.last_start_error.clone(),
        })
    }

    /// Turn away every waiter whose deadline has passed; returns how many.
    pub fn expire_waiters(&mut self, now: Stamp) -> usize {
        let expired = self
            .waiters
            .extract(&mut |w: &mut Waiter| w.deadline <= now);
        let n = expired.len();
        for waiter in expired {
            let err = Error::CheckoutTimeout {
                waited: now.since(waiter.asked),
                last_start_error: self.last_start_error.clone(),
            };
            // Rare, so woken here rather than after the lock.
            if let Some(waker) = self.cells.deposit(waiter.cell, Err(err)) {
                waker.wake();
            }
        }
        self.totals.checkout_timeouts += n as u64;
        self.totals.timeouts += n as u64;
        n
    }

    /// Give a busy worker, free since `at`, to the first waiter (whose
    /// waker is returned, to be woken once the lock is released), or make it
    /// idle.
    pub fn hand_off(&mut self, live: Live<Wk>, at: Stamp) -> Option<Waker> {
        if let Some(waiter) = self.waiters.pop() {
            return self.cells.deposit(waiter.cell, Ok((live, at)));
        }
        self.busy -= 1;
        self.idle.push(live, 0);
        None
    }

    /// Tell every waiter it will not be served.
    fn fail_waiters(&mut self, err: impl Fn() -> Error<Wk::Error>) {
        while let Some(waiter) = self.waiters.pop() {
            if let Some(waker) = self.cells.deposit(waiter.cell, Err(err())) {
                waker.wake();
            }
        }
    }

    // ---- returns ----

    /// Count one ended checkout.
    pub fn record(&mut self, served: Served) {
        self.totals.served += 1;
        self.metrics.record(served.waited_ns, served.ran_ns);
    }

    /// Count a call killed at its deadline.
    pub fn count_call_timeout(&mut self) {
        self.totals.call_timeouts += 1;
        self.totals.timeouts += 1;
    }

    /// A busy worker that works comes back into service: to the next
    /// waiter or the idle queue, unless the pool closed or shrank, or the
    /// worker retires (`wants_out`).
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

    fn reenter_slow(
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
        self.totals.retired += 1;
        if self.settled_live() > self.size {
            // An overflow worker: no replacement needed.
            fx.stop
                .push(self.leave_busy(live, StopReason::Retired(reason)));
        } else if self.live() < self.capacity() {
            // Room under the cap: serve on until a warm replacement is up.
            let id = live.meta.id;
            if let Some(ticket) = self.begin_start(Some(id), false, parent) {
                self.retiring.insert(id, false);
                fx.start.push(ticket);
            }
            fx.wake = self.hand_off(live, free_since);
        } else {
            // At the cap: stop first, then start the replacement in its place.
            fx.stop
                .push(self.leave_busy(live, StopReason::Retired(reason)));
            fx.start.extend(self.begin_start(None, false, parent));
        }
        fx
    }

    /// A busy worker is beyond use (`Broken`) or ran past its call deadline
    /// (`TimedOut`): it leaves, and a replacement starts in its place unless
    /// the pool is closing, shrinking or already has one for it.
    pub fn discard(
        &mut self,
        live: Live<Wk>,
        reason: StopReason,
        parent: &CancellationToken,
    ) -> Effects<Wk> {
        if reason == StopReason::Broken {
            self.totals.crashes += 1;
        }
        let had_replacement = self.retiring.contains_key(&live.meta.id);
        let mut fx = Effects::default();
        fx.stop.push(self.leave_busy(live, reason));
        let wanted =
            !had_replacement && (self.settled_live() < self.size || !self.waiters.is_empty());
        if wanted {
            if let Some(ticket) = self.begin_start(None, true, parent) {
                self.totals.restarts += 1;
                fx.start.push(ticket);
                return fx;
            }
        }
        if let Some(err) = self.start_error() {
            self.fail_waiters(|| Error::Start(Arc::clone(&err)));
        }
        fx
    }

    /// Take a busy worker out of service.
    fn leave_busy(&mut self, live: Live<Wk>, reason: StopReason) -> Leaving<Wk> {
        self.busy -= 1;
        self.leave(live, reason)
    }

    /// A worker already out of the idle queue or `busy` leaves service: it
    /// counts as stopping until its shutdown returns.
    fn leave(&mut self, live: Live<Wk>, reason: StopReason) -> Leaving<Wk> {
        self.stopping += 1;
        self.retiring.remove(&live.meta.id);
        Leaving { live, reason }
    }

    /// A worker's shutdown returned (or a cancelled start's task ended).
    pub fn stopped(&mut self) {
        self.stopping -= 1;
    }

    // ---- starts ----

    /// Count a new start if there is room under the cap.
    fn begin_start(
        &mut self,
        replaces: Option<WorkerId>,
        is_restart: bool,
        parent: &CancellationToken,
    ) -> Option<StartTicket> {
        if self.closed || self.live() >= self.capacity() {
            return None;
        }
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        let cancel = parent.child_token();
        self.starts.insert(
            id,
            Start {
                cancel: cancel.clone(),
                failing: false,
                replaces,
            },
        );
        Some(StartTicket {
            id,
            cancel,
            is_restart,
        })
    }

    /// The warm workers a new pool starts with.
    pub fn start_warm(&mut self, parent: &CancellationToken) -> Vec<StartTicket> {
        (0..self.size)
            .filter_map(|_| self.begin_start(None, false, parent))
            .collect()
    }

    /// Cancel start `id`: it no longer counts as starting but as stopping,
    /// until its task ends.
    fn cancel_start(&mut self, id: WorkerId) {
        if let Some(start) = self.starts.remove(&id) {
            if start.failing {
                self.failing -= 1;
            }
            if let Some(old) = start.replaces {
                // The retiring worker serves on and asks again on its next return.
                self.retiring.remove(&old);
            }
            start.cancel.cancel();
            self.stopping += 1;
        }
    }

    /// A start made its worker. It joins the pool (to a waiter or the idle
    /// queue), retiring the worker it replaces; or, if its start was
    /// cancelled or the pool closed, it is shut down.
    pub fn arrive(&mut self, id: WorkerId, live: Live<Wk>, now: Stamp) -> Effects<Wk> {
        let mut fx = Effects::default();
        let Some(start) = self.starts.remove(&id) else {
            // Cancelled: already counted stopping.
            fx.stop.push(Leaving {
                live,
                reason: StopReason::Unneeded,
            });
            return fx;
        };
        if start.failing {
            self.failing -= 1;
        }
        self.last_start_error = None;
        self.busy += 1;
        if self.closed {
            fx.stop.push(self.leave_busy(live, StopReason::AfterClose));
            return fx;
        }
        if let Some(old) = start.replaces {
            if let Some(replaced) = self.retiring.get_mut(&old) {
                *replaced = true;
                let found = self.idle.extract(&mut |l: &mut Live<Wk>| l.meta.id == old);
                for idle in found {
                    fx.stop.push(self.leave(idle, StopReason::Replaced));
                }
            }
        }
        fx.wake = self.hand_off(live, now);
        fx
    }

    /// A start attempt failed; the start retries after a backoff. While
    /// nobody can serve, waiters are told why.
    pub fn start_failed(&mut self, id: WorkerId, err: Arc<StartError<Wk::Error>>) {
        self.totals.start_failures += 1;
        self.totals.restarts += 1;
        if let Some(start) = self.starts.get_mut(&id) {
            if !start.failing {
                start.failing = true;
                self.failing += 1;
            }
        }
        self.last_start_error = Some(Arc::clone(&err));
        if self.nobody_can_serve() {
            self.fail_waiters(|| Error::Start(Arc::clone(&err)));
        }
    }

    /// A start's task ended without a worker (the pool closed, or the start
    /// was cancelled).
    pub fn start_ended(&mut self, id: WorkerId) {
        if self.starts.contains_key(&id) {
            self.cancel_start(id);
        }
        self.stopped();
    }

    /// Record one restart against the crash budget; returns how long the
    /// restart must wait for the budget to have room.
    pub fn restart_delay(&mut self, budget: CrashBudget) -> Duration {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= budget.window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() < budget.max_restarts as usize {
            self.restarts.push_back(now);
            return Duration::ZERO;
        }
        let oldest = self.restarts.pop_front().unwrap_or(now);
        let ready_at = oldest + budget.window;
        self.restarts.push_back(ready_at);
        ready_at.saturating_duration_since(now)
    }

    /// Whether the crash budget is spent for the current window.
    fn crash_looping(&self, budget: CrashBudget) -> bool {
        let now = Instant::now();
        let recent = self
            .restarts
            .iter()
            .filter(|t| t.checked_add(budget.window).is_some_and(|end| end > now))
            .count();
        recent >= budget.max_restarts as usize
    }

    // ---- sizing ----

    /// Set the warm size. Shrinking takes idle workers above the new cap
    /// out now and cancels starts no longer needed (failing ones first, then
    /// the newest); busy workers above it stop as they come back. Growing
    /// starts the missing warm workers.
    pub fn resize(&mut self, size: usize, parent: &CancellationToken) -> Effects<Wk> {
        let mut fx = Effects::default();
        if self.closed {
            return fx;
        }
        self.size = size;
        let ceiling = self.capacity().max(self.busy);
        while self.live() > ceiling {
            if let Some(live) = self.idle.pop() {
                fx.stop.push(self.leave(live, StopReason::Shrunk));
                continue;
            }
            let victim = self
                .starts
                .iter()
                .find(|(_, s)| s.failing)
                .or_else(|| self.starts.iter().next_back())
                .map(|(id, _)| *id);
            match victim {
                Some(id) => self.cancel_start(id),
                None => break,
            }
        }
        while self.settled_live() < self.size {
            match self.begin_start(None, false, parent) {
                Some(ticket) => fx.start.push(ticket),
                None => break,
            }
        }
        fx
    }

    /// Take up to `n` idle workers out for good, lowering the warm size by
    /// as many.
    pub fn remove_idle(&mut self, n: usize) -> Vec<Leaving<Wk>> {
        let mut out = Vec::new();
        while out.len() < n.min(self.size) {
            let Some(live) = self.idle.pop() else { break };
            out.push(self.leave(live, StopReason::Removed));
        }
        self.size -= out.len();
        out
    }

    /// Take out every idle worker `drop_it` picks.
    pub fn remove_idle_where(
        &mut self,
        drop_it: &mut dyn FnMut(&Live<Wk>) -> bool,
    ) -> Vec<Leaving<Wk>> {
        let out = self.idle.extract(&mut |l: &mut Live<Wk>| drop_it(l));
        out.into_iter()
            .map(|l| self.leave(l, StopReason::Removed))
            .collect()
    }

    // ---- maintenance and close ----

    /// One maintenance pass over the idle workers: broken ones and those due
    /// a health check go busy (to be discarded or recycled), overflow
    /// workers idle past `overflow_idle` leave; waiters past their deadline
    /// are turned away.
    pub fn maintain(
        &mut self,
        now: Stamp,
        overflow_idle: Duration,
        health: Option<Duration>,
    ) -> Maintenance<Wk> {
        let mut fx = Effects::default();
        self.expire_waiters(now);
        let broken = self
            .idle
            .extract(&mut |l: &mut Live<Wk>| l.worker.is_broken());
        self.busy += broken.len();
        let mut excess = self.settled_live().saturating_sub(self.size);
        if excess > 0 {
            let idle_too_long = self.idle.extract(&mut |l: &mut Live<Wk>| {
                let take = excess > 0 && now.since(l.meta.idle_since) >= overflow_idle;
                excess -= usize::from(take);
                take
            });
            for live in idle_too_long {
                fx.stop.push(self.leave(live, StopReason::IdleOverflow));
            }
        }
        let due = match health {
            Some(every) => self.idle.extract(&mut |l: &mut Live<Wk>| {
                now.since(l.meta.idle_since.max(l.meta.checked_at)) >= every
            }),
            None => Vec::new(),
        };
        self.busy += due.len();
        Maintenance {
            broken,
            due,
            effects: fx,
        }
    }

    /// Mark the pool closed, turn every waiter away with `Closed`, and take
    /// the idle workers out. Starts end through their cancel tokens.
    pub fn close(&mut self) -> Vec<Leaving<Wk>> {
        self.closed = true;
        self.fail_waiters(|| Error::Closed);
        let mut out = Vec::new();
        while let Some(live) = self.idle.pop() {
            out.push(self.leave(live, StopReason::Closed));
        }
        out
    }
}
