//! Waiter strategies against one replayed workload of callers with mixed
//! checkout deadlines: how many time out under each.
//!
//! The workload is `examples/side_by_side`'s (the same generator, the same
//! defaults): Poisson arrivals at 50% of the pool's capacity with bursts to
//! 180% for 0.8 s every 5 s; calls of 5 ms (40 ms for one in five); half the
//! callers wait at most 100 ms for a worker, the rest 2 s. Here the workers
//! are in-process (a call sleeps its work), so the table shows the
//! strategies and not the machine: every pool (FIFO, LIFO, Priority and
//! Deadline waiters, 4 workers each) gets the same schedule at the same
//! instants, all at once, for each seed.
//!
//! `cargo bench --bench deadline -- [--secs S] [--seeds N] [--json]`
//! (defaults 20 s, 3 seeds; about a minute).

#[path = "../examples/side_by_side/workload.rs"]
#[allow(dead_code)] // the priority classes are the example's concern
mod workload;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::{
    Call, CallCtx, CheckoutOptions, Deadline, Error, Factory, Fifo, IdleStrategy, Lifo, Pool,
    Priority, WaitStrategy, Worker, WorkerCtx,
};
use futures::future::BoxFuture;
use workload::{Job, Mix};

const WORKERS: usize = 4;

/// A worker whose call takes the job's work, asleep.
struct Sleeper;

impl Worker for Sleeper {
    type Error = Infallible;
    async fn shutdown(self, _grace: Duration) {}
}

impl Call<Duration> for Sleeper {
    type Response = ();
    async fn call(&mut self, work: Duration, _ctx: CallCtx) -> Result<(), Infallible> {
        tokio::time::sleep(work).await;
        Ok(())
    }
}

struct Sleepers;
impl Factory for Sleepers {
    type Worker = Sleeper;
    async fn create(&self, _ctx: WorkerCtx) -> Result<Sleeper, Infallible> {
        Ok(Sleeper)
    }
}

/// How one call ended: served after waiting this long, or timed out.
type End = Option<Duration>;

/// One pool, its strategy types erased.
trait Lane: Send + Sync {
    fn run(&self, job: Job) -> BoxFuture<'static, End>;
}

impl<I: IdleStrategy, W: WaitStrategy> Lane for Pool<Sleepers, I, W> {
    fn run(&self, job: Job) -> BoxFuture<'static, End> {
        let pool = self.clone();
        Box::pin(async move {
            let asked = Instant::now();
            let opts = CheckoutOptions::default()
                .priority(workload::CLASSES[job.class].1)
                .timeout(job.patience);
            match pool.get_with(opts).await {
                Ok(mut worker) => {
                    let waited = asked.elapsed();
                    worker.call(job.work).await.expect("a sleep cannot fail");
                    Some(waited)
                }
                Err(Error::CheckoutTimeout { .. }) => None,
                Err(e) => panic!("unexpected {e}"),
            }
        })
    }
}

async fn pool<W: WaitStrategy>() -> Arc<dyn Lane> {
    let pool: Pool<Sleepers, Lifo, W> = Pool::builder(Sleepers)
        .size(WORKERS)
        .max_waiters(100_000)
        .health_interval(None)
        .build()
        .await
        .expect("pool builds");
    Arc::new(pool)
}

/// One strategy's results over every seed.
#[derive(Default, Clone)]
struct Tally {
    /// Callers in a hurry, and patient ones.
    callers: [u64; 2],
    timed_out: [u64; 2],
    /// Waits of the callers served, in µs.
    waits: Vec<u64>,
}

/// Replay `jobs` into every lane at their instants; one tally per lane.
async fn replay(lanes: &[Arc<dyn Lane>], jobs: &[Job]) -> Vec<Tally> {
    let start = tokio::time::Instant::now();
    let mut calls = Vec::new();
    for job in jobs {
        tokio::time::sleep_until(start + job.at).await;
        for (i, lane) in lanes.iter().enumerate() {
            let call = lane.run(*job);
            calls.push((i, job.hurried, tokio::spawn(call)));
        }
    }
    let mut tallies = vec![Tally::default(); lanes.len()];
    for (i, hurried, call) in calls {
        let t = &mut tallies[i];
        let who = usize::from(!hurried);
        t.callers[who] += 1;
        match call.await.expect("a call task panicked") {
            Some(waited) => t.waits.push(waited.as_micros() as u64),
            None => t.timed_out[who] += 1,
        }
    }
    tallies
}

/// The time a worker spends per call beyond its work (timer granularity,
/// the pool): the median of a few calls made one at a time.
async fn overhead(lane: &Arc<dyn Lane>, work: Duration) -> Duration {
    let mut ran = Vec::new();
    for _ in 0..25 {
        let began = Instant::now();
        let job = Job {
            at: Duration::ZERO,
            class: 0,
            work,
            hurried: false,
            patience: Duration::from_secs(5),
        };
        lane.run(job).await;
        ran.push(began.elapsed());
    }
    ran.sort();
    ran[ran.len() / 2].saturating_sub(work)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut it = std::env::args().skip(1);
    let (mut secs, mut seeds, mut json) = (20.0, 3u64, false);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).expect("--secs S"),
            "--seeds" => seeds = it.next().and_then(|v| v.parse().ok()).expect("--seeds N"),
            "--json" => json = true,
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    let names = ["fifo", "lifo", "priority", "deadline"];
    let lanes = vec![
        pool::<Fifo>().await,
        pool::<Lifo>().await,
        pool::<Priority>().await,
        pool::<Deadline>().await,
    ];
    let mix = Mix::default();
    let cost = overhead(&lanes[0], mix.short).await;
    println!(
        "{WORKERS} workers per pool, {secs} s per seed, {seeds} seeds; per-call cost beyond the work {:.2} ms",
        cost.as_secs_f64() * 1000.0
    );
    let mut totals = vec![Tally::default(); lanes.len()];
    for seed in 0..seeds {
        let jobs = workload::schedule(&mix, WORKERS, cost, Duration::from_secs_f64(secs), seed + 7);
        let tallies = replay(&lanes, &jobs).await;
        print!("seed {}: {} calls; timed out:", seed + 7, jobs.len());
        for (name, t) in names.iter().zip(&tallies) {
            print!(" {name} {}", t.timed_out[0] + t.timed_out[1]);
        }
        println!();
        for (total, t) in totals.iter_mut().zip(tallies) {
            for k in 0..2 {
                total.callers[k] += t.callers[k];
                total.timed_out[k] += t.timed_out[k];
            }
            total.waits.extend(t.waits);
        }
    }
    println!();
    println!("| waiters | callers | timed out | in a hurry (≤ 100 ms) timed out | patient (≤ 2 s) timed out | served: p50 wait ms | p99 wait ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut out = serde_json::Map::new();
    for (name, t) in names.iter().zip(totals.iter_mut()) {
        t.waits.sort_unstable();
        let (all, lost) = (t.callers[0] + t.callers[1], t.timed_out[0] + t.timed_out[1]);
        let pct = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
        println!(
            "| {name} | {all} | {lost} ({:.1}%) | {} of {} ({:.1}%) | {} of {} ({:.1}%) | {:.1} | {:.1} |",
            pct(lost, all),
            t.timed_out[0],
            t.callers[0],
            pct(t.timed_out[0], t.callers[0]),
            t.timed_out[1],
            t.callers[1],
            pct(t.timed_out[1], t.callers[1]),
            percentile(&t.waits, 0.5),
            percentile(&t.waits, 0.99),
        );
        out.insert(name.to_string(), serde_json::json!(lost));
    }
    if json {
        println!("{}", serde_json::json!({ "timed_out": out }));
    }
}
