//! [`Stamp`]: the pool's clock, read on every checkout and every return, and
//! the time queues see (a waiter's arrival and deadline, a worker's start and
//! idle time).
//!
//! Reading the clock is the most expensive thing a checkout does in time.
//! `clock_gettime` fences the CPU's time-stamp counter read (`lfence;
//! rdtsc`), so each reading also waits out every load in flight, and under
//! contention the pool's loads are cache misses: on the 2-vCPU VM of
//! BENCHMARKS.md its two readings per checkout took about a tenth of a
//! checkout's time under contention (see "Pool core: checkout" there).
//! A `Stamp` is instead the counter [`quanta`] chooses and calibrates: the
//! TSC itself, unfenced, where it is invariant (constant rate, in step
//! across cores), else the OS's monotonic clock. It is scaled to
//! nanoseconds at once (one multiply, by the scale read off quanta's
//! calibration once) and held in a `u64`, so comparing or subtracting two
//! is one instruction and a deadline is an exact sum. Where quanta reads
//! the TSC on x86-64, the pool reads it itself, inline (quanta's reading is
//! a call). It is only for durations inside one process; timers that tokio
//! runs still take a tokio `Instant` ([`Stamp::to_instant`]).

use std::sync::OnceLock;
use std::time::Duration;

/// A point on the pool's monotonic clock, in nanoseconds: what queues
/// compare (arrivals, deadlines, idle times) at the cost of one integer
/// compare. Meaningful only within one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

/// The process's one clock, and its scale.
struct Clock {
    counter: quanta::Clock,
    /// Nanoseconds in 2^32 ticks.
    ns_per_2_32_ticks: u64,
    /// Its ticks are the TSC's, which `Stamp::now` reads itself.
    tsc: bool,
}

/// The process's clock, calibrated on first use (under a millisecond).
#[inline]
fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let counter = quanta::Clock::new();
        let ns_per_2_32_ticks = counter.delta_as_nanos(0, 1 << 32).max(1);
        Clock {
            counter,
            ns_per_2_32_ticks,
            // Scaled ticks are quanta's counter's (on x86-64, the TSC's);
            // unscaled ones the OS clock's nanoseconds, or a TSC at exactly
            // 1 GHz, which quanta's own reading serves as well.
            tsc: cfg!(target_arch = "x86_64") && ns_per_2_32_ticks != 1 << 32,
        }
    })
}

impl Clock {
    /// The counter now, in nanoseconds.
    #[inline]
    fn nanos(&self) -> u64 {
        ((u128::from(self.ticks()) * u128::from(self.ns_per_2_32_ticks)) >> 32) as u64
    }

    /// The counter now, in ticks.
    #[inline]
    fn ticks(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            // The same counter quanta reads (see `tsc`), without its call.
            // SAFETY: `rdtsc` exists on every x86-64 CPU, reads a register
            // and touches no memory.
            return unsafe { std::arch::x86_64::_rdtsc() };
        }
        self.counter.raw()
    }
}

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
    #[inline]
    pub fn now() -> Stamp {
        Stamp(clock().nanos())
    }

    /// Time from `earlier` to this stamp; zero if `earlier` is later.
    pub fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// Nanoseconds from `earlier` to this stamp; zero if `earlier` is later.
    #[inline]
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
        assert_eq!(a + Duration::MAX, Stamp(u64::MAX));
    }
}
