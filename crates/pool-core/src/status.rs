//! `pool.status()`: a serde snapshot of sizes, totals and latency percentiles.

use serde::{Deserialize, Serialize};

/// Counts since the pool was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Checkouts returned (calls served, successfully or not).
    pub served: u64,
    /// Checkout timeouts plus call timeouts.
    pub timeouts: u64,
    /// Callers that gave up waiting for a worker (`checkout_timeout`).
    pub checkout_timeouts: u64,
    /// Calls that ran past their deadline (each also counted `cancelled` or
    /// `killed`, once its worker let go or was killed).
    pub call_timeouts: u64,
    /// Abandoned calls (past their deadline, or dropped by their caller)
    /// that their worker let go of: it served on, with no restart.
    pub cancelled: u64,
    /// Workers killed because a call they were running did not let go of
    /// (or they could not cancel it): each costs a restart.
    pub killed: u64,
    /// Workers found broken (crashed, failed health check or recycle).
    pub crashes: u64,
    /// Replacement starts after a crash, a kill or a failed start.
    pub restarts: u64,
    /// Callers turned away (`Saturated`).
    pub rejected: u64,
    /// Failed start attempts.
    pub start_failures: u64,
    /// Workers retired on their own request (quota, memory, lifetime).
    pub retired: u64,
    /// Session calls served by the worker that served their key before.
    pub affinity_hits: u64,
    /// Session calls whose key moved to another worker (a hint that gave up
    /// waiting, or a session started over elsewhere).
    pub affinity_misses: u64,
    /// Session calls failed with `AffinityLost`.
    pub affinity_lost: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// A snapshot of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The pool's name.
    pub name: String,
    /// Warm size.
    pub size: usize,
    /// Extra workers allowed on demand.
    pub max_overflow: usize,
    /// Live workers: idle + busy + starting.
    pub live: usize,
    /// Workers waiting in the idle queue.
    pub idle: usize,
    /// Workers checked out or being recycled.
    pub busy: usize,
    /// Calls in flight: workers checked out, plus lanes out of workers that
    /// serve many calls at once (equal to `busy` when every worker serves
    /// one, less any worker being recycled).
    pub in_flight: usize,
    /// Live workers beyond `size`.
    pub overflow: usize,
    /// Workers being started (including failed starts waiting to retry).
    pub starting: usize,
    /// Workers still serving while their replacement starts.
    pub retiring: usize,
    /// Workers being shut down.
    pub stopping: usize,
    /// Callers waiting for a worker (including those waiting for their
    /// session's worker).
    pub waiting: usize,
    /// Session keys remembered (bounded by `affinity_capacity`).
    pub sessions: usize,
    /// Whether `close` has begun.
    pub closed: bool,
    /// Whether restarts are being held back by the crash budget.
    pub crash_looping: bool,
    /// Totals since build.
    pub totals: Totals,
    /// Time from `get` to a worker in hand.
    pub wait: Percentiles,
    /// Time a worker was held (checkout to return).
    pub run: Percentiles,
}
