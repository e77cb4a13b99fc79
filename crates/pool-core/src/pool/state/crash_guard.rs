//! [`CrashGuard`]: the crash-loop budget, kept as the times of real
//! failures only.
//!
//! It is charged when a start fails and when a worker breaks on its own
//! (twice for one that had not finished a call: see [`CrashBudget`]); every
//! start waits while the last `window` holds `max_restarts` charges. Only
//! the failures' own times are kept, so holding a start back never adds
//! anything: once the oldest charge leaves the window, starts resume at
//! once, whatever happened while they were held.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::CrashBudget;

#[derive(Debug)]
pub(super) struct CrashGuard {
    budget: CrashBudget,
    /// When each charged failure happened, oldest first.
    charges: VecDeque<Instant>,
}

impl CrashGuard {
    pub fn new(budget: CrashBudget) -> Self {
        CrashGuard {
            budget,
            charges: VecDeque::new(),
        }
    }

    /// Charge `n` failures, now.
    pub fn charge(&mut self, n: u32) {
        let now = Instant::now();
        self.forget_before(now);
        self.charges.extend(std::iter::repeat_n(now, n as usize));
    }

    /// How long a start must wait for the window to have room (zero: none).
    pub fn wait(&mut self) -> Duration {
        let now = Instant::now();
        self.forget_before(now);
        let max = self.budget.max_restarts as usize;
        if self.charges.len() < max {
            return Duration::ZERO;
        }
        // Room comes when all but `max - 1` charges have left the window.
        let freeing = self.charges[self.charges.len() - max];
        (freeing + self.budget.window).saturating_duration_since(now)
    }

    /// Whether the budget is spent: starts are being held back.
    pub fn looping(&self) -> bool {
        let now = Instant::now();
        let recent = self
            .charges
            .iter()
            .filter(|t| now.duration_since(**t) < self.budget.window)
            .count();
        recent >= self.budget.max_restarts as usize
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .charges
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.budget.window)
        {
            self.charges.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: u32, window_ms: u64) -> CrashGuard {
        CrashGuard::new(CrashBudget {
            max_restarts: max,
            window: Duration::from_millis(window_ms),
        })
    }

    #[test]
    fn starts_wait_only_while_the_window_is_full() {
        let mut g = guard(3, 200);
        g.charge(2);
        assert_eq!(g.wait(), Duration::ZERO);
        assert!(!g.looping());
        g.charge(1);
        assert!(g.looping());
        let w = g.wait();
        assert!(
            w > Duration::from_millis(150) && w <= Duration::from_millis(200),
            "{w:?}"
        );
    }

    #[test]
    fn holding_starts_back_never_compounds() {
        let mut g = guard(2, 100);
        g.charge(2);
        // However often a held start asks, the wait only shrinks.
        let first = g.wait();
        for _ in 0..100 {
            assert!(g.wait() <= first);
        }
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(g.wait(), Duration::ZERO);
        assert!(!g.looping());
    }

    #[test]
    fn a_double_charge_fills_the_window_twice_as_fast() {
        let mut g = guard(4, 1_000);
        g.charge(2);
        assert!(!g.looping());
        g.charge(2);
        assert!(g.looping());
        assert!(g.wait() > Duration::from_millis(900));
    }
}
