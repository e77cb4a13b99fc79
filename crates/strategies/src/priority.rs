//! `Priority`: highest priority first, arrival order among equals.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use cenote_core::{PriorityLevel as Prio, Queue, QueueKey, Strategy};

/// Serves the highest priority first; entries of equal priority in arrival
/// order (FIFO). Priorities come per request (`call_with_priority`,
/// `get_with_priority`); idle workers all carry 0, so as an idle strategy it
/// behaves like [`Fifo`](crate::Fifo).
#[derive(Debug, Clone, Copy, Default)]
pub struct Priority;

impl Strategy for Priority {
    type Queue<T: Send + 'static> = PriorityQueue<T>;
    const NAME: &'static str = "priority";
}

/// The queue [`Priority`] uses.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    entries: BTreeMap<(Reverse<Prio>, u64), T>,
    next_seq: u64,
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        PriorityQueue {
            entries: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T: Send + 'static> Queue<T> for PriorityQueue<T> {
    fn push(&mut self, item: T, priority: Prio) -> QueueKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert((Reverse(priority), seq), item);
        QueueKey {
            seq,
            priority,
            slot: 0,
        }
    }

    fn pop(&mut self) -> Option<T> {
        self.entries.pop_first().map(|(_, item)| item)
    }

    fn remove(&mut self, key: QueueKey) -> Option<T> {
        self.entries.remove(&(Reverse(key.priority), key.seq))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn extract(&mut self, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
        let chosen: Vec<_> = self
            .entries
            .iter_mut()
            .filter_map(|(k, item)| pred(item).then_some(*k))
            .collect();
        chosen
            .into_iter()
            .filter_map(|k| self.entries.remove(&k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_first_then_arrival_order() {
        let mut q = PriorityQueue::default();
        q.push("a0", 0);
        q.push("b5", 5);
        q.push("c0", 0);
        q.push("d5", 5);
        q.push("e-1", -1);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec!["b5", "d5", "a0", "c0", "e-1"]);
    }

    #[test]
    fn remove_by_key_finds_the_right_class() {
        let mut q = PriorityQueue::default();
        let lo = q.push("lo", 1);
        let hi = q.push("hi", 9);
        assert_eq!(q.remove(hi), Some("hi"));
        assert_eq!(q.remove(hi), None);
        assert_eq!(q.remove(lo), Some("lo"));
        assert!(q.is_empty());
    }
}
