//! [`BatchStatus`]: what a batcher reports, and the counts behind it, kept
//! under the batcher's lock (see `queue.rs`).

use serde::{Deserialize, Serialize};

/// A snapshot of a [`Batched`](crate::Batched) handle's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchStatus {
    /// Items waiting to be sent.
    pub waiting: usize,
    /// Batches sent to a worker.
    pub batches: u64,
    /// Items sent, over all batches.
    pub items: u64,
    /// Mean items per batch (0 before the first batch).
    pub mean_size: f64,
    /// The 99th percentile of items per batch (0 before the first batch).
    pub p99_size: usize,
    /// The largest batch sent.
    pub max_size: usize,
    /// Items whose caller gave up (dropped its future, or its checkout
    /// timeout passed) before they were sent: left out of every batch.
    pub left_before_dispatch: u64,
    /// Items whose caller gave up after they were sent: their results were
    /// dropped.
    pub dropped_after_dispatch: u64,
}

/// How many batches had each size: exact, as a batch's size is bounded by
/// `max_size`.
#[derive(Debug)]
pub(crate) struct Sizes {
    /// `by_size[n]`: batches of `n` items.
    by_size: Vec<u64>,
    batches: u64,
    items: u64,
}

impl Sizes {
    pub(crate) fn new(max_size: usize) -> Self {
        Sizes {
            by_size: vec![0; max_size + 1],
            batches: 0,
            items: 0,
        }
    }

    pub(crate) fn record(&mut self, size: usize) {
        self.by_size[size] += 1;
        self.batches += 1;
        self.items += size as u64;
    }

    /// Fill in `status`'s batch counts.
    pub(crate) fn report(&self, status: &mut BatchStatus) {
        status.batches = self.batches;
        status.items = self.items;
        if self.batches == 0 {
            return;
        }
        status.mean_size = self.items as f64 / self.batches as f64;
        status.max_size = self.by_size.iter().rposition(|&n| n > 0).unwrap_or(0);
        // The smallest size at or below which 99 % of batches fall.
        let want = (self.batches * 99).div_ceil(100);
        let mut seen = 0;
        for (size, &n) in self.by_size.iter().enumerate() {
            seen += n;
            if seen >= want {
                status.p99_size = size;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_report_mean_max_and_p99() {
        let mut sizes = Sizes::new(32);
        for _ in 0..99 {
            sizes.record(2);
        }
        sizes.record(32);
        let mut status = BatchStatus::default();
        sizes.report(&mut status);
        assert_eq!(status.batches, 100);
        assert_eq!(status.items, 99 * 2 + 32);
        assert_eq!(status.max_size, 32);
        assert_eq!(status.p99_size, 2);
        assert!((status.mean_size - 2.3).abs() < 1e-9);
    }
}
