//! What the run shows: a live table while it runs, a comparison at the end.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::lane::{Done, End};
use super::workload::CLASSES;

/// One pool's results, as its callers measured them.
pub struct Tally {
    pub name: &'static str,
    pub strategy: &'static str,
    /// Checkout wait per priority class (µs).
    pub wait: Vec<Histogram<u64>>,
    pub done: u64,
    pub errors: u64,
    /// Callers that got no worker within their checkout timeout: those in
    /// a hurry, and the patient ones.
    pub timed_out: [u64; 2],
    /// Callers in a hurry, and patient ones.
    pub callers: [u64; 2],
    /// Sum of time workers spent on calls.
    pub busy_time: Duration,
}

impl Tally {
    pub fn new(name: &'static str, strategy: &'static str) -> Self {
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
            errors: 0,
            timed_out: [0; 2],
            callers: [0; 2],
            busy_time: Duration::ZERO,
        }
    }

    pub fn record(&mut self, d: &Done) {
        let patient = usize::from(!d.job.hurried);
        self.callers[patient] += 1;
        self.busy_time += d.ran;
        match d.end {
            End::Ok => {
                self.done += 1;
                self.wait[d.job.class].saturating_record(d.waited.as_micros().max(1) as u64);
            }
            End::TimedOut => self.timed_out[patient] += 1,
            End::Failed => self.errors += 1,
        }
    }

    fn all_waits(&self) -> Histogram<u64> {
        let mut all = self.wait[0].clone();
        for h in &self.wait[1..] {
            let _ = all.add(h);
        }
        all
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// One line per pool: live sizes from `status()`, results so far.
pub fn live_table(rows: &[(&Tally, cenote::Status)], elapsed: Duration) -> String {
    let mut out = format!(
        "t={:>5.1}s  {:<10} {:<9} {:>4} {:>4} {:>7} {:>7} {:>9} {:>8} {:>9} {:>9}\n",
        elapsed.as_secs_f64(),
        "pool",
        "waiters",
        "idle",
        "busy",
        "waiting",
        "done",
        "timed out",
        "calls/s",
        "wait p50",
        "wait p99"
    );
    for (t, s) in rows {
        let all = t.all_waits();
        out += &format!(
            "          {:<10} {:<9} {:>4} {:>4} {:>7} {:>7} {:>9} {:>8.0} {:>8}ms {:>8}ms\n",
            t.name,
            t.strategy,
            s.idle,
            s.busy,
            s.waiting,
            t.done,
            t.timed_out[0] + t.timed_out[1],
            t.done as f64 / elapsed.as_secs_f64().max(1e-3),
            ms(all.value_at_quantile(0.5)),
            ms(all.value_at_quantile(0.99)),
        );
    }
    out
}

/// The closing comparison: throughput, callers timed out (in a hurry and
/// patient), wait per class of those served, utilization, errors.
pub fn final_table(rows: &[Tally], elapsed: Duration, workers: usize) -> String {
    let mut out = String::from("\n== comparison ==\n");
    out += &format!(
        "{:<10} {:<9} {:>8} {:>6} {:>7} {:>22}",
        "pool", "waiters", "calls/s", "util", "errors", "timed out hurried/patient"
    );
    for (class, _) in CLASSES {
        out += &format!(" {:>16}", format!("{class} p50/p99 ms"));
    }
    out += "\n";
    for t in rows {
        let util = t.busy_time.as_secs_f64() / (workers as f64 * elapsed.as_secs_f64());
        out += &format!(
            "{:<10} {:<9} {:>8.0} {:>5.0}% {:>7} {:>22}",
            t.name,
            t.strategy,
            t.done as f64 / elapsed.as_secs_f64(),
            util * 100.0,
            t.errors,
            format!(
                "{}/{} of {}/{}",
                t.timed_out[0], t.timed_out[1], t.callers[0], t.callers[1]
            ),
        );
        for h in &t.wait {
            out += &format!(
                " {:>16}",
                format!(
                    "{}/{}",
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99))
                )
            );
        }
        out += "\n";
    }
    out += "\nFIFO waiters: arrival order, so every class waits alike. LIFO waiters: the newest\n";
    out += "caller is served first, so medians drop and the tail grows. Priority waiters: high\n";
    out += "waits least, low absorbs the bursts. Deadline waiters: the caller whose checkout\n";
    out += "deadline is nearest goes first, so fewer callers in a hurry time out while patient\n";
    out += "ones still make it. Wait percentiles are of the callers served.\n";
    out
}
