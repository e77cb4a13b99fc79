//! What queues hold and see: [`IdleWorker`] and [`Waiter`] entries, and the
//! [`Caller`] an idle queue picks a worker for.
//!
//! Entries are opaque: a queue reads them through the accessors here and
//! cannot reach the worker or change what the pool keeps about it. So a
//! queue of your own can order by anything the pool knows, and break
//! nothing but the order.

use std::time::Duration;

use crate::affinity::{Affinity, AffinityKey};
use crate::clock::Stamp;
use crate::live::Live;
use crate::worker::WorkerId;

/// A per-request priority level. Higher is served first; the default is 0.
/// (The strategy that orders by it is `cenote_strategies::Priority`.)
pub type PriorityLevel = i32;

/// The number of a waiter's cell: a `u32`, as no pool holds 4 billion
/// waiters (the slab refuses to grow past it), so a [`Waiter`]
/// carries it beside its priority in 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CellId(u32);

impl CellId {
    /// Cell `n` (for queues built by hand, in tests and the conformance
    /// kit).
    pub(crate) const fn new(n: u32) -> Self {
        CellId(n)
    }

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }

    /// The number, for what shows entries (tests, conformance).
    #[cfg(any(test, feature = "conformance"))]
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

/// An idle worker, as an idle queue holds and sees it.
pub struct IdleWorker<W>(pub(crate) Live<W>);

impl<W> IdleWorker<W> {
    /// The worker's id in its pool.
    #[inline]
    pub fn id(&self) -> WorkerId {
        self.0.meta.id
    }

    /// Its OS process id, where it has one.
    #[inline]
    pub fn pid(&self) -> Option<u32> {
        self.0.meta.pid
    }

    /// Tasks it has served.
    #[inline]
    pub fn tasks_served(&self) -> u64 {
        self.0.meta.tasks
    }

    /// When it joined the pool.
    #[inline]
    pub fn started(&self) -> Stamp {
        self.0.meta.started
    }

    /// When it last became free (or started).
    #[inline]
    pub fn idle_since(&self) -> Stamp {
        self.0.meta.idle_since
    }

    /// The session keys it holds: the sessions whose calls it served last.
    #[inline]
    pub fn affinity_keys(&self) -> impl Iterator<Item = &AffinityKey> {
        self.0.meta.keys.iter()
    }

    /// Whether it holds session `key`.
    #[inline]
    pub fn holds(&self, key: &AffinityKey) -> bool {
        self.0.meta.keys.contains(key)
    }
}

impl<W> std::fmt::Debug for IdleWorker<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWorker")
            .field("id", &self.id())
            .field("tasks_served", &self.tasks_served())
            .field("affinity_keys", &self.0.meta.keys)
            .finish()
    }
}

/// One checkout as queues see it: its priority, when it asked, when it
/// gives up, and the session it belongs to. An idle queue is told the
/// caller it picks a worker for; a [`Waiter`] is a caller that found none.
/// A view: cheap to copy, borrowing the caller's session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub(crate) arrival: Stamp,
    pub(crate) timeout: Duration,
    pub(crate) priority: PriorityLevel,
    pub(crate) affinity: Option<&'a Affinity>,
}

impl<'a> Caller<'a> {
    /// A caller that asked at `arrival` and waits at most `timeout` for a
    /// worker, with priority 0 and no session.
    #[inline]
    pub fn new(arrival: Stamp, timeout: Duration) -> Self {
        Caller {
            arrival,
            timeout,
            priority: 0,
            affinity: None,
        }
    }

    /// The same caller with priority `priority`.
    #[inline]
    pub fn with_priority(mut self, priority: PriorityLevel) -> Self {
        self.priority = priority;
        self
    }

    /// The same caller in session `affinity` (or in none).
    #[inline]
    pub fn with_affinity<'b>(self, affinity: Option<&'b Affinity>) -> Caller<'b> {
        Caller {
            arrival: self.arrival,
            timeout: self.timeout,
            priority: self.priority,
            affinity,
        }
    }

    /// Its priority (higher is more urgent).
    #[inline]
    pub fn priority(&self) -> PriorityLevel {
        self.priority
    }

    /// When it asked for a worker.
    #[inline]
    pub fn arrival(&self) -> Stamp {
        self.arrival
    }

    /// When it gives up waiting (`CheckoutTimeout`).
    #[inline]
    pub fn deadline(&self) -> Stamp {
        self.arrival + self.timeout
    }

    /// How long it waits at most.
    #[inline]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Its session key and mode, if it has a session.
    #[inline]
    pub fn affinity(&self) -> Option<&'a Affinity> {
        self.affinity
    }
}

/// A waiting caller, as a waiter queue holds it: the [`Caller`] it was,
/// owning its session key while it waits.
///
/// Kept small (40 bytes): queues move it on every push and pop, so the
/// rare session key is boxed and the deadline stored rather than derived.
#[derive(Debug)]
pub struct Waiter {
    /// Its cell, where the pool leaves its outcome (see `pool::handoff`):
    /// a `u32` beside the priority, as no pool holds 4 billion waiters.
    cell: CellId,
    priority: PriorityLevel,
    arrival: Stamp,
    deadline: Stamp,
    affinity: Option<Box<Affinity>>,
}

impl Waiter {
    /// Caller `caller`, waiting with its outcome to be left in `cell`.
    #[inline]
    pub(crate) fn new(cell: CellId, caller: Caller<'_>) -> Self {
        Waiter {
            cell,
            arrival: caller.arrival,
            deadline: caller.deadline(),
            priority: caller.priority,
            affinity: caller.affinity.map(|a| Box::new(a.clone())),
        }
    }

    /// Its cell.
    #[inline]
    pub(crate) fn cell(&self) -> CellId {
        self.cell
    }

    /// The caller that waits.
    #[inline]
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            arrival: self.arrival,
            timeout: self.deadline.since(self.arrival),
            priority: self.priority,
            affinity: self.affinity.as_deref(),
        }
    }

    /// Its priority (higher is more urgent).
    #[inline]
    pub fn priority(&self) -> PriorityLevel {
        self.priority
    }

    /// When it asked for a worker.
    #[inline]
    pub fn arrival(&self) -> Stamp {
        self.arrival
    }

    /// When it gives up waiting (`CheckoutTimeout`).
    #[inline]
    pub fn deadline(&self) -> Stamp {
        self.deadline
    }

    /// Its session key and mode, if it has a session.
    #[inline]
    pub fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_deref()
    }
}
