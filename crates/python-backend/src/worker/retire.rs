//! When a worker that still works should be replaced anyway: after its task
//! quota, once its memory grew too much, or at its maximum lifetime.
//!
//! This is policy, not protocol, so it is kept apart from the session: the
//! worker reports every task it finished, and the pool asks
//! [`reason`](Retirement::reason) each time the worker comes back.

use std::time::{Duration, Instant};

use cenote_core::Retire;

use crate::config::PythonConfig;

/// One worker's retirement policy and what it has measured so far.
#[derive(Debug)]
pub(super) struct Retirement {
    pid: u32,
    /// The task quota, jitter drawn.
    quota: Option<u64>,
    max_rss_growth: Option<u64>,
    rss_check_interval: Duration,
    max_lifetime: Option<Duration>,
    tasks: u64,
    born: Instant,
    /// Resident memory once ready; only read when growth is limited.
    baseline_rss: Option<u64>,
    rss_growth: u64,
    rss_checked: Instant,
    /// Where its memory readings go, in a pool with metrics.
    #[cfg(feature = "metrics")]
    memory: Option<crate::metrics::WorkerMemory>,
}

impl Retirement {
    /// `config`'s policy for the process `pid`, which just became ready: its
    /// task quota is drawn, its lifetime and memory baseline start now.
    pub(super) fn new(config: &PythonConfig, pid: u32) -> Self {
        let now = Instant::now();
        Retirement {
            pid,
            quota: config.draw_quota(),
            max_rss_growth: config.max_rss_growth,
            rss_check_interval: config.rss_check_interval,
            max_lifetime: config.max_lifetime,
            tasks: 0,
            born: now,
            baseline_rss: config.max_rss_growth.and_then(|_| rss_bytes(pid)),
            rss_growth: 0,
            rss_checked: now,
            #[cfg(feature = "metrics")]
            memory: None,
        }
    }

    /// Report memory readings to `memory` too, reading it even when growth
    /// is not limited.
    #[cfg(feature = "metrics")]
    pub(super) fn report_memory(&mut self, memory: crate::metrics::WorkerMemory) {
        if let Some(bytes) = rss_bytes(self.pid) {
            memory.record(bytes);
        }
        self.memory = Some(memory);
    }

    /// Whether memory is read: growth is limited, or reported.
    fn reads_memory(&self) -> bool {
        #[cfg(feature = "metrics")]
        if self.memory.is_some() {
            return true;
        }
        self.max_rss_growth.is_some()
    }

    /// Tasks finished so far.
    pub(super) fn tasks(&self) -> u64 {
        self.tasks
    }

    /// A task finished: count it, and read memory if a check is due.
    pub(super) fn task_done(&mut self) {
        self.tasks += 1;
        if self.reads_memory() && self.rss_checked.elapsed() >= self.rss_check_interval {
            self.rss_checked = Instant::now();
            let now = rss_bytes(self.pid);
            #[cfg(feature = "metrics")]
            if let (Some(memory), Some(bytes)) = (&self.memory, now) {
                memory.record(bytes);
            }
            if let (Some(base), Some(now)) = (self.baseline_rss, now) {
                self.rss_growth = now.saturating_sub(base);
            }
        }
    }

    /// Why the worker should be replaced now, if it should.
    pub(super) fn reason(&self) -> Option<Retire> {
        if let Some(quota) = self.quota {
            if self.tasks >= quota {
                return Some(Retire::Tasks(self.tasks));
            }
        }
        if let Some(limit) = self.max_rss_growth {
            if self.rss_growth > limit {
                return Some(Retire::Memory(self.rss_growth));
            }
        }
        if let Some(life) = self.max_lifetime {
            if self.born.elapsed() >= life {
                return Some(Retire::Lifetime(life));
            }
        }
        None
    }
}

/// Resident set size of `pid`, from `/proc/<pid>/statm`.
fn rss_bytes(pid: u32) -> Option<u64> {
    own_memory(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// USS from the text of `/proc/PID/smaps_rollup`: the pages only this
/// process maps, in bytes. Shared pages (a forked worker's inheritance from
/// the fork server) do not count until the worker writes to them.
fn own_memory(rollup: &str) -> Option<u64> {
    let kib = |field: &str| -> Option<u64> {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    Some((kib("Private_Clean:")? + kib("Private_Dirty:")?) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_counts_private_pages_only() {
        let rollup = "55f0-7ffd ---p 00000000 00:00 0 [rollup]\nRss: 9000 kB\nPss: 5000 kB\n\
                      Shared_Clean: 6000 kB\nPrivate_Clean: 100 kB\nPrivate_Dirty: 2900 kB\n";
        assert_eq!(own_memory(rollup), Some(3000 * 1024));
        assert_eq!(own_memory("Rss: 1 kB\n"), None);
        let me = own_memory(&std::fs::read_to_string("/proc/self/smaps_rollup").unwrap());
        assert!(me.is_some_and(|b| b > 0));
    }
}
