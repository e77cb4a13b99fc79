//! `Fifo` and `Lifo`: one map in arrival order, read from either end.

use std::collections::BTreeMap;

use cenote_core::{Priority as Prio, Queue, QueueKey, Strategy};

/// Entries in arrival order; `FROM_BACK` picks the end `pop` reads. The queue
/// behind both [`Fifo`] and [`Lifo`].
#[derive(Debug)]
pub struct OrderedQueue<T, const FROM_BACK: bool> {
    entries: BTreeMap<u64, T>,
    next_seq: u64,
}

impl<T, const FROM_BACK: bool> Default for OrderedQueue<T, FROM_BACK> {
    fn default() -> Self {
        OrderedQueue {
            entries: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

/// The queue [`Fifo`] uses.
#[cfg(feature = "fifo")]
pub type FifoQueue<T> = OrderedQueue<T, false>;

/// The queue [`Lifo`] uses.
#[cfg(feature = "lifo")]
pub type LifoQueue<T> = OrderedQueue<T, true>;

/// First in, first out: the oldest entry is served first.
#[cfg(feature = "fifo")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

#[cfg(feature = "fifo")]
impl Strategy for Fifo {
    type Queue<T: Send + 'static> = FifoQueue<T>;
    const NAME: &'static str = "fifo";
}

/// Last in, first out: the newest entry is served first.
#[cfg(feature = "lifo")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifo;

#[cfg(feature = "lifo")]
impl Strategy for Lifo {
    type Queue<T: Send + 'static> = LifoQueue<T>;
    const NAME: &'static str = "lifo";
}

impl<T: Send + 'static, const FROM_BACK: bool> Queue<T> for OrderedQueue<T, FROM_BACK> {
    fn push(&mut self, item: T, priority: Prio) -> QueueKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(seq, item);
        QueueKey { seq, priority }
    }

    fn pop(&mut self) -> Option<T> {
        let entry = if FROM_BACK {
            self.entries.pop_last()
        } else {
            self.entries.pop_first()
        };
        entry.map(|(_, item)| item)
    }

    fn remove(&mut self, key: QueueKey) -> Option<T> {
        self.entries.remove(&key.seq)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn extract(&mut self, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
        let chosen: Vec<u64> = self
            .entries
            .iter_mut()
            .filter_map(|(seq, item)| pred(item).then_some(*seq))
            .collect();
        let mut out: Vec<T> = chosen
            .into_iter()
            .filter_map(|seq| self.entries.remove(&seq))
            .collect();
        if FROM_BACK {
            out.reverse();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_lifo_read_opposite_ends() {
        let mut f = OrderedQueue::<u32, false>::default();
        let mut l = OrderedQueue::<u32, true>::default();
        for i in 0..5 {
            f.push(i, 0);
            l.push(i, 0);
        }
        let f_order: Vec<_> = std::iter::from_fn(|| f.pop()).collect();
        let l_order: Vec<_> = std::iter::from_fn(|| l.pop()).collect();
        assert_eq!(f_order, vec![0, 1, 2, 3, 4]);
        assert_eq!(l_order, vec![4, 3, 2, 1, 0]);
    }

    #[test]
    fn removed_entry_is_gone_and_key_is_not_reused() {
        let mut f = OrderedQueue::<&str, false>::default();
        let a = f.push("a", 0);
        let b = f.push("b", 0);
        assert_eq!(f.remove(a), Some("a"));
        assert_eq!(f.remove(a), None);
        let c = f.push("c", 0);
        assert_ne!(a, c);
        assert_eq!(f.len(), 2);
        assert_eq!(f.remove(b), Some("b"));
        assert_eq!(f.pop(), Some("c"));
        assert!(f.is_empty());
    }

    #[test]
    fn extract_keeps_serving_order_and_the_rest() {
        let mut l = OrderedQueue::<u32, true>::default();
        for i in 0..6 {
            l.push(i, 0);
        }
        let even = l.extract(&mut |x| *x % 2 == 0);
        assert_eq!(even, vec![4, 2, 0]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.pop(), Some(5));
    }
}
