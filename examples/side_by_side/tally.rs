//! One pool's results as its callers measured them: the single place where
//! the run records its samples, read by the tables and by the HTML report.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::lane::{Done, End};
use super::workload::CLASSES;

/// Callers in a hurry are counted at index 0, patient ones at index 1.
pub const HURRIED: usize = 0;
pub const PATIENT: usize = 1;

/// Events counted per time bin: how a rate changed over the run, not only
/// its average.
#[derive(Debug, Clone)]
pub struct Timeline {
    bin: Duration,
    counts: Vec<u64>,
}

impl Timeline {
    /// About a hundred bins over `length`, none shorter than 100 ms, so a
    /// short run still shows its shape and an hour-long one stays small.
    pub fn for_run(length: Duration) -> Self {
        let steps_per_bin = (length.as_millis() as u64).div_ceil(100 * 100).max(1);
        Timeline {
            bin: Duration::from_millis(steps_per_bin * 100),
            counts: Vec::new(),
        }
    }

    /// Count one event at `at` from the start of the run.
    pub fn add(&mut self, at: Duration) {
        let i = (at.as_nanos() / self.bin.as_nanos()) as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }

    pub fn bin(&self) -> Duration {
        self.bin
    }

    /// Events per bin, from the start of the run to the last event.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// What one run measured.
pub struct Run {
    /// Each pool's results, in the order the pools were driven.
    pub lanes: Vec<Tally>,
    /// Calls issued to every pool alike, by when they were issued.
    pub offered: Timeline,
    /// From the first call issued to the last one resolved.
    pub elapsed: Duration,
}

/// One pool's results, as its callers measured them.
pub struct Tally {
    pub name: &'static str,
    pub strategy: &'static str,
    /// Checkout wait per priority class (µs), of the callers served.
    pub wait: Vec<Histogram<u64>>,
    /// Callers served, in total and by when their call ended.
    pub done: u64,
    pub served: Timeline,
    pub errors: u64,
    /// Callers per priority class, indexed `[class][HURRIED or PATIENT]`.
    pub callers: Vec<[u64; 2]>,
    /// Callers that got no worker within their checkout timeout, indexed
    /// like `callers`.
    pub timed_out: Vec<[u64; 2]>,
    /// Sum of time workers spent on calls.
    pub busy_time: Duration,
}

impl Tally {
    /// `length` is the run's planned length, which sizes the time bins.
    pub fn new(name: &'static str, strategy: &'static str, length: Duration) -> Self {
        Tally {
            name,
            strategy,
            wait: CLASSES
                .iter()
                .map(|_| {
                    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
                })
                .collect(),
            done: 0,
            served: Timeline::for_run(length),
            errors: 0,
            callers: vec![[0; 2]; CLASSES.len()],
            timed_out: vec![[0; 2]; CLASSES.len()],
            busy_time: Duration::ZERO,
        }
    }

    pub fn record(&mut self, d: &Done) {
        let patience = if d.job.hurried { HURRIED } else { PATIENT };
        self.callers[d.job.class][patience] += 1;
        self.busy_time += d.ran;
        match d.end {
            End::Ok => {
                self.done += 1;
                self.served.add(d.finished);
                self.wait[d.job.class].saturating_record(d.waited.as_micros().max(1) as u64);
            }
            End::TimedOut => self.timed_out[d.job.class][patience] += 1,
            End::Failed => self.errors += 1,
        }
    }

    /// Checkout waits of every class together.
    pub fn all_waits(&self) -> Histogram<u64> {
        let mut all = self.wait[0].clone();
        for h in &self.wait[1..] {
            let _ = all.add(h);
        }
        all
    }

    /// Callers in a hurry and patient ones, over all classes.
    pub fn callers_by_patience(&self) -> [u64; 2] {
        sum_classes(&self.callers)
    }

    /// Callers timed out in a hurry and patient, over all classes.
    pub fn timed_out_by_patience(&self) -> [u64; 2] {
        sum_classes(&self.timed_out)
    }
}

fn sum_classes(per_class: &[[u64; 2]]) -> [u64; 2] {
    per_class
        .iter()
        .fold([0; 2], |[h, p], c| [h + c[HURRIED], p + c[PATIENT]])
}
