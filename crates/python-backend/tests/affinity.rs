//! Session affinity on real Python workers that keep per-session state
//! (`session_bump` in `tests/py/chaos.py`: a count per session, kept in the
//! worker process). 50 sessions × 200 calls each, concurrently, on 4
//! workers:
//!
//! * strict, calm: every answer is the next count of its own session;
//! * strict, with workers SIGKILLed and recycled under it: the sessions
//!   they held get `AffinityLost` (or `Crashed` for the call in flight),
//!   start over, and never get a count from another worker;
//! * hint, more sessions than workers: the hit rate is printed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote_core::{AffinityLoss, AffinityMode, CallOptions, Error};
use cenote_python::{PyCall, PythonConfig, PythonError};
use common::*;
use serde_json::json;

const SESSIONS: u64 = 50;
const CALLS: u64 = 200;
const WORKERS: usize = 4;

/// What one session saw.
#[derive(Debug, Default)]
struct Seen {
    /// Answers that were not the next count of the session.
    wrong: u64,
    lost: HashMap<String, u64>,
    /// Answers from the worker that answered the session's previous call.
    same_worker: u64,
    answers: u64,
}

type Answer = Result<(u32, u64), Error<PythonError>>;

async fn bump(pool: &PyPool, session: u64, mode: AffinityMode) -> Answer {
    let opts = CallOptions::default().affinity(format!("session-{session}"), mode);
    let call = PyCall::new("session_bump", json!([session])).returning::<(u32, u64)>();
    pool.call_with(call, opts).await
}

/// Run every session's calls concurrently, each session one call at a time.
async fn run_sessions(pool: &PyPool, mode: AffinityMode) -> Vec<Seen> {
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut seen, mut expected, mut last_pid) = (Seen::default(), 0, None);
                for _ in 0..CALLS {
                    match bump(&pool, s, mode).await {
                        Ok((pid, n)) => {
                            seen.answers += 1;
                            if n != expected + 1 {
                                seen.wrong += 1;
                            }
                            if last_pid == Some(pid) {
                                seen.same_worker += 1;
                            }
                            (expected, last_pid) = (n, Some(pid));
                        }
                        Err(e) => {
                            let kind = match &e {
                                Error::AffinityLost { reason, .. } => format!("{reason:?}"),
                                Error::Crashed(_) => "in flight".to_string(),
                                other => panic!("session {s}: unexpected {other}"),
                            };
                            *seen.lost.entry(kind).or_insert(0) += 1;
                            // Start the session over: on any worker, from 0.
                            pool.forget_affinity(format!("session-{s}"));
                            (expected, last_pid) = (0, None);
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn session_pool(config: PythonConfig, hint_wait: Duration) -> PyPool {
    chaos_builder(config, WORKERS)
        .affinity_hint_wait(hint_wait)
        .build()
        .await
        .expect("pool builds")
}

async fn close_and_reap(pool: PyPool, tag: &str) {
    pool.check_invariants().unwrap();
    pool.close().await;
    assert_eq!(
        wait_gone(tag, Duration::from_secs(10)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sessions_always_get_their_own_count() {
    let tag = test_tag("affinity-strict");
    let pool = session_pool(chaos(&tag), Duration::from_millis(50)).await;
    let began = Instant::now();
    let seen = run_sessions(&pool, AffinityMode::Strict).await;
    let answers: u64 = seen.iter().map(|s| s.answers).sum();
    let wrong: u64 = seen.iter().map(|s| s.wrong).sum();
    let same: u64 = seen.iter().map(|s| s.same_worker).sum();
    println!(
        "strict, calm: {answers} answers in {:?}, {wrong} wrong, {same} from the session's previous worker",
        began.elapsed()
    );
    assert_eq!(answers, SESSIONS * CALLS);
    assert_eq!(wrong, 0);
    assert_eq!(
        same,
        SESSIONS * (CALLS - 1),
        "a session moved between workers"
    );
    let totals = pool.status().totals;
    assert_eq!(totals.affinity_hits, SESSIONS * (CALLS - 1));
    assert_eq!((totals.affinity_misses, totals.affinity_lost), (0, 0));
    close_and_reap(pool, &tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sessions_through_sigkills_and_recycles_lose_their_worker_never_their_count() {
    let tag = test_tag("affinity-chaos");
    let config = chaos(&tag).recycle_after_tasks(600).recycle_jitter(0.3);
    let pool = session_pool(config, Duration::from_millis(50)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (tag.clone(), Arc::clone(&stop));
    let killer = tokio::spawn(async move {
        let mut kills = 0;
        while !s.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if let Some(&pid) = tagged(&t).get(kills % WORKERS) {
                // SAFETY: kill(2) on a pid of our own test's worker.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                kills += 1;
            }
        }
        kills
    });
    let seen = run_sessions(&pool, AffinityMode::Strict).await;
    stop.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    let wrong: u64 = seen.iter().map(|s| s.wrong).sum();
    let mut lost: HashMap<String, u64> = HashMap::new();
    for s in &seen {
        for (k, n) in &s.lost {
            *lost.entry(k.clone()).or_insert(0) += n;
        }
    }
    let totals = pool.status().totals;
    println!(
        "strict, chaos: {kills} SIGKILLs, {} recycles; failures by kind {lost:?}; {wrong} wrong answers",
        totals.retired
    );
    assert_eq!(wrong, 0, "a session got a count that was not its own");
    assert!(kills > 0 && totals.retired > 0, "no chaos: {totals:?}");
    for reason in [AffinityLoss::Crashed, AffinityLoss::Recycled] {
        assert!(
            lost.get(&format!("{reason:?}")).copied().unwrap_or(0) > 0,
            "no session learned its worker {reason}: {lost:?}"
        );
    }
    assert_eq!(
        totals.affinity_lost,
        lost.iter()
            .filter(|(k, _)| *k != "in flight")
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    close_and_reap(pool, &tag).await;
}

/// Hint sessions on a pool whose hints wait `hint_wait` for their busy
/// worker: the share of repeat calls served by the session's previous
/// worker, printed and checked against the pool's own totals.
async fn hint_hit_rate(hint_wait: Duration) -> f64 {
    let tag = new_tag("affinity-hint");
    let pool = session_pool(chaos(&tag), hint_wait).await;
    let began = Instant::now();
    let seen = run_sessions(&pool, AffinityMode::Hint).await;
    let answers: u64 = seen.iter().map(|s| s.answers).sum();
    let same: u64 = seen.iter().map(|s| s.same_worker).sum();
    let totals = pool.status().totals;
    let rate = same as f64 / (answers - SESSIONS) as f64;
    println!(
        "hint, waiting up to {hint_wait:?}: {SESSIONS} sessions on {WORKERS} workers, {answers} calls in {:?}: \
         hit rate {:.1}% ({same} of {} repeat calls on the session's previous worker; \
         pool totals: {} hits, {} misses)",
        began.elapsed(),
        rate * 100.0,
        answers - SESSIONS,
        totals.affinity_hits,
        totals.affinity_misses,
    );
    assert_eq!(answers, SESSIONS * CALLS, "a hint never fails");
    // The pool's count and the callers' agree: a call is a hit exactly when
    // its worker is the one that answered the session's call before.
    assert_eq!(totals.affinity_hits, same);
    assert_eq!(
        totals.affinity_hits + totals.affinity_misses,
        answers - SESSIONS
    );
    close_and_reap(pool, &tag).await;
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hint_sessions_on_fewer_workers_report_their_hit_rate() {
    init_tracing();
    let waiting = hint_hit_rate(Duration::from_millis(50)).await;
    let not_waiting = hint_hit_rate(Duration::ZERO).await;
    assert!(waiting > 0.9, "hit rate {waiting} with a 50 ms hint wait");
    assert!(
        not_waiting < waiting,
        "waiting for the session's worker should hit more: {not_waiting} vs {waiting}"
    );
}
