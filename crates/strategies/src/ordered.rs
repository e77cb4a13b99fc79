//! `Fifo` and `Lifo`: a doubly linked list in a slab, read from either end.
//!
//! Push, pop and remove-by-key are O(1) and allocate nothing once the slab
//! has grown to the most entries ever queued at once: freed nodes are
//! reused, kept in a list threaded through their own `next` links (no
//! second vector to push to and pop from on every entry: an idle worker
//! passes through this queue on every checkout). A key names its node by
//! slot and proves it by sequence number, so a stale key (its entry already
//! gone, the node reused) removes nothing.
//! A pop for a caller with a session key walks the list for the worker
//! holding it (the only pop that is not O(1)).

use cenote_core::{Entry, Queue};

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<T> {
    seq: u64,
    prev: usize,
    /// The next node in the list; for a free node, the next free one.
    next: usize,
    item: Option<T>,
}

/// Entries in arrival order; `FROM_BACK` picks the end `pop` reads. The queue
/// behind both [`Fifo`] and [`Lifo`].
#[derive(Debug)]
pub struct OrderedQueue<T, const FROM_BACK: bool> {
    nodes: Vec<Node<T>>,
    /// The first free node (`NIL`: none), its `next` the one after.
    free: usize,
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
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            next_seq: 0,
        }
    }
}

impl<T, const FROM_BACK: bool> OrderedQueue<T, FROM_BACK> {
    /// Take node `at` out of the list and give its slot back.
    #[inline]
    fn unlink(&mut self, at: usize) -> Option<T> {
        let node = &mut self.nodes[at];
        let (prev, next) = (node.prev, node.next);
        node.next = self.free;
        let item = node.item.take();
        self.free = at;
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
        self.len -= 1;
        item
    }

    /// The node `pop` reads first.
    fn first(&self) -> usize {
        if FROM_BACK {
            self.tail
        } else {
            self.head
        }
    }

    /// The node `req` claims, else the first.
    #[cold]
    fn claimed(&self, req: T::Request<'_>) -> usize
    where
        T: Entry,
    {
        let mut at = self.first();
        while at != NIL {
            if self.nodes[at]
                .item
                .as_ref()
                .is_some_and(|e| e.claimed_by(req))
            {
                return at;
            }
            at = self.after(at);
        }
        self.first()
    }

    /// The node served after node `at`.
    fn after(&self, at: usize) -> usize {
        let node = &self.nodes[at];
        if FROM_BACK {
            node.prev
        } else {
            node.next
        }
    }
}

/// The key of an entry in a [`Fifo`](crate::Fifo) or [`Lifo`](crate::Lifo)
/// queue: its slot, proven by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotKey {
    slot: usize,
    seq: u64,
}

#[cfg(any(feature = "fifo", feature = "lifo"))]
use cenote_core::{IdleStrategy, IdleWorker, WaitStrategy, Waiter};

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
impl IdleStrategy for Fifo {
    type Queue<W: Send + 'static> = FifoQueue<IdleWorker<W>>;
    const NAME: &'static str = "fifo";
}

#[cfg(feature = "fifo")]
impl WaitStrategy for Fifo {
    type Queue = FifoQueue<Waiter>;
    const NAME: &'static str = "fifo";
}

/// Last in, first out: the newest entry is served first.
#[cfg(feature = "lifo")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifo;

#[cfg(feature = "lifo")]
impl IdleStrategy for Lifo {
    type Queue<W: Send + 'static> = LifoQueue<IdleWorker<W>>;
    const NAME: &'static str = "lifo";
}

#[cfg(feature = "lifo")]
impl WaitStrategy for Lifo {
    type Queue = LifoQueue<Waiter>;
    const NAME: &'static str = "lifo";
}

impl<T: Entry, const FROM_BACK: bool> Queue<T> for OrderedQueue<T, FROM_BACK> {
    type Key = SlotKey;

    // `push` and `pop` are inlined into the pool's checkout and return,
    // where a call's register saves cost more than the list work itself.
    #[inline(always)]
    fn push(&mut self, entry: T) -> SlotKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        let node = Node {
            seq,
            prev: self.tail,
            next: NIL,
            item: Some(entry),
        };
        let at = self.free;
        let at = match self.nodes.get_mut(at) {
            Some(free) => {
                self.free = free.next;
                *free = node;
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
        SlotKey { slot: at, seq }
    }

    #[inline(always)]
    fn pop(&mut self, req: T::Request<'_>) -> Option<T> {
        let at = if T::claims(req) {
            self.claimed(req)
        } else {
            self.first()
        };
        if at == NIL {
            return None;
        }
        self.unlink(at)
    }

    fn remove(&mut self, key: SlotKey) -> Option<T> {
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

    fn take_matching(&mut self, limit: usize, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        let mut at = self.first();
        while at != NIL && out.len() < limit {
            // Unlinking `at` leaves the node after it where it is.
            let next = self.after(at);
            if self.nodes[at].item.as_mut().is_some_and(&mut *pred) {
                out.extend(self.unlink(at));
            }
            at = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_entry::Item;

    fn drain<const B: bool>(q: &mut OrderedQueue<Item, B>) -> Vec<u32> {
        std::iter::from_fn(|| q.pop(None)).map(|e| e.id).collect()
    }

    #[test]
    fn fifo_and_lifo_read_opposite_ends() {
        let mut f = OrderedQueue::<Item, false>::default();
        let mut l = OrderedQueue::<Item, true>::default();
        for i in 0..5 {
            f.push(Item::new(i));
            l.push(Item::new(i));
        }
        assert_eq!(drain(&mut f), vec![0, 1, 2, 3, 4]);
        assert_eq!(drain(&mut l), vec![4, 3, 2, 1, 0]);
    }

    #[test]
    fn a_claimed_entry_is_served_first_then_the_order_resumes() {
        let mut l = OrderedQueue::<Item, true>::default();
        for i in 0..4 {
            l.push(Item::new(i));
        }
        assert_eq!(l.pop(Some(1)).map(|e| e.id), Some(1));
        assert_eq!(
            l.pop(Some(9)).map(|e| e.id),
            Some(3),
            "no claimed entry: LIFO"
        );
        assert_eq!(drain(&mut l), vec![2, 0]);
    }

    #[test]
    fn removed_entry_is_gone_and_key_is_not_reused() {
        let mut f = OrderedQueue::<Item, false>::default();
        let a = f.push(Item::new(0));
        let b = f.push(Item::new(1));
        assert_eq!(f.remove(a).map(|e| e.id), Some(0));
        assert!(f.remove(a).is_none());
        let c = f.push(Item::new(2));
        assert_ne!(a, c);
        assert_eq!(c.slot, a.slot, "the freed slot is reused");
        assert!(
            f.remove(a).is_none(),
            "a stale key removed the entry now in its slot"
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f.remove(b).map(|e| e.id), Some(1));
        assert_eq!(drain(&mut f), vec![2]);
        assert!(f.is_empty());
    }

    /// Random pushes, pops and removals agree with a plain Vec model, and
    /// the slab never outgrows the most entries queued at once.
    #[test]
    fn matches_a_reference_model() {
        fn run<const BACK: bool>() {
            let mut q = OrderedQueue::<Item, BACK>::default();
            let mut model: Vec<(SlotKey, u32)> = Vec::new();
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
                    0 | 1 => model.push((q.push(Item::new(i)), i)),
                    2 => {
                        let want = if BACK {
                            model.pop()
                        } else {
                            (!model.is_empty()).then(|| model.remove(0))
                        };
                        assert_eq!(q.pop(None).map(|e| e.id), want.map(|(_, v)| v));
                    }
                    _ if !model.is_empty() => {
                        let at = (next() as usize) % model.len();
                        let (key, v) = model.remove(at);
                        assert_eq!(q.remove(key).map(|e| e.id), Some(v));
                        assert!(q.remove(key).is_none());
                    }
                    _ => {}
                }
                assert_eq!(q.len(), model.len());
                peak = peak.max(model.len());
            }
            assert_eq!(q.nodes.len(), peak);
        }
        run::<false>();
        run::<true>();
    }

    #[test]
    fn take_matching_keeps_serving_order_limit_and_the_rest() {
        let mut l = OrderedQueue::<Item, true>::default();
        for i in 0..6 {
            l.push(Item::new(i));
        }
        let even: Vec<u32> = l
            .take_matching(2, &mut |e| e.id % 2 == 0)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(even, vec![4, 2], "the first two even ones, LIFO");
        assert!(l.take_matching(0, &mut |_| true).is_empty());
        let first: Vec<u32> = l.take_first(2).into_iter().map(|e| e.id).collect();
        assert_eq!(first, vec![5, 3]);
        assert_eq!(drain(&mut l), vec![1, 0]);
    }
}
