//! The workload every pool receives: one schedule of jobs, made once from a
//! seed and replayed into each pool at the same instants. Each job has a
//! priority class and a checkout deadline: some callers are in a hurry,
//! the rest patient.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Three priority classes; higher is more urgent.
pub const CLASSES: [(&str, i32); 3] = [("low", 0), ("normal", 1), ("high", 2)];

/// One call to make.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// When to issue it, from the start of the run.
    pub at: Duration,
    /// Index into [`CLASSES`].
    pub class: usize,
    /// How long the Python handler works on it.
    pub work: Duration,
    /// Whether its caller is in a hurry (`Mix::tight`) or patient.
    pub hurried: bool,
    /// How long its caller waits for a worker (its checkout timeout).
    pub patience: Duration,
}

/// The knobs of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Short call duration.
    pub short: Duration,
    /// Long call duration.
    pub long: Duration,
    /// Share of long calls, 0..=1.
    pub long_share: f64,
    /// Offered load between bursts, as a share of the pools' capacity.
    pub load: f64,
    /// Offered load during bursts (above 1 overflows the pool).
    pub burst_load: f64,
    /// A burst of `burst_len` starts every `burst_every`.
    pub burst_every: Duration,
    /// How long a burst lasts.
    pub burst_len: Duration,
    /// The checkout timeout of callers in a hurry.
    pub tight: Duration,
    /// The checkout timeout of patient callers.
    pub loose: Duration,
    /// Share of callers in a hurry, 0..=1.
    pub tight_share: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            short: Duration::from_millis(5),
            long: Duration::from_millis(40),
            long_share: 0.2,
            load: 0.5,
            burst_load: 1.8,
            burst_every: Duration::from_secs(5),
            burst_len: Duration::from_millis(800),
            tight: Duration::from_millis(100),
            loose: Duration::from_secs(2),
            tight_share: 0.5,
        }
    }
}

impl Mix {
    /// Mean time a worker spends on one call: the handler's work plus the
    /// per-call cost measured on this machine.
    fn mean_busy(&self, overhead: Duration) -> Duration {
        self.short.mul_f64(1.0 - self.long_share) + self.long.mul_f64(self.long_share) + overhead
    }

    fn in_burst(&self, t: Duration) -> bool {
        let phase = t.as_secs_f64() % self.burst_every.as_secs_f64();
        // The first burst comes after one quiet period, so the pools start warm.
        t >= self.burst_every && phase < self.burst_len.as_secs_f64()
    }
}

/// Poisson arrivals at the offered load for `workers` workers, over `length`.
/// `overhead` is the measured per-call cost beyond the handler's own work, so
/// "load 1.0" means the pool's real capacity on this machine.
pub fn schedule(
    mix: &Mix,
    workers: usize,
    overhead: Duration,
    length: Duration,
    seed: u64,
) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    let capacity_per_s = workers as f64 / mix.mean_busy(overhead).as_secs_f64();
    let mut jobs = Vec::new();
    let mut t = Duration::ZERO;
    while t < length {
        let load = if mix.in_burst(t) {
            mix.burst_load
        } else {
            mix.load
        };
        let rate = (capacity_per_s * load).max(1.0);
        let gap = -(1.0 - rng.gen::<f64>()).ln() / rate;
        t += Duration::from_secs_f64(gap);
        let long = rng.gen_bool(mix.long_share.clamp(0.0, 1.0));
        let hurried = rng.gen_bool(mix.tight_share.clamp(0.0, 1.0));
        jobs.push(Job {
            at: t,
            class: rng.gen_range(0..CLASSES.len()),
            work: if long { mix.long } else { mix.short },
            hurried,
            patience: if hurried { mix.tight } else { mix.loose },
        });
    }
    jobs
}
