//! Queue strategies for cenote pools, one Cargo feature each.
//!
//! A pool orders two things with [`Queue`](cenote_core::Queue): its idle
//! workers and its waiting callers. Pick a strategy per queue by type:
//!
//! | strategy | serves first | good for |
//! |---|---|---|
//! | [`Lifo`] | the newest entry | idle workers: keeps a hot set warm, lets the rest age out |
//! | [`Fifo`] | the oldest entry | waiters: fairness; idle workers: spreads load evenly |
//! | [`Priority`] | the highest priority, oldest among equals | waiters with request classes |
//!
//! ```
//! use cenote_core::Queue;
//! use cenote_strategies::{FifoQueue, LifoQueue, PriorityQueue};
//!
//! let mut q = PriorityQueue::default();
//! q.push("low", 0);
//! q.push("high", 5);
//! assert_eq!(q.pop(), Some("high"));
//!
//! let mut lifo = LifoQueue::default();
//! lifo.push(1, 0);
//! lifo.push(2, 0);
//! assert_eq!(lifo.pop(), Some(2));
//! # let _ = FifoQueue::<u8>::default();
//! ```
//!
//! Costs, with n entries queued: [`Fifo`] and [`Lifo`] keep a linked list in
//! a slab, so `push`, `pop` and `remove` by key are O(1) (and allocate
//! nothing once the slab has grown to the most entries ever queued at once);
//! [`Priority`] keeps a `BTreeMap` keyed by (priority, arrival), so they are
//! O(log n). For all three, `extract` is O(n), and a removed entry leaves
//! nothing behind.

#[cfg(any(feature = "fifo", feature = "lifo"))]
mod ordered;
#[cfg(feature = "priority")]
mod priority;

#[cfg(feature = "fifo")]
pub use ordered::{Fifo, FifoQueue};
#[cfg(feature = "lifo")]
pub use ordered::{Lifo, LifoQueue};
#[cfg(feature = "priority")]
pub use priority::{Priority, PriorityQueue};
