//! Queue strategies for cenote pools, one Cargo feature each.
//!
//! A pool orders two things with a [`Queue`](cenote_core::Queue): its idle
//! workers ([`IdleStrategy`](cenote_core::IdleStrategy)) and its waiting
//! callers ([`WaitStrategy`](cenote_core::WaitStrategy)). Pick a strategy
//! per queue by type, e.g. `Pool<F, Lifo, Deadline>`:
//!
//! | strategy | orders | serves first | good for |
//! |---|---|---|---|
//! | [`Lifo`] | idle workers, waiters | the newest entry | idle workers: keeps a hot set warm, lets the rest age out |
//! | [`Fifo`] | idle workers, waiters | the oldest entry | waiters: fairness; idle workers: spreads load evenly |
//! | [`Priority`] | idle workers, waiters | the highest priority, oldest among equals | waiters with request classes |
//! | [`Deadline`] | waiters | the nearest checkout deadline, oldest among equals | waiters with mixed deadlines: fewer time out |
//!
//! Whatever the strategy, an idle queue serves a caller with a session key
//! the idle worker holding that key, if there is one (see
//! `cenote_core::AffinityMode`).
//!
//! ```
//! use std::time::Duration;
//! use cenote_core::{CheckoutOptions, Factory, Pool, Worker, WorkerCtx};
//! use cenote_strategies::{Deadline, Lifo};
//!
//! struct Conn;
//! impl Worker for Conn {
//!     type Error = std::io::Error;
//!     async fn shutdown(self, _grace: Duration) {}
//! }
//! struct Connect;
//! impl Factory for Connect {
//!     type Worker = Conn;
//!     async fn create(&self, _: WorkerCtx) -> Result<Conn, std::io::Error> { Ok(Conn) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // LIFO idle workers; waiters served nearest checkout deadline first.
//! let pool: Pool<Connect, Lifo, Deadline> = Pool::builder(Connect).size(2).build().await.unwrap();
//! let hurried = CheckoutOptions::default().timeout(Duration::from_millis(50));
//! drop(pool.get_with(hurried).await.unwrap());
//! pool.close().await;
//! # }
//! ```
//!
//! Costs, with n entries queued (the one statement of them):
//!
//! | strategy | `push` | `pop` | `pop` for a session key | `remove` by key | `take_first(m)` | `take_matching` |
//! |---|---|---|---|---|---|---|
//! | [`Fifo`], [`Lifo`] | O(1) | O(1) | O(n) | O(1) | O(m) | O(n) |
//! | [`Priority`], [`Deadline`] | O(log n) | O(log n) | O(n) | O(log n) | O(m log n) | O(n + m log n) |
//!
//! A pop for a caller with a session key (idle queues only) looks for the
//! worker holding the key, one hash lookup per idle worker; `take_matching`
//! takes m entries in a walk that stops once it has its limit. [`Fifo`] and [`Lifo`] keep a linked list in
//! a slab and allocate nothing once the slab has grown to the most entries
//! ever queued at once; [`Priority`] and [`Deadline`] keep a `BTreeMap`
//! keyed by (rank, arrival). In all four a removed entry leaves nothing
//! behind.

#[cfg(feature = "deadline")]
mod deadline;
#[cfg(any(feature = "fifo", feature = "lifo"))]
mod ordered;
#[cfg(feature = "priority")]
mod priority;
#[cfg(any(feature = "priority", feature = "deadline"))]
mod ranked;
#[cfg(test)]
mod test_entry;

#[cfg(feature = "deadline")]
pub use deadline::{ByDeadline, Deadline, DeadlineQueue};
#[cfg(feature = "fifo")]
pub use ordered::{Fifo, FifoQueue};
#[cfg(feature = "lifo")]
pub use ordered::{Lifo, LifoQueue};
#[cfg(any(feature = "fifo", feature = "lifo"))]
pub use ordered::{OrderedQueue, SlotKey};
#[cfg(feature = "priority")]
pub use priority::{ByPriority, Priority, PriorityQueue};
#[cfg(any(feature = "priority", feature = "deadline"))]
pub use ranked::{Rank, RankKey, RankedQueue};
