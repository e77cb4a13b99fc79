//! What the run shows on the terminal: a live table while it runs, a
//! comparison at the end. The pictures go to a file (`html.rs`).

use std::time::Duration;

use super::tally::{Run, Tally, HURRIED, PATIENT};
use super::workload::CLASSES;

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
            t.timed_out_by_patience().iter().sum::<u64>(),
            t.done as f64 / elapsed.as_secs_f64().max(1e-3),
            ms(all.value_at_quantile(0.5)),
            ms(all.value_at_quantile(0.99)),
        );
    }
    out
}

/// The closing comparison: throughput, callers timed out (in a hurry and
/// patient), wait per class of those served, utilization, errors.
pub fn final_table(run: &Run, workers: usize) -> String {
    let elapsed = run.elapsed;
    let mut out = String::from("\n== comparison ==\n");
    out += &format!(
        "{:<10} {:<9} {:>8} {:>6} {:>7} {:>22}",
        "pool", "waiters", "calls/s", "util", "errors", "timed out hurried/patient"
    );
    for (class, _) in CLASSES {
        out += &format!(" {:>16}", format!("{class} p50/p99 ms"));
    }
    out += "\n";
    for t in &run.lanes {
        let util = t.busy_time.as_secs_f64() / (workers as f64 * elapsed.as_secs_f64());
        let (timed_out, callers) = (t.timed_out_by_patience(), t.callers_by_patience());
        out += &format!(
            "{:<10} {:<9} {:>8.0} {:>5.0}% {:>7} {:>22}",
            t.name,
            t.strategy,
            t.done as f64 / elapsed.as_secs_f64(),
            util * 100.0,
            t.errors,
            format!(
                "{}/{} of {}/{}",
                timed_out[HURRIED], timed_out[PATIENT], callers[HURRIED], callers[PATIENT]
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
