//! The [`Queue`] contract, which orders both a pool's idle workers and its
//! waiting callers, and the two strategy families that name queues for a
//! pool: [`IdleStrategy`] and [`WaitStrategy`].
//!
//! A queue holds entries it cannot look inside except through their
//! read-only accessors: an idle worker ([`IdleWorker`]: id, pid, tasks
//! served, start, idle since, the session keys it holds) or a waiting caller
//! ([`Waiter`]: priority, arrival, deadline, session key). When it picks an
//! idle worker it is told the caller it picks for ([`Caller`]).
//!
//! What every queue must do (the conformance suite, feature `conformance`,
//! checks each point on a queue of your own):
//!
//! * every entry pushed comes out exactly once: by `pop`, `remove`,
//!   `take_first` or `take_matching`;
//! * `remove` by a key works after any interleaving of operations, and a
//!   key whose entry already left removes nothing (even if its slot was
//!   reused);
//! * `len` is always the number of entries queued;
//! * nothing stays behind when an entry leaves: a queue must not keep an
//!   entry (or a tombstone for it) until a later pop. That is what lets a
//!   waiter that gives up (dropped future, timeout) leave at once, so
//!   100,000 cancelled waiters cost nothing afterwards;
//! * `pop` returns the entry its request claims ([`Entry::claimed_by`]) when
//!   one is queued: for idle workers, the one holding the caller's session
//!   key. The pool has promised that caller its session's worker.

pub use crate::entry::PriorityLevel;
use crate::entry::{Caller, IdleWorker, Waiter};

/// What a queue holds: [`IdleWorker`] or [`Waiter`]. Generic queues (FIFO,
/// LIFO, priority) use only this; queues for one kind of entry read that
/// kind's accessors.
pub trait Entry: Send + 'static {
    /// What `pop` is told about whom it serves: for idle workers the
    /// [`Caller`] that will get the worker, for waiters nothing (`()`).
    type Request<'a>: Copy;

    /// The priority the entry carries: a waiter's request priority; 0 for
    /// idle workers.
    fn priority(&self) -> PriorityLevel;

    /// Whether `req` asks for one entry in particular (a caller with a
    /// session key). A cheap test, so `pop` searches only when it must.
    fn claims(req: Self::Request<'_>) -> bool;

    /// Whether `req` asks for this entry (an idle worker holding the
    /// caller's session key).
    fn claimed_by(&self, req: Self::Request<'_>) -> bool;
}

/// An ordering of entries: which comes out first is the strategy. See the
/// module docs for what every implementation must guarantee.
pub trait Queue<T: Entry>: Default + Send + 'static {
    /// The handle `push` gives back, valid until its entry leaves; the
    /// queue's own choice (a slab slot with a sequence number, a map key...).
    type Key: Copy + Eq + std::fmt::Debug + Send + Sync + 'static;

    /// Add an entry.
    fn push(&mut self, entry: T) -> Self::Key;

    /// Take the entry the strategy serves next for `req`: the entry `req`
    /// claims if one is queued, else the strategy's choice.
    fn pop(&mut self, req: T::Request<'_>) -> Option<T>;

    /// Take the entry `key` names, if it is still queued.
    fn remove(&mut self, key: Self::Key) -> Option<T>;

    /// How many entries are queued.
    fn len(&self) -> usize;

    /// Whether the queue is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take out, in serving order, up to `limit` entries for which `pred` is
    /// true (`usize::MAX` for all of them). For maintenance (health checks,
    /// retirement, removal), never on the checkout path. `pred` sees the
    /// entry itself, which only the pool can look inside.
    fn take_matching(&mut self, limit: usize, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T>;

    /// Take out the first `n` entries in serving order (with no request
    /// claiming any): what a shrink or close removes.
    fn take_first(&mut self, n: usize) -> Vec<T> {
        self.take_matching(n, &mut |_| true)
    }
}

/// Names the queue a pool keeps its idle workers in, for any worker type,
/// so a pool is typed `Pool<F, Lifo, Fifo>` rather than by its queues.
pub trait IdleStrategy: Send + Sync + 'static {
    /// The queue of idle workers of type `W`.
    type Queue<W: Send + 'static>: Queue<IdleWorker<W>>;

    /// The strategy's name, for status and registry entries.
    const NAME: &'static str;
}

/// Names the queue a pool keeps its waiting callers in.
pub trait WaitStrategy: Send + Sync + 'static {
    /// The queue of waiting callers.
    type Queue: Queue<Waiter>;

    /// The strategy's name, for status and registry entries.
    const NAME: &'static str;
}

impl<W: Send + 'static> Entry for IdleWorker<W> {
    type Request<'a> = Caller<'a>;

    fn priority(&self) -> PriorityLevel {
        0
    }

    #[inline]
    fn claims(req: Caller<'_>) -> bool {
        req.affinity().is_some()
    }

    fn claimed_by(&self, req: Caller<'_>) -> bool {
        req.affinity().is_some_and(|a| self.holds(&a.key))
    }
}

impl Entry for Waiter {
    type Request<'a> = ();

    fn priority(&self) -> PriorityLevel {
        self.priority()
    }

    #[inline]
    fn claims((): ()) -> bool {
        false
    }

    fn claimed_by(&self, (): ()) -> bool {
        false
    }
}
