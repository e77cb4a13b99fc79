//! `RankedQueue`: entries ordered by a rank each gets when pushed, arrival
//! order among equal ranks. The queue behind [`Priority`](crate::Priority)
//! (rank: the priority, highest first) and [`Deadline`](crate::Deadline)
//! (rank: the deadline, nearest first).
//!
//! A `BTreeMap` keyed by (rank, arrival): push, pop and remove by key are
//! O(log n), and a removed entry leaves nothing behind. A pop for a caller
//! with a session key walks the entries for the one it claims.

use std::marker::PhantomData;

use cenote_core::{Entry, Queue};
use std::collections::BTreeMap;

/// How a [`RankedQueue`] orders entries of type `T`: lower ranks first.
pub trait Rank<T>: Send + 'static {
    /// The rank; ties are served in arrival order.
    type Rank: Ord + Copy + std::fmt::Debug + Send + Sync + 'static;

    /// The rank of `entry`, taken once, when it is pushed.
    fn rank(entry: &T) -> Self::Rank;
}

/// The key of an entry in a [`RankedQueue`]: its rank and arrival number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RankKey<K> {
    rank: K,
    seq: u64,
}

/// Entries served lowest rank first (by `R`), arrival order among equals.
pub struct RankedQueue<T, R: Rank<T>> {
    entries: BTreeMap<RankKey<R::Rank>, T>,
    next_seq: u64,
    _rank: PhantomData<fn() -> R>,
}

impl<T, R: Rank<T>> Default for RankedQueue<T, R> {
    fn default() -> Self {
        RankedQueue {
            entries: BTreeMap::new(),
            next_seq: 0,
            _rank: PhantomData,
        }
    }
}

impl<T: std::fmt::Debug, R: Rank<T>> std::fmt::Debug for RankedQueue<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl<T: Entry, R: Rank<T>> Queue<T> for RankedQueue<T, R> {
    type Key = RankKey<R::Rank>;

    fn push(&mut self, entry: T) -> Self::Key {
        let key = RankKey {
            rank: R::rank(&entry),
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.entries.insert(key, entry);
        key
    }

    fn pop(&mut self, req: T::Request<'_>) -> Option<T> {
        if T::claims(req) {
            let claimed = self
                .entries
                .iter()
                .find(|(_, e)| e.claimed_by(req))
                .map(|(k, _)| *k);
            if let Some(k) = claimed {
                return self.entries.remove(&k);
            }
        }
        self.entries.pop_first().map(|(_, e)| e)
    }

    fn remove(&mut self, key: Self::Key) -> Option<T> {
        self.entries.remove(&key)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn take_matching(&mut self, limit: usize, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
        let chosen: Vec<_> = self
            .entries
            .iter_mut()
            .filter_map(|(k, e)| pred(e).then_some(*k))
            .take(limit)
            .collect();
        chosen
            .into_iter()
            .filter_map(|k| self.entries.remove(&k))
            .collect()
    }
}
