//! Many calls in flight per Python process, through a pool: `size` counts
//! processes, callers get lanes, and every failure path keeps its counts.
//! Each case runs in both start modes.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cenote_core::{AffinityMode, CallOptions, Error, Pool};
use cenote_python::{PyCall, PythonConfig, PythonError, PythonFactory, StartMode};
use common::*;
use serde_json::json;

fn many(tag: &str, mode: StartMode, k: usize) -> PythonConfig {
    py_config("many.py", tag, mode).concurrency(k)
}

async fn pool_of(config: PythonConfig, size: usize) -> PyPool {
    chaos_builder(config, size)
        .max_waiters(100_000)
        .build()
        .await
        .expect("pool builds")
}

/// The pool is at rest: every lane back, every worker idle, counts right.
async fn settled(pool: &PyPool, size: usize) {
    let ok = eventually(Duration::from_secs(10), || {
        let s = pool.status();
        s.idle == size && s.in_flight == 0 && s.busy == 0
    })
    .await;
    assert!(ok, "not settled: {:?}", pool.status());
    pool.check_invariants().unwrap();
}

#[tokio::test]
async fn sixty_four_waiting_calls_need_one_process() {
    init_tracing();
    for mode in MODES {
        for function in ["async_sleep", "sync_sleep"] {
            let tag = new_tag("pk64");
            let pool = pool_of(many(&tag, mode, 64), 1).await;
            // Warm the call threads up.
            let warm = (0..64).map(|i| pool.call(PyCall::new(function, json!([0.01, i]))));
            futures::future::join_all(warm).await;
            let began = Instant::now();
            let calls = (0..64).map(|i| pool.call(PyCall::new(function, json!([0.2, i]))));
            let got = futures::future::join_all(calls).await;
            let took = began.elapsed();
            for (i, r) in got.into_iter().enumerate() {
                assert_eq!(r.unwrap(), json!(i), "{mode:?} {function}");
            }
            assert!(
                took < Duration::from_millis(400),
                "{mode:?} {function}: took {took:?}"
            );
            let s = pool.status();
            assert_eq!((s.live, s.totals.served), (1, 128), "{mode:?}: {s:?}");
            settled(&pool, 1).await;
            close_clean(pool, &tag).await;
        }
    }
}

/// 10,000 calls with distinct arguments, 64 callers on 2 processes of 16
/// lanes: each answer checked. The processes share the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_answers_reach_their_callers() {
    for (mode, tag) in modes("pcrossed") {
        let pool = pool_of(many(&tag, mode, 16), 2).await;
        let callers: Vec<_> = (0..64u64)
            .map(|c| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut pids = HashMap::new();
                    for i in 0..157u64 {
                        let v = c * 1_000_000 + i;
                        let function = if i % 2 == 0 { "echo" } else { "sync_echo" };
                        let got = pool.call(PyCall::new(function, json!([v]))).await.unwrap();
                        assert_eq!(got, json!(v));
                        if i % 50 == 0 {
                            let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
                            *pids.entry(pid.as_u64().unwrap()).or_insert(0) += 1;
                        }
                    }
                    pids
                })
            })
            .collect();
        let mut pids: HashMap<u64, u32> = HashMap::new();
        for c in callers {
            for (pid, n) in c.await.unwrap() {
                *pids.entry(pid).or_insert(0) += n;
            }
        }
        assert_eq!(pids.len(), 2, "{mode:?}: both processes served: {pids:?}");
        assert_eq!(pool.status().live, 2);
        settled(&pool, 2).await;
        close_clean(pool, &tag).await;
    }
}

/// One of eight calls in flight crashes the process: all eight get typed
/// errors, nothing hangs, and the process is replaced.
#[tokio::test]
async fn a_crash_fails_the_calls_in_flight_and_is_replaced() {
    for (mode, tag) in modes("pcrash") {
        let pool = pool_of(many(&tag, mode, 8), 1).await;
        let calls = (0..8).map(|i| {
            let call = if i == 3 {
                PyCall::new("die_after", json!([0.1]))
            } else {
                PyCall::new("async_sleep", json!([5, i]))
            };
            pool.call(call)
        });
        let got = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(calls))
            .await
            .expect("nothing hangs");
        for r in got {
            assert!(
                matches!(r, Err(Error::Crashed(PythonError::Crashed { .. }))),
                "{mode:?}: {r:?}"
            );
        }
        settled(&pool, 1).await;
        let t = pool.status().totals;
        assert_eq!((t.crashes, t.restarts), (1, 1), "{mode:?}: {t:?}");
        assert_eq!(
            pool.call(PyCall::new("echo", json!([5]))).await.unwrap(),
            json!(5)
        );
        close_clean(pool, &tag).await;
    }
}

/// One call past its deadline while seven run: only it fails, the seven
/// answer, and the process serves on. One that will not let go takes the
/// process, and the calls on it say which call.
#[tokio::test]
async fn a_late_call_fails_alone() {
    for (mode, tag) in modes("plate") {
        let pool = pool_of(many(&tag, mode, 8), 1).await;
        let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
        for hang in ["async_hang", "busy_loop"] {
            let late = pool.call_with(
                PyCall::new(hang, json!([30])),
                CallOptions::default().timeout(Duration::from_millis(100)),
            );
            let others = futures::future::join_all(
                (0..7).map(|i| pool.call(PyCall::new("async_sleep", json!([0.3, i])))),
            );
            let (late, others) = tokio::join!(late, others);
            assert!(
                matches!(late, Err(Error::CallTimeout(_))),
                "{mode:?} {hang}: {late:?}"
            );
            for (i, r) in others.into_iter().enumerate() {
                assert_eq!(r.unwrap(), json!(i), "{mode:?} {hang}");
            }
        }
        assert_eq!(
            pool.call(PyCall::new("pid", json!(null))).await.unwrap(),
            pid
        );
        let late = pool.call_with(
            PyCall::new("stubborn", json!([30])),
            CallOptions::default().timeout(Duration::from_millis(100)),
        );
        let others = futures::future::join_all(
            (0..7).map(|_| pool.call(PyCall::new("async_sleep", json!([5])))),
        );
        let (late, others) = tokio::join!(late, others);
        assert!(
            matches!(late, Err(Error::CallTimeout(_))),
            "{mode:?}: {late:?}"
        );
        for r in others {
            match r {
                Err(Error::Crashed(PythonError::Killed { cause, .. })) => {
                    assert!(cause.contains("stubborn"), "{cause}")
                }
                other => panic!("{mode:?}: {other:?}"),
            }
        }
        settled(&pool, 1).await;
        let t = pool.status().totals;
        assert_eq!(
            (t.call_timeouts, t.cancelled, t.killed),
            (3, 2, 1),
            "{mode:?}: {t:?}"
        );
        assert_eq!(t.crashes, 0, "{mode:?}: {t:?}");
        close_clean(pool, &tag).await;
    }
}

/// A process due to retire takes no new calls, finishes those in flight,
/// and retires once they are done: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_under_load_drains_and_loses_nothing() {
    for (mode, tag) in modes("pdrain") {
        let config = many(&tag, mode, 8)
            .recycle_after_tasks(100)
            .recycle_jitter(0.0);
        let pool = pool_of(config, 2).await;
        let callers: Vec<_> = (0..32u64)
            .map(|c| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for i in 0..40u64 {
                        let v = c * 1000 + i;
                        let got = pool
                            .call(PyCall::new("async_sleep", json!([0.005, v])))
                            .await
                            .unwrap();
                        assert_eq!(got, json!(v));
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        settled(&pool, 2).await;
        let t = pool.status().totals;
        assert!(t.retired >= 8, "{mode:?}: {t:?}");
        assert_eq!((t.crashes, t.killed), (0, 0), "{mode:?}: {t:?}");
        close_clean(pool, &tag).await;
    }
}

/// Callers dropped at every await point (while waiting for a lane, while
/// their call runs): every count is right after, and the processes serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_callers_leave_every_count_right() {
    for (mode, tag) in modes("pdrop") {
        let pool = pool_of(many(&tag, mode, 4), 2).await;
        for round in 0..5u64 {
            // 24 callers for 8 lanes: some wait, some run; all are dropped
            // at different points.
            let callers: Vec<_> = (0..24u64)
                .map(|i| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        pool.call(PyCall::new("async_sleep", json!([0.05, i])))
                            .await
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(10 * round + 5)).await;
            for (i, c) in callers.into_iter().enumerate() {
                if i % 3 != 0 {
                    c.abort();
                }
                let _ = c.await;
            }
            settled(&pool, 2).await;
        }
        let t = pool.status().totals;
        assert_eq!((t.crashes, t.killed), (0, 0), "{mode:?}: {t:?}");
        assert!(t.cancelled > 0, "{mode:?}: {t:?}");
        assert_eq!(
            pool.call(PyCall::new("echo", json!([1]))).await.unwrap(),
            json!(1)
        );
        close_clean(pool, &tag).await;
    }
}

/// Sessions on processes serving many calls: a strict session stays on its
/// process, and several sessions share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sessions_stay_on_their_process() {
    for (mode, tag) in modes("paffinity") {
        let pool = pool_of(many(&tag, mode, 4), 2).await;
        let sessions: Vec<_> = (0..12u64)
            .map(|s| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let key = format!("s{s}");
                    let mut seen_pid = None;
                    for n in 1..=20u64 {
                        let opts =
                            CallOptions::default().affinity(key.clone(), AffinityMode::Strict);
                        let got = pool
                            .call_with(PyCall::new("session_bump", json!([key])), opts)
                            .await
                            .unwrap();
                        let (pid, count) = (got[0].as_u64().unwrap(), got[1].as_u64().unwrap());
                        assert_eq!(count, n, "session {key} moved");
                        assert!(seen_pid.is_none_or(|p| p == pid), "session {key} moved");
                        seen_pid = Some(pid);
                    }
                    seen_pid.unwrap()
                })
            })
            .collect();
        let mut per_process: HashMap<u64, u32> = HashMap::new();
        for s in sessions {
            *per_process.entry(s.await.unwrap()).or_insert(0) += 1;
        }
        assert!(
            per_process.values().any(|&n| n > 1),
            "{mode:?}: no process held several sessions: {per_process:?}"
        );
        settled(&pool, 2).await;
        assert_eq!(pool.status().totals.affinity_lost, 0);
        close_clean(pool, &tag).await;
    }
}

/// Resizing and killing processes under load: never more processes than
/// the cap, whatever lanes are out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_cap_counts_processes_under_a_resize_storm() {
    let tag = test_tag("pcap");
    let pool: PyPool = Pool::builder(PythonFactory::new(many(&tag, StartMode::ForkServer, 4)))
        .name("cap-lanes")
        .size(2)
        .max_overflow(2)
        .overflow_idle(Duration::from_millis(200))
        .max_waiters(100_000)
        .build()
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..24u64)
        .map(|i| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = pool
                        .call(PyCall::new("async_sleep", json!([0.01, i])))
                        .await;
                }
            })
        })
        .collect();
    let began = Instant::now();
    let mut n = 0u64;
    while began.elapsed() < Duration::from_secs(4) {
        n += 1;
        pool.resize((n % 4) as usize).unwrap();
        if n.is_multiple_of(5) {
            if let Some(&victim) = tagged(&tag).first() {
                // SAFETY: kill(2) on a worker process this test's pool started.
                unsafe { libc::kill(victim as i32, libc::SIGKILL) };
            }
        }
        let s = pool.status();
        assert!(
            s.live <= (s.size + s.max_overflow).max(s.busy),
            "over the cap: {s:?}"
        );
        pool.check_invariants().unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in callers {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a caller hung: {:?} {:?}",
                    pool.status(),
                    pool.check_invariants()
                )
            })
            .unwrap();
    }
    pool.resize(2).unwrap();
    let ok = eventually(Duration::from_secs(15), || {
        let s = pool.status();
        s.live == 2 && s.in_flight == 0 && s.starting == 0
    })
    .await;
    assert!(ok, "{:?}", pool.status());
    pool.check_invariants().unwrap();
    close_clean(pool, &tag).await;
}

/// A shrink holds lanes back while the pool is over its new size; once the
/// worker beyond it has left, the worker that stays lends its free lanes to
/// the callers waiting at once, not when one of its own calls ends.
#[tokio::test]
async fn a_shrink_lends_the_lanes_of_the_workers_that_stay() {
    for (mode, tag) in modes("pshrink") {
        let pool = pool_of(many(&tag, mode, 4), 2).await;
        // One call on each process (an idle process is taken first): the
        // long one holds its process until the end of the test.
        let long = tokio::spawn({
            let pool = pool.clone();
            async move { pool.call(PyCall::new("async_sleep", json!([3.0, 1]))).await }
        });
        assert!(eventually(Duration::from_secs(5), || pool.status().in_flight == 1).await);
        let short = tokio::spawn({
            let pool = pool.clone();
            async move { pool.call(PyCall::new("async_sleep", json!([0.3, 2]))).await }
        });
        assert!(eventually(Duration::from_secs(5), || pool.status().in_flight == 2).await);
        assert_eq!(pool.status().idle, 0, "{mode:?}: one call per process");
        // Over the new size: neither process lends another lane.
        pool.resize(1).unwrap();
        let began = Instant::now();
        let waiting = pool.call(PyCall::new("async_sleep", json!([0.01, 3])));
        assert_eq!(waiting.await.unwrap(), json!(3), "{mode:?}");
        let took = began.elapsed();
        // The short call's process leaves when it ends (0.3 s); the long
        // call would free its lane only after 3 s.
        assert!(
            took < Duration::from_millis(2000),
            "{mode:?}: the waiting call took {took:?}: {:?}",
            pool.status()
        );
        assert_eq!(short.await.unwrap().unwrap(), json!(2));
        assert_eq!(long.await.unwrap().unwrap(), json!(1));
        settled(&pool, 1).await;
        close_clean(pool, &tag).await;
    }
}
