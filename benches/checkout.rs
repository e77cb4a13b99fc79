//! Checkout throughput and wait: cenote against deadpool, bb8 and a bare
//! `Semaphore + Mutex<Vec<T>>`, under the same load; and the same checkouts
//! counted in instructions, a figure machine noise cannot move.
//!
//! Timed mode (the default). 64 tasks share a pool of 8 on a 2-thread tokio
//! runtime; one op is checkout, bump a counter in the pooled object,
//! `yield_now`, return. Each round runs every pool for `--secs` (pools
//! interleaved round by round, so machine noise hits all of them alike); the
//! report gives per-pool medians over `--rounds` rounds. The checkout wait is
//! timed here, around the checkout call, the same way for every pool.
//!
//! `cargo bench --bench checkout -- [--rounds N] [--secs S] [--json]`; with
//! `--json` the last line of stdout is one JSON object.
//!
//! Instructions mode: `cargo bench --bench checkout -- --instructions [--json]`
//! (about 30 s; needs `valgrind` on `PATH`). The bench re-executes itself once
//! per pool and load under `valgrind --tool=callgrind`; each child builds that
//! one pool alone on a tokio current-thread runtime, runs a warm-up of 2,000
//! ops, then a fixed number of ops inside `instructions_window`, the only
//! function callgrind counts in (`--toggle-collect`). Building the runtime and
//! the pool and the warm-up are not counted; the runtime's scheduling of the
//! tasks is, the same for every pool. Two loads, with the same checkouts and
//! the same use of the object as the timed mode:
//! - 1 task, 200,000 ops of checkout, bump, return, no yield: the
//!   uncontended path, where an idle object is always there. JSON key
//!   `instructions_per_op`.
//! - 16 tasks on the pool of 8, 12,500 ops each, holding the object across a
//!   `yield_now` (as the timed mode does): half the tasks are always waiting,
//!   so checkouts take the pool's waiting path and returns hand over to a
//!   waiter. JSON key `instructions_per_op_contended`.
//!
//! The table gives instructions per op and their ratio to deadpool unmanaged
//! and to the baseline. Repeat runs of one build agree to a few instructions
//! in a million (only the pools' background timers, which fire more often
//! under valgrind's slowdown, can move them). A rebuild can move a pool by
//! up to ~2% even for an edit elsewhere in this file, since the pools' generic
//! code is compiled (and inlined) in this crate: across commits, trust only
//! larger differences. Instructions are not time: clock reads, atomics and
//! cache misses cost more than their count.
//! `--timed` (or `--rounds`/`--secs`) with `--instructions` runs both modes,
//! timed first, and `--json` puts both in the one object. `--only a,b` limits
//! either mode to those pools; `--callgrind-dir DIR` keeps the callgrind files,
//! `DIR/<pool>.<uncontended|contended>.out`, for `callgrind_annotate
//! --inclusive=yes`.

use std::convert::Infallible;
use std::future::Future;
use std::ops::DerefMut;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
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

/// A pool under test: a name and its checkout, wrapped once for each mode.
/// The checkout takes a random number (only `cenote_priority` uses it) and
/// yields any guard that gives access to the `Counter` and returns it on
/// drop; both modes run the same checkout and the same [`use_and_return`].
struct Contender {
    name: &'static str,
    /// Timed mode: `TASKS` tasks for the given time.
    run: Box<dyn Fn(Duration) -> BoxFut<Sample>>,
    /// Instructions mode: a fixed number of ops.
    count: Box<dyn Fn(Load) -> BoxFut<()>>,
}

impl Contender {
    fn new<C, Fut, G>(name: &'static str, checkout: C) -> Self
    where
        C: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = G> + Send + 'static,
        G: DerefMut<Target = Counter> + Send + 'static,
    {
        let checkout = Arc::new(checkout);
        let counted = Arc::clone(&checkout);
        Contender {
            name,
            run: Box::new(move |secs| Box::pin(measure(Arc::clone(&checkout), secs))),
            count: Box::new(move |load| Box::pin(count_ops(Arc::clone(&counted), load))),
        }
    }
}

/// What an op does with the object it checked out: bump the counter, hold
/// it across a `yield_now` if `hold` (other tasks run meanwhile and queue for
/// the pool), and return it by dropping the guard.
async fn use_and_return<G: DerefMut<Target = Counter>>(mut guard: G, hold: bool) {
    guard.0 += 1;
    if hold {
        tokio::task::yield_now().await;
    }
    drop(guard);
}

/// Task `i`'s random numbers, handed to the checkout (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(i: usize) -> Self {
        Rng(0x9E37_79B9_7F4A_7C15_u64 ^ (i as u64 + 1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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
                let mut rng = Rng::new(i);
                let mut ops = 0u64;
                start.wait().await;
                while !stop.load(Ordering::Relaxed) {
                    let r = rng.next();
                    let asked = Instant::now();
                    let guard = checkout(r).await;
                    wait.saturating_record(asked.elapsed().as_nanos() as u64);
                    use_and_return(guard, true).await;
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

/// The pools, in table order.
const POOLS: [&str; 6] = [
    "cenote",
    "cenote_priority",
    "deadpool_managed",
    "deadpool_unmanaged",
    "bb8",
    "baseline",
];

/// Build pool `name` (one of [`POOLS`]) on the current runtime.
async fn contender(name: &str) -> Contender {
    match name {
        "cenote" => {
            let pool: cenote::Pool<Counters> = cenote::Pool::builder(Counters)
                .size(POOL_SIZE)
                .build()
                .await
                .expect("cenote pool");
            Contender::new("cenote", move |_| {
                let pool = pool.clone();
                async move { pool.get().await.expect("cenote get") }
            })
        }
        "cenote_priority" => {
            let pool: cenote::Pool<Counters, cenote::Lifo, cenote::Priority> =
                cenote::Pool::builder(Counters)
                    .size(POOL_SIZE)
                    .build()
                    .await
                    .expect("cenote priority pool");
            Contender::new("cenote_priority", move |r| {
                let pool = pool.clone();
                let priority = PRIORITIES[(r % PRIORITIES.len() as u64) as usize];
                async move {
                    let guard = pool
                        .get_with(cenote::CheckoutOptions::default().priority(priority))
                        .await;
                    guard.expect("cenote get")
                }
            })
        }
        "deadpool_managed" => {
            let pool = deadpool::managed::Pool::<Manager>::builder(Manager)
                .max_size(POOL_SIZE)
                .build()
                .expect("deadpool managed pool");
            Contender::new("deadpool_managed", move |_| {
                let pool = pool.clone();
                async move { pool.get().await.expect("deadpool managed get") }
            })
        }
        "deadpool_unmanaged" => {
            let pool = deadpool::unmanaged::Pool::new(POOL_SIZE);
            for _ in 0..POOL_SIZE {
                pool.add(Counter::default())
                    .await
                    .map_err(|(_, e)| e)
                    .expect("deadpool unmanaged add");
            }
            Contender::new("deadpool_unmanaged", move |_| {
                let pool = pool.clone();
                async move { pool.get().await.expect("deadpool unmanaged get") }
            })
        }
        "bb8" => {
            let pool = bb8::Pool::builder()
                .max_size(POOL_SIZE as u32)
                .build(Manager)
                .await
                .expect("bb8 pool");
            Contender::new("bb8", move |_| {
                let pool = pool.clone();
                async move { pool.get_owned().await.expect("bb8 get") }
            })
        }
        "baseline" => {
            let bare = Bare::new(POOL_SIZE);
            Contender::new("baseline", move |_| Arc::clone(&bare).get())
        }
        other => panic!("unknown pool {other:?}; the pools are {POOLS:?}"),
    }
}

/// The pools named by `--only` (comma-separated; all by default), in table
/// order.
fn selected(only: Option<&str>) -> Vec<&'static str> {
    POOLS
        .into_iter()
        .filter(|&p| only.is_none_or(|o| o.split(',').any(|n| n == p)))
        .collect()
}

/// The pools named by `--only`, built on the current runtime.
async fn contenders(only: Option<&str>) -> Vec<Contender> {
    let mut out = Vec::new();
    for name in selected(only) {
        out.push(contender(name).await);
    }
    out
}

// ---- instructions ----

/// A fixed amount of work for the instructions mode.
#[derive(Clone, Copy)]
struct Load {
    tasks: usize,
    ops_per_task: u64,
    /// Hold the object across a `yield_now`, as the timed mode does.
    hold: bool,
}

/// One load of the instructions mode.
struct InstrLoad {
    /// Its name on the child's command line and in file names.
    name: &'static str,
    /// Its JSON key.
    key: &'static str,
    /// Its heading in the table.
    label: &'static str,
    load: Load,
}

const INSTR_LOADS: [InstrLoad; 2] = [
    InstrLoad {
        name: "uncontended",
        key: "instructions_per_op",
        label: "1 task, checkout + return, no yield",
        load: Load {
            tasks: 1,
            ops_per_task: 200_000,
            hold: false,
        },
    },
    InstrLoad {
        name: "contended",
        key: "instructions_per_op_contended",
        label: "16 tasks on a pool of 8, object held across a yield_now",
        load: Load {
            tasks: 16,
            ops_per_task: 12_500,
            hold: true,
        },
    },
];

/// Ops (over all tasks) run before the measured window, so that first-use
/// costs (object creation, slab and queue growth) stay out of the count.
const WARMUP_OPS: u64 = 2_000;

/// The function callgrind counts in (`--toggle-collect`); it must keep
/// this name and stay a function of its own.
const WINDOW_FN: &str = "instructions_window";

/// Run `ops_per_task` ops on each of `tasks` tasks, then wait for them.
async fn count_ops<C, Fut, G>(checkout: Arc<C>, load: Load)
where
    C: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = G> + Send + 'static,
    G: DerefMut<Target = Counter> + Send + 'static,
{
    let tasks: Vec<_> = (0..load.tasks)
        .map(|i| {
            let checkout = Arc::clone(&checkout);
            tokio::spawn(async move {
                let mut rng = Rng::new(i);
                for _ in 0..load.ops_per_task {
                    let guard = checkout(rng.next()).await;
                    use_and_return(guard, load.hold).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task panicked");
    }
}

/// The measured ops; callgrind counts only inside this function.
#[inline(never)]
fn instructions_window(rt: &tokio::runtime::Runtime, pool: &Contender, load: Load) {
    rt.block_on((pool.count)(load));
}

/// The child process, under callgrind: build `pool` alone on a
/// current-thread runtime, warm it up, then run the measured window.
fn instructions_child(pool: &str, load: &str, ops_per_task: u64) {
    let load = INSTR_LOADS
        .iter()
        .find(|l| l.name == load)
        .unwrap_or_else(|| panic!("unknown load {load:?}"))
        .load;
    let load = Load {
        ops_per_task,
        ..load
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pool = rt.block_on(contender(pool));
    let warmup = Load {
        ops_per_task: (WARMUP_OPS / load.tasks as u64).max(1),
        ..load
    };
    rt.block_on((pool.count)(warmup));
    instructions_window(&rt, &pool, load);
}

/// The `summary:` (or `totals:`) line of a callgrind output file: the
/// instructions counted.
fn callgrind_total(path: &Path) -> u64 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary/totals line in {}", path.display()))
}

/// Instructions per op of each selected pool, per load.
fn instructions(args: &Args) -> Vec<(&'static InstrLoad, Vec<(&'static str, f64)>)> {
    if let Err(e) = Command::new("valgrind").arg("--version").output() {
        eprintln!(
            "checkout: --instructions runs each pool under `valgrind --tool=callgrind`, \
             but valgrind could not be started ({e}); install it (e.g. `apt-get install \
             valgrind`) or run without --instructions"
        );
        std::process::exit(2);
    }
    let exe = std::env::current_exe().expect("path of the bench binary");
    let dir = args.callgrind_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cenote-checkout-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let pools = selected(args.only.as_deref());
    let mut out = Vec::new();
    for l in &INSTR_LOADS {
        let ops = l.load.tasks as u64 * l.load.ops_per_task;
        eprintln!("instructions: {}, {ops} ops per pool", l.label);
        let mut rows = Vec::new();
        for &pool in &pools {
            let file = dir.join(format!("{pool}.{}.out", l.name));
            let run = Command::new("valgrind")
                .arg("--tool=callgrind")
                .arg("--collect-atstart=no")
                .arg(format!("--toggle-collect=*{WINDOW_FN}*"))
                .arg(format!("--callgrind-out-file={}", file.display()))
                .arg(&exe)
                .args(["--instructions-child", pool, l.name])
                .arg(l.load.ops_per_task.to_string())
                .output()
                .expect("running valgrind");
            if !run.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&run.stderr));
                panic!("valgrind run of {pool} ({}) failed: {}", l.name, run.status);
            }
            let total = callgrind_total(&file);
            assert!(
                total > 0,
                "callgrind counted nothing in {}: is `{WINDOW_FN}` still a function of its own?",
                file.display()
            );
            let per_op = total as f64 / ops as f64;
            eprintln!("  {pool:<20} {per_op:>9.1} instructions/op ({total} in all)");
            rows.push((pool, per_op));
        }
        out.push((l, rows));
    }
    if args.callgrind_dir.is_none() {
        // Best effort: a leftover temporary directory is harmless.
        let _ = std::fs::remove_dir_all(&dir);
    }
    out
}

// ---- report ----

struct Args {
    rounds: usize,
    secs: f64,
    json: bool,
    /// Run only the named pools (comma-separated; the table's first row is
    /// still the reference for the ratio), e.g. for `perf record`.
    only: Option<String>,
    /// Run the timed mode: the default, and with `--instructions` only if
    /// asked for (`--timed`, `--rounds`, `--secs`).
    timed: bool,
    /// Run the instructions mode.
    instructions: bool,
    /// Keep the callgrind files here (for `callgrind_annotate`).
    callgrind_dir: Option<PathBuf>,
    /// Hidden: this process is an instructions-mode child (pool, load, ops
    /// per task).
    child: Option<(String, String, u64)>,
}

fn args() -> Args {
    let mut out = Args {
        rounds: 5,
        secs: 1.0,
        json: false,
        only: None,
        timed: false,
        instructions: false,
        callgrind_dir: None,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                out.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N");
                out.timed = true;
            }
            "--secs" => {
                out.secs = it.next().and_then(|v| v.parse().ok()).expect("--secs S");
                out.timed = true;
            }
            "--json" => out.json = true,
            "--only" => out.only = it.next(),
            "--timed" => out.timed = true,
            "--instructions" => out.instructions = true,
            "--callgrind-dir" => out.callgrind_dir = it.next().map(PathBuf::from),
            "--instructions-child" => {
                let mut next = || it.next().expect("--instructions-child POOL LOAD OPS");
                let (pool, load, ops) = (next(), next(), next());
                let ops = ops.parse().expect("--instructions-child POOL LOAD OPS");
                out.child = Some((pool, load, ops));
            }
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
    }
    out.rounds = out.rounds.max(1);
    out.timed |= !out.instructions;
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

/// The timed mode: print its table, add its keys to `json`.
fn timed(args: &Args, json: &mut serde_json::Map<String, serde_json::Value>) {
    let secs = Duration::from_secs_f64(args.secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pools = rt.block_on(contenders(args.only.as_deref()));
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
    let map = |f: fn(&Summary) -> f64| {
        let m: serde_json::Map<_, _> = rows
            .iter()
            .map(|r| (r.name.to_string(), serde_json::json!(f(r))))
            .collect();
        serde_json::Value::Object(m)
    };
    json.insert("ops_per_sec".into(), map(|r| r.ops.round()));
    json.insert("p99_wait_us".into(), map(|r| r.p99_us));
}

/// The instructions mode: print its tables, add its keys to `json`.
fn instructions_report(args: &Args, json: &mut serde_json::Map<String, serde_json::Value>) {
    for (l, rows) in instructions(args) {
        let of = |name: &str| rows.iter().find(|r| r.0 == name).map(|r| r.1);
        let ratio = |x: f64, to: Option<f64>| to.map_or("-".into(), |t| format!("{:.2}x", x / t));
        let (deadpool, baseline) = (of("deadpool_unmanaged"), of("baseline"));
        println!();
        println!(
            "Instructions per op, {} ({} ops):",
            l.label,
            l.load.tasks as u64 * l.load.ops_per_task
        );
        println!();
        println!("| pool | instructions/op | pool / deadpool_unmanaged | pool / baseline |");
        println!("|---|---:|---:|---:|");
        for &(name, x) in &rows {
            println!(
                "| {name} | {x:.1} | {} | {} |",
                ratio(x, deadpool),
                ratio(x, baseline)
            );
        }
        let m: serde_json::Map<_, _> = rows
            .iter()
            .map(|&(name, x)| {
                (
                    name.to_string(),
                    serde_json::json!((x * 10.0).round() / 10.0),
                )
            })
            .collect();
        json.insert(l.key.into(), serde_json::Value::Object(m));
    }
}

fn main() {
    let args = args();
    if let Some((pool, load, ops)) = &args.child {
        instructions_child(pool, load, *ops);
        return;
    }
    let mut json = serde_json::Map::new();
    if args.timed {
        timed(&args, &mut json);
    }
    if args.instructions {
        instructions_report(&args, &mut json);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(json));
    }
}
