//! The multiplexing section of `cargo bench --bench python`: an LLM stand-in
//! (`benches/py/llm.py`: a call that waits 50 ms and returns a short
//! string) under 512 concurrent callers.
//!
//! - cenote, 4 processes, `concurrency(1)`: 4 calls in flight;
//! - cenote, 4 processes, `concurrency(128)`, the `async def` handler and
//!   the sync one (`time.sleep` on a call thread);
//! - `multiprocessing.Pool(4)` and `ProcessPoolExecutor(4)`
//!   (`benches/py/llm_peers.py`);
//! - the limit: one bridge serving 512 calls at once over a bare pipe,
//!   driven by a blocking client that keeps 512 in flight (the same frames,
//!   no pool).
//!
//! The ideal is 512 in flight / 50 ms = 10,240 calls/s. Memory: the PSS of
//! the 4-process `k = 128` pool (its fork server included) against what a
//! `k = 1` pool needs for the same 512 in flight: 512 processes, measured
//! as 64 and scaled.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonFactory, StartMode};
use cenote::Pool;
use serde_json::{json, Value};

use super::bare::{try_read_frame, BareBridge};

const CALLERS: usize = 512;
const PROCESSES: usize = 4;
const SECS: u64 = 5;

fn llm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/llm.py")
}

async fn pool(k: usize, size: usize) -> Pool<PythonFactory> {
    let config = PythonConfig::new(llm())
        .start_mode(StartMode::ForkServer)
        .concurrency(k);
    Pool::builder(PythonFactory::new(config))
        .name("bench-llm")
        .size(size)
        .max_waiters(CALLERS)
        .build()
        .await
        .expect("pool")
}

/// Calls/s of `CALLERS` callers of `function` for `SECS` seconds.
async fn cenote_rate(k: usize, function: &'static str) -> f64 {
    let pool = pool(k, PROCESSES).await;
    let done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let stop_at = began + Duration::from_secs(SECS);
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (pool, done) = (pool.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let prompt = format!("prompt {c}");
                    let v = pool.call(PyCall::new(function, json!([prompt]))).await;
                    assert!(v
                        .expect("complete")
                        .as_str()
                        .is_some_and(|s| s.starts_with("ok")));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64();
    pool.close().await;
    rate
}

/// The limit: one bridge, 512 calls kept in flight by a blocking client.
fn bare_rate(interpreter: &Path) -> f64 {
    let mut bare = BareBridge::start(interpreter, &llm(), CALLERS);
    let args = json!(["prompt"]);
    let mut stdout = std::fs::File::from(
        bare.stdout
            .as_fd()
            .try_clone_to_owned()
            .expect("dup the bridge's stdout"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let (slots, freed) = std::sync::mpsc::channel::<()>();
    let reader = {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if try_read_frame(&mut stdout).is_none() {
                    return; // the bridge is gone
                }
                answered.fetch_add(1, Ordering::Relaxed);
                if slots.send(()).is_err() {
                    return;
                }
            }
        })
    };
    for _ in 0..CALLERS {
        bare.send("complete", &args);
    }
    let began = Instant::now();
    let start_count = answered.load(Ordering::Relaxed);
    while began.elapsed() < Duration::from_secs(SECS) {
        if freed.recv_timeout(Duration::from_secs(5)).is_err() {
            break;
        }
        bare.send("complete", &args);
    }
    let rate =
        (answered.load(Ordering::Relaxed) - start_count) as f64 / began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(freed);
    let _ = bare.stdin.flush();
    drop(bare);
    let _ = reader.join();
    rate
}

/// `(multiprocessing.Pool, ProcessPoolExecutor)` calls/s.
fn peers(interpreter: &Path) -> (f64, f64) {
    let out = Command::new(interpreter)
        .arg(llm().with_file_name("llm_peers.py"))
        .arg((80 * SECS).to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the peers");
    let v: Value = serde_json::from_slice(&out.stdout).expect("peer output");
    (
        v["mp_pool"].as_f64().unwrap_or(0.0),
        v["ppe"].as_f64().unwrap_or(0.0),
    )
}

/// Total PSS (MiB) of a pool of `size` processes serving `k` calls each,
/// its fork server included.
async fn pss_mib(k: usize, size: usize) -> f64 {
    let pool = pool(k, size).await;
    let mut pids = std::collections::HashSet::new();
    // Calls spread over the processes; enough rounds to see every pid.
    for _ in 0..4 {
        let calls = (0..size * k.min(4)).map(|_| pool.call(PyCall::new("pid", json!(null))));
        for v in futures::future::join_all(calls).await {
            pids.insert(v.expect("pid").as_u64().expect("a pid") as u32);
        }
    }
    pids.extend(pool.factory().start_mode().fork_server_pid);
    let kib: u64 = pids.iter().map(|&p| super::pss_kib(p)).sum();
    pool.close().await;
    kib as f64 / 1024.0
}

/// Run every lane, print the table, and return the `multiplexed` object.
pub async fn run(interpreter: &Path) -> Value {
    let k1 = cenote_rate(1, "complete").await;
    let k128 = cenote_rate(128, "complete").await;
    let k128_sync = cenote_rate(128, "complete_sync").await;
    let interp = interpreter.to_path_buf();
    let ((mp, ppe), bare) =
        tokio::task::spawn_blocking(move || (peers(&interp), bare_rate(&interp)))
            .await
            .expect("peers");
    let pss_k128 = pss_mib(128, PROCESSES).await;
    let pss_k1_64 = pss_mib(1, 64).await;
    let ideal = CALLERS as f64 / 0.05;
    println!(
        "\nmany calls per process: {CALLERS} callers of a 50 ms LLM stand-in, {PROCESSES} processes ({SECS} s each; ideal {ideal:.0} calls/s)"
    );
    println!("{:<44} {:>10} {:>9}", "", "calls/s", "/ ideal");
    for (name, rate) in [
        ("cenote, concurrency 1", k1),
        ("cenote, concurrency 128, async def", k128),
        ("cenote, concurrency 128, sync (threads)", k128_sync),
        ("multiprocessing.Pool(4)", mp),
        ("ProcessPoolExecutor(4)", ppe),
        ("bare pipe, 1 process, 512 coroutines", bare),
    ] {
        println!("{name:<44} {rate:>10.0} {:>9.2}", rate / ideal);
    }
    println!(
        "k128 / ideal: {:.2}   k128 / bare: {:.2}   k128 / k1: {:.0}x",
        k128 / ideal,
        k128 / bare,
        k128 / k1
    );
    let per_process = pss_k1_64 / 64.0;
    println!(
        "memory (PSS): {PROCESSES} processes at concurrency 128 {pss_k128:.1} MiB; concurrency 1 needs {CALLERS} processes for the same {CALLERS} in flight: {per_process:.2} MiB each (measured on 64), {:.0} MiB",
        per_process * CALLERS as f64
    );
    json!({
        "calls_per_sec": {
            "k1": k1.round(), "k128": k128.round(), "k128_sync": k128_sync.round(),
            "mp_pool": mp.round(), "ppe": ppe.round(), "bare_async": bare.round(),
        },
        "pss_mib": {"k128": (pss_k128 * 10.0).round() / 10.0, "k1_per_process": (per_process * 100.0).round() / 100.0},
    })
}
