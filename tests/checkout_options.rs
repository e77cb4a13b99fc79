//! Per-checkout options: a caller's own checkout timeout (instead of the
//! pool's `checkout_timeout`) is kept to promptly, counted, and leaves
//! nothing queued, whether it fires, is beaten by a returning worker, or
//! the caller gives up first; and a call's own deadline is its only one.

mod common;

use std::time::{Duration, Instant};

use cenote::{CallOptions, Checkout, CheckoutOptions, Error};
use common::*;

const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_with_its_own_timeout_gives_up_on_time() {
    let (f, pool) = pool_with(1, |b| b.checkout_timeout(Duration::from_secs(30))).await;
    let held = pool.get().await.unwrap();
    let began = Instant::now();
    let err = pool
        .get_with(CheckoutOptions::default().timeout(Duration::from_millis(50)))
        .await
        .map(|_| ())
        .unwrap_err();
    let took = began.elapsed();
    assert!(
        matches!(err, Error::CheckoutTimeout { waited, .. } if waited >= Duration::from_millis(50)),
        "{err:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with a 50 ms timeout"
    );
    let s = pool.status();
    assert_eq!((s.waiting, s.totals.checkout_timeouts), (0, 1), "{s:?}");
    pool.check_invariants().unwrap();
    drop(held);
    // The worker is free again and serves the next caller.
    pool.call(Op::Ok).await.unwrap();
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_returned_before_the_timeout_is_taken() {
    let (_, pool) = pool_of(1).await;
    let held = pool.get().await.unwrap();
    let p = pool.clone();
    let waiter = tokio::spawn(async move {
        p.get_with(CheckoutOptions::default().timeout(Duration::from_secs(5)))
            .await
            .map(|c| Checkout::waited(&c))
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    let waited = waiter.await.unwrap().unwrap();
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
    assert_eq!(pool.status().totals.checkout_timeouts, 0);
    pool.check_invariants().unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_with_own_timeouts_racing_returns_lose_no_worker() {
    let (f, pool) = pool_of(2).await;
    let callers: Vec<_> = (0..32u64)
        .map(|i| {
            let p = pool.clone();
            tokio::spawn(async move {
                let mut outcomes = (0, 0);
                for j in 0..50u64 {
                    // Timeouts of 0-3 ms against holds of 0-2 ms: the timer
                    // and the hand-off race each other.
                    let opts = CheckoutOptions::default()
                        .timeout(Duration::from_micros((i * 7 + j * 13) % 3000));
                    match p.get_with(opts).await {
                        Ok(c) => {
                            tokio::time::sleep(Duration::from_micros((i + j) % 2000)).await;
                            drop(c);
                            outcomes.0 += 1;
                        }
                        Err(Error::CheckoutTimeout { .. }) => outcomes.1 += 1,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                outcomes
            })
        })
        .collect();
    let (mut served, mut timed_out) = (0, 0);
    for c in callers {
        let (s, t) = c.await.unwrap();
        served += s;
        timed_out += t;
    }
    assert_eq!(served + timed_out, 32 * 50);
    assert!(served > 0 && timed_out > 0, "{served} {timed_out}");
    assert!(
        eventually(SETTLE, || pool.status().idle == 2).await,
        "a worker was lost: {:?}",
        pool.status()
    );
    let s = pool.status();
    assert_eq!(s.totals.checkout_timeouts, timed_out, "{s:?}");
    assert_eq!(s.waiting, 0);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_while_waiting_with_a_timeout_leaves_nothing() {
    let (_, pool) = pool_of(1).await;
    let held = pool.get().await.unwrap();
    let wait = pool.get_with(CheckoutOptions::default().timeout(Duration::from_secs(5)));
    assert!(tokio::time::timeout(Duration::from_millis(30), wait)
        .await
        .is_err());
    assert_eq!(pool.status().waiting, 0);
    drop(held);
    assert_eq!(pool.status().idle, 1);
    pool.check_invariants().unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_own_deadline_is_its_only_one() {
    let (f, pool) = pool_with(1, |b| b.call_timeout(Duration::from_secs(30))).await;
    let began = Instant::now();
    let err = pool
        .call_with(
            Op::Hang,
            CallOptions::default().timeout(Duration::from_millis(80)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CallTimeout(d) if d == Duration::from_millis(80)),
        "{err:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(2));
    // Through a checkout, the pool's deadline applies the same way.
    let short = builder(f.clone(), 1)
        .name("short")
        .call_timeout(Duration::from_millis(60))
        .build()
        .await
        .unwrap();
    let mut c = short.get().await.unwrap();
    let err = c.call(Op::Hang).await.unwrap_err();
    assert!(matches!(err, Error::CallTimeout(_)), "{err:?}");
    drop(c);
    assert!(
        eventually(SETTLE, || short.status().idle == 1).await,
        "{:?}",
        short.status()
    );
    assert_eq!(short.status().totals.call_timeouts, 1);
    pool.close().await;
    short.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_is_a_tower_service_with_its_options() {
    use tower::{Service, ServiceExt};
    let (_, pool) = pool_of(1).await;
    let mut svc = cenote::PoolService::new(pool.clone());
    let id = svc.ready().await.unwrap().call(Op::Ok).await.unwrap();
    assert_eq!(id, 1);
    // The service's own deadline cuts a slow call off.
    let opts = CallOptions::default().timeout(Duration::from_millis(50));
    let mut quick = cenote::PoolService::new(pool.clone()).with_options(opts);
    let late = quick
        .ready()
        .await
        .unwrap()
        .call(Op::Slow(Duration::from_secs(2)))
        .await;
    assert!(matches!(late, Err(Error::CallTimeout(_))), "{late:?}");
    pool.close().await;
}
