//! A caller dropped at every await point, times every outcome of the work
//! pending at that point, must leave the pool's counts right and must never
//! let two callers hold one worker, nor hand out a worker whose cut-off call
//! was not cleaned up.
//!
//! The await points a caller of `pool.call` passes through:
//! * **waiting** for a busy worker to come back (its holder's call ends
//!   ok / err / slow / hangs until its deadline);
//! * **creation**: the pool is starting a worker for it (the start succeeds /
//!   fails once / is slow / hangs past `create_timeout`);
//! * **recycle**: the only worker is being recycled after an abandoned call
//!   (recycle succeeds / fails / is slow / hangs past `recycle_timeout`);
//! * **call**: its own call is running (the call would have answered ok /
//!   err / slowly / never).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cenote::CallOptions;
use common::*;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Err,
    Slow,
    Hang,
}

const OUTCOMES: [Outcome; 4] = [Outcome::Ok, Outcome::Err, Outcome::Slow, Outcome::Hang];
const SETTLE: Duration = Duration::from_secs(5);

/// Spawn `pool.call(op)`, wait until `reached` holds, then cancel the caller
/// and wait until its future is really dropped.
async fn cancel_at(
    pool: &TestPool,
    op: Op,
    timeout: Duration,
    reached: impl Fn(&TestPool) -> bool,
) {
    let p = pool.clone();
    let caller = tokio::spawn(async move {
        p.call_with(op, CallOptions::default().timeout(timeout))
            .await
    });
    assert!(
        eventually(SETTLE, || reached(pool)).await,
        "caller never reached the await point: {:?}",
        pool.status()
    );
    caller.abort();
    let joined = caller.await;
    assert!(
        joined.is_err(),
        "the caller finished before it could be cancelled"
    );
}

/// After the dust settles: every worker is idle, nobody waits, the counts
/// add up, and the next callers get clean workers.
async fn assert_settled(pool: &TestPool, f: &TestFactory, size: usize, case: &str) {
    let settled = eventually(SETTLE, || {
        let s = pool.status();
        s.busy == 0 && s.waiting == 0 && s.starting == 0 && s.idle == size && s.live == size
    })
    .await;
    let s = pool.status();
    assert!(settled, "{case}: pool did not settle: {s:?}");
    pool.check_invariants()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    for _ in 0..size * 2 {
        pool.call(Op::Slow(Duration::from_millis(1)))
            .await
            .unwrap_or_else(|e| panic!("{case}: pool unusable after cancellation: {e}"));
    }
    assert!(
        !f.book.double_use.load(Ordering::SeqCst),
        "{case}: a worker was handed out dirty or twice"
    );
    pool.check_invariants()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    pool.close().await;
    assert_eq!(
        f.book.alive(),
        0,
        "{case}: workers left running after close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_while_waiting_for_a_busy_worker() {
    for outcome in OUTCOMES {
        let f = TestFactory::default();
        let pool = builder(f.clone(), 1).build().await.unwrap();
        let hold = match outcome {
            Outcome::Ok => Op::Slow(Duration::from_millis(30)),
            Outcome::Err => Op::SlowErr(Duration::from_millis(30)),
            Outcome::Slow => Op::Slow(Duration::from_millis(300)),
            Outcome::Hang => Op::Hang,
        };
        let p = pool.clone();
        let holder = tokio::spawn(async move {
            p.call_with(
                hold,
                CallOptions::default().timeout(Duration::from_millis(400)),
            )
            .await
        });
        assert!(eventually(SETTLE, || pool.status().busy == 1).await);
        cancel_at(&pool, Op::Ok, Duration::from_secs(1), |p| {
            p.status().waiting == 1
        })
        .await;
        assert_eq!(
            pool.status().waiting,
            0,
            "{outcome:?}: cancelled waiter left an entry"
        );
        let held = holder.await.unwrap();
        match outcome {
            Outcome::Ok | Outcome::Slow => assert!(held.is_ok()),
            Outcome::Err => assert!(matches!(
                held,
                Err(cenote::Error::Worker(TestError::Failed))
            )),
            Outcome::Hang => assert!(matches!(held, Err(cenote::Error::CallTimeout(_)))),
        }
        assert_settled(&pool, &f, 1, &format!("waiting/{outcome:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_while_its_worker_is_being_created() {
    for outcome in OUTCOMES {
        let (f, pool) = pool_with(0, |b| {
            b.max_overflow(1).create_timeout(Duration::from_millis(150))
        })
        .await;
        match outcome {
            Outcome::Ok => f.book.start_ms.store(50, Ordering::SeqCst),
            Outcome::Err => {
                f.book.start_ms.store(50, Ordering::SeqCst);
                f.book.fail_starts.store(1, Ordering::SeqCst);
            }
            Outcome::Slow => f.book.start_ms.store(120, Ordering::SeqCst),
            Outcome::Hang => f.book.start_ms.store(60_000, Ordering::SeqCst),
        }
        cancel_at(&pool, Op::Ok, Duration::from_secs(1), |p| {
            let s = p.status();
            s.starting == 1 && s.waiting == 1
        })
        .await;
        assert_eq!(
            pool.status().waiting,
            0,
            "{outcome:?}: cancelled waiter left an entry"
        );
        if let Outcome::Hang = outcome {
            // Let the retry succeed: the start that hangs is cut at create_timeout.
            assert!(eventually(SETTLE, || pool.status().totals.start_failures == 1).await);
            f.book.start_ms.store(0, Ordering::SeqCst);
        }
        // The start was not wasted: the worker arrives and waits idle.
        assert_settled(&pool, &f, 1, &format!("creation/{outcome:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_while_the_worker_is_recycled() {
    for outcome in OUTCOMES {
        let (f, pool) = pool_with(1, |b| b.recycle_timeout(Duration::from_millis(150))).await;
        match outcome {
            Outcome::Ok => f.book.recycle_ms.store(50, Ordering::SeqCst),
            Outcome::Err => {
                f.book.recycle_ms.store(50, Ordering::SeqCst);
                *f.book.recycle.lock().unwrap() = Recycle::Err;
            }
            Outcome::Slow => f.book.recycle_ms.store(120, Ordering::SeqCst),
            Outcome::Hang => *f.book.recycle.lock().unwrap() = Recycle::Hang,
        }
        // First caller abandons its call: the worker goes to recycling.
        cancel_at(&pool, Op::Hang, Duration::from_secs(5), |p| {
            p.status().busy == 1
        })
        .await;
        assert!(eventually(SETTLE, || f.book.recycles.load(Ordering::SeqCst) == 1).await);
        // Second caller waits for the recycling worker, then gives up.
        cancel_at(&pool, Op::Ok, Duration::from_secs(1), |p| {
            p.status().waiting == 1
        })
        .await;
        *f.book.recycle.lock().unwrap() = Recycle::Ok;
        f.book.recycle_ms.store(0, Ordering::SeqCst);
        assert_settled(&pool, &f, 1, &format!("recycle/{outcome:?}")).await;
        let t = pool_totals(&f);
        match outcome {
            // A failed or hung recycle replaces the worker.
            Outcome::Err | Outcome::Hang => assert_eq!(t, 2, "{outcome:?}: worker not replaced"),
            Outcome::Ok | Outcome::Slow => assert_eq!(t, 1, "{outcome:?}: healthy worker replaced"),
        }
    }
}

fn pool_totals(f: &TestFactory) -> u64 {
    f.book.created.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_during_its_own_call() {
    for outcome in OUTCOMES {
        let f = TestFactory::default();
        let pool = builder(f.clone(), 1).build().await.unwrap();
        let op = match outcome {
            Outcome::Ok => Op::Slow(Duration::from_millis(20)),
            Outcome::Err => Op::SlowErr(Duration::from_millis(20)),
            Outcome::Slow => Op::Slow(Duration::from_millis(300)),
            Outcome::Hang => Op::Hang,
        };
        cancel_at(&pool, op, Duration::from_secs(5), |_| {
            !f.book.in_call.lock().unwrap().is_empty()
        })
        .await;
        // Cut off mid-call: recycled before anyone else may have it.
        assert!(
            eventually(SETTLE, || f.book.recycles.load(Ordering::SeqCst) == 1).await,
            "{outcome:?}: abandoned worker was not recycled"
        );
        assert_settled(&pool, &f, 1, &format!("call/{outcome:?}")).await;
    }
}

/// The same worker is never with two callers, however many callers are
/// cancelled around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_cancellations_never_double_hand_out() {
    let f = TestFactory::default();
    let pool = builder(f.clone(), 2).max_overflow(1).build().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            let op = Op::Slow(Duration::from_micros(200 + (i % 7) * 100));
            let limit = Duration::from_micros(100 + (i * 37) % 900);
            let _ = tokio::time::timeout(limit, p.call(op)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_settled(&pool, &f, pool.status().live, "many").await;
}
