//! cenote's pool core: the [`Worker`], [`Queue`] and [`Registry`] contracts and
//! the generic [`Pool`] built on them.
//!
//! A pool of your own workers, with the strategies from `cenote-strategies`
//! (the `cenote` facade crate re-exports all of this and names the default
//! strategies, so there it is just `cenote::Pool<F>`):
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use cenote_core::{Call, CallCtx, Factory, Pool, Worker, WorkerCtx};
//! use cenote_strategies::{Fifo, Lifo};
//!
//! // A worker: here, an in-process counter. Real ones own a process.
//! struct Counter(u64);
//!
//! impl Worker for Counter {
//!     type Error = Infallible;
//!     async fn shutdown(self, _grace: Duration) {}
//! }
//!
//! impl Call<u64> for Counter {
//!     type Response = u64;
//!     async fn call(&mut self, add: u64, _ctx: CallCtx) -> Result<u64, Infallible> {
//!         self.0 += add;
//!         Ok(self.0)
//!     }
//! }
//!
//! struct Counters;
//! impl Factory for Counters {
//!     type Worker = Counter;
//!     async fn create(&self, _ctx: WorkerCtx) -> Result<Counter, Infallible> {
//!         Ok(Counter(0))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // LIFO idle workers (a hot set stays warm), FIFO waiters (fair).
//! let pool: Pool<Counters, Lifo, Fifo> = Pool::builder(Counters)
//!     .size(2)
//!     .max_overflow(1)
//!     .call_timeout(Duration::from_secs(1))
//!     .build()
//!     .await
//!     .unwrap();
//! assert_eq!(pool.call(5).await.unwrap(), 5);
//! assert_eq!(pool.status().totals.served, 1);
//! pool.close().await;
//! # }
//! ```
//!
//! ## A queue of your own
//!
//! Both queues are pluggable: an [`IdleStrategy`] names the [`Queue`] of
//! idle workers ([`IdleWorker`] entries), a [`WaitStrategy`] the queue of
//! waiting callers ([`Waiter`] entries). A queue sees entries only through
//! their read-only accessors, and must serve a caller the idle worker
//! holding its session key, if one is idle ([`Entry::claimed_by`]). This
//! one is a stack, searched linearly (fine for a handful of entries);
//! `examples/custom_strategy.rs` orders idle workers by tasks served, and
//! `cenote_core::conformance` (feature `conformance`) checks a queue against the
//! contract:
//!
//! ```
//! use cenote_core::{Entry, IdleStrategy, IdleWorker, Queue, WaitStrategy, Waiter};
//!
//! struct Stack<T> { entries: Vec<(u64, T)>, next: u64 }
//! impl<T> Default for Stack<T> {
//!     fn default() -> Self { Stack { entries: Vec::new(), next: 0 } }
//! }
//!
//! impl<T: Entry> Queue<T> for Stack<T> {
//!     type Key = u64;
//!     fn push(&mut self, entry: T) -> u64 {
//!         self.next += 1;
//!         self.entries.push((self.next, entry));
//!         self.next
//!     }
//!     fn pop(&mut self, req: T::Request<'_>) -> Option<T> {
//!         let claimed = T::claims(req)
//!             .then(|| self.entries.iter().position(|(_, e)| e.claimed_by(req)))
//!             .flatten();
//!         let at = claimed.or(self.entries.len().checked_sub(1))?;
//!         Some(self.entries.remove(at).1)
//!     }
//!     fn remove(&mut self, key: u64) -> Option<T> {
//!         let at = self.entries.iter().position(|(k, _)| *k == key)?;
//!         Some(self.entries.remove(at).1)
//!     }
//!     fn len(&self) -> usize { self.entries.len() }
//!     fn take_matching(&mut self, limit: usize, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
//!         let (mut out, mut i) = (Vec::new(), self.entries.len());
//!         while i > 0 && out.len() < limit {
//!             i -= 1;
//!             if pred(&mut self.entries[i].1) { out.push(self.entries.remove(i).1) }
//!         }
//!         out
//!     }
//! }
//!
//! struct StackStrategy;
//! impl IdleStrategy for StackStrategy {
//!     type Queue<W: Send + 'static> = Stack<IdleWorker<W>>;
//!     const NAME: &'static str = "stack";
//! }
//! impl WaitStrategy for StackStrategy {
//!     type Queue = Stack<Waiter>;
//!     const NAME: &'static str = "stack";
//! }
//! // A pool would be `Pool<Counters, StackStrategy, StackStrategy>`.
//! # #[cfg(feature = "conformance")]
//! # {
//! # cenote_core::conformance::check_idle_strategy::<StackStrategy>().unwrap();
//! # cenote_core::conformance::check_wait_strategy::<StackStrategy>().unwrap();
//! # }
//! ```

mod affinity;
mod batch;
mod clock;
mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod entry;
mod error;
mod histogram;
mod live;
pub mod metrics;
mod pool;
mod queue;
mod registry;
mod status;
mod streams;
mod worker;

pub use affinity::{Affinity, AffinityKey, AffinityLoss, AffinityMode};
pub use batch::{
    BatchAnswer, BatchCall, BatchConfig, BatchError, BatchStatus, Batched, ItemOptions,
};
pub use clock::Stamp;
pub use config::{Backoff, CrashBudget, PoolConfig};
pub use entry::{Caller, IdleWorker, Waiter};
pub use error::{BuildError, ConfigError, Error, ErrorKind, StartError};
pub use pool::{
    CallBudget, CallOptions, Checkout, CheckoutOptions, Pool, PoolBuilder, PoolService, Retry,
    RetryIf, RetryPolicy, Transient, WorkerInfo,
};
pub use queue::{Entry, IdleStrategy, PriorityLevel, Queue, WaitStrategy};
pub use registry::{
    EndpointEntry, Load, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry,
    WorkerState,
};
pub use status::{Percentiles, Status, Totals};
pub use streams::{ItemStream, Opened, Streams};
pub use worker::{
    Call, CallCtx, Cancel, ErrorOf, Factory, Retire, Worker, WorkerCtx, WorkerId, WorkerOf,
};
