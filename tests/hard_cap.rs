//! `size + max_overflow` is a hard cap, at every instant, on a pool of real
//! Python workers under load while another task resizes it, adds and
//! removes workers, retains some, and SIGKILLs workers now and then.
//!
//! A sampler reads `status()` every 2 ms and fails on the first sample where
//! `live > max(size + max_overflow, busy)`: no idle or starting worker may
//! ever be over the cap (busy workers above a lowered cap stop as they come
//! back). Right after the final `resize(3)` the pool is within its new cap
//! at once, not seconds later.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonFactory};
use cenote::{CrashBudget, Pool, Status};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

use cenote_testkit::procs::{new_tag, signal, tagged, TAG_VAR};
use cenote_testkit::storm::{python_children, still_ours};

const MAX_OVERFLOW: usize = 2;
const STORM: Duration = Duration::from_secs(8);
const CALLERS: usize = 12;

type PyPool = Pool<PythonFactory>;

fn over_cap(s: &Status) -> bool {
    s.live > (s.size + s.max_overflow).max(s.busy)
}

async fn python_pool(tag: &str) -> PyPool {
    let handlers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/handlers.py");
    let config = PythonConfig::new(handlers).env(TAG_VAR, tag);
    Pool::builder(PythonFactory::new(config))
        .name("hard-cap")
        .size(4)
        .max_overflow(MAX_OVERFLOW)
        .overflow_idle(Duration::from_millis(200))
        .checkout_timeout(Duration::from_secs(5))
        .call_timeout(Duration::from_secs(5))
        .create_timeout(Duration::from_secs(5))
        .shutdown_grace(Duration::from_millis(300))
        // The storm SIGKILLs workers ~60 times: crashes as the pool sees
        // them, which the crash budget rightly holds back. That is tested
        // in crash_guard.rs; here it would only delay the final refill.
        .crash_budget(CrashBudget {
            max_restarts: 10_000,
            window: Duration::from_secs(10),
        })
        .build()
        .await
        .expect("pool builds")
}

/// Callers that keep every worker busy with short calls until `stop`.
fn load(
    pool: &PyPool,
    stop: &Arc<AtomicBool>,
    served: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CALLERS)
        .map(|i| {
            let (pool, stop, served) = (pool.clone(), Arc::clone(stop), Arc::clone(served));
            tokio::spawn(async move {
                let secs = 0.002 + 0.002 * (i % 5) as f64;
                while !stop.load(Ordering::SeqCst) {
                    // Killed workers fail their call; that is expected here.
                    if pool.call(PyCall::new("sleep", json!([secs]))).await.is_ok() {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect()
}

/// Reads `status()` every 2 ms until `stop`; returns the samples taken and
/// the first one over the cap, if any.
fn sampler(
    pool: &PyPool,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Option<Status>, Option<String>)> {
    let (pool, stop) = (pool.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::SeqCst) {
            let s = pool.status();
            samples += 1;
            if over_cap(&s) {
                return (samples, Some(s), None);
            }
            if let Err(e) = pool.check_invariants() {
                return (samples, None, Some(e));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (samples, None, None)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_workers_never_exceed_the_cap_through_a_resize_and_kill_storm() {
    let tag = new_tag("hardcap");
    let pool = python_pool(&tag).await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let callers = load(&pool, &stop, &served);
    let watch = sampler(&pool, &stop);

    let seed: u64 = rand::thread_rng().gen();
    eprintln!("hard-cap storm seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut resizes, mut kills) = (0, 0);
    let began = Instant::now();
    while began.elapsed() < STORM {
        match rng.gen_range(0..6) {
            0 | 1 => {
                pool.resize(rng.gen_range(0..=6)).unwrap();
                resizes += 1;
            }
            2 => pool.add_workers(rng.gen_range(1..=3)),
            3 => {
                pool.remove_idle_workers(rng.gen_range(1..=2)).await;
            }
            4 => {
                let cutoff = rng.gen_range(0..20);
                pool.retain(|w| w.tasks_served >= cutoff).await;
            }
            _ => {
                let procs = python_children(&tag);
                if !procs.is_empty() {
                    let victim = procs[rng.gen_range(0..procs.len())].pid;
                    if still_ours(victim, &tag) && signal(victim, libc::SIGKILL) {
                        kills += 1;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
    }
    pool.resize(3).unwrap();
    let right_after = pool.status();
    stop.store(true, Ordering::SeqCst);
    let (samples, over, broken) = watch.await.unwrap();
    for c in callers {
        c.await.unwrap();
    }
    eprintln!(
        "hard-cap storm: {samples} samples, {resizes} resizes, {kills} kills, {} calls served",
        served.load(Ordering::SeqCst)
    );
    assert!(samples > 500, "the sampler hardly looked: {samples}");
    assert_eq!(over, None, "a sample was over the cap");
    assert_eq!(broken, None, "the counts disagreed");
    assert!(kills > 0 && resizes > 10, "the storm did not storm");
    assert!(served.load(Ordering::SeqCst) > 100);
    assert!(
        !over_cap(&right_after) && right_after.live <= (3 + MAX_OVERFLOW).max(right_after.busy),
        "not within the new cap right after resize(3): {right_after:?}"
    );
    // With the load gone, the pool settles at its warm size.
    let settled = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = pool.status();
            if s.live == 3 && s.starting == 0 && s.stopping == 0 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(settled, "did not settle at size 3: {:?}", pool.status());
    pool.close().await;
    assert!(
        python_children(&tag).is_empty() && tagged(&tag).is_empty(),
        "Python processes outlived the pool"
    );
}

/// Shrinking cancels starts that are no longer needed: a pool grown from 1
/// to 6 and shrunk back to 1 while its new workers are still starting
/// counts at most 1 worker at once, and the starts it cancelled leave no
/// process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_cancels_starts_no_longer_needed() {
    let tag = new_tag("capstarts");
    let handlers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/handlers.py");
    let config = PythonConfig::new(handlers).env(TAG_VAR, &tag);
    let pool: PyPool = Pool::builder(PythonFactory::new(config))
        .name("cap-starts")
        .size(1)
        .build()
        .await
        .unwrap();
    pool.resize(6).unwrap();
    let grown = pool.status();
    assert_eq!(grown.live, 6, "{grown:?}");
    pool.resize(1).unwrap();
    let shrunk = pool.status();
    assert!(
        shrunk.live <= 1,
        "starts above the new cap still counted: {shrunk:?}"
    );
    let settled = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = pool.status();
            if s.live == 1 && s.stopping == 0 && python_children(&tag).len() == 1 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(
        settled,
        "{:?}, {} processes",
        pool.status(),
        python_children(&tag).len()
    );
    pool.close().await;
    assert!(python_children(&tag).is_empty());
}
