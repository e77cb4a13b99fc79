//! Checkout throughput and wait: cenote against deadpool, bb8 and a bare
//! `Semaphore + Mutex<Vec<T>>`, under the same load.
//!
//! 64 tasks share a pool of 8 on a 2-thread tokio runtime; one op is
//! checkout, bump a counter in the pooled object, `yield_now`, return. Each
//! round runs every pool for `--secs` (pools interleaved round by round, so
//! machine noise hits all of them alike); the report gives per-pool medians
//! over `--rounds` rounds. The checkout wait is timed here, around the
//! checkout call, the same way for every pool.
//!
//! `cargo bench --bench checkout -- [--rounds N] [--secs S] [--json]`; with
//! `--json` the last line of stdout is one JSON object.

use std::convert::Infallible;
use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const TASKS: usize = 64;
const POOL_SIZE: usize = 8;
const THREADS: usize = 2;
/// The priorities `cenote_priority` draws from, uniformly per op.
const PRIORITIES: [i32; 4] = [0, 1, 2, 3];

/// The pooled object, the same for every pool.
#[derive(Debug, Default)]
struct Counter(u64);

// ---- cenote ----

impl cenote::Worker for Counter {
    type Error = Infallible;
    async fn shutdown(self, _grace: Duration) {}
}

struct Counters;
impl cenote::Factory for Counters {
    type Worker = Counter;
    async fn create(&self, _ctx: cenote::WorkerCtx) -> Result<Counter, Infallible> {
        Ok(Counter::default())
    }
}

// ---- deadpool (managed) and bb8 ----

struct Manager;

impl deadpool::managed::Manager for Manager {
    type Type = Counter;
    type Error = Infallible;
    async fn create(&self) -> Result<Counter, Infallible> {
        Ok(Counter::default())
    }
    async fn recycle(
        &self,
        _: &mut Counter,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Counter;
    type Error = Infallible;
    async fn connect(&self) -> Result<Counter, Infallible> {
        Ok(Counter::default())
    }
    async fn is_valid(&self, _: &mut Counter) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Counter) -> bool {
        false
    }
}

// ---- baseline: a semaphore guarding a Vec ----

struct Bare {
    permits: Arc<Semaphore>,
    items: Mutex<Vec<Counter>>,
}

struct BareGuard {
    pool: Arc<Bare>,
    item: Option<Counter>,
    _permit: OwnedSemaphorePermit,
}

impl Bare {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Bare {
            permits: Arc::new(Semaphore::new(n)),
            items: Mutex::new((0..n).map(|_| Counter::default()).collect()),
        })
    }

    async fn get(self: Arc<Self>) -> BareGuard {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("semaphore closed");
        let item = self.items.lock().expect("poisoned").pop();
        BareGuard {
            pool: self,
            item,
            _permit: permit,
        }
    }
}

impl std::ops::Deref for BareGuard {
    type Target = Counter;
    fn deref(&self) -> &Counter {
        self.item.as_ref().expect("a permit always finds an item")
    }
}

impl DerefMut for BareGuard {
    fn deref_mut(&mut self) -> &mut Counter {
        self.item.as_mut().expect("a permit always finds an item")
    }
}

impl Drop for BareGuard {
    fn drop(&mut self) {
        // The item goes back before the permit (a later field) is released.
        if let Some(item) = self.item.take() {
            self.pool.items.lock().expect("poisoned").push(item);
        }
    }
}

// ---- measurement ----

/// One pool's result for one round.
struct Sample {
    ops_per_sec: f64,
    wait_ns: Histogram<u64>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A pool under test: a name and a checkout. The checkout takes a random
/// number (only `cenote_priority` uses it) and yields any guard that gives
/// access to the `Counter` and returns it on drop.
struct Contender {
    name: &'static str,
    run: Box<dyn Fn(Duration) -> BoxFut<Sample>>,
}

impl Contender {
    fn new<C, Fut, G>(name: &'static str, checkout: C) -> Self
    where
        C: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = G> + Send + 'static,
        G: DerefMut<Target = Counter> + Send + 'static,
    {
        let checkout = Arc::new(checkout);
        Contender {
            name,
            run: Box::new(move |secs| Box::pin(measure(Arc::clone(&checkout), secs))),
        }
    }
}

/// Run `TASKS` tasks doing checkout/touch/yield/return for `secs`.
async fn measure<C, Fut, G>(checkout: Arc<C>, secs: Duration) -> Sample
where
    C: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = G> + Send + 'static,
    G: DerefMut<Target = Counter> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (checkout, stop, start) = (Arc::clone(&checkout), stop.clone(), start.clone());
            tokio::spawn(async move {
                let mut wait = wait_histogram();
                let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (i as u64 + 1);
                let mut ops = 0u64;
                start.wait().await;
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let asked = Instant::now();
                    let mut guard = checkout(rng).await;
                    wait.saturating_record(asked.elapsed().as_nanos() as u64);
                    guard.0 += 1;
                    tokio::task::yield_now().await;
                    drop(guard);
                    ops += 1;
                }
                (ops, wait)
            })
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    let mut wait_ns = wait_histogram();
    for task in tasks {
        let (n, h) = task.await.expect("bench task panicked");
        ops += n;
        wait_ns.add(h).expect("same histogram bounds");
    }
    Sample {
        ops_per_sec: ops as f64 / began.elapsed().as_secs_f64(),
        wait_ns,
    }
}

fn wait_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s, 2 significant digits: 1% resolution is plenty, and the
    // 64 per-task histograms stay small enough not to thrash the cache (at 3
    // digits, recording showed up as ~10% of the profile).
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

async fn contenders() -> Vec<Contender> {
    let cenote: cenote::Pool<Counters> = cenote::Pool::builder(Counters)
        .size(POOL_SIZE)
        .build()
        .await
        .expect("cenote pool");
    let cenote_priority: cenote::Pool<Counters, cenote::Lifo, cenote::Priority> =
        cenote::Pool::builder(Counters)
            .size(POOL_SIZE)
            .build()
            .await
            .expect("cenote priority pool");
    let managed = deadpool::managed::Pool::<Manager>::builder(Manager)
        .max_size(POOL_SIZE)
        .build()
        .expect("deadpool managed pool");
    let unmanaged = deadpool::unmanaged::Pool::new(POOL_SIZE);
    for _ in 0..POOL_SIZE {
        unmanaged
            .add(Counter::default())
            .await
            .map_err(|(_, e)| e)
            .expect("deadpool unmanaged add");
    }
    let bb8 = bb8::Pool::builder()
        .max_size(POOL_SIZE as u32)
        .build(Manager)
        .await
        .expect("bb8 pool");
    let bare = Bare::new(POOL_SIZE);

    vec![
        Contender::new("cenote", move |_| {
            let pool = cenote.clone();
            async move { pool.get().await.expect("cenote get") }
        }),
        Contender::new("cenote_priority", move |r| {
            let pool = cenote_priority.clone();
            let priority = PRIORITIES[(r % PRIORITIES.len() as u64) as usize];
            async move {
                let guard = pool
                    .get_with(cenote::CheckoutOptions::default().priority(priority))
                    .await;
                guard.expect("cenote get")
            }
        }),
        Contender::new("deadpool_managed", move |_| {
            let pool = managed.clone();
            async move { pool.get().await.expect("deadpool managed get") }
        }),
        Contender::new("deadpool_unmanaged", move |_| {
            let pool = unmanaged.clone();
            async move { pool.get().await.expect("deadpool unmanaged get") }
        }),
        Contender::new("bb8", move |_| {
            let pool = bb8.clone();
            async move { pool.get_owned().await.expect("bb8 get") }
        }),
        Contender::new("baseline", move |_| Arc::clone(&bare).get()),
    ]
}

// ---- report ----

struct Args {
    rounds: usize,
    secs: f64,
    json: bool,
    /// Run only the named pools (comma-separated; the table's first row is
    /// still the reference for the ratio), e.g. for `perf record`.
    only: Option<String>,
}

fn args() -> Args {
    let mut out = Args {
        rounds: 5,
        secs: 1.0,
        json: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => out.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--secs" => out.secs = it.next().and_then(|v| v.parse().ok()).expect("--secs S"),
            "--json" => out.json = true,
            "--only" => out.only = it.next(),
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
    }
    out.rounds = out.rounds.max(1);
    out
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Median over rounds of each pool's ops/s and p50/p99/max wait (µs).
struct Summary {
    name: &'static str,
    ops: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn summarize(name: &'static str, samples: &[Sample]) -> Summary {
    let q = |q: f64| {
        let v = samples.iter();
        median(
            v.map(|s| s.wait_ns.value_at_quantile(q) as f64 / 1e3)
                .collect(),
        )
    };
    Summary {
        name,
        ops: median(samples.iter().map(|s| s.ops_per_sec).collect()),
        p50_us: q(0.50),
        p99_us: q(0.99),
        max_us: q(1.0),
    }
}

fn main() {
    let args = args();
    let secs = Duration::from_secs_f64(args.secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut pools = rt.block_on(contenders());
    if let Some(only) = &args.only {
        pools.retain(|p| only.split(',').any(|n| n == p.name));
    }
    let mut samples: Vec<Vec<Sample>> = pools.iter().map(|_| Vec::new()).collect();
    eprintln!(
        "checkout: {TASKS} tasks, pool of {POOL_SIZE}, {THREADS} runtime threads, {} rounds x {:.2}s per pool",
        args.rounds, args.secs
    );
    for round in 1..=args.rounds {
        for (pool, out) in pools.iter().zip(&mut samples) {
            let s = rt.block_on((pool.run)(secs));
            eprintln!(
                "  round {round} {:<20} {:>12.0} ops/s  p99 wait {:>9.1} us",
                pool.name,
                s.ops_per_sec,
                s.wait_ns.value_at_quantile(0.99) as f64 / 1e3
            );
            out.push(s);
        }
    }
    let rows: Vec<Summary> = pools
        .iter()
        .zip(&samples)
        .map(|(p, s)| summarize(p.name, s))
        .collect();
    let cenote = rows.iter().find(|r| r.name == "cenote").map(|r| r.ops);

    println!();
    println!("| pool | ops/s | cenote / pool | p50 wait (us) | p99 wait (us) | max wait (us) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ratio = cenote.map_or("-".into(), |c| format!("{:.2}x", c / r.ops));
        println!(
            "| {} | {:.0} | {ratio} | {:.1} | {:.1} | {:.0} |",
            r.name, r.ops, r.p50_us, r.p99_us, r.max_us
        );
    }
    if args.json {
        let map = |f: fn(&Summary) -> f64| {
            let m: serde_json::Map<_, _> = rows
                .iter()
                .map(|r| (r.name.to_string(), serde_json::json!(f(r))))
                .collect();
            serde_json::Value::Object(m)
        };
        let out = serde_json::json!({
            "ops_per_sec": map(|r| r.ops.round()),
            "p99_wait_us": map(|r| r.p99_us),
        });
        println!("{out}");
    }
}
