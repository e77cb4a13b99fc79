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
use crate::pool::Live;
use crate::queue::PriorityLevel;
use crate::worker::WorkerId;

/// An idle worker, as an idle queue holds and sees it.
pub struct IdleWorker<W>(pub(crate) Live<W>);

impl<W> IdleWorker<W> {
    /// The worker's id in its pool.
    pub fn id(&self) -> WorkerId {
        self.0.meta.id
    }

    /// Its OS process id, where it has one.
    pub fn pid(&self) -> Option<u32> {
        self.0.meta.pid
    }

    /// Tasks it has served.
    pub fn tasks_served(&self) -> u64 {
        self.0.meta.tasks
    }

    /// When it joined the pool.
    pub fn started(&self) -> Stamp {
        self.0.meta.started
    }

    /// When it last became free (or started).
    pub fn idle_since(&self) -> Stamp {
        self.0.meta.idle_since
    }

    /// The session keys it holds: the sessions whose calls it served last.
    pub fn affinity_keys(&self) -> &[AffinityKey] {
        &self.0.meta.keys
    }

    /// Whether it holds session `key`.
    pub fn holds(&self, key: &AffinityKey) -> bool {
        self.0.meta.keys.contains(key)
    }
}

impl<W> std::fmt::Debug for IdleWorker<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWorker")
            .field("id", &self.id())
            .field("tasks_served", &self.tasks_served())
            .field("affinity_keys", &self.affinity_keys())
            .finish()
    }
}

/// One checkout as queues see it: its priority, when it asked, when it
/// gives up, and the session it belongs to. An idle queue is told the
/// caller it picks a worker for; a waiter is a caller that found none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    arrival: Stamp,
    timeout: Duration,
    priority: PriorityLevel,
    affinity: Option<Affinity>,
}

impl Caller {
    /// A caller that asked at `arrival` and waits at most `timeout` for a
    /// worker, with priority 0 and no session.
    pub fn new(arrival: Stamp, timeout: Duration) -> Self {
        Caller {
            arrival,
            timeout,
            priority: 0,
            affinity: None,
        }
    }

    /// The same caller with priority `priority`.
    pub fn with_priority(mut self, priority: PriorityLevel) -> Self {
        self.priority = priority;
        self
    }

    /// The same caller in a session (or in none).
    pub fn with_affinity(mut self, affinity: Option<Affinity>) -> Self {
        self.affinity = affinity;
        self
    }

    /// Its priority (higher is more urgent).
    pub fn priority(&self) -> PriorityLevel {
        self.priority
    }

    /// When it asked for a worker.
    pub fn arrival(&self) -> Stamp {
        self.arrival
    }

    /// When it gives up waiting (`CheckoutTimeout`).
    pub fn deadline(&self) -> Stamp {
        self.arrival.add(self.timeout)
    }

    /// How long it waits at most.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Its session key and mode, if it has a session.
    pub fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_ref()
    }
}

/// A waiting caller, as a waiter queue holds it. Its accessors are the
/// [`Caller`]'s (through `Deref`).
#[derive(Debug)]
pub struct Waiter {
    /// Its cell, where the pool leaves its outcome (see `pool::handoff`).
    pub(crate) cell: usize,
    pub(crate) caller: Caller,
}

impl std::ops::Deref for Waiter {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}
