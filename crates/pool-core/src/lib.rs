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
//! Both queues are pluggable: a [`Strategy`] names a [`Queue`] type per
//! entry type. This one is a stack, searched linearly on removal (fine for
//! a handful of entries):
//!
//! ```
//! use cenote_core::{PriorityLevel, Queue, QueueKey, Strategy};
//!
//! struct Stack<T>(Vec<(u64, T)>, u64);
//! impl<T> Default for Stack<T> {
//!     fn default() -> Self { Stack(Vec::new(), 0) }
//! }
//! impl<T: Send + 'static> Queue<T> for Stack<T> {
//!     fn push(&mut self, item: T, priority: PriorityLevel) -> QueueKey {
//!         self.1 += 1;
//!         self.0.push((self.1, item));
//!         QueueKey { seq: self.1, priority, slot: 0 }
//!     }
//!     fn pop(&mut self) -> Option<T> { self.0.pop().map(|(_, t)| t) }
//!     fn remove(&mut self, key: QueueKey) -> Option<T> {
//!         let at = self.0.iter().position(|(s, _)| *s == key.seq)?;
//!         Some(self.0.remove(at).1)
//!     }
//!     fn len(&self) -> usize { self.0.len() }
//!     fn extract(&mut self, pred: &mut dyn FnMut(&mut T) -> bool) -> Vec<T> {
//!         let mut out = Vec::new();
//!         let mut i = 0;
//!         while i < self.0.len() {
//!             if pred(&mut self.0[i].1) { out.push(self.0.remove(i).1) } else { i += 1 }
//!         }
//!         out
//!     }
//! }
//! struct StackStrategy;
//! impl Strategy for StackStrategy {
//!     type Queue<T: Send + 'static> = Stack<T>;
//!     const NAME: &'static str = "stack";
//! }
//!
//! let mut q = Stack::default();
//! q.push("a", 0);
//! q.push("b", 0);
//! assert_eq!(q.pop(), Some("b"));
//! // A pool would be `Pool<Counters, StackStrategy, StackStrategy>`.
//! ```

mod clock;
mod config;
mod error;
mod histogram;
mod pool;
mod queue;
mod registry;
mod status;
mod worker;

pub use config::{Backoff, CrashBudget, PoolConfig};
pub use error::{BuildError, ConfigError, Error, StartError};
pub use pool::{
    CallOptions, Checkout, CheckoutOptions, Pool, PoolBuilder, RetryIf, RetryPolicy, WorkerInfo,
};
pub use queue::{PriorityLevel, Queue, QueueKey, Strategy};
pub use registry::{
    EndpointEntry, Load, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry,
    WorkerState,
};
pub use status::{Percentiles, Status, Totals};
pub use worker::{Call, CallCtx, Factory, Retire, Worker, WorkerCtx, WorkerId};
