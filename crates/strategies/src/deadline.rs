//! `Deadline`: the waiting caller whose checkout deadline is nearest first.

use cenote_core::{Stamp, WaitStrategy, Waiter};

use crate::ranked::{Rank, RankedQueue};

/// Serves the waiting caller whose checkout deadline is nearest; equal
/// deadlines in arrival order. Callers set their deadline per checkout
/// (`CheckoutOptions::timeout`, `CallOptions::checkout_timeout`); callers
/// without one get the pool's `checkout_timeout`.
///
/// When callers wait with mixed deadlines, FIFO serves a caller in a hurry
/// only after everyone who came before it, and it times out meanwhile;
/// `Deadline` serves it first, while a patient caller can still wait. Under
/// overload it is earliest-deadline-first scheduling: fewer callers time out
/// as long as the deadlines can be met at all. It orders waiters only: idle
/// workers have no deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadline;

/// Ranks waiters by deadline, nearest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByDeadline;

impl Rank<Waiter> for ByDeadline {
    type Rank = Stamp;

    fn rank(waiter: &Waiter) -> Stamp {
        waiter.deadline()
    }
}

/// The queue [`Deadline`] uses.
pub type DeadlineQueue = RankedQueue<Waiter, ByDeadline>;

impl WaitStrategy for Deadline {
    type Queue = DeadlineQueue;
    const NAME: &'static str = "deadline";
}
