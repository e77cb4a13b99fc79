//! The wait-time and run-time histograms behind `status()`.
//!
//! Recording happens under the pool's lock on every return, so it must cost
//! a handful of instructions: a value (in microseconds) goes to one of
//! [`BUCKETS`] counters, log-linear like HDR histograms with 16 sub-buckets
//! per power of two, so a reported percentile is within 1/16 (6.25%) of the
//! true value (exact below 32 µs). A wait of zero, the checkout that found a
//! worker idle (the common case), is only counted: the readings add the
//! count to the lowest bucket. Reading walks the buckets, which only
//! `status()` does.

use crate::status::Percentiles;

/// Sub-buckets per power of two (4 bits of precision).
const SUB: u64 = 16;
/// Enough buckets for every `u64` value.
const BUCKETS: usize = (64 - 4 + 1) * SUB as usize;

/// A log-linear histogram of microsecond values.
struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    /// Values recorded in `counts`.
    total: u64,
    /// Zeros counted but not recorded in `counts` (see [`count_zero`](Histogram::count_zero)).
    zeros: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            zeros: 0,
            max: 0,
        }
    }
}

/// The bucket holding `v`.
fn bucket(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros());
    let shift = msb - 4;
    ((shift + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The highest value bucket `i` holds.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let low = (SUB + i % SUB) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    #[inline]
    fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// A zero, counted without touching the buckets: it belongs to the
    /// first, which the readings add it to.
    fn count_zero(&mut self) {
        self.zeros += 1;
    }

    /// Values recorded or counted.
    fn count(&self) -> u64 {
        self.total + self.zeros
    }

    /// The smallest bucket bound with at least `q` of the values at or below.
    fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = self.zeros;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    fn percentiles(&self) -> Percentiles {
        if self.count() == 0 {
            return Percentiles::default();
        }
        Percentiles {
            count: self.count(),
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            max_us: self.max,
        }
    }
}

/// How long callers waited for a worker, and how long they held it.
#[derive(Default)]
pub(crate) struct Latencies {
    wait: Histogram,
    run: Histogram,
}

impl Latencies {
    /// Record one checkout's wait and run, in nanoseconds.
    #[inline(always)]
    pub fn record(&mut self, wait_ns: u64, run_ns: u64) {
        if wait_ns == 0 {
            self.wait.count_zero();
        } else {
            self.wait.record(wait_ns / 1_000);
        }
        self.run.record(run_ns / 1_000);
    }

    pub fn wait(&self) -> Percentiles {
        self.wait.percentiles()
    }

    pub fn run(&self) -> Percentiles {
        self.run.percentiles()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 2, u64::MAX - 1, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v} -> {b}");
            assert!(b >= last, "not monotonic at {v}");
            assert!(v <= upper(b), "{v} above its bucket's bound {}", upper(b));
            if b > 0 {
                assert!(v > upper(b - 1), "{v} at or below the previous bound");
            }
            last = b;
        }
    }

    #[test]
    fn percentiles_are_within_one_sixteenth() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!(
                got >= exact && got <= exact * (1.0 + 1.0 / 16.0),
                "q{q}: {got} vs {exact}"
            );
        }
        let p = h.percentiles();
        assert_eq!((p.count, p.max_us), (10_000, 10_000));
        assert_eq!(Histogram::default().percentiles(), Percentiles::default());
    }

    #[test]
    fn counted_zeros_read_as_recorded_ones() {
        let (mut counted, mut recorded) = (Histogram::default(), Histogram::default());
        for v in 1..=300u64 {
            counted.record(v * 7);
            recorded.record(v * 7);
        }
        for _ in 0..700 {
            counted.count_zero();
            recorded.record(0);
        }
        assert_eq!(counted.percentiles(), recorded.percentiles());
        let p = counted.percentiles();
        assert_eq!((p.count, p.p50_us), (1_000, 0));
        assert!(p.p90_us > 0, "{p:?}");
        // Only zeros: every percentile is zero, and they are all counted.
        let mut zeros = Histogram::default();
        zeros.count_zero();
        assert_eq!(
            zeros.percentiles(),
            Percentiles {
                count: 1,
                ..Percentiles::default()
            }
        );
        // Latencies count a zero wait without recording it.
        let mut l = Latencies::default();
        l.record(0, 5_000);
        l.record(3_000, 5_000);
        assert_eq!(
            (l.wait().count, l.wait().p50_us, l.wait().max_us),
            (2, 0, 3)
        );
        assert_eq!((l.run().count, l.run().p50_us), (2, 5));
    }
}
