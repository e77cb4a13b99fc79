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
//!
//! **Sessions.** A caller with an affinity key is routed by the session
//! table ([`Sessions`]): to its worker through the idle queue (which sees
//! the caller's key and must serve the worker holding it), or pinned to
//! its busy worker's own waiter queue, or failed (`AffinityLost`, `Busy`).
//! A returning session worker serves the callers pinned to it first. When a
//! worker leaves, in [`State::leave`] whatever the reason, its keys are
//! lost: strict callers pinned to it fail with `AffinityLost`, hint callers
//! move to the general queue (or to an idle worker).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::handoff::{Cells, Grant, Place};
use super::live::{Leaving, Live, Meta, Served, StopReason};
use super::sessions::{Bound, Owner, Route, Sessions};
use crate::affinity::{AffinityKey, AffinityLoss, AffinityMode};
use crate::clock::Stamp;
use crate::config::{CrashBudget, PoolConfig};
use crate::entry::{Caller, IdleWorker, Waiter};
use crate::error::{Error, StartError};
use crate::histogram::Metrics;
use crate::queue::{IdleStrategy, Queue, WaitStrategy};
use crate::registry::Load;
use crate::status::{Status, Totals};
use crate::worker::{Retire, Worker, WorkerId};

/// The key a waiter queue of strategy `W` hands out.
pub(crate) type WaitKey<W> = <<W as WaitStrategy>::Queue as Queue<Waiter>>::Key;

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

/// What a checkout with a session key does, decided under the lock.
pub(crate) enum SessionRoute<Wk: Worker> {
    /// Its worker was idle: here it is.
    Served(Live<Wk>),
    /// It fails now.
    Failed(Error<Wk::Error>),
    /// Its worker is busy: wait for it (a hint, only until `hint_until`).
    Wait {
        owner: WorkerId,
        hint_until: Option<Stamp>,
    },
    /// A new session, or a hint not worth waiting for: any worker.
    Any,
}

/// Everything the pool's mutex guards.
pub(crate) struct State<Wk: Worker, I: IdleStrategy, W: WaitStrategy> {
    idle: I::Queue<Wk>,
    waiters: W::Queue,
    /// Where waiting callers' outcomes are left (see `handoff`).
    cells: Cells<Wk, WaitKey<W>>,
    /// Which worker serves each session key; callers pinned to them.
    sessions: Sessions<W::Queue>,
    hint_wait: Duration,
    /// Warm size (changed by `resize`).
    size: usize,
    max_overflow: usize,
    /// Starts under way, including those in backoff after a failure.
    starts: BTreeMap<WorkerId, Start>,
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

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    pub fn new(config: &PoolConfig) -> Self {
        State {
            idle: Default::default(),
            waiters: Default::default(),
            cells: Cells::default(),
            sessions: Sessions::new(config.affinity_capacity, config.affinity_ttl),
            hint_wait: config.affinity_hint_wait,
            size: config.size,
            max_overflow: config.max_overflow,
            starts: BTreeMap::new(),
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
        self.starts.values().all(|s| s.failing)
    }

    /// No worker is up and every start is failing: no waiter can be served
    /// until a start succeeds.
    fn nobody_can_serve(&self) -> bool {
        self.idle.is_empty()
            && self.busy == 0
            && !self.starts.is_empty()
            && self.starts.values().all(|s| s.failing)
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

    /// Callers waiting: in the waiter queue and pinned to session workers.
    pub fn waiting(&self) -> usize {
        self.waiters.len() + self.sessions.pinned()
    }

    /// The counts published as load.
    pub fn load(&self) -> Load {
        Load {
            idle: self.idle.len(),
            busy: self.busy,
            waiting: self.waiting(),
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
            waiting: self.waiting(),
            sessions: self.sessions.len(),
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
        if self.closed && self.waiting() > 0 {
            return Err(format!("closed with {} waiters", self.waiting()));
        }
        if !self.idle.is_empty() && !self.waiters.is_empty() {
            return Err(format!(
                "{} idle workers while {} callers wait",
                self.idle.len(),
                self.waiters.len()
            ));
        }
        self.sessions.check(self.idle.len())
    }

    // ---- checkout ----

    /// Take the idle worker the strategy picks for `caller` (the one
    /// holding its session key, if idle); it is now busy.
    #[inline]
    pub fn take_idle(&mut self, caller: Caller<'_>) -> Option<Live<Wk>> {
        let IdleWorker(live) = self.idle.pop(caller)?;
        Some(self.lend(live, caller))
    }

    /// A worker out of the idle queue goes to `caller`: busy, and serving
    /// the caller's session from now on.
    #[inline]
    fn lend(&mut self, mut live: Live<Wk>, caller: Caller<'_>) -> Live<Wk> {
        self.busy += 1;
        if live.meta.affine || caller.affinity().is_some() {
            self.lend_in_session(&mut live, caller);
        }
        live
    }

    /// `lend`'s part for session workers and session callers.
    #[cold]
    fn lend_in_session(&mut self, live: &mut Live<Wk>, caller: Caller<'_>) {
        if live.meta.affine {
            self.sessions.set_idle(live.meta.id, false);
        }
        if let Some(a) = caller.affinity() {
            self.bind(&a.key, &mut live.meta, caller.arrival());
        }
    }

    /// Worker `meta` serves session `key` from now on.
    fn bind(&mut self, key: &AffinityKey, meta: &mut Meta, now: Stamp) {
        match self.sessions.bind(key, meta, now) {
            Bound::Hit => self.totals.affinity_hits += 1,
            Bound::Miss => self.totals.affinity_misses += 1,
            Bound::New => {}
        }
    }

    /// Route a caller with a session key: to its idle worker, to wait for
    /// its busy one, to fail, or to any worker.
    pub fn route_session(&mut self, caller: Caller<'_>) -> SessionRoute<Wk> {
        let Some(a) = caller.affinity() else {
            return SessionRoute::Any;
        };
        let (key, mode) = (&a.key, a.mode);
        match self.sessions.route(key, caller.arrival()) {
            Route::New => SessionRoute::Any,
            Route::Lost(_) if !mode.is_strict() => SessionRoute::Any,
            Route::Lost(reason) => {
                self.totals.affinity_lost += 1;
                SessionRoute::Failed(Error::AffinityLost {
                    key: key.clone(),
                    reason,
                })
            }
            Route::Idle(owner) => match self.take_owner(caller, owner) {
                Some(live) => SessionRoute::Served(live),
                None => SessionRoute::Any,
            },
            Route::Busy(owner) => match mode {
                AffinityMode::FailFast => SessionRoute::Failed(Error::Busy { key: key.clone() }),
                AffinityMode::Strict => SessionRoute::Wait {
                    owner,
                    hint_until: None,
                },
                AffinityMode::Hint if self.hint_wait.is_zero() => SessionRoute::Any,
                AffinityMode::Hint => SessionRoute::Wait {
                    owner,
                    hint_until: Some((caller.arrival() + self.hint_wait).min(caller.deadline())),
                },
            },
        }
    }

    /// Take idle worker `owner` for `caller`, whose key it holds, through
    /// the idle queue, which must serve it (its contract). A queue that
    /// serves another breaks it; the pool still keeps its promise.
    fn take_owner(&mut self, caller: Caller<'_>, owner: WorkerId) -> Option<Live<Wk>> {
        let picked = self.idle.pop(caller)?;
        if picked.id() == owner {
            return Some(self.lend(picked.0, caller));
        }
        tracing::error!(strategy = I::NAME, worker = %owner, served = %picked.id(),
            "idle queue served another worker than the one holding the caller's session key: \
             it breaks the Queue contract (run cenote_core::conformance on it)");
        self.idle.push(picked);
        let IdleWorker(live) = self
            .idle
            .take_matching(1, &mut |w: &mut IdleWorker<Wk>| w.id() == owner)
            .pop()?;
        Some(self.lend(live, caller))
    }

    /// A caller found no idle worker: start one for it if there is room and
    /// the starts under way do not already cover the callers waiting.
    pub fn grow_for_waiter(&mut self, parent: &CancellationToken) -> Option<StartTicket> {
        if self.starts.len() > self.waiters.len() {
            return None;
        }
        self.begin_start(None, false, parent)
    }

    /// Forget session `key`: its next call starts a new session on any
    /// worker. Whether it was remembered.
    pub fn forget_session(&mut self, key: &AffinityKey) -> bool {
        self.sessions.forget(key)
    }

    /// Turn a caller away because `max_waiters` are waiting; how many are.
    pub fn reject(&mut self) -> usize {
        self.totals.rejected += 1;
        self.waiting()
    }

    /// Queue `caller`, woken through `waker`; returns its cell.
    pub fn push_waiter(&mut self, waker: &Waker, caller: Caller<'_>) -> usize {
        let cell = self.cells.open(waker);
        let key = self.waiters.push(Waiter::new(cell, caller));
        self.cells.set_place(cell, Place::General(key));
        cell
    }

    /// Queue `caller` for its session's busy worker `owner`; returns its
    /// cell.
    pub fn pin_waiter(&mut self, waker: &Waker, caller: Caller<'_>, owner: WorkerId) -> usize {
        let cell = self.cells.open(waker);
        match self.sessions.pin(owner, Waiter::new(cell, caller)) {
            Ok(key) => self.cells.set_place(cell, Place::Pinned(owner, key)),
            // Not a session worker (unreachable: routed under this lock).
            Err(waiter) => self.requeue(waiter),
        }
        cell
    }

    /// A waiting caller is polled: its outcome, if one was left in its cell.
    pub fn collect(&mut self, cell: usize, waker: &Waker) -> Option<Grant<Wk>> {
        self.cells.collect(cell, waker)
    }

    /// Take the caller of `cell` out of whichever queue it is in.
    fn unqueue(&mut self, cell: usize) -> Option<Waiter> {
        match self.cells.place(cell)? {
            Place::General(key) => self.waiters.remove(key),
            Place::Pinned(owner, key) => self.sessions.unpin(owner, key),
        }
    }

    /// A waiting caller gives up (its future dropped): out of its queue, or,
    /// if it was already left a worker, that worker goes to the next waiter
    /// (whose waker is returned) or the idle queue.
    pub fn abandon_waiter(&mut self, cell: usize) -> Option<Waker> {
        self.unqueue(cell);
        match self.cells.close(cell) {
            Some(Ok((live, at))) => self.hand_off(live, at),
            _ => None,
        }
    }

    /// A waiter's own timer fired: out of its queue, counted as a checkout
    /// timeout, and the error it gets. `None` if it was already left an
    /// outcome, which it then collects.
    pub fn time_out_waiter(&mut self, cell: usize) -> Option<Error<Wk::Error>> {
        let waiter = self.unqueue(cell)?;
        self.cells.close(cell);
        self.totals.checkout_timeouts += 1;
        self.totals.timeouts += 1;
        Some(Error::CheckoutTimeout {
            waited: waiter.arrival().elapsed(),
            last_start_error: self.last_start_error.clone(),
        })
    }

    /// A hint caller waited long enough for its session's worker: it takes
    /// an idle worker if there is one (left in its cell, to collect now), or
    /// joins the general queue, with a start for it if one is wanted.
    pub fn give_up_hint(&mut self, cell: usize, parent: &CancellationToken) -> Option<StartTicket> {
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
    fn requeue(&mut self, waiter: Waiter) {
        if let Some(live) = self.take_idle(waiter.caller()) {
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
        self.totals.checkout_timeouts += n as u64;
        self.totals.timeouts += n as u64;
        n
    }

    /// Leave `err` for a waiter already out of its queue, and wake it (a
    /// rare path: under the lock).
    fn fail_waiter(&mut self, waiter: Waiter, err: Error<Wk::Error>) {
        if let Some(waker) = self.cells.deposit(waiter.cell(), Err(err)) {
            waker.wake();
        }
    }

    /// Give a busy worker, free since `at`, to the next waiter (whose
    /// waker is returned, to be woken once the lock is released), or make it
    /// idle. A session worker serves the callers waiting for it first.
    #[inline(always)]
    pub fn hand_off(&mut self, live: Live<Wk>, at: Stamp) -> Option<Waker> {
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
    fn hand_off_in_session(
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
    fn admit(&mut self, waiter: Waiter, live: &mut Live<Wk>, at: Stamp) -> Option<usize> {
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
                    self.totals.affinity_lost += 1;
                    self.fail_waiter(waiter, Error::AffinityLost { key, reason });
                    return None;
                }
                _ => {}
            }
        }
        self.bind(&a.key, &mut live.meta, at);
        Some(cell)
    }

    /// Tell every waiter it will not be served.
    fn fail_waiters(&mut self, err: impl Fn() -> Error<Wk::Error>) {
        let mut all = self.waiters.take_first(usize::MAX);
        all.extend(self.sessions.take_pinned(&mut |_| true));
        for waiter in all {
            self.fail_waiter(waiter, err());
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
        if live.meta.affine {
            self.sessions_lost(&live.meta, reason.loss());
        }
        Leaving { live, reason }
    }

    /// A session worker leaves: its keys are lost. Strict callers waiting
    /// for it fail with `AffinityLost`; hint callers wait on as any caller.
    fn sessions_lost(&mut self, meta: &Meta, loss: AffinityLoss) {
        for waiter in self.sessions.worker_left(meta, loss) {
            match waiter.affinity() {
                Some(a) if a.mode.is_strict() => {
                    let key = a.key.clone();
                    self.totals.affinity_lost += 1;
                    self.fail_waiter(waiter, Error::AffinityLost { key, reason: loss });
                }
                _ if self.closed => self.fail_waiter(waiter, Error::Closed),
                _ => self.requeue(waiter),
            }
        }
    }

    /// Take out of the idle queue, in serving order, up to `limit` workers
    /// `pred` picks; session workers among them are no longer idle.
    fn take_idle_where(
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
        self.last_start_error = None;
        self.busy += 1;
        if self.closed {
            fx.stop.push(self.leave_busy(live, StopReason::AfterClose));
            return fx;
        }
        if let Some(old) = start.replaces {
            if let Some(replaced) = self.retiring.get_mut(&old) {
                *replaced = true;
                let found = self.take_idle_where(1, &mut |l| l.meta.id == old);
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
            start.failing = true;
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
            if let Some(live) = self.take_idle_where(1, &mut |_| true).pop() {
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
        let taken = self.take_idle_where(n.min(self.size), &mut |_| true);
        self.size -= taken.len();
        taken
            .into_iter()
            .map(|live| self.leave(live, StopReason::Removed))
            .collect()
    }

    /// Take out every idle worker `drop_it` picks.
    pub fn remove_idle_where(
        &mut self,
        drop_it: &mut dyn FnMut(&Live<Wk>) -> bool,
    ) -> Vec<Leaving<Wk>> {
        let out = self.take_idle_where(usize::MAX, &mut |l| drop_it(l));
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
        self.sessions.expire(now);
        let broken = self.take_idle_where(usize::MAX, &mut |l| l.worker.is_broken());
        self.busy += broken.len();
        let excess = self.settled_live().saturating_sub(self.size);
        let idle_too_long = self.take_idle_where(excess, &mut |l| {
            now.since(l.meta.idle_since) >= overflow_idle
        });
        for live in idle_too_long {
            fx.stop.push(self.leave(live, StopReason::IdleOverflow));
        }
        let due = match health {
            Some(every) => self.take_idle_where(usize::MAX, &mut |l| {
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
        let idle = self.take_idle_where(usize::MAX, &mut |_| true);
        idle.into_iter()
            .map(|live| self.leave(live, StopReason::Closed))
            .collect()
    }
}
