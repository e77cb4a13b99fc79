//! The line of items waiting to be sent, and the counts kept beside it:
//! the one place a batcher's state changes, always under its lock.
//!
//! Items wait in a queue of the pool's own wait strategy, as [`Waiter`]s
//! whose cell numbers a slab of what they carry (the item, its budget, the
//! channel its result goes back on). So the strategy that orders the
//! pool's callers orders the items too, with nothing written for batching:
//! FIFO sends the oldest first, `Priority` the most urgent, `Deadline` the
//! nearest deadline. An item that leaves early (its caller gave up) is
//! taken out of the queue and the slab at once, as a waiter is.

use slab::Slab;
use tokio::sync::oneshot;

use super::status::{BatchStatus, Sizes};
use crate::clock::Stamp;
use crate::entry::{Caller, CellId, Waiter};
use crate::pool::CallBudget;
use crate::queue::{PriorityLevel, Queue};

/// An item in line: what it carries until it is sent.
pub(crate) struct Pending<Item, R> {
    pub item: Item,
    pub budget: CallBudget,
    pub reply: oneshot::Sender<R>,
}

/// Why an item could not join the line.
pub(crate) enum Refused {
    /// The batcher has stopped (its pool closed, or every handle dropped).
    Closed,
    /// Over `u32::MAX` items wait already.
    Full(usize),
}

/// Items waiting, in the wait strategy's order, and the batcher's counts.
pub(crate) struct Line<Q: Queue<Waiter>, Item, R> {
    queue: Q,
    pending: Slab<Pending<Item, R>>,
    /// When the oldest item still possibly in line arrived: where a
    /// `max_wait` counts from. Cleared when the line empties.
    oldest: Option<Stamp>,
    closed: bool,
    sizes: Sizes,
    left_before_dispatch: u64,
    dropped_after_dispatch: u64,
}

impl<Q: Queue<Waiter>, Item, R> Line<Q, Item, R> {
    pub(crate) fn new(max_size: usize) -> Self {
        Line {
            queue: Q::default(),
            pending: Slab::new(),
            oldest: None,
            closed: false,
            sizes: Sizes::new(max_size),
            left_before_dispatch: 0,
            dropped_after_dispatch: 0,
        }
    }

    /// Put an item in line; the key takes it out again if its caller
    /// gives up before it is sent.
    pub(crate) fn push(
        &mut self,
        pending: Pending<Item, R>,
        priority: PriorityLevel,
    ) -> Result<Q::Key, Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        let slot = self.pending.vacant_entry();
        let Ok(cell) = u32::try_from(slot.key()) else {
            return Err(Refused::Full(self.pending.len()));
        };
        let budget = pending.budget;
        let caller = Caller::new(budget.asked(), budget.checkout_timeout()).with_priority(priority);
        slot.insert(pending);
        self.oldest.get_or_insert(budget.asked());
        Ok(self.queue.push(Waiter::new(CellId::new(cell), caller)))
    }

    /// Take an item out whose caller gave up before it was sent (dropped
    /// its future, or waited past its checkout timeout). `false` if it had
    /// been sent already.
    pub(crate) fn leave(&mut self, key: Q::Key) -> bool {
        let Some(waiter) = self.queue.remove(key) else {
            return false;
        };
        self.pending.remove(waiter.cell().index());
        self.left_before_dispatch += 1;
        self.emptied();
        true
    }

    /// Take up to `max` items for one batch, in serving order.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Pending<Item, R>> {
        let mut batch = Vec::with_capacity(max.min(self.queue.len()));
        while batch.len() < max {
            let Some(waiter) = self.queue.pop(()) else {
                break;
            };
            batch.push(self.pending.remove(waiter.cell().index()));
        }
        self.emptied();
        batch
    }

    /// Stop taking items, and hand back every one still in line (to be
    /// told why).
    pub(crate) fn close(&mut self) -> Vec<Pending<Item, R>> {
        self.closed = true;
        self.take(usize::MAX)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn oldest(&self) -> Option<Stamp> {
        self.oldest
    }

    /// A batch of `size` items was sent.
    pub(crate) fn sent(&mut self, size: usize) {
        self.sizes.record(size);
    }

    /// `n` results found their callers gone.
    pub(crate) fn dropped(&mut self, n: u64) {
        self.dropped_after_dispatch += n;
    }

    pub(crate) fn status(&self) -> BatchStatus {
        let mut status = BatchStatus {
            waiting: self.queue.len(),
            left_before_dispatch: self.left_before_dispatch,
            dropped_after_dispatch: self.dropped_after_dispatch,
            ..BatchStatus::default()
        };
        self.sizes.report(&mut status);
        status
    }

    fn emptied(&mut self) {
        if self.queue.is_empty() {
            self.oldest = None;
        }
    }
}
