//! What a pool of Python workers adds to the pool's own metrics
//! (`cenote_core::metrics`): how much memory its workers own, and how they
//! start. Names always; recording with feature `metrics`.
//!
//! Memory is a worker's USS (the pages only it maps: what recycling by
//! memory growth measures too), read from `/proc/PID/smaps_rollup` every
//! `rss_check_interval` as the worker finishes tasks. A label per worker
//! would grow without bound as workers are replaced, so the pool's workers
//! are summed up in two gauges: their total and the largest one. A worker
//! that leaves takes its share out.

use cenote_core::metrics::{Kind, Label, Metric, POOL_LABEL};

/// Memory the pool's workers own (`cenote.python.memory{stat}`).
pub const MEMORY: Metric = Metric {
    name: "cenote.python.memory",
    kind: Kind::Gauge,
    unit: "By",
    labels: &[
        POOL_LABEL,
        Label {
            key: "stat",
            values: &["total", "max"],
        },
    ],
    help: "USS of the pool's live workers (pages only they map), summed and the largest, as last read (every rss_check_interval while they serve)",
};

/// How the pool's workers start (`cenote.python.start_mode{mode}`).
pub const START_MODE: Metric = Metric {
    name: "cenote.python.start_mode",
    kind: Kind::Gauge,
    unit: "1",
    labels: &[
        POOL_LABEL,
        Label {
            key: "mode",
            values: &["fork_server", "spawn"],
        },
    ],
    help:
        "1 for the way workers start now (forked from the fork server, or spawned), 0 for the other",
};

/// Every metric a Python pool adds, in the README's order.
pub const PYTHON: &[Metric] = &[MEMORY, START_MODE];

#[cfg(feature = "metrics")]
pub(crate) use self::recording::{Meters, WorkerMemory};

#[cfg(feature = "metrics")]
mod recording {
    use std::collections::HashMap;
    use std::sync::Arc;

    use cenote_core::metrics::{gauge, Gauge};
    use parking_lot::Mutex;

    use super::{MEMORY, START_MODE};
    use crate::config::StartMode;

    /// One pool's Python gauges, registered at its first worker start.
    pub(crate) struct Meters {
        memory: Arc<Memory>,
        fork_server: Gauge,
        spawn: Gauge,
    }

    /// The workers' last readings, and the gauges they add up to.
    struct Memory {
        by_pid: Mutex<HashMap<u32, u64>>,
        total: Gauge,
        max: Gauge,
    }

    impl Memory {
        /// Change `pid`'s reading (`None`: it left), and set the gauges.
        fn set(&self, pid: u32, bytes: Option<u64>) {
            let mut by_pid = self.by_pid.lock();
            match bytes {
                Some(b) => by_pid.insert(pid, b),
                None => by_pid.remove(&pid),
            };
            self.total.set(by_pid.values().sum::<u64>() as f64);
            self.max
                .set(by_pid.values().copied().max().unwrap_or(0) as f64);
        }
    }

    impl Meters {
        pub fn new(pool: &str) -> Self {
            let mode = |m: &'static str| gauge(&START_MODE, &[("pool", pool), ("mode", m)]);
            let memory = |s: &'static str| gauge(&MEMORY, &[("pool", pool), ("stat", s)]);
            Meters {
                memory: Arc::new(Memory {
                    by_pid: Mutex::new(HashMap::new()),
                    total: memory("total"),
                    max: memory("max"),
                }),
                fork_server: mode("fork_server"),
                spawn: mode("spawn"),
            }
        }

        /// Workers now start in `mode` (decided at the first start).
        pub fn start_mode(&self, mode: StartMode) {
            let forked = mode == StartMode::ForkServer;
            self.fork_server.set(if forked { 1.0 } else { 0.0 });
            self.spawn.set(if forked { 0.0 } else { 1.0 });
        }

        /// Where worker `pid` reports its memory.
        pub fn memory_of(&self, pid: u32) -> WorkerMemory {
            WorkerMemory {
                book: Arc::clone(&self.memory),
                pid,
            }
        }
    }

    /// One worker's share of the memory gauges, taken out when it drops.
    pub(crate) struct WorkerMemory {
        book: Arc<Memory>,
        pid: u32,
    }

    impl WorkerMemory {
        /// The worker's USS is `bytes` now.
        pub fn record(&self, bytes: u64) {
            self.book.set(self.pid, Some(bytes));
        }
    }

    impl Drop for WorkerMemory {
        fn drop(&mut self) {
            self.book.set(self.pid, None);
        }
    }

    impl std::fmt::Debug for WorkerMemory {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WorkerMemory")
                .field("pid", &self.pid)
                .finish()
        }
    }
}
