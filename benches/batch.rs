//! Adaptive batching against no batching and a fixed window, in one run.
//!
//! `cargo bench --bench batch` prints a table; `-- --json` adds one JSON
//! object on the last line; `-- --secs S` sets each lane's length (default
//! 3). Needs `python3`; the numpy section runs if numpy imports
//! (`python3 -m pip install numpy`) and says so if not.
//!
//! * **Synthetic model** (`benches/py/batch.py`): a call costs 2 ms plus
//!   20 µs per item. 4 workers (fork server); 1, 16 and 256 callers, each
//!   calling in a loop:
//!   - `unbatched`: `pool.call`, one item per call;
//!   - `adaptive`: `pool.batched(BatchConfig::new(256))`: a batch leaves
//!     when a worker is free;
//!   - `window`: the same with `max_wait(10 ms)`, as a fixed-window
//!     batcher (Ray Serve's `batch_wait_timeout_s`) would.
//! * **numpy**: 256 float32 values per item as raw bytes, embedded by a
//!   256×256 matrix product; unbatched against adaptive at 256 callers.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cenote::python::{Bytes, PyCall, PyItem, PythonConfig, PythonFactory, StartMode};
use cenote::{BatchConfig, Pool};
use hdrhistogram::Histogram;
use serde_json::json;

const WORKERS: usize = 4;
const MAX_SIZE: usize = 256;
const WINDOW: Duration = Duration::from_millis(10);

type PyPool = Pool<PythonFactory>;

struct Lane {
    calls_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    mean_batch: f64,
}

async fn pool() -> PyPool {
    let handlers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/batch.py");
    let config = PythonConfig::new(handlers).start_mode(StartMode::ForkServer);
    Pool::builder(PythonFactory::new(config))
        .name("bench-batch")
        .size(WORKERS)
        .max_waiters(100_000)
        .build()
        .await
        .expect("pool")
}

/// `callers` tasks each running `call(n)` in a loop for `secs`, `n`
/// distinct per call: calls/s and latency.
async fn drive<F, Fut>(callers: u64, secs: f64, call: F) -> Lane
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let began = Instant::now();
    let stop = began + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (call, hist) = (call.clone(), Arc::clone(&hist));
            tokio::spawn(async move {
                let mut mine = Histogram::<u64>::new(3).unwrap();
                let mut i = 0;
                while Instant::now() < stop {
                    let t = Instant::now();
                    call(c << 32 | i).await;
                    i += 1;
                    mine.record(t.elapsed().as_micros() as u64).unwrap();
                }
                hist.lock().unwrap().add(&mine).unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }
    let took = began.elapsed().as_secs_f64();
    let h = hist.lock().unwrap();
    Lane {
        calls_per_sec: h.len() as f64 / took,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        mean_batch: 1.0,
    }
}

/// One item per call, through the pool.
async fn unbatched(pool: &PyPool, callers: u64, secs: f64, make: fn(u64) -> PyCall) -> Lane {
    let pool = pool.clone();
    drive(callers, secs, move |n| {
        let pool = pool.clone();
        async move {
            pool.call(make(n)).await.expect("call");
        }
    })
    .await
}

/// Items through a batched handle of `config`.
async fn batched(
    pool: &PyPool,
    config: BatchConfig,
    callers: u64,
    secs: f64,
    make: fn(u64) -> PyItem,
) -> Lane {
    let handle = pool.batched(config).expect("config");
    let h = handle.clone();
    let lane = drive(callers, secs, move |n| {
        let h = h.clone();
        async move {
            h.call(make(n)).await.expect("item");
        }
    })
    .await;
    Lane {
        mean_batch: handle.status().mean_size,
        ..lane
    }
}

/// 256 float32 values, as raw bytes.
fn vector(n: u64) -> Bytes {
    (0..256u32)
        .flat_map(|i| ((n as u32 ^ i) as f32 / 1e6).to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn print_header() {
    println!("| lane | callers | calls/s | / unbatched | p50 µs | p99 µs | mean batch |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
}

fn print_row(what: &str, callers: u64, l: &Lane, base: f64) {
    println!(
        "| {what} | {callers} | {:.0} | {:.2} | {} | {} | {:.1} |",
        l.calls_per_sec,
        l.calls_per_sec / base,
        l.p50_us,
        l.p99_us,
        l.mean_batch
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json_out = args.iter().any(|a| a == "--json");
    let secs: f64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let pool = pool().await;
    let (mut rate, mut p50, mut mean) = (json!({}), json!({}), json!({}));
    println!(
        "Synthetic model: 2 ms per call + 20 µs per item, {WORKERS} workers, {secs} s per lane"
    );
    println!();
    print_header();
    for callers in [1, 16, 256] {
        let one = |n| PyCall::new("synth_one", json!([n]));
        let item = |n| PyItem::new("synth", json!(n));
        let lanes = [
            ("unbatched", unbatched(&pool, callers, secs, one).await),
            (
                "adaptive",
                batched(&pool, BatchConfig::new(MAX_SIZE), callers, secs, item).await,
            ),
            (
                "window",
                batched(
                    &pool,
                    BatchConfig::new(MAX_SIZE).max_wait(WINDOW),
                    callers,
                    secs,
                    item,
                )
                .await,
            ),
        ];
        let base = lanes[0].1.calls_per_sec;
        for (name, l) in &lanes {
            print_row(name, callers, l, base);
            let key = format!("{name}{callers}");
            rate[&key] = json!(l.calls_per_sec.round());
            p50[&key] = json!(l.p50_us);
            mean[&key] = json!((l.mean_batch * 10.0).round() / 10.0);
        }
    }
    let mut out = json!({"calls_per_sec": rate, "p50_us": p50, "mean_batch": mean});
    let numpy = pool
        .call(PyCall::new("has_numpy", json!([])))
        .await
        .expect("has_numpy");
    println!();
    if numpy == json!(true) {
        println!("numpy: 256 float32 per item as raw bytes, a 256x256 matrix product, 256 callers");
        println!();
        print_header();
        let one = |n| PyCall::with_args("embed_one", &(vector(n),)).expect("call");
        let item = |n| PyItem::with_value("embed", &vector(n)).expect("item");
        let plain = unbatched(&pool, 256, secs, one).await;
        let adaptive = batched(&pool, BatchConfig::new(MAX_SIZE), 256, secs, item).await;
        print_row("unbatched", 256, &plain, plain.calls_per_sec);
        print_row("adaptive", 256, &adaptive, plain.calls_per_sec);
        out["numpy_calls_per_sec"] = json!({
            "unbatched256": plain.calls_per_sec.round(),
            "adaptive256": adaptive.calls_per_sec.round(),
        });
    } else {
        println!("numpy: not importable by python3; skipped (python3 -m pip install numpy)");
    }
    pool.close().await;
    if json_out {
        println!("{}", json!({ "batching": out }));
    }
}
