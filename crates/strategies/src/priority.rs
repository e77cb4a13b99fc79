//! `Priority`: highest priority first, arrival order among equals.

use std::cmp::Reverse;

use cenote_core::{Entry, IdleStrategy, IdleWorker, PriorityLevel, WaitStrategy, Waiter};

use crate::ranked::{Rank, RankedQueue};

/// Serves the highest priority first; entries of equal priority in arrival
/// order (FIFO). Priorities come per request (`CheckoutOptions::priority`,
/// `CallOptions::priority`); idle workers all carry 0, so as an idle
/// strategy it behaves like [`Fifo`](crate::Fifo).
#[derive(Debug, Clone, Copy, Default)]
pub struct Priority;

/// Ranks entries by priority, highest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByPriority;

impl<T: Entry> Rank<T> for ByPriority {
    type Rank = Reverse<PriorityLevel>;

    fn rank(entry: &T) -> Self::Rank {
        Reverse(entry.priority())
    }
}

/// The queue [`Priority`] uses.
pub type PriorityQueue<T> = RankedQueue<T, ByPriority>;

impl IdleStrategy for Priority {
    type Queue<W: Send + 'static> = PriorityQueue<IdleWorker<W>>;
    const NAME: &'static str = "priority";
}

impl WaitStrategy for Priority {
    type Queue = PriorityQueue<Waiter>;
    const NAME: &'static str = "priority";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_entry::Item;
    use cenote_core::Queue;

    #[test]
    fn higher_first_then_arrival_order() {
        let mut q = PriorityQueue::default();
        for (id, prio) in [(0, 0), (1, 5), (2, 0), (3, 5), (4, -1)] {
            q.push(Item::new(id).priority(prio));
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop(None)).map(|e| e.id).collect();
        assert_eq!(order, vec![1, 3, 0, 2, 4]);
    }

    #[test]
    fn remove_by_key_finds_the_right_class_and_claims_win() {
        let mut q = PriorityQueue::default();
        let lo = q.push(Item::new(0).priority(1));
        let hi = q.push(Item::new(1).priority(9));
        q.push(Item::new(2).priority(3));
        assert_eq!(q.remove(hi).map(|e| e.id), Some(1));
        assert!(q.remove(hi).is_none());
        assert_eq!(q.pop(Some(0)).map(|e| e.id), Some(0), "claimed beats rank");
        assert!(q.remove(lo).is_none());
        assert_eq!(q.pop(None).map(|e| e.id), Some(2));
        assert!(q.is_empty());
    }
}
