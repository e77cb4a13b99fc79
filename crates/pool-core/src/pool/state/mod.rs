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

mod checkout;
mod crash_guard;
mod lanes;
mod returns;
mod sizing;
mod starts;
mod tally;
mod waiters;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::crash_guard::CrashGuard;
use self::lanes::Lent;
use self::tally::Tally;
use super::handoff::{Cells, Grant, Place};
use super::sessions::{Owner, Route, Sessions};
use crate::affinity::{AffinityKey, AffinityLoss, AffinityMode};
use crate::clock::Stamp;
use crate::config::PoolConfig;
use crate::entry::{Caller, CellId, IdleWorker, Waiter};
use crate::error::{Error, StartError};
use crate::live::{Held, Leaving, Live, Meta, Served, StopReason};
use crate::metrics::Levels;
use crate::queue::{IdleStrategy, Queue, WaitStrategy};
use crate::registry::Load;
use crate::status::Status;
use crate::worker::{Retire, Worker, WorkerId};

/// The key a waiter queue of strategy `W` hands out.
pub(crate) type WaitKey<W> = <<W as WaitStrategy>::Queue as Queue<Waiter>>::Key;

/// A start the state has counted: the only way a new worker can come into
/// the pool. Made only by the state, and consumed by it: the start task
/// hands it back through [`State::arrive`] or [`State::start_ended`], so a
/// start cannot end twice or end one it does not hold.
#[derive(Debug)]
pub(crate) struct StartTicket {
    id: WorkerId,
    /// Cancelled when the pool closes or no longer needs this start.
    cancel: CancellationToken,
}

impl StartTicket {
    /// The id the new worker will carry.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Cancelled when the pool closes or no longer needs this start.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// A start under way, as the state tracks it.
#[derive(Debug)]
struct Start {
    cancel: CancellationToken,
    /// Its attempts that failed in a row; it waits out a backoff before the
    /// next.
    failures: u32,
    /// When its next attempt is due, while it is failing.
    retry_at: Option<Stamp>,
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
    /// Workers out of the idle queue: checked out, being recycled, or with
    /// lanes out.
    busy: usize,
    /// Workers with lanes out (see `lanes`).
    lent: Vec<Lent<Wk>>,
    /// Lanes out, counted until each comes back, its worker gone or not.
    lanes_out: usize,
    /// Workers (and cancelled starts) shutting down.
    stopping: usize,
    /// Workers serving until their warm replacement is up; `true` once it
    /// is, and the worker stops at its next return.
    retiring: HashMap<WorkerId, bool>,
    closed: bool,
    next_id: u64,
    last_start_error: Option<Arc<StartError<Wk::Error>>>,
    crash_guard: CrashGuard,
    tally: Tally,
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
            lent: Vec::new(),
            lanes_out: 0,
            stopping: 0,
            retiring: HashMap::new(),
            closed: false,
            next_id: 1,
            last_start_error: None,
            crash_guard: CrashGuard::new(config.crash_budget),
            tally: Tally::new(&config.name, W::NAME),
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
        self.starts.values().all(|s| s.failures > 0)
    }

    /// No worker is up and every start is failing: no waiter can be served
    /// until a start succeeds.
    #[inline]
    fn nobody_can_serve(&self) -> bool {
        self.idle.is_empty()
            && self.busy == 0
            && !self.starts.is_empty()
            && self.starts.values().all(|s| s.failures > 0)
    }

    /// The start error a caller that waits until `deadline` gets instead
    /// of waiting: when nobody can serve and waiting cannot help, because a
    /// start has failed twice in a row (it keeps failing: an import error,
    /// say), or because no start tries again before `deadline`. One failure
    /// with a retry in time is waited out: it may be transient.
    #[inline]
    pub fn start_error(&self, deadline: Stamp) -> Option<Arc<StartError<Wk::Error>>> {
        // The common case, a worker up, is decided here, inline.
        if !self.nobody_can_serve() {
            return None;
        }
        self.start_error_while_down(deadline)
    }

    #[cold]
    fn start_error_while_down(&self, deadline: Stamp) -> Option<Arc<StartError<Wk::Error>>> {
        let hopeless = self.hopeless()?;
        hopeless(deadline).then(|| self.last_start_error.clone())?
    }

    /// While nobody can serve: which deadlines waiting cannot help (see
    /// [`start_error`](State::start_error)).
    fn hopeless(&self) -> Option<impl Fn(Stamp) -> bool> {
        if !self.nobody_can_serve() {
            return None;
        }
        let keeps_failing = self.starts.values().any(|s| s.failures >= 2);
        let next_try = self.starts.values().filter_map(|s| s.retry_at).min();
        Some(move |deadline: Stamp| keeps_failing || next_try.is_none_or(|at| at >= deadline))
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
    pub fn status(&self, name: &str) -> Status {
        let live = self.live();
        Status {
            name: name.to_string(),
            size: self.size,
            max_overflow: self.max_overflow,
            live,
            idle: self.idle.len(),
            busy: self.busy,
            in_flight: self.in_flight(),
            overflow: live.saturating_sub(self.size),
            starting: self.starts.len(),
            retiring: self.retiring.len(),
            stopping: self.stopping,
            waiting: self.waiting(),
            sessions: self.sessions.len(),
            closed: self.closed,
            crash_looping: self.crash_guard.looping(),
            totals: self.tally.totals(),
            wait: self.tally.wait(),
            run: self.tally.run(),
        }
    }

    /// Set the exported gauges to the levels now (the maintenance tick's
    /// sample; see `crate::metrics`).
    pub fn sample_levels(&self) {
        self.tally.sample(Levels {
            idle: self.idle.len(),
            busy: self.busy,
            starting: self.starts.len(),
            retiring: self.retiring.len(),
            waiting: self.waiting(),
            max: self.capacity(),
        });
    }

    #[cfg(any(test, feature = "testing"))]
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
        self.check_lanes()?;
        self.sessions.check(self.idle.len())
    }
}
