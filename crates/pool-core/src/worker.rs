//! The [`Worker`] contract: what a pool holds, how it is made, checked and ended.
//!
//! A pool never looks inside a worker. It asks four questions of it, each at a
//! fixed point of the worker's life:
//!
//! * **made** by a [`Factory`], always in a task the pool owns, so a caller that
//!   gives up while a slow process starts does not waste the start;
//! * **is it broken?** ([`Worker::is_broken`]) — a cheap, synchronous look taken
//!   on every checkout and every return, e.g. "has my process exited?";
//! * **cancel** ([`Worker::cancel`]) — asked, off the caller's path, to
//!   abandon an operation its caller left (past its deadline, or dropped
//!   mid-call), so the worker can serve again without a restart;
//! * **recycle** ([`Worker::recycle`]) — the slow, async repair the pool runs,
//!   off the caller's path, on a worker whose operation was cut off and that
//!   cannot cancel it, and on idle workers due a health check;
//! * **shut down** ([`Worker::shutdown`]) — graceful within a deadline, a kill
//!   when the deadline is zero.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A pool-unique worker number, used in tracing fields and the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u64);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// The worker a factory `F` makes: for code generic over factories.
pub type WorkerOf<F> = <F as Factory>::Worker;

/// The error of the worker a factory `F` makes.
pub type ErrorOf<F> = <WorkerOf<F> as Worker>::Error;

/// What a factory knows about the worker it is asked to make.
#[derive(Debug, Clone)]
pub struct WorkerCtx {
    /// The pool's name, for tracing and registry entries.
    pub pool: std::sync::Arc<str>,
    /// The id the new worker will carry for its whole life.
    pub id: WorkerId,
    /// How many start attempts for this slot failed before this one.
    pub attempt: u32,
}

/// Why a worker asks to be replaced although it still works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retire {
    /// It served its quota of tasks.
    Tasks(u64),
    /// Its memory grew past the allowed growth over its own baseline (bytes).
    Memory(u64),
    /// It reached its maximum lifetime.
    Lifetime(Duration),
}

impl std::fmt::Display for Retire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retire::Tasks(n) => write!(f, "served its quota of {n} tasks"),
            Retire::Memory(b) => write!(f, "memory grew by {b} bytes over its baseline"),
            Retire::Lifetime(d) => write!(f, "reached its maximum lifetime of {d:?}"),
        }
    }
}

/// One pooled resource, such as an OS process.
///
/// Implementations hold their own resource and must release it in `Drop` as a
/// last resort (e.g. kill the process group), because a pool can only promise
/// that [`shutdown`](Worker::shutdown) is called when the worker is still in
/// its hands.
pub trait Worker: Send + Sized + 'static {
    /// The worker's own error. [`is_broken`](Worker::is_broken) decides whether
    /// an error also ends the worker.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A cheap, synchronous check: is this worker beyond use (its process gone,
    /// its connection closed)? Checked on every checkout and every return.
    fn is_broken(&mut self) -> bool {
        false
    }

    /// Make the worker ready for the next caller: finish or kill an operation
    /// that a caller abandoned (when [`cancel`](Worker::cancel) is
    /// [`Cancel::Unsupported`]), or answer a health check when idle. The pool
    /// bounds it with `recycle_timeout`; an error or a timeout replaces the
    /// worker.
    fn recycle(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Abandon the operation a caller left on this worker: its call ran past
    /// its deadline, or the caller dropped it mid-way. The pool asks this
    /// once, off the caller's path (the caller already has its answer).
    /// `grace` (the pool's `cancel_grace`) is how long the operation itself
    /// may take to let go once asked: the worker enforces it, as
    /// [`shutdown`](Worker::shutdown) enforces its grace, so that time the
    /// worker needs of its own first (finishing a half-written request, say)
    /// is not charged to the operation. The pool bounds the whole cancel by
    /// `grace + recycle_timeout`, a backstop against one that never returns.
    ///
    /// * [`Cancel::Freed`]: the operation let go; the worker serves again as
    ///   it is, its warm state kept, and nothing is charged to the crash
    ///   budget.
    /// * [`Cancel::Failed`], or no answer in time: the worker is killed and
    ///   replaced (not charged to the crash budget either: the pool chose to
    ///   end it).
    /// * [`Cancel::Unsupported`] (the default, for workers that cannot
    ///   cancel): a late call's worker is killed and replaced; a dropped
    ///   call's worker is [recycled](Worker::recycle).
    fn cancel(&mut self, grace: Duration) -> impl Future<Output = Cancel> + Send {
        let _ = grace;
        async { Cancel::Unsupported }
    }

    /// Asked on every return: should this worker be replaced although it still
    /// works (task quota, memory growth, lifetime)? The pool starts the
    /// replacement before this worker stops serving.
    fn retire_reason(&self) -> Option<Retire> {
        None
    }

    /// End the worker. Within `grace` it may finish cleanly; a zero grace, or
    /// the grace running out, means kill.
    fn shutdown(self, grace: Duration) -> impl Future<Output = ()> + Send;

    /// The OS process id, where the worker has one (for status and registry).
    fn pid(&self) -> Option<u32> {
        None
    }

    /// How many callers this worker serves at once. 1, the default: a
    /// checkout holds it alone. More: it multiplexes (a process serving
    /// many requests at once), and the pool lends each caller a
    /// [lane](Worker::lane) of it, at most this many at once, while it
    /// keeps the worker itself to check, retire and shut down. Read once,
    /// when the worker joins the pool.
    fn capacity(&self) -> usize {
        1
    }

    /// One more caller's handle on this worker, sharing its resource, for a
    /// worker whose [`capacity`](Worker::capacity) is above 1. The pool asks
    /// it under its lock, so it must be cheap (a reference count and a
    /// little state). The pool calls, cancels and checks (`is_broken`) a
    /// lane, and drops it when its caller is done; it never recycles,
    /// retires or shuts one down: that is the worker's own. `None`: the
    /// worker is beyond use.
    fn lane(&self) -> Option<Self> {
        None
    }
}

/// What [`Worker::cancel`] did with an abandoned operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The operation let go: the worker may serve again.
    Freed,
    /// It did not (or the worker broke meanwhile): the worker must be
    /// replaced.
    Failed,
    /// This worker cannot cancel an operation; the pool kills a late call's
    /// worker and recycles a dropped call's.
    Unsupported,
}

/// Makes workers. Called concurrently, once per slot, from tasks the pool owns.
pub trait Factory: Send + Sync + 'static {
    /// The worker this factory makes.
    type Worker: Worker;

    /// Make one worker. A failure is retried by the pool with backoff.
    fn create(
        &self,
        ctx: WorkerCtx,
    ) -> impl Future<Output = Result<Self::Worker, <Self::Worker as Worker>::Error>> + Send;

    /// Release what the factory itself holds (a fork server, a shared
    /// connection). [`Pool::close`](crate::Pool::close) calls it once, after
    /// every worker is shut down, so nothing the pool started outlives it.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What a worker is told about the call it serves: its deadline.
///
/// A call has exactly one deadline, resolved once by its
/// [`CallBudget`](crate::CallBudget) (`call_timeout`, or the call's own
/// timeout, cut short by the call's whole budget if it has one). The pool
/// enforces it, with one timer: past it the call's future is dropped, the
/// caller gets [`Error::CallTimeout`](crate::Error::CallTimeout) at once,
/// and the worker is asked to [cancel](Worker::cancel) the operation (or is
/// killed and replaced if it cannot, or does not let go within
/// `cancel_grace`). A worker reads it to bound work it hands elsewhere (a
/// child process, a remote service), never to set a deadline of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCtx {
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl CallCtx {
    /// A call that must finish within `timeout` from now.
    pub fn within(timeout: Duration) -> Self {
        CallCtx::from_start(tokio::time::Instant::now(), timeout)
    }

    /// A call that started at `start` and must finish within `timeout`.
    pub fn from_start(start: tokio::time::Instant, timeout: Duration) -> Self {
        CallCtx {
            deadline: start + timeout,
            timeout,
        }
    }

    /// When the pool cuts the call off.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// The call's whole allowance (`call_timeout`, or the call's own), as
    /// error messages should quote it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time left until the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// A worker that answers requests, which gives its pool
/// [`Pool::call`](crate::Pool::call): checkout, call, return, under a deadline.
pub trait Call<Req>: Worker {
    /// What a successful call returns.
    type Response: Send + 'static;

    /// Serve one request, by `ctx`'s deadline. The future may be dropped at
    /// any await point (caller cancelled, deadline passed); the pool then
    /// never hands the worker out again before [`cancel`](Worker::cancel)
    /// (or [`recycle`](Worker::recycle)) succeeds, or kills it.
    fn call(
        &mut self,
        req: Req,
        ctx: CallCtx,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send;
}
