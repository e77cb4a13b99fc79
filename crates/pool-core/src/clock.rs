//! [`Stamp`]: the pool's clock, read on every checkout and every return, and
//! the time queues see (a waiter's arrival and deadline, a worker's start and
//! idle time).
//!
//! `std::time::Instant` costs about 60 instructions to read and subtract
//! (its checked `timespec` arithmetic); a checkout reads the clock twice and
//! subtracts twice. A `Stamp` is the same `CLOCK_MONOTONIC` reading held as
//! nanoseconds in a `u64`, so subtraction is one instruction. It is only
//! for durations inside one process; timers that tokio runs still take a
//! tokio `Instant` ([`Stamp::to_instant`]).

use std::time::Duration;

/// A point on the monotonic clock, in nanoseconds: what queues compare
/// (arrivals, deadlines, idle times) at the cost of one integer compare.
/// Meaningful only within one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

impl std::ops::Add<Duration> for Stamp {
    type Output = Stamp;

    /// This stamp plus `d` (saturating: a far deadline stays far).
    #[inline]
    fn add(self, d: Duration) -> Stamp {
        Stamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Stamp {
    /// Now.
    #[cfg(unix)]
    #[inline]
    pub fn now() -> Stamp {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is
        // always available on the unix systems Rust supports, and it cannot
        // fail with a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Stamp((ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64)
    }

    /// Now (elsewhere: nanoseconds since the first reading).
    #[cfg(not(unix))]
    pub fn now() -> Stamp {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(std::time::Instant::now);
        Stamp(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Time from `earlier` to this stamp; zero if `earlier` is later.
    pub fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Nanoseconds from `earlier` to this stamp; zero if `earlier` is later.
    pub(crate) fn nanos_since(self, earlier: Stamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Time since this stamp.
    pub fn elapsed(self) -> Duration {
        Stamp::now().since(self)
    }

    /// The same point as a tokio `Instant`, for tokio's timers.
    pub(crate) fn to_instant(self) -> tokio::time::Instant {
        let now = Stamp::now();
        let base = tokio::time::Instant::now();
        if self >= now {
            base + self.since(now)
        } else {
            base.checked_sub(now.since(self)).unwrap_or(base)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_what_instant_measures() {
        let (a, i) = (Stamp::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (b, j) = (Stamp::now(), std::time::Instant::now());
        let (ours, std) = (b.since(a), j.duration_since(i));
        assert!(ours >= Duration::from_millis(20), "{ours:?}");
        let diff = ours.abs_diff(std);
        assert!(diff < Duration::from_millis(2), "{ours:?} vs {std:?}");
        assert_eq!(a.since(b), Duration::ZERO);
        assert_eq!(
            (a + Duration::from_millis(5)).since(a),
            Duration::from_millis(5)
        );
    }
}
