//! 100,000 waiters that give up leave nothing behind: the pool's only worker
//! is held while waiters queue in batches; per batch, half time out on a
//! short `checkout_timeout`, a quarter are aborted as tasks and a quarter are
//! dropped as bare futures. After every batch `waiting` is exactly 0 (no
//! tombstone waits for a later pop), the timeouts are counted exactly, and
//! at the end the process's resident memory has not grown beyond a small
//! bound and the pool still serves.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cenote::{Checkout, CheckoutOptions, Error};
use common::*;
use futures::FutureExt;

const TOTAL: usize = 100_000;
const BATCH: usize = 5_000;
const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(25);
const SETTLE: Duration = Duration::from_secs(10);
/// Allowed growth of resident memory over the 100,000 waiters: a residue of
/// even 100 bytes per waiter would be ~10 MB.
const MAX_GROWTH: u64 = 8 << 20;

/// Resident set size in bytes, from `/proc/self/statm` (in pages).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field");
    pages * page_size()
}

fn page_size() -> u64 {
    std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// One batch: `BATCH` waiters queued behind the held worker, then half
/// cancelled (aborted tasks and dropped futures) and half timed out.
/// Returns how many timed out.
async fn batch(pool: &TestPool) -> usize {
    let quarter = BATCH / 4;
    let base = pool.status().totals.checkout_timeouts as usize;
    // Half as tasks that run into the checkout timeout.
    let timing_out: Vec<_> = (0..BATCH / 2)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.get().await.map(|co| Checkout::id(&co)) })
        })
        .collect();
    // A quarter as tasks that will be aborted.
    let aborted: Vec<_> = (0..quarter)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.get().await.map(|co| Checkout::id(&co)) })
        })
        .collect();
    // A quarter as futures polled once (queued), then dropped. They wait
    // longer than the test runs: one the maintenance tick had already
    // turned away before its drop would count as a timeout nobody saw
    // (under load, the batch can take longer than `CHECKOUT_TIMEOUT` to
    // queue).
    let patient = CheckoutOptions::default().timeout(SETTLE);
    #[allow(clippy::type_complexity)]
    let mut dropped: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = (0..quarter)
        .map(|_| pool.get_with(patient.clone()).boxed())
        .collect();
    for f in &mut dropped {
        assert!(f.as_mut().now_or_never().is_none(), "served while held");
    }

    // Every waiter is queued before any gives up (the timeout is per
    // waiter, so some may already have timed out: count those out).
    assert!(
        eventually(SETTLE, || {
            let s = pool.status();
            s.waiting + s.totals.checkout_timeouts as usize - base >= BATCH
        })
        .await
    );
    let mut timed_out = 0;
    for t in &aborted {
        t.abort();
    }
    drop(dropped);
    for t in aborted {
        // Either aborted while waiting, or it had already timed out.
        match t.await {
            Err(e) => assert!(e.is_cancelled()),
            Ok(Err(Error::CheckoutTimeout { .. })) => timed_out += 1,
            Ok(r) => panic!("an aborted waiter got {r:?}"),
        }
    }
    assert!(
        pool.status().waiting <= BATCH / 2,
        "cancelled waiters left entries: {:?}",
        pool.status()
    );
    let joined = tokio::time::timeout(SETTLE, futures::future::join_all(timing_out))
        .await
        .expect("a waiter outlived its checkout timeout");
    for r in joined {
        match r.unwrap() {
            Err(Error::CheckoutTimeout { .. }) => timed_out += 1,
            other => panic!("a waiter got {other:?} while the only worker was held"),
        }
    }
    assert_eq!(
        pool.status().waiting,
        0,
        "waiters left after their batch: {:?}",
        pool.status()
    );
    pool.check_invariants().unwrap();
    timed_out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_cancelled_waiters_leave_nothing_behind() {
    let began = Instant::now();
    let (f, pool) = pool_with(1, |b| {
        b.checkout_timeout(CHECKOUT_TIMEOUT).max_waiters(2 * BATCH)
    })
    .await;
    let held = pool.get().await.unwrap();
    let held_id = Checkout::id(&held);

    // Warm-up: the allocator's pools and the runtime's task slabs exist.
    let mut timed_out = 0;
    for _ in 0..2 {
        timed_out += batch(&pool).await;
    }
    let before = rss();
    let mut waiters = 0;
    while waiters < TOTAL {
        timed_out += batch(&pool).await;
        waiters += BATCH;
    }
    let after = rss();
    let growth = after.saturating_sub(before);
    println!(
        "{waiters} waiters in {:?}; rss {} KiB -> {} KiB (+{} KiB)",
        began.elapsed(),
        before >> 10,
        after >> 10,
        growth >> 10
    );

    let s = pool.status();
    assert_eq!(s.waiting, 0, "{s:?}");
    // Exactly the waiters that ran out of time count as timeouts; the
    // cancelled ones count as nothing.
    assert!(timed_out >= (TOTAL + 2 * BATCH) / 2, "{timed_out}");
    assert_eq!(s.totals.checkout_timeouts as usize, timed_out, "{s:?}");
    assert_eq!(s.totals.rejected, 0);
    assert_eq!((s.busy, s.idle, s.live), (1, 0, 1), "{s:?}");
    assert!(
        growth < MAX_GROWTH,
        "resident memory grew by {} KiB over {waiters} cancelled waiters",
        growth >> 10
    );

    // The pool still serves: the held worker goes back and is handed out.
    drop(held);
    let mut co = tokio::time::timeout(SETTLE, pool.get())
        .await
        .expect("get hung")
        .expect("the pool no longer serves");
    assert_eq!(Checkout::id(&co), held_id);
    assert_eq!(co.call(Op::Ok).await.unwrap(), held_id.0);
    drop(co);
    assert_eq!(pool.call(Op::Ok).await.unwrap(), held_id.0);
    pool.check_invariants().unwrap();
    pool.close().await;
    assert_eq!(f.book.alive(), 0);
    assert_eq!(f.book.created.load(Ordering::SeqCst), 1);
}
