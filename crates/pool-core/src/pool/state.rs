//! The pool's state, guarded by one mutex, and the tokens that keep its
//! counts honest.
//!
//! Every live worker (starting, idle or busy) holds exactly one [`Slot`]. A
//! slot can only be made by [`State::take_slot`] and only be given up by
//! [`State::free_slot`], and it moves with its worker: from the start task into
//! the [`Live`] record, from a crashed worker to its replacement. So "live
//! workers never exceed capacity" is a property of who holds slots, not of
//! counters kept in step by hand; [`State::check`] verifies the counters
//! against the slots.
//!
//! A worker is in exactly one place: the idle queue, a caller's
//! [`Checkout`](crate::Checkout) (or an internal recycle, counted busy), or a
//! start task (counted starting). Hand-offs happen under the lock, so there is
//! no instant at which a worker is in two places or none.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::error::{Error, StartError};
use crate::queue::{Priority, Queue, Strategy};
use crate::status::{Metrics, Totals};
use crate::worker::{Worker, WorkerId};

/// The proof that one unit of capacity is in use. Not `Clone`, not `Copy`;
/// only `State` makes and ends them.
#[derive(Debug)]
pub(crate) struct Slot(());

/// What a waiter is sent: a worker (already counted busy) with the instant
/// it was handed over — the end of the caller's wait, stamped by the giver so
/// the waiter need not read the clock — or the reason it will never get one.
pub(crate) type Grant<Wk> = Result<(Live<Wk>, Instant), Error<<Wk as Worker>::Error>>;

/// A waiting caller, as the waiter queue holds it.
pub(crate) struct Waiter<Wk: Worker> {
    tx: oneshot::Sender<Grant<Wk>>,
    /// When it called `get`.
    asked: Instant,
    /// When it gives up: the maintenance tick turns it away with `Timeout`.
    deadline: Instant,
}

/// A worker promised to a waiter under the lock, to be sent after the lock
/// is released: sending wakes the waiter's task, and doing that under the
/// lock would make every other caller wait for the wake-up.
#[must_use = "a waiter popped from the queue must be sent its worker"]
pub(crate) struct Delivery<Wk: Worker> {
    tx: oneshot::Sender<Grant<Wk>>,
    live: Live<Wk>,
    at: Instant,
}

impl<Wk: Worker> Delivery<Wk> {
    /// Send the worker; if the waiter gave up meanwhile, get it back.
    pub fn send(self) -> Result<(), (Live<Wk>, Instant)> {
        match self.tx.send(Ok((self.live, self.at))) {
            Err(Ok(back)) => Err(back),
            _ => Ok(()),
        }
    }
}

/// What the pool remembers about a worker besides the worker itself.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: WorkerId,
    pub pid: Option<u32>,
    pub started: Instant,
    pub started_unix_ms: u64,
    pub tasks: u64,
    /// When a caller last gave it back (or it started): overflow retirement
    /// counts from here.
    pub idle_since: Instant,
    /// When it last passed a health check (or started).
    pub checked_at: Instant,
    /// It asked to be replaced; a replacement is starting or has arrived.
    pub retiring: bool,
}

impl Meta {
    pub fn new(id: WorkerId, pid: Option<u32>) -> Self {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Meta {
            id,
            pid,
            started: now,
            started_unix_ms: unix,
            tasks: 0,
            idle_since: now,
            checked_at: now,
            retiring: false,
        }
    }
}

/// A running worker with its record and its slot.
pub(crate) struct Live<Wk> {
    pub worker: Wk,
    pub meta: Meta,
    pub slot: Slot,
}

/// A worker taken out of service whose slot was already given back: all
/// that is left is to shut it down.
pub(crate) struct Leaving<Wk> {
    pub worker: Wk,
    pub meta: Meta,
}

/// Everything the pool's mutex guards.
pub(crate) struct State<Wk: Worker, I: Strategy, W: Strategy> {
    pub idle: I::Queue<Live<Wk>>,
    pub waiters: W::Queue<Waiter<Wk>>,
    /// Warm size (changed by `resize`).
    pub size: usize,
    pub max_overflow: usize,
    /// Slots handed out: the number of live workers.
    slots: usize,
    /// Start tasks running (including those in backoff after a failure).
    pub starting: usize,
    /// Start tasks whose last attempt failed, now waiting to retry.
    pub failing: usize,
    /// Workers out of the idle queue: checked out, or being recycled.
    pub busy: usize,
    /// Workers that asked to be replaced and still serve until their
    /// replacement arrives. Each one allows one slot over capacity.
    pub retiring: usize,
    /// Replacements that arrived for retiring workers that were busy then:
    /// that many retiring workers stop at their next return.
    pub retire_debt: usize,
    /// Workers shutting down (they no longer hold a slot).
    pub stopping: usize,
    pub closed: bool,
    pub last_start_error: Option<Arc<StartError<Wk::Error>>>,
    /// Recent restarts, for the crash-loop budget.
    pub restarts: VecDeque<Instant>,
    pub totals: Totals,
    pub metrics: Metrics,
}

impl<Wk: Worker, I: Strategy, W: Strategy> State<Wk, I, W> {
    pub fn new(size: usize, max_overflow: usize) -> Self {
        State {
            idle: Default::default(),
            waiters: Default::default(),
            size,
            max_overflow,
            slots: 0,
            starting: 0,
            failing: 0,
            busy: 0,
            retiring: 0,
            retire_debt: 0,
            stopping: 0,
            closed: false,
            last_start_error: None,
            restarts: VecDeque::new(),
            totals: Totals::default(),
            metrics: Metrics::default(),
        }
    }

    /// Claim one unit of capacity for a worker that is about to start.
    pub fn take_slot(&mut self) -> Slot {
        self.slots += 1;
        self.starting += 1;
        Slot(())
    }

    /// Pass the slot of a worker that left `busy` to its replacement.
    pub fn reuse_slot(&mut self, slot: Slot) -> Slot {
        self.starting += 1;
        slot
    }

    /// Give one unit of capacity back.
    pub fn free_slot(&mut self, slot: Slot) {
        let Slot(()) = slot;
        self.slots -= 1;
    }

    /// Take a worker out of service for good: under the same lock that took
    /// it out of the idle queue (or out of `busy`), its slot is given back,
    /// it counts as stopping, and, if it was retiring, no longer as retiring.
    /// So no snapshot sees a worker in no place or in two.
    pub fn release(&mut self, live: Live<Wk>) -> Leaving<Wk> {
        let Live { worker, meta, slot } = live;
        self.free_slot(slot);
        self.stopping += 1;
        if meta.retiring {
            self.retiring -= 1;
            self.retire_debt = self.retire_debt.min(self.retiring);
        }
        Leaving { worker, meta }
    }

    /// [`release`](Self::release) each of `lives`.
    pub fn release_all(&mut self, lives: Vec<Live<Wk>>) -> Vec<Leaving<Wk>> {
        lives.into_iter().map(|l| self.release(l)).collect()
    }

    /// Live workers, the retiring ones' surplus not counted.
    pub fn live(&self) -> usize {
        self.slots - self.retiring.min(self.slots)
    }

    /// Live workers, including those serving until their replacement is up.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The most workers allowed at once (not counting retiring surplus).
    pub fn capacity(&self) -> usize {
        self.size + self.max_overflow
    }

    /// No worker is up and every start is failing: no waiter can be served
    /// until a start succeeds.
    pub fn nobody_can_serve(&self) -> bool {
        self.idle.is_empty() && self.busy == 0 && self.starting > 0 && self.failing == self.starting
    }

    /// Whether a caller that found no idle worker should start one: there is
    /// room, and the starts already running do not cover the callers waiting.
    pub fn should_grow(&self) -> bool {
        !self.closed && self.live() < self.capacity() && self.starting <= self.waiters.len()
    }

    /// Give a busy worker, free since `at`, to the first waiter (the
    /// returned delivery, sent once the lock is released), or make it idle.
    pub fn hand_off(&mut self, live: Live<Wk>, at: Instant) -> Option<Delivery<Wk>> {
        if let Some(waiter) = self.waiters.pop() {
            return Some(Delivery {
                tx: waiter.tx,
                live,
                at,
            });
        }
        self.busy -= 1;
        self.idle.push(live, 0);
        None
    }

    /// Turn away every waiter whose deadline has passed; returns how many.
    pub fn expire_waiters(&mut self, now: Instant) -> usize {
        let expired = self
            .waiters
            .extract(&mut |w: &mut Waiter<Wk>| w.deadline <= now);
        let n = expired.len();
        for waiter in expired {
            let _ = waiter.tx.send(Err(Error::Timeout {
                waited: now.duration_since(waiter.asked),
                last_start_error: self.last_start_error.clone(),
            }));
        }
        self.totals.checkout_timeouts += n as u64;
        self.totals.timeouts += n as u64;
        n
    }

    /// Count one ended checkout.
    pub fn record(&mut self, served: super::shared::Served) {
        self.totals.served += 1;
        self.metrics.record(served.waited, served.ran);
    }

    /// Tell every waiter it will not be served.
    pub fn fail_waiters(&mut self, err: impl Fn() -> Error<Wk::Error>) -> usize {
        let mut n = 0;
        while let Some(waiter) = self.waiters.pop() {
            let _ = waiter.tx.send(Err(err()));
            n += 1;
        }
        n
    }

    /// Record one restart against the crash budget; returns how long the
    /// restart must wait for the budget to have room.
    pub fn restart_delay(&mut self, budget: crate::CrashBudget) -> Duration {
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

    /// Whether the crash budget is spent for the current window: the next
    /// restart will be held back.
    pub fn crash_looping(&self, budget: crate::CrashBudget) -> bool {
        let now = Instant::now();
        let recent = self
            .restarts
            .iter()
            .filter(|t| t.checked_add(budget.window).is_some_and(|end| end > now))
            .count();
        recent >= budget.max_restarts as usize
    }

    /// The counters must agree with the slots and the queues.
    pub fn check(&self) -> Result<(), String> {
        let placed = self.starting + self.idle.len() + self.busy;
        if self.slots != placed {
            return Err(format!(
                "slots {} != starting {} + idle {} + busy {}",
                self.slots,
                self.starting,
                self.idle.len(),
                self.busy
            ));
        }
        if self.failing > self.starting {
            return Err(format!(
                "failing {} > starting {}",
                self.failing, self.starting
            ));
        }
        if self.retire_debt > self.retiring {
            return Err(format!(
                "retire_debt {} > retiring {}",
                self.retire_debt, self.retiring
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

    /// Queue a caller that asked at `asked` and waits until `deadline`.
    pub fn push_waiter(
        &mut self,
        tx: oneshot::Sender<Grant<Wk>>,
        asked: Instant,
        deadline: Instant,
        priority: Priority,
    ) -> crate::QueueKey {
        self.waiters.push(
            Waiter {
                tx,
                asked,
                deadline,
            },
            priority,
        )
    }
}
