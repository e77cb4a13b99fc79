//! cenote: pools of workers, built for heavy, long-lived external processes.
//!
//! The pool core ([`Pool`]) is generic over the worker ([`Worker`] made by a
//! [`Factory`]), the strategy that orders idle workers and the one that orders
//! waiting callers ([`strategy::IdleStrategy`], [`strategy::WaitStrategy`]:
//! [`Lifo`], [`Fifo`], [`Priority`], [`Deadline`], each behind a Cargo
//! feature; [`strategy`] has what writing one of your own takes), and the
//! [`Registry`] where pools and workers are found ([`registry`]). With
//! feature `node`,
//! `cenote::node` serves pools to other machines and calls them by name.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use cenote::{Call, CallCtx, Factory, Pool, Worker, WorkerCtx};
//!
//! struct Upper;
//! impl Worker for Upper {
//!     type Error = Infallible;
//!     async fn shutdown(self, _grace: Duration) {}
//! }
//! impl Call<String> for Upper {
//!     type Response = String;
//!     async fn call(&mut self, s: String, _ctx: CallCtx) -> Result<String, Infallible> {
//!         Ok(s.to_uppercase())
//!     }
//! }
//! struct Make;
//! impl Factory for Make {
//!     type Worker = Upper;
//!     async fn create(&self, _: WorkerCtx) -> Result<Upper, Infallible> { Ok(Upper) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Defaults: LIFO idle workers, FIFO waiters.
//! let pool: Pool<Make> = Pool::builder(Make).size(2).build().await.unwrap();
//! assert_eq!(pool.call("hi".to_string()).await.unwrap(), "HI");
//! pool.close().await;
//! # }
//! ```

// What a pool user needs: the README's names.
pub use cenote_core::{
    Affinity, AffinityKey, AffinityLoss, AffinityMode, Backoff, BuildError, Call, CallBudget,
    CallCtx, CallOptions, Cancel, Checkout, CheckoutOptions, ConfigError, CrashBudget, Error,
    ErrorKind, Factory, Percentiles, PoolBuilder, PoolConfig, PoolService, PriorityLevel, Registry,
    Retire, Retry, RetryIf, RetryPolicy, StartError, Status, Totals, Transient, Worker, WorkerCtx,
    WorkerId, WorkerInfo,
};
pub use cenote_core::{
    BatchAnswer, BatchCall, BatchConfig, BatchError, BatchStatus, Batched, ItemOptions,
};
// What a backend implements to have its streams served by a node.
pub use cenote_core::{ItemStream, Opened, Streams};

/// For writing a strategy of your own: the [`Queue`]
/// contract, the entries queues hold and see, and the two strategy traits
/// a pool is typed by (see `examples/custom_strategy.rs`).
pub mod strategy {
    pub use cenote_core::{
        Caller, Entry, IdleStrategy, IdleWorker, PriorityLevel, Queue, Stamp, WaitStrategy, Waiter,
    };
    #[cfg(feature = "deadline")]
    pub use cenote_strategies::Deadline;
    #[cfg(feature = "fifo")]
    pub use cenote_strategies::Fifo;
    #[cfg(feature = "lifo")]
    pub use cenote_strategies::Lifo;
    #[cfg(feature = "priority")]
    pub use cenote_strategies::Priority;
}

/// Where pools and workers are found: the [`Registry`] contract and what it
/// holds, `LocalRegistry` (built in) and
/// `EtcdRegistry` (feature `etcd`).
pub mod registry {
    pub use cenote_core::{
        EndpointEntry, Load, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry,
        WorkerState,
    };
    pub use cenote_registry::*;
}

// The same names flat, as earlier versions had them; the grouped paths
// above are the documented ones.
#[doc(hidden)]
pub use cenote_core::{
    Caller, EndpointEntry, Entry, IdleStrategy, IdleWorker, Load, PoolEntry, Queue, RegistryError,
    RegistryEvent, Stamp, WaitStrategy, Waiter, WorkerEntry, WorkerState,
};

/// The checks every queue must pass, to run on a queue of your own
/// (feature `conformance`).
#[cfg(feature = "conformance")]
pub use cenote_core::conformance;

#[cfg(feature = "deadline")]
pub use cenote_strategies::Deadline;
#[cfg(feature = "fifo")]
pub use cenote_strategies::Fifo;
#[cfg(feature = "lifo")]
pub use cenote_strategies::Lifo;
#[cfg(feature = "priority")]
pub use cenote_strategies::Priority;

/// The pool's metric names (OpenTelemetry's pool conventions, mapped to
/// workers); with feature `metrics` they are recorded through the
/// `metrics` crate's facade, for the exporter the application installs.
pub use cenote_core::metrics;

#[cfg(feature = "python")]
pub use cenote_python as python;

/// Serve pools to other nodes and call them by name (feature `node`).
#[cfg(feature = "node")]
pub use cenote_node as node;

/// A pool. The defaults order idle workers LIFO (a hot set stays warm, the
/// rest can retire) and waiting callers FIFO (fair).
#[cfg(all(feature = "lifo", feature = "fifo"))]
pub type Pool<F, I = Lifo, W = Fifo> = cenote_core::Pool<F, I, W>;

/// A pool, typed by its factory and its two strategies.
#[cfg(not(all(feature = "lifo", feature = "fifo")))]
pub type Pool<F, I, W> = cenote_core::Pool<F, I, W>;

/// The README's code, compiled (and, where it needs no Python, run) as
/// doctests, so what it shows keeps working.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
