//! The late-call section of `cargo bench --bench python`: 4 workers (fork
//! server), 16 callers, 5 ms calls, of which one in twenty hangs past a
//! 50 ms deadline; calls/s against the same run with no hangs, and the
//! restarts the hangs cost.
//!
//! - `async5`: the hang is an `async def` awaiting 30 s; cenote cancels its
//!   task.
//! - `sync5`: the hang is `time.sleep(30)` in a sync handler; cenote
//!   interrupts it with its cancel signal.
//! - Peers (`benches/py/late_peers.py`, the same shape with threads):
//!   `ProcessPoolExecutor(4)` cannot cancel a running call, so a hang holds
//!   its worker for its whole 30 s; `pebble.ProcessPool(4)` with a 50 ms
//!   timeout kills the worker and starts another (if pebble is installed:
//!   `pip install pebble`).
//!
//! The hangs themselves hold a worker 50 ms each, against 5 ms for a call:
//! about 0.72× the rate with no hangs is the ceiling.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonFactory, StartMode};
use cenote::{CallOptions, Error, Pool};
use serde_json::{json, Value};

const WORKERS: usize = 4;
const CALLERS: u64 = 16;
const EVERY: u64 = 20;
const SECS: u64 = 8;

fn bench_py(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/py")
        .join(file)
}

/// Calls/s over `SECS` seconds, and the pool's restarts, with `hang` (a
/// handler name) as one call in twenty, or none.
async fn cenote_run(hang: Option<&'static str>) -> (f64, u64) {
    let config = PythonConfig::new(bench_py("late.py")).start_mode(StartMode::ForkServer);
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(config))
        .name("bench-late")
        .size(WORKERS)
        .build()
        .await
        .expect("pool");
    let done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let stop_at = began + Duration::from_secs(SECS);
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (pool, done) = (pool.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < stop_at {
                    i += 1;
                    let n = c * 1_000_000 + i;
                    match hang.filter(|_| n.is_multiple_of(EVERY)) {
                        Some(function) => {
                            let opts = CallOptions::default().timeout(Duration::from_millis(50));
                            let r = pool.call_with(PyCall::new(function, json!([])), opts).await;
                            assert!(matches!(r, Err(Error::CallTimeout(_))), "{r:?}");
                        }
                        None => {
                            let v = pool.call(PyCall::new("work", json!([n]))).await;
                            assert_eq!(v.expect("work"), json!(n));
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64();
    let restarts = pool.status().totals.restarts;
    pool.close().await;
    (rate, restarts)
}

/// The peers' calls/s: `{"ppe": {"none", "sync5"}, "pebble": {...} | null}`.
fn peers(interpreter: &Path) -> Value {
    let out = Command::new(interpreter)
        .arg(bench_py("late_peers.py"))
        .arg(SECS.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the late-call peers");
    serde_json::from_slice(&out.stdout).expect("peer output")
}

/// Run every lane, print the table, and return the `late_calls` object.
pub async fn run(interpreter: &Path) -> Value {
    let (none, _) = cenote_run(None).await;
    let (async5, async_restarts) = cenote_run(Some("async_hang")).await;
    let (sync5, sync_restarts) = cenote_run(Some("sleep_sync")).await;
    let interp = interpreter.to_path_buf();
    let peers = tokio::task::spawn_blocking(move || peers(&interp))
        .await
        .expect("peers");
    println!(
        "\nlate calls: {WORKERS} workers, {CALLERS} callers, 5 ms calls, 1 in {EVERY} hangs past a 50 ms deadline ({SECS} s each)"
    );
    println!(
        "{:<50} {:>10} {:>10} {:>9}",
        "", "calls/s", "/ no hang", "restarts"
    );
    println!(
        "{:<50} {:>10.0} {:>10} {:>9}",
        "cenote, no hangs", none, "1.00", 0
    );
    for (name, rate, restarts) in [
        (
            "cenote, async hangs (task cancelled)",
            async5,
            async_restarts,
        ),
        (
            "cenote, sync hangs (signal interrupts)",
            sync5,
            sync_restarts,
        ),
    ] {
        println!(
            "{name:<50} {rate:>10.0} {:>10.2} {restarts:>9}",
            rate / none
        );
    }
    let lane = |name: &str, v: &Value| {
        let (n, h) = (
            v["none"].as_f64().unwrap_or(0.0),
            v["sync5"].as_f64().unwrap_or(0.0),
        );
        println!(
            "{:<50} {n:>10.0} {:>10}",
            format!("{name}, no hangs"),
            "1.00"
        );
        println!(
            "{:<50} {h:>10.0} {:>10.2}",
            format!("{name}, sync hangs"),
            h / n
        );
    };
    lane("ProcessPoolExecutor(4) (cannot cancel)", &peers["ppe"]);
    if peers["pebble"].is_null() {
        println!("pebble.ProcessPool(4) (kills on timeout): not installed (pip install pebble)");
    } else {
        lane("pebble.ProcessPool(4) (kills on timeout)", &peers["pebble"]);
    }
    json!({
        "calls_per_sec": {"none": none.round(), "async5": async5.round(), "sync5": sync5.round()},
        "restarts": {"async5": async_restarts, "sync5": sync_restarts},
        "peers": peers,
    })
}
