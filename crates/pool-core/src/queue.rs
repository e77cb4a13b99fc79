//! The [`Queue`] contract, which orders both a pool's idle workers and its
//! waiting callers.
//!
//! A queue must remove any entry by the [`QueueKey`] it handed out, in time that
//! does not grow with the queue's length. That is what lets a waiter that gives
//! up (dropped future, timeout) leave at once: no tombstone stays behind until a
//! later pop, so 100,000 cancelled waiters cost nothing afterwards.

/// A per-request priority level. Higher is served first; the default is 0.
/// (The strategy that orders by it is `cenote_strategies::Priority`.)
pub type PriorityLevel = i32;

/// The handle of one entry in a [`Queue`], valid until that entry leaves.
///
/// It carries the entry's sequence number (unique for the queue's life), its
/// priority and its slot, so implementations can find the entry without a
/// side table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueKey {
    /// Unique, increasing per queue: the arrival order.
    pub seq: u64,
    /// The priority the entry was pushed with.
    pub priority: PriorityLevel,
    /// Where the queue keeps the entry; meaningful only to the queue that
    /// made the key (e.g. a slab index), 0 where unused.
    pub slot: usize,
}

/// An ordering of entries: which comes out first is the strategy.
///
/// Implementations live in `cenote-strategies` (`Fifo`, `Lifo`, `Priority`);
/// users may write their own.
pub trait Queue<T>: Default + Send + 'static {
    /// Add an entry. `priority` is ignored by strategies that do not use it.
    fn push(&mut self, item: T, priority: PriorityLevel) -> QueueKey;

    /// Take the entry the strategy serves next.
    fn pop(&mut self) -> Option<T>;

    /// Take the entry `key` names, if it is still queued.
    fn remove(&mut self, key: QueueKey) -> Option<T>;

    /// How many entries are queued.
    fn len(&self) -> usize;

    /// Whether the queue is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take out every entry for which `pred` is true, in serving order.
    /// Used for maintenance (health checks, idle overflow retirement), never on
    /// the checkout path.
    fn extract(&mut self, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T>;
}

/// A strategy names a family of queues, one per entry type, so a pool can be
/// typed `Pool<F, Lifo, Fifo>` rather than by its two concrete queue types.
pub trait Strategy: Send + Sync + 'static {
    /// The queue this strategy uses for entries of type `T`.
    type Queue<T: Send + 'static>: Queue<T>;

    /// The strategy's name, for status and registry entries.
    const NAME: &'static str;
}
