//! The pool's numbers in the ecosystem's own terms: names after
//! OpenTelemetry's connection-pool conventions (`db.client.connection.*`),
//! mapped to workers, recorded through the [`metrics`](https://docs.rs/metrics)
//! crate's facade (feature `metrics`) for whichever exporter the application
//! installs: Prometheus, OTLP, StatsD...
//!
//! [`POOL`] lists every name the core records, with its kind, unit and
//! labels; the README's table is checked against it, and a pool registers
//! its handles from it, so the three cannot drift apart. Backends add their
//! own (the Python pool's `cenote.python.*`) through [`gauge`] and friends.
//!
//! Why it costs next to nothing on a checkout:
//! - A pool registers its handles once, when it is built, with its labels.
//!   Recording is then a branch plus whatever the exporter does (an atomic
//!   add for Prometheus), never a lookup by name. Install the recorder
//!   **before** building pools: a pool built earlier keeps the no-op
//!   handles it was given.
//! - Counters and histograms are recorded where the pool's state already
//!   counts the same event for `status()` (`pool/state/tally.rs`), under the
//!   lock it already holds.
//! - Gauges (workers by state, waiting callers, the cap) are sampled by the
//!   pool's maintenance tick, at least once a second, not on every
//!   checkout: a scrape sees them at most a tick old.
//!
//! Labels are closed sets: `pool` (the pool's name), `strategy` (its waiter
//! strategy's `NAME`), and the values listed per metric; never a pid, a
//! worker id or a session key. Without the feature the handles are
//! zero-sized and recording compiles to nothing.

use std::time::Duration;

use crate::worker::Retire;

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A level, set to its current value.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

/// A label a metric carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// Its key.
    pub key: &'static str,
    /// Its closed set of values; empty for `pool` and `strategy`, whose
    /// values are the pool's own (its name, its strategy's name).
    pub values: &'static [&'static str],
}

/// One metric: its name and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its name, dotted (a Prometheus exporter writes `_` for `.`).
    pub name: &'static str,
    /// Its instrument.
    pub kind: Kind,
    /// Its unit, UCUM as OpenTelemetry writes them (`s`, `By`, `{worker}`).
    pub unit: &'static str,
    /// Its labels.
    pub labels: &'static [Label],
    /// What it counts.
    pub help: &'static str,
}

impl Metric {
    /// Its row in the README's table of metrics.
    pub fn row(&self) -> String {
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|l| match l.values {
                [] => l.key.to_string(),
                values => format!("{}: {}", l.key, values.join(" / ")),
            })
            .collect();
        format!(
            "| `{}` | {kind} | `{}` | {} | {} |",
            self.name,
            self.unit,
            labels.join(", "),
            self.help
        )
    }
}

/// The pool's name.
pub const POOL_LABEL: Label = Label {
    key: "pool",
    values: &[],
};
const STRATEGY: Label = Label {
    key: "strategy",
    values: &[],
};
const BY_POOL: &[Label] = &[POOL_LABEL, STRATEGY];

/// Workers by state (`cenote.pool.workers{state}`).
pub const WORKERS: Metric = Metric {
    name: "cenote.pool.workers",
    kind: Kind::Gauge,
    unit: "{worker}",
    labels: &[
        POOL_LABEL,
        STRATEGY,
        Label {
            key: "state",
            values: &["idle", "busy", "starting", "retiring"],
        },
    ],
    help: "Workers idle, busy (checked out, cancelling or recycling) and starting; retiring ones serve until their replacement is up and are also idle or busy",
};
/// The hard cap, `size + max_overflow`.
pub const WORKERS_MAX: Metric = Metric {
    name: "cenote.pool.workers.max",
    kind: Kind::Gauge,
    unit: "{worker}",
    labels: BY_POOL,
    help: "The most workers the pool may hold: size + max_overflow",
};
/// Callers waiting for a worker.
pub const WAITING: Metric = Metric {
    name: "cenote.pool.waiting",
    kind: Kind::Gauge,
    unit: "{caller}",
    labels: BY_POOL,
    help: "Callers waiting for a worker, including those waiting for their session's worker",
};
/// Callers that gave up waiting.
pub const CHECKOUT_TIMEOUTS: Metric = Metric {
    name: "cenote.pool.checkout.timeouts",
    kind: Kind::Counter,
    unit: "{caller}",
    labels: BY_POOL,
    help: "Callers that waited their whole checkout timeout without a worker",
};
/// Calls past their deadline.
pub const CALL_TIMEOUTS: Metric = Metric {
    name: "cenote.pool.call.timeouts",
    kind: Kind::Counter,
    unit: "{call}",
    labels: BY_POOL,
    help: "Calls that ran past their deadline (each later cancelled or killed)",
};
/// Abandoned calls their worker let go of.
pub const CANCELLED: Metric = Metric {
    name: "cenote.pool.cancelled",
    kind: Kind::Counter,
    unit: "{call}",
    labels: BY_POOL,
    help: "Late or dropped calls that their worker let go of when asked: it served on",
};
/// Workers killed because a call did not let go.
pub const KILLED: Metric = Metric {
    name: "cenote.pool.killed",
    kind: Kind::Counter,
    unit: "{worker}",
    labels: BY_POOL,
    help:
        "Workers killed because a late or dropped call did not let go (or at their user's request)",
};
/// Workers found broken.
pub const CRASHES: Metric = Metric {
    name: "cenote.pool.crashes",
    kind: Kind::Counter,
    unit: "{worker}",
    labels: BY_POOL,
    help: "Workers found broken: crashed, or failed a recycle or health check",
};
/// Replacement starts.
pub const RESTARTS: Metric = Metric {
    name: "cenote.pool.restarts",
    kind: Kind::Counter,
    unit: "{worker}",
    labels: BY_POOL,
    help: "Replacement starts after a crash or a kill, and retries of failed starts",
};
/// Failed start attempts.
pub const START_FAILURES: Metric = Metric {
    name: "cenote.pool.start_failures",
    kind: Kind::Counter,
    unit: "{worker}",
    labels: BY_POOL,
    help: "Start attempts that failed or timed out",
};
/// Callers turned away.
pub const REJECTED: Metric = Metric {
    name: "cenote.pool.rejected",
    kind: Kind::Counter,
    unit: "{caller}",
    labels: BY_POOL,
    help: "Callers turned away at once because max_waiters were waiting (Saturated)",
};
/// Workers retired on their own request, by reason.
pub const RETIRED: Metric = Metric {
    name: "cenote.pool.retired",
    kind: Kind::Counter,
    unit: "{worker}",
    labels: &[
        POOL_LABEL,
        STRATEGY,
        Label {
            key: "reason",
            values: &["tasks", "memory", "lifetime"],
        },
    ],
    help: "Workers retired on their own request: task quota, memory growth, lifetime",
};
/// Time from asking for a worker to holding one.
pub const WAIT_TIME: Metric = Metric {
    name: "cenote.pool.wait_time",
    kind: Kind::Histogram,
    unit: "s",
    labels: BY_POOL,
    help: "Time from asking for a worker to holding one (zero when one was idle)",
};
/// Time a worker was held.
pub const USE_TIME: Metric = Metric {
    name: "cenote.pool.use_time",
    kind: Kind::Histogram,
    unit: "s",
    labels: BY_POOL,
    help:
        "Time a worker was checked out, from checkout to return; its count is the checkouts served",
};
/// Time a worker took to start.
pub const CREATE_TIME: Metric = Metric {
    name: "cenote.pool.create_time",
    kind: Kind::Histogram,
    unit: "s",
    labels: BY_POOL,
    help: "Time a successful start attempt took, from the factory's create to a worker",
};

/// Every metric the core records, in the README's order.
pub const POOL: &[Metric] = &[
    WORKERS,
    WORKERS_MAX,
    WAITING,
    CHECKOUT_TIMEOUTS,
    CALL_TIMEOUTS,
    CANCELLED,
    KILLED,
    CRASHES,
    RESTARTS,
    START_FAILURES,
    REJECTED,
    RETIRED,
    WAIT_TIME,
    USE_TIME,
    CREATE_TIME,
];

#[cfg(feature = "metrics")]
pub use self::facade::{counter, gauge, histogram, Counter, Gauge, Histogram};
#[cfg(not(feature = "metrics"))]
pub use self::off::{counter, gauge, histogram, Counter, Gauge, Histogram};

#[cfg(feature = "metrics")]
mod facade {
    pub use ::metrics::{Counter, Gauge, Histogram};
    use ::metrics::{Key, KeyName, Level, Metadata, SharedString, Unit};

    use super::Metric;

    static META: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// `m`'s key with `labels`, which must be its labels, in its order,
    /// each with one of its values if it lists them.
    fn key(m: &Metric, labels: &[(&'static str, &str)]) -> Key {
        debug_assert!(
            m.labels.len() == labels.len()
                && m.labels.iter().zip(labels).all(|(l, (k, v))| l.key == *k
                    && (l.values.is_empty() || l.values.contains(v))),
            "{} registered with labels {labels:?}, not its own {:?}",
            m.name,
            m.labels
        );
        let labels: Vec<::metrics::Label> = labels
            .iter()
            .map(|(k, v)| ::metrics::Label::new(*k, v.to_string()))
            .collect();
        Key::from_parts(m.name, labels)
    }

    fn unit(m: &Metric) -> Option<Unit> {
        match m.unit {
            "s" => Some(Unit::Seconds),
            "By" => Some(Unit::Bytes),
            _ => Some(Unit::Count),
        }
    }

    fn help(m: &Metric) -> SharedString {
        SharedString::const_str(m.help)
    }

    /// Register counter `m` with `labels` on the installed recorder.
    pub fn counter(m: &Metric, labels: &[(&'static str, &str)]) -> Counter {
        ::metrics::with_recorder(|r| {
            r.describe_counter(KeyName::from_const_str(m.name), unit(m), help(m));
            r.register_counter(&key(m, labels), &META)
        })
    }

    /// Register gauge `m` with `labels` on the installed recorder.
    pub fn gauge(m: &Metric, labels: &[(&'static str, &str)]) -> Gauge {
        ::metrics::with_recorder(|r| {
            r.describe_gauge(KeyName::from_const_str(m.name), unit(m), help(m));
            r.register_gauge(&key(m, labels), &META)
        })
    }

    /// Register histogram `m` with `labels` on the installed recorder.
    pub fn histogram(m: &Metric, labels: &[(&'static str, &str)]) -> Histogram {
        ::metrics::with_recorder(|r| {
            r.describe_histogram(KeyName::from_const_str(m.name), unit(m), help(m));
            r.register_histogram(&key(m, labels), &META)
        })
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    //! Without the feature: zero-sized handles whose recording is empty.

    use std::time::Duration;

    use super::Metric;

    /// A counter that counts nothing (feature `metrics` is off).
    pub struct Counter;
    /// A gauge that shows nothing (feature `metrics` is off).
    pub struct Gauge;
    /// A histogram that records nothing (feature `metrics` is off).
    pub struct Histogram;

    impl Counter {
        /// Nothing.
        #[inline(always)]
        pub fn increment(&self, _: u64) {}
    }

    impl Gauge {
        /// Nothing.
        #[inline(always)]
        pub fn set(&self, _: f64) {}
    }

    impl Histogram {
        /// Nothing.
        #[inline(always)]
        pub fn record(&self, _: Duration) {}
    }

    /// A counter that counts nothing.
    pub fn counter(_: &Metric, _: &[(&'static str, &str)]) -> Counter {
        Counter
    }

    /// A gauge that shows nothing.
    pub fn gauge(_: &Metric, _: &[(&'static str, &str)]) -> Gauge {
        Gauge
    }

    /// A histogram that records nothing.
    pub fn histogram(_: &Metric, _: &[(&'static str, &str)]) -> Histogram {
        Histogram
    }
}

/// The levels the maintenance tick samples into the gauges.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels {
    pub idle: usize,
    pub busy: usize,
    pub starting: usize,
    pub retiring: usize,
    pub waiting: usize,
    pub max: usize,
}

/// One pool's registered handles: the only code that records through the
/// facade for it.
pub(crate) struct Meters {
    /// Idle, busy, starting, retiring: [`WORKERS`]'s states, in order.
    workers: [Gauge; 4],
    workers_max: Gauge,
    waiting: Gauge,
    checkout_timeouts: Counter,
    call_timeouts: Counter,
    cancelled: Counter,
    killed: Counter,
    crashes: Counter,
    restarts: Counter,
    start_failures: Counter,
    rejected: Counter,
    /// Tasks, memory, lifetime: [`RETIRED`]'s reasons, in order.
    retired: [Counter; 3],
    wait: Histogram,
    used: Histogram,
    create: Histogram,
}

impl Meters {
    /// Register pool `pool`'s handles, its waiter strategy named `strategy`.
    pub fn new(pool: &str, strategy: &'static str) -> Self {
        let by_pool = [("pool", pool), ("strategy", strategy)];
        let c = |m: &Metric| counter(m, &by_pool);
        let h = |m: &Metric| histogram(m, &by_pool);
        let state = |s: &'static str| gauge(&WORKERS, &[by_pool[0], by_pool[1], ("state", s)]);
        let reason = |r: &'static str| counter(&RETIRED, &[by_pool[0], by_pool[1], ("reason", r)]);
        Meters {
            workers: [
                state("idle"),
                state("busy"),
                state("starting"),
                state("retiring"),
            ],
            workers_max: gauge(&WORKERS_MAX, &by_pool),
            waiting: gauge(&WAITING, &by_pool),
            checkout_timeouts: c(&CHECKOUT_TIMEOUTS),
            call_timeouts: c(&CALL_TIMEOUTS),
            cancelled: c(&CANCELLED),
            killed: c(&KILLED),
            crashes: c(&CRASHES),
            restarts: c(&RESTARTS),
            start_failures: c(&START_FAILURES),
            rejected: c(&REJECTED),
            retired: [reason("tasks"), reason("memory"), reason("lifetime")],
            wait: h(&WAIT_TIME),
            used: h(&USE_TIME),
            create: h(&CREATE_TIME),
        }
    }

    /// One checkout ended: how long its caller waited, and held the worker.
    #[inline]
    pub fn served(&self, waited_ns: u64, ran_ns: u64) {
        self.wait.record(Duration::from_nanos(waited_ns));
        self.used.record(Duration::from_nanos(ran_ns));
    }

    pub fn created(&self, took: Duration) {
        self.create.record(took);
    }

    pub fn checkout_timeouts(&self, n: u64) {
        self.checkout_timeouts.increment(n);
    }

    pub fn call_timeout(&self) {
        self.call_timeouts.increment(1);
    }

    pub fn cancelled(&self) {
        self.cancelled.increment(1);
    }

    pub fn killed(&self) {
        self.killed.increment(1);
    }

    pub fn crashed(&self) {
        self.crashes.increment(1);
    }

    pub fn restarted(&self) {
        self.restarts.increment(1);
    }

    pub fn start_failed(&self) {
        self.start_failures.increment(1);
    }

    pub fn rejected(&self) {
        self.rejected.increment(1);
    }

    pub fn retired(&self, why: &Retire) {
        let at = match why {
            Retire::Tasks(_) => 0,
            Retire::Memory(_) => 1,
            Retire::Lifetime(_) => 2,
        };
        self.retired[at].increment(1);
    }

    /// Set the gauges to `l`.
    pub fn sample(&self, l: Levels) {
        let [idle, busy, starting, retiring] = &self.workers;
        idle.set(l.idle as f64);
        busy.set(l.busy as f64);
        starting.set(l.starting as f64);
        retiring.set(l.retiring as f64);
        self.workers_max.set(l.max as f64);
        self.waiting.set(l.waiting as f64);
    }
}
