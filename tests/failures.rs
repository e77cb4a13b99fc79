//! Failure paths: workers that fail to start, crash, hang past their
//! deadline, fail their recycle or health check, or panic; callers turned
//! away or timed out. In each, only the failing call fails, with a typed
//! error, and the pool comes back to full size.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cenote::{CallOptions, Error};
use common::*;

const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_failure_is_retried_while_the_rest_serve() {
    let f = TestFactory::default();
    f.book.fail_starts.store(2, Ordering::SeqCst);
    let pool = builder(f.clone(), 3).build().await.unwrap();
    // The pool is up and serving although some starts failed.
    pool.call(Op::Ok).await.unwrap();
    assert!(
        eventually(SETTLE, || pool.status().idle == 3).await,
        "{:?}",
        pool.status()
    );
    let s = pool.status();
    assert_eq!(s.totals.start_failures, 2);
    assert_eq!(f.book.created.load(Ordering::SeqCst), 3);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_worker_can_start_callers_learn_why() {
    let f = TestFactory::default();
    f.book.fail_starts.store(usize::MAX, Ordering::SeqCst);
    f.book.start_ms.store(100, Ordering::SeqCst);
    let pool = builder(f.clone(), 2)
        .checkout_timeout(Duration::from_secs(10))
        .wait_for_warm(false)
        .build()
        .await
        .unwrap();
    // Already waiting when the starts fail: told the start error, not a timeout.
    let began = Instant::now();
    let waiting = pool.get().await.map(|_| ());
    match waiting {
        Err(Error::Start(e)) => assert!(e.to_string().contains("start failed on purpose"), "{e}"),
        other => panic!("expected a start error, got {other:?}"),
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "waiter was not told promptly"
    );
    // A newcomer is told at once.
    let began = Instant::now();
    assert!(matches!(pool.call(Op::Ok).await, Err(Error::Start(_))));
    assert!(began.elapsed() < Duration::from_secs(1));
    // When starts succeed again, the pool recovers by itself.
    f.book.fail_starts.store(0, Ordering::SeqCst);
    f.book.start_ms.store(0, Ordering::SeqCst);
    assert!(
        eventually(SETTLE, || pool.status().idle == 2).await,
        "{:?}",
        pool.status()
    );
    pool.call(Op::Ok).await.unwrap();
    close_clean(pool, &f).await;
}

/// One failed start with no worker up is waited out when its retry comes
/// within the callers' deadlines: it may be transient. Callers whose
/// deadline comes before the retry are told the start error at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_failed_start_is_waited_out_when_its_retry_comes_in_time() {
    let f = TestFactory::default();
    f.book.fail_starts.store(1, Ordering::SeqCst);
    f.book.start_ms.store(20, Ordering::SeqCst);
    let pool = builder(f.clone(), 1)
        .start_backoff(cenote::Backoff {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(1),
        })
        .wait_for_warm(false)
        .build()
        .await
        .unwrap();
    let patient = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            (pool.call(Op::Ok).await, began.elapsed())
        })
    };
    // Once the first start has failed: a caller who cannot outwait the
    // retry is told why at once.
    assert!(eventually(SETTLE, || pool.status().totals.start_failures == 1).await);
    let began = Instant::now();
    let hasty = pool
        .call_with(
            Op::Ok,
            CallOptions::default().checkout_timeout(Duration::from_millis(100)),
        )
        .await;
    assert!(matches!(hasty, Err(Error::Start(_))), "{hasty:?}");
    assert!(
        began.elapsed() < Duration::from_millis(50),
        "{:?}",
        began.elapsed()
    );
    let (served, waited) = patient.await.unwrap();
    assert!(served.is_ok(), "{served:?}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_only_its_own_call_and_is_replaced() {
    let (f, pool) = pool_of(2).await;
    let p = pool.clone();
    let other = tokio::spawn(async move { p.call(Op::Slow(Duration::from_millis(100))).await });
    assert!(eventually(SETTLE, || pool.status().busy == 1).await);
    let crashed = pool.call(Op::Crash).await;
    assert!(
        matches!(crashed, Err(Error::Crashed(TestError::Crashed))),
        "{crashed:?}"
    );
    assert!(
        other.await.unwrap().is_ok(),
        "a call on another worker failed"
    );
    assert!(
        eventually(SETTLE, || pool.status().idle == 2).await,
        "{:?}",
        pool.status()
    );
    let s = pool.status();
    assert_eq!((s.totals.crashes, s.totals.restarts), (1, 1));
    assert_eq!(f.book.created.load(Ordering::SeqCst), 3);
    assert_eq!(f.book.shut_down.load(Ordering::SeqCst), 1);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_kills_the_worker() {
    let (f, pool) = pool_of(1).await;
    let limit = Duration::from_millis(50);
    let began = Instant::now();
    let r = pool
        .call_with(Op::Hang, CallOptions::default().timeout(limit))
        .await;
    assert!(
        matches!(r, Err(Error::CallTimeout(d)) if d == limit),
        "{r:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(1));
    assert!(eventually(SETTLE, || pool.status().idle == 1).await);
    assert_eq!(
        f.book.shut_down.load(Ordering::SeqCst),
        1,
        "the hung worker was not ended"
    );
    assert_eq!(pool.status().totals.call_timeouts, 1);
    pool.call(Op::Ok).await.unwrap();
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_and_timed_out_callers_are_told_at_once() {
    let (_, pool) = pool_with(1, |b| {
        b.max_waiters(2)
            .checkout_timeout(Duration::from_millis(100))
    })
    .await;
    let held = pool.get().await.unwrap();
    let (a, b) = (pool.clone(), pool.clone());
    let w1 = tokio::spawn(async move { a.get().await.map(|_| ()) });
    let w2 = tokio::spawn(async move { b.get().await.map(|_| ()) });
    assert!(eventually(SETTLE, || pool.status().waiting == 2).await);
    let began = Instant::now();
    assert!(matches!(
        pool.get().await,
        Err(Error::Saturated { waiting: 2 })
    ));
    assert!(began.elapsed() < Duration::from_millis(50));
    for w in [w1, w2] {
        match w.await.unwrap() {
            Err(Error::CheckoutTimeout {
                waited,
                last_start_error: None,
            }) => assert!(waited >= Duration::from_millis(100)),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    let t = pool.status().totals;
    assert_eq!((t.rejected, t.checkout_timeouts), (1, 2));
    drop(held);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_replaces_an_idle_worker() {
    let (f, pool) = pool_with(2, |b| b.health_interval(Some(Duration::from_millis(30)))).await;
    assert!(
        eventually(SETTLE, || f.book.recycles.load(Ordering::SeqCst) >= 2).await,
        "no health check ran"
    );
    *f.book.recycle.lock().unwrap() = Recycle::Err;
    assert!(eventually(SETTLE, || pool.status().totals.crashes >= 2).await);
    *f.book.recycle.lock().unwrap() = Recycle::Ok;
    assert!(eventually(SETTLE, || pool.status().idle == 2).await);
    assert!(f.book.created.load(Ordering::SeqCst) >= 4);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_does_not_corrupt_the_pool() {
    let (f, pool) = pool_of(1).await;
    let p = pool.clone();
    let joined = tokio::spawn(async move { p.call(Op::Panic).await }).await;
    assert!(joined.unwrap_err().is_panic());
    // The guard dropped mid-call: the worker is recycled, then serves again.
    pool.call(Op::Ok).await.unwrap();
    pool.check_invariants().unwrap();
    assert!(f.book.recycles.load(Ordering::SeqCst) >= 1);
    close_clean(pool, &f).await;
}

#[test]
fn bad_config_is_refused_with_the_field_named() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(builder(TestFactory::default(), 0).max_overflow(0).build())
        .unwrap_err();
    assert!(err.to_string().contains("size + max_overflow"), "{err}");
    let err = rt
        .block_on(
            builder(TestFactory::default(), 1)
                .checkout_timeout(Duration::ZERO)
                .build(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("checkout_timeout"), "{err}");
    // Outside a runtime: a clear error, not a panic.
    let err = futures::executor::block_on(builder(TestFactory::default(), 1).build()).unwrap_err();
    assert!(matches!(err, cenote::BuildError::NoRuntime), "{err}");
}
