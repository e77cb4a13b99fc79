//! [`Tally`]: every count the pool keeps, changed only here.
//!
//! Each event the pool counts has one method, which both updates what
//! `status()` reports (its [`Totals`] and latency histograms) and records
//! the same event through the `metrics` facade (feature `metrics`; see
//! `crate::metrics`). The state calls it where the event happens, under the
//! lock it already holds, so the two views of the pool cannot disagree and
//! no other file touches a total.

use std::time::Duration;

use super::super::sessions::Bound;
use crate::histogram::Latencies;
use crate::live::Served;
use crate::metrics::{Levels, Meters};
use crate::status::{Percentiles, Totals};
use crate::worker::Retire;

pub(super) struct Tally {
    totals: Totals,
    latencies: Latencies,
    meters: Meters,
}

impl Tally {
    /// The counts of pool `pool`, whose waiter strategy is named `strategy`.
    pub fn new(pool: &str, strategy: &'static str) -> Self {
        Tally {
            totals: Totals::default(),
            latencies: Latencies::default(),
            meters: Meters::new(pool, strategy),
        }
    }

    /// One checkout ended (on every return: inlined into it).
    #[inline(always)]
    pub fn served(&mut self, s: Served) {
        self.totals.served += 1;
        let ran_ns = s.ran_ns();
        self.latencies.record(s.waited_ns, ran_ns);
        self.meters.served(s.waited_ns, ran_ns);
    }

    /// A start made its worker in `took`.
    pub fn created(&mut self, took: Duration) {
        self.meters.created(took);
    }

    /// `n` callers waited their whole checkout timeout.
    pub fn checkout_timeouts(&mut self, n: u64) {
        self.totals.checkout_timeouts += n;
        self.totals.timeouts += n;
        self.meters.checkout_timeouts(n);
    }

    /// A call ran past its deadline.
    pub fn call_timeout(&mut self) {
        self.totals.call_timeouts += 1;
        self.totals.timeouts += 1;
        self.meters.call_timeout();
    }

    /// An abandoned call was let go of.
    pub fn cancelled(&mut self) {
        self.totals.cancelled += 1;
        self.meters.cancelled();
    }

    /// A worker was killed by the pool.
    pub fn killed(&mut self) {
        self.totals.killed += 1;
        self.meters.killed();
    }

    /// A worker was found broken.
    pub fn crashed(&mut self) {
        self.totals.crashes += 1;
        self.meters.crashed();
    }

    /// A replacement start began.
    pub fn restarted(&mut self) {
        self.totals.restarts += 1;
        self.meters.restarted();
    }

    /// A start attempt failed; it is retried, which counts as a restart.
    pub fn start_failed(&mut self) {
        self.totals.start_failures += 1;
        self.meters.start_failed();
        self.restarted();
    }

    /// A caller was turned away (`Saturated`).
    pub fn rejected(&mut self) {
        self.totals.rejected += 1;
        self.meters.rejected();
    }

    /// A worker asked to retire.
    pub fn retired(&mut self, why: &Retire) {
        self.totals.retired += 1;
        self.meters.retired(why);
    }

    /// A session call was bound to its worker.
    pub fn bound(&mut self, how: Bound) {
        match how {
            Bound::Hit => self.totals.affinity_hits += 1,
            Bound::Miss => self.totals.affinity_misses += 1,
            Bound::New => {}
        }
    }

    /// A session call failed with `AffinityLost`.
    pub fn affinity_lost(&mut self) {
        self.totals.affinity_lost += 1;
    }

    /// Set the gauges to the pool's levels now.
    pub fn sample(&self, levels: Levels) {
        self.meters.sample(levels);
    }

    pub fn totals(&self) -> Totals {
        self.totals.clone()
    }

    pub fn wait(&self) -> Percentiles {
        self.latencies.wait()
    }

    pub fn run(&self) -> Percentiles {
        self.latencies.run()
    }
}
