//! Runtime changes and endings: resize, add/remove idle workers, retain,
//! overflow retirement, quota retirement with a warm replacement, close under
//! load, close past its grace, and a pool dropped without close.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cenote::{Checkout, Error};
use common::*;

const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_grows_at_once_and_shrinks_idle_then_busy() {
    let (f, pool) = pool_of(2).await;
    pool.resize(5).unwrap();
    assert!(
        eventually(SETTLE, || pool.status().idle == 5).await,
        "{:?}",
        pool.status()
    );
    // Three busy, two idle; shrink to 1: idle go now, busy as they return.
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| pool.get())).await;
    pool.resize(1).unwrap();
    assert!(eventually(SETTLE, || pool.status().idle == 0).await);
    assert!(eventually(SETTLE, || f.book.shut_down.load(Ordering::SeqCst) == 2).await);
    assert_eq!(
        pool.status().busy,
        3,
        "busy workers were cut off by the shrink"
    );
    drop(held);
    assert!(
        eventually(SETTLE, || pool.status().live == 1
            && pool.status().stopping == 0)
        .await,
        "{:?}",
        pool.status()
    );
    assert_eq!(f.book.alive(), 1);
    assert!(
        pool.resize(0).is_err(),
        "size 0 without overflow can never serve"
    );
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_idle_workers_are_really_shut_down() {
    let (f, pool) = pool_of(3).await;
    let held = pool.get().await.unwrap();
    // Only idle workers are taken; the busy one is untouched.
    assert_eq!(pool.remove_idle_workers(5).await, 2);
    assert_eq!(
        f.book.shut_down.load(Ordering::SeqCst),
        2,
        "removed workers still running"
    );
    let s = pool.status();
    assert_eq!((s.size, s.live, s.busy), (1, 1, 1));
    drop(held);
    pool.add_workers(2);
    assert!(eventually(SETTLE, || pool.status().idle == 3).await);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_replaces_what_it_removes() {
    let (f, pool) = pool_of(3).await;
    let first = Checkout::id(&pool.get().await.unwrap());
    let removed = pool.retain(|w| w.id != first).await;
    assert_eq!(removed, 1);
    assert!(eventually(SETTLE, || pool.status().idle == 3).await);
    assert_eq!(f.book.created.load(Ordering::SeqCst), 4);
    let ids: Vec<_> = futures::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .map(|g| Checkout::id(&g.unwrap()))
        .collect();
    assert!(!ids.contains(&first), "a removed worker still serves");
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_workers_come_on_demand_and_retire_when_idle() {
    let (f, pool) = pool_with(1, |b| {
        b.max_overflow(2).overflow_idle(Duration::from_millis(100))
    })
    .await;
    let calls = (0..3).map(|_| pool.call(Op::Slow(Duration::from_millis(100))));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(
        f.book.created.load(Ordering::SeqCst),
        3,
        "overflow workers were not made"
    );
    assert!(pool.status().live <= 3);
    assert!(
        eventually(SETTLE, || pool.status().live == 1
            && pool.status().stopping == 0)
        .await,
        "{:?}",
        pool.status()
    );
    assert_eq!(f.book.alive(), 1);
    pool.close().await;
}

/// Samples the pool while 30 calls run through workers that retire every
/// 3 tasks; returns the fewest ready (idle + busy) and the most live workers
/// seen.
async fn retire_under_calls(pool: &cenote::Pool<TestFactory>) -> (usize, usize) {
    let p = pool.clone();
    let watcher = tokio::spawn(async move {
        let (mut min_ready, mut max_live) = (usize::MAX, 0);
        for _ in 0..400 {
            let s = p.status();
            min_ready = min_ready.min(s.idle + s.busy);
            max_live = max_live.max(s.live);
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        (min_ready, max_live)
    });
    for _ in 0..30 {
        pool.call(Op::Slow(Duration::from_millis(2))).await.unwrap();
    }
    watcher.await.unwrap()
}

/// Workers retired at their quota (30 calls at 3 each), none crashed.
fn assert_retired_without_crashes(pool: &cenote::Pool<TestFactory>) {
    let t = pool.status().totals;
    assert!(
        t.retired >= 5,
        "workers did not retire at their quota: {t:?}"
    );
    assert_eq!(t.crashes, 0);
}

/// With room under the cap (`max_overflow`), a retiring worker serves on
/// until its replacement is up: ready workers never drop below `size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_its_quota_is_replaced_warm() {
    let f = TestFactory::default();
    f.book.quota.store(3, Ordering::SeqCst);
    let pool = builder(f.clone(), 2).max_overflow(1).build().await.unwrap();
    let (min_ready, max_live) = retire_under_calls(&pool).await;
    assert!(
        min_ready >= 2,
        "ready workers dropped to {min_ready} below size 2"
    );
    assert!(max_live <= 3, "live {max_live} over the cap of 3");
    assert_retired_without_crashes(&pool);
    assert!(
        eventually(SETTLE, || {
            let s = pool.status();
            s.live == 2 && s.retiring == 0 && s.stopping == 0
        })
        .await,
        "{:?}",
        pool.status()
    );
    close_clean(pool, &f).await;
}

/// At the cap (no `max_overflow`), retiring never takes the pool over it:
/// the worker stops first and its replacement starts in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_its_quota_retires_within_the_cap() {
    let f = TestFactory::default();
    f.book.quota.store(3, Ordering::SeqCst);
    let pool = builder(f.clone(), 2).build().await.unwrap();
    let (_, max_live) = retire_under_calls(&pool).await;
    assert!(max_live <= 2, "live {max_live} over the cap of 2");
    assert_retired_without_crashes(&pool);
    assert!(
        eventually(SETTLE, || pool.status().live == 2).await,
        "{:?}",
        pool.status()
    );
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_under_load_finishes_in_flight_and_turns_the_rest_away() {
    let (f, pool) = pool_with(2, |b| b.shutdown_grace(Duration::from_secs(2))).await;
    let calls = spawn_calls(&pool, 10, Op::Slow(Duration::from_millis(150)), SETTLE);
    assert!(eventually(SETTLE, || pool.status().waiting == 8).await);
    pool.close().await;
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let closed = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Closed)))
        .count();
    assert_eq!((ok, closed), (2, 8), "{results:?}");
    assert!(matches!(pool.get().await, Err(Error::Closed)));
    assert_eq!(f.book.alive(), 0);
    assert!(pool.status().closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_kills_what_outlives_the_grace() {
    let (f, pool) = pool_with(2, |b| b.shutdown_grace(Duration::from_millis(100))).await;
    let calls = spawn_calls(&pool, 2, Op::Hang, Duration::from_secs(60));
    assert!(eventually(SETTLE, || pool.status().busy == 2).await);
    let began = std::time::Instant::now();
    pool.close().await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "close waited on hung calls"
    );
    for c in calls {
        assert!(matches!(c.await.unwrap(), Err(Error::Closed)));
    }
    assert!(
        eventually(SETTLE, || f.book.alive() == 0).await,
        "hung workers were not killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pool_closes_itself() {
    let (f, pool) = pool_of(3).await;
    pool.call(Op::Ok).await.unwrap();
    drop(pool);
    assert!(
        eventually(SETTLE, || f.book.alive() == 0).await,
        "workers outlived their pool"
    );
}
