//! Recycling after N tasks, on RSS growth and at a maximum lifetime. With
//! room under the cap (`max_overflow`), the replacement is warm: serving
//! capacity never drops below the pool's size. At the cap, the worker stops
//! first and live workers never exceed the cap.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cenote_core::{Retire, Worker};
use cenote_python::{PyCall, PythonFactory};
use common::*;
use serde_json::json;

/// Watch the pool while `work` runs: the lowest count of workers able to
/// serve (idle + busy, not starting) seen, and the status at that moment.
async fn min_capacity_during<F: std::future::Future<Output = ()>>(
    pool: &PyPool,
    work: F,
) -> (usize, Option<cenote_core::Status>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (pool.clone(), Arc::clone(&stop));
    let watcher = tokio::spawn(async move {
        let mut low = (usize::MAX, None);
        while !s.load(Ordering::Relaxed) {
            let st = p.status();
            if st.idle + st.busy < low.0 {
                low = (st.idle + st.busy, Some(st));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        low
    });
    work.await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap()
}

/// A pool of `size` with room under its cap for every worker to retire at
/// once, so each retiring worker gets a warm replacement.
async fn pool_with_room(config: cenote_python::PythonConfig, size: usize) -> PyPool {
    chaos_builder(config, size)
        .max_overflow(size)
        .build()
        .await
        .expect("pool builds")
}

async fn pids_seen(pool: &PyPool, calls: usize) -> HashSet<u64> {
    let mut seen = HashSet::new();
    for _ in 0..calls {
        let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
        seen.insert(pid.as_u64().unwrap());
    }
    seen
}

#[tokio::test]
async fn worker_asks_to_retire_after_its_task_quota() {
    let tag = test_tag("quota");
    let mut w = PythonFactory::new(chaos(&tag).recycle_after_tasks(3).recycle_jitter(0.0))
        .spawn("t/quota")
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(w.retire_reason(), None, "after {i} tasks");
        w.call_json(PyCall::new("add", json!([1, 1])), ctx())
            .await
            .unwrap();
    }
    assert_eq!(w.retire_reason(), Some(Retire::Tasks(3)));
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn task_quota_jitter_spreads_workers() {
    let tag = test_tag("jitter");
    let factory = PythonFactory::new(chaos(&tag).recycle_after_tasks(10).recycle_jitter(1.0));
    let mut quotas = Vec::new();
    for _ in 0..4 {
        let mut w = factory.spawn("t/jitter").await.unwrap();
        let mut n = 0;
        while w.retire_reason().is_none() {
            w.call_json(PyCall::new("add", json!([1, 1])), ctx())
                .await
                .unwrap();
            n += 1;
        }
        assert!((10..=20).contains(&n), "{n}");
        quotas.push(n);
        w.shutdown(Duration::ZERO).await;
    }
    // Equal quotas for all four would have odds of 1 in 11^3.
    assert!(quotas.iter().any(|q| *q != quotas[0]), "{quotas:?}");
    assert!(tagged(&tag).is_empty());
}

#[tokio::test]
async fn pool_recycles_after_n_tasks_without_losing_capacity() {
    let tag = test_tag("precycle");
    let pool = pool_with_room(chaos(&tag).recycle_after_tasks(5).recycle_jitter(0.5), 2).await;
    let mut seen = HashSet::new();
    let (low, at) = min_capacity_during(&pool, async {
        // Spread over time, so replacements come up while calls go on.
        for _ in 0..30 {
            let (a, b) = tokio::join!(pids_seen(&pool, 2), pids_seen(&pool, 2));
            seen.extend(a);
            seen.extend(b);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(low >= 2, "capacity dropped to {low}: {at:?}");
    assert!(seen.len() >= 4, "workers were replaced: {seen:?}");
    let st = pool.status();
    assert!(st.totals.retired >= 2, "{st:?}");
    assert_eq!(st.totals.crashes, 0, "{st:?}");
    // Retired processes are really gone.
    assert!(
        eventually(Duration::from_secs(5), || tagged(&tag).len() == 2).await,
        "{:?}",
        tagged(&tag)
    );
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn pool_recycles_a_worker_whose_memory_grew() {
    let tag = test_tag("rss");
    let pool = pool_with_room(
        chaos(&tag)
            .max_rss_growth(40 << 20)
            .rss_check_interval(Duration::ZERO),
        2,
    )
    .await;
    let before: HashSet<u32> = tagged(&tag).into_iter().collect();
    let (low, at) = min_capacity_during(&pool, async {
        // 64 MiB touched in one worker: over the 40 MiB allowance.
        let n = pool.call(PyCall::new("grow", json!([64]))).await.unwrap();
        assert_eq!(n, json!(1));
        for _ in 0..20 {
            pool.call(PyCall::new("add", json!([1, 1]))).await.unwrap();
        }
        let replaced = eventually(Duration::from_secs(10), || {
            let now: HashSet<u32> = tagged(&tag).into_iter().collect();
            now.len() == 2 && now != before
        })
        .await;
        assert!(replaced, "{:?} vs {:?}", tagged(&tag), before);
    })
    .await;
    assert!(low >= 2, "capacity dropped to {low}: {at:?}");
    let st = pool.status();
    assert_eq!(st.totals.retired, 1, "{st:?}");
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn pool_recycles_at_max_lifetime() {
    let tag = test_tag("life");
    let pool = pool_with_room(chaos(&tag).max_lifetime(Duration::from_millis(300)), 2).await;
    let first = pids_seen(&pool, 4).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (low, at) = min_capacity_during(&pool, async {
        for _ in 0..10 {
            pool.call(PyCall::new("add", json!([1, 1]))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(low >= 2, "capacity dropped to {low}: {at:?}");
    assert!(pool.status().totals.retired >= 1, "{:?}", pool.status());
    // The replacement's start may still be under way on a busy machine.
    assert!(
        eventually(Duration::from_secs(10), || pool.status().retiring == 0).await,
        "{:?}",
        pool.status()
    );
    let later = pids_seen(&pool, 4).await;
    assert!(
        later.iter().any(|p| !first.contains(p)),
        "{first:?} {later:?}"
    );
    close_none_left(pool, &tag).await;
}

/// At the cap (no `max_overflow`), a retiring worker stops before its
/// replacement starts: the pool never holds more live workers than its
/// size, and returns to full size.
#[tokio::test]
async fn recycling_at_the_cap_never_exceeds_it() {
    let tag = test_tag("capcycle");
    let pool = chaos_pool(chaos(&tag).recycle_after_tasks(3), 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (pool.clone(), Arc::clone(&stop));
    let watcher = tokio::spawn(async move {
        let mut most = 0;
        while !s.load(Ordering::Relaxed) {
            most = most.max(p.status().live);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        most
    });
    let seen = pids_seen(&pool, 24).await;
    stop.store(true, Ordering::Relaxed);
    let most = watcher.await.unwrap();
    assert!(most <= 2, "live reached {most} with a cap of 2");
    assert!(seen.len() >= 4, "workers were not replaced: {seen:?}");
    let st = pool.status();
    assert!(st.totals.retired >= 4, "{st:?}");
    assert_eq!(st.totals.crashes, 0, "{st:?}");
    assert!(
        eventually(Duration::from_secs(5), || pool.status().live == 2
            && tagged(&tag).len() == 2)
        .await,
        "{:?} {:?}",
        pool.status(),
        tagged(&tag)
    );
    close_none_left(pool, &tag).await;
}
