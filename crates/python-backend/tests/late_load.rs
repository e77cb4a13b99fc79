//! A few late calls never starve a pool: 4 forked workers, 16 callers,
//! 5 ms calls, and one call in twenty that hangs past a 50 ms deadline. The
//! late calls are cancelled (or, with no grace, their workers killed and
//! replaced); neither is a crash, so the crash guard never holds the pool
//! back, and the rate holds in every second of the run.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote_core::{CallOptions, Error, Pool};
use cenote_python::{PyCall, PythonConfig, PythonFactory, StartMode};
use common::*;
use serde_json::json;

const CALLERS: u64 = 16;
const WORKERS: usize = 4;

/// Calls per second in each whole second of a run of `secs` seconds, and
/// whether the pool ever reported a crash loop.
async fn run(pool: &PyPool, hang_every: Option<u64>, secs: u64) -> (Vec<u64>, bool) {
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(secs);
    let per_second: Arc<Vec<AtomicU64>> = Arc::new((0..secs).map(|_| AtomicU64::new(0)).collect());
    let looping = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (pool, looping) = (pool.clone(), Arc::clone(&looping));
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                if pool.status().crash_looping {
                    looping.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (pool, per_second) = (pool.clone(), Arc::clone(&per_second));
        callers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop_at {
                i += 1;
                let n = c * 1_000_000 + i;
                let hang = hang_every.is_some_and(|every| n.is_multiple_of(every));
                let outcome = if hang {
                    let call = PyCall::new("sleep_sync", json!([30]));
                    let opts = CallOptions::default().timeout(Duration::from_millis(50));
                    match pool.call_with(call, opts).await {
                        Err(Error::CallTimeout(_)) => Ok(()),
                        other => Err(format!("a hanging call ended {other:?}")),
                    }
                } else {
                    match pool.call(PyCall::new("work", json!([n, 0.005]))).await {
                        Ok(v) if v == json!(n) => Ok(()),
                        other => Err(format!("call {n} answered {other:?}")),
                    }
                };
                outcome.unwrap();
                let second = start.elapsed().as_secs();
                if let Some(slot) = per_second.get(second as usize) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for c in callers {
        tokio::time::timeout(Duration::from_secs(secs + 30), c)
            .await
            .expect("a caller hung")
            .unwrap();
    }
    watcher.await.unwrap();
    let rates = per_second
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    (rates, looping.load(Ordering::SeqCst))
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

async fn pool(tag: &str, grace: Duration) -> PyPool {
    let config = PythonConfig::new(py_dir().join("late.py"))
        .env(TAG_VAR, tag)
        .start_mode(StartMode::ForkServer);
    Pool::builder(PythonFactory::new(config))
        .name("late-load")
        .size(WORKERS)
        .cancel_grace(grace)
        .build()
        .await
        .unwrap()
}

/// The table of the late-call issue as a test, with the pool's defaults
/// (the crash budget included): 5 % of calls hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_late_calls_cost_their_own_time_and_nothing_more() {
    let tag = test_tag("late-load");
    let pool = pool(&tag, cenote_core::PoolConfig::default().cancel_grace).await;
    let (clean, _) = run(&pool, None, 3).await;
    let (late, looping) = run(&pool, Some(20), 6).await;
    let (clean_rate, late_rate) = (mean(&clean), mean(&late));
    let t = pool.status().totals;
    eprintln!("calls/s without hangs {clean:?}, with 5 % hangs {late:?}; {t:?}");
    assert!(!looping, "crash loop reported");
    assert!(
        late_rate >= 0.6 * clean_rate,
        "{late_rate:.0}/s with hangs against {clean_rate:.0}/s without"
    );
    for (second, &n) in late.iter().enumerate() {
        assert!(
            n as f64 >= 0.5 * late_rate,
            "second {second}: {n} calls, against a mean of {late_rate:.0}: {late:?}"
        );
    }
    assert_eq!((t.killed, t.restarts, t.crashes), (0, 0, 0), "{t:?}");
    close_clean(pool, &tag).await;
}

/// With no grace every late call's worker is killed and replaced, as before
/// calls could be cancelled: the kills are the pool's own choice, never
/// charged as crashes, so the pool is never held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_of_late_calls_never_hold_the_pool_back() {
    let tag = test_tag("late-kill");
    let pool = pool(&tag, Duration::ZERO).await;
    let (late, looping) = run(&pool, Some(20), 6).await;
    let t = pool.status().totals;
    let rate = mean(&late);
    eprintln!("calls/s with 5 % hangs, each killed: {late:?}; {t:?}");
    assert!(!looping, "crash loop reported: {t:?}");
    assert!(t.killed > 20, "{t:?}");
    assert_eq!(t.crashes, 0, "{t:?}");
    for (second, &n) in late.iter().enumerate() {
        assert!(
            n as f64 >= 0.5 * rate,
            "second {second}: {n} calls, against a mean of {rate:.0}: {late:?}"
        );
    }
    close_clean(pool, &tag).await;
}
