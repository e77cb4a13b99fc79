//! `Fifo` and `Lifo`: a doubly linked list in a slab, read from either end.
//!
//! Push, pop and remove-by-key are O(1) and allocate nothing once the slab
//! has grown to the most entries ever queued at once: freed nodes are
//! reused. A key names its node by slot and proves it by sequence number,
//! so a stale key (its entry already gone, the node reused) removes nothing.

use cenote_core::{PriorityLevel as Prio, Queue, QueueKey, Strategy};

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<T> {
    seq: u64,
    prev: usize,
    next: usize,
    item: Option<T>,
}

/// Entries in arrival order; `FROM_BACK` picks the end `pop` reads. The queue
/// behind both [`Fifo`] and [`Lifo`].
#[derive(Debug)]
pub struct OrderedQueue<T, const FROM_BACK: bool> {
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
    /// Oldest entry.
    head: usize,
    /// Newest entry.
    tail: usize,
    len: usize,
    next_seq: u64,
}

impl<T, const FROM_BACK: bool> Default for OrderedQueue<T, FROM_BACK> {
    fn default() -> Self {
        OrderedQueue {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
            next_seq: 0,
        }
    }
}

impl<T, const FROM_BACK: bool> OrderedQueue<T, FROM_BACK> {
    /// Take node `at` out of the list and give its slot back.
    fn unlink(&mut self, at: usize) -> Option<T> {
        let (prev, next) = (self.nodes[at].prev, self.nodes[at].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
        self.free.push(at);
        self.len -= 1;
        self.nodes[at].item.take()
    }

    /// The end `pop` reads, and the direction to walk from it.
    fn serving_order(&self) -> impl Iterator<Item = usize> + '_ {
        let first = if FROM_BACK { self.tail } else { self.head };
        std::iter::successors((first != NIL).then_some(first), move |&at| {
            let node = &self.nodes[at];
            let step = if FROM_BACK { node.prev } else { node.next };
            (step != NIL).then_some(step)
        })
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
        let node = Node {
            seq,
            prev: self.tail,
            next: NIL,
            item: Some(item),
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.nodes[at] = node;
                at
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        match self.tail {
            NIL => self.head = at,
            t => self.nodes[t].next = at,
        }
        self.tail = at;
        self.len += 1;
        QueueKey {
            seq,
            priority,
            slot: at,
        }
    }

    fn pop(&mut self) -> Option<T> {
        let at = if FROM_BACK { self.tail } else { self.head };
        if at == NIL {
            return None;
        }
        self.unlink(at)
    }

    fn remove(&mut self, key: QueueKey) -> Option<T> {
        let live = self
            .nodes
            .get(key.slot)
            .is_some_and(|n| n.seq == key.seq && n.item.is_some());
        if live {
            self.unlink(key.slot)
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn extract(&mut self, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
        let order: Vec<usize> = self.serving_order().collect();
        let mut out = Vec::new();
        for at in order {
            let chosen = self.nodes[at].item.as_mut().is_some_and(&mut *pred);
            if chosen {
                out.extend(self.unlink(at));
            }
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
        assert_eq!(c.slot, a.slot, "the freed slot is reused");
        assert_eq!(
            f.remove(a),
            None,
            "a stale key removed the entry now in its slot"
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f.remove(b), Some("b"));
        assert_eq!(f.pop(), Some("c"));
        assert!(f.is_empty());
    }

    /// Random pushes, pops and removals agree with a plain Vec model.
    #[test]
    fn matches_a_reference_model() {
        fn run<const BACK: bool>() {
            let mut q = OrderedQueue::<u32, BACK>::default();
            let mut model: Vec<(QueueKey, u32)> = Vec::new();
            let mut peak = 0;
            let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for i in 0..20_000u32 {
                match next() % 4 {
                    0 | 1 => model.push((q.push(i, 0), i)),
                    2 => {
                        let want = if BACK {
                            model.pop()
                        } else {
                            (!model.is_empty()).then(|| model.remove(0))
                        };
                        assert_eq!(q.pop(), want.map(|(_, v)| v));
                    }
                    _ if !model.is_empty() => {
                        let at = (next() as usize) % model.len();
                        let (key, v) = model.remove(at);
                        assert_eq!(q.remove(key), Some(v));
                        assert_eq!(q.remove(key), None);
                    }
                    _ => {}
                }
                assert_eq!(q.len(), model.len());
                peak = peak.max(model.len());
            }
            // Freed nodes are reused: the slab is as large as the most
            // entries ever queued at once, not as the entries ever pushed.
            assert_eq!(q.nodes.len(), peak);
        }
        run::<false>();
        run::<true>();
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
