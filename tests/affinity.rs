//! Session affinity on in-process workers: each mode's happy path and every
//! failure path (the session's worker crashed, recycled, removed while a
//! strict caller waits; a hint giving up on time; fail-fast), cancellation
//! at every await point, the bounded key map, and affinity through every
//! idle strategy. Every test ends with the pool's invariants checked.

mod common;

use std::time::{Duration, Instant};

use cenote::{AffinityLoss, AffinityMode, CallOptions, Checkout, CheckoutOptions, Error, WorkerId};
use common::*;

const SETTLE: Duration = Duration::from_secs(5);

fn session(key: &str, mode: AffinityMode) -> CheckoutOptions {
    CheckoutOptions::default().affinity(key, mode)
}

fn strict(key: &str) -> CheckoutOptions {
    session(key, AffinityMode::Strict)
}

/// Check out with `opts` and give the worker back at once: its id.
async fn serve<I: cenote::IdleStrategy, W: cenote::WaitStrategy>(
    pool: &cenote::Pool<TestFactory, I, W>,
    opts: CheckoutOptions,
) -> Result<WorkerId, Error<TestError>> {
    let guard = pool.get_with(opts).await?;
    Ok(Checkout::id(&guard))
}

/// A pool of two whose hint sessions wait up to `wait`, with session "h"
/// checked out: the pool, the checkout, and its worker's id.
async fn hint_held(
    wait: Duration,
) -> (
    cenote::Pool<TestFactory>,
    cenote::Checkout<TestWorker>,
    WorkerId,
) {
    let pool = builder(TestFactory::default(), 2)
        .affinity_hint_wait(wait)
        .build()
        .await
        .unwrap();
    let held = pool
        .get_with(session("h", AffinityMode::Hint))
        .await
        .unwrap();
    let owner = Checkout::id(&held);
    (pool, held, owner)
}

async fn settled<I: cenote::IdleStrategy, W: cenote::WaitStrategy>(
    pool: &cenote::Pool<TestFactory, I, W>,
    size: usize,
) {
    assert!(
        eventually(SETTLE, || {
            let s = pool.status();
            s.idle == size && s.busy == 0 && s.waiting == 0
        })
        .await,
        "pool did not settle: {:?}",
        pool.status()
    );
    pool.check_invariants().unwrap();
}

#[tokio::test]
async fn every_mode_returns_to_the_worker_that_served_the_session() {
    // FIFO idle workers rotate: without affinity, consecutive calls land
    // on different workers.
    let pool = builder(TestFactory::default(), 3)
        .idle_strategy::<cenote::Fifo>()
        .build()
        .await
        .unwrap();
    for mode in [
        AffinityMode::Hint,
        AffinityMode::Strict,
        AffinityMode::FailFast,
    ] {
        let key = format!("{mode:?}");
        let first = serve(&pool, session(&key, mode)).await.unwrap();
        for _ in 0..10 {
            // A call without a session in between takes whichever is next.
            serve(&pool, CheckoutOptions::default()).await.unwrap();
            assert_eq!(serve(&pool, session(&key, mode)).await.unwrap(), first);
        }
    }
    let t = pool.status().totals;
    assert_eq!((t.affinity_hits, t.affinity_misses), (30, 0));
    assert_eq!(pool.status().sessions, 3);
    settled(&pool, 3).await;
    pool.close().await;
}

#[tokio::test]
async fn strict_waits_for_its_busy_worker_while_others_sit_idle() {
    let pool = builder(TestFactory::default(), 2).build().await.unwrap();
    let held = pool.get_with(strict("s")).await.unwrap();
    let owner = Checkout::id(&held);
    let p = pool.clone();
    let waiter = tokio::spawn(async move { serve(&p, strict("s")).await });
    assert!(eventually(SETTLE, || pool.status().waiting == 1).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "strict took another worker");
    assert_eq!(pool.status().idle, 1, "the other worker stays idle");
    pool.check_invariants().unwrap();
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), owner);
    settled(&pool, 2).await;
    pool.close().await;
}

#[tokio::test]
async fn strict_wait_ends_at_its_checkout_timeout() {
    let pool = builder(TestFactory::default(), 2).build().await.unwrap();
    let held = pool.get_with(strict("s")).await.unwrap();
    let asked = Instant::now();
    let err = serve(&pool, strict("s").timeout(Duration::from_millis(60)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CheckoutTimeout { .. }), "{err:?}");
    assert!(asked.elapsed() >= Duration::from_millis(60));
    assert_eq!(pool.status().totals.checkout_timeouts, 1);
    drop(held);
    settled(&pool, 2).await;
    pool.close().await;
}

#[tokio::test]
async fn hint_waits_its_bound_then_takes_any_worker_and_the_session_moves() {
    let (pool, held, owner) = hint_held(Duration::from_millis(80)).await;
    let asked = Instant::now();
    let other = serve(&pool, session("h", AffinityMode::Hint))
        .await
        .unwrap();
    let waited = asked.elapsed();
    assert_ne!(other, owner);
    assert!(
        waited >= Duration::from_millis(80),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    drop(held);
    // The session now belongs to the worker that served it last.
    assert_eq!(
        serve(&pool, session("h", AffinityMode::Strict))
            .await
            .unwrap(),
        other
    );
    assert_eq!(pool.status().totals.affinity_misses, 1);
    settled(&pool, 2).await;
    pool.close().await;
}

#[tokio::test]
async fn hint_served_by_its_worker_within_the_bound() {
    let (pool, held, owner) = hint_held(Duration::from_secs(3)).await;
    let p = pool.clone();
    let waiter = tokio::spawn(async move { serve(&p, session("h", AffinityMode::Hint)).await });
    assert!(eventually(SETTLE, || pool.status().waiting == 1).await);
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), owner);
    settled(&pool, 2).await;
    pool.close().await;
}

#[tokio::test]
async fn fail_fast_is_busy_at_once_and_served_when_its_worker_is_free() {
    let pool = builder(TestFactory::default(), 2).build().await.unwrap();
    let held = pool
        .get_with(session("f", AffinityMode::FailFast))
        .await
        .unwrap();
    let owner = Checkout::id(&held);
    let asked = Instant::now();
    let err = serve(&pool, session("f", AffinityMode::FailFast))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Busy { key } if key.as_str() == "f"),
        "{err:?}"
    );
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert_eq!(pool.status().waiting, 0);
    drop(held);
    assert_eq!(
        serve(&pool, session("f", AffinityMode::FailFast))
            .await
            .unwrap(),
        owner
    );
    // A new session with every worker busy: busy too, never a wait.
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let err = serve(&pool, session("new", AffinityMode::FailFast))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    drop((a, b));
    settled(&pool, 2).await;
    pool.close().await;
}

/// Hold session `key`'s worker and queue a strict waiter for it; return
/// the guard, the worker's id and the waiter.
async fn strict_waiter_on_held_worker(
    pool: &TestPool,
    key: &str,
) -> (
    cenote::Checkout<TestWorker>,
    WorkerId,
    tokio::task::JoinHandle<Result<WorkerId, Error<TestError>>>,
) {
    let held = pool.get_with(strict(key)).await.unwrap();
    let owner = Checkout::id(&held);
    let (p, k) = (pool.clone(), key.to_string());
    let waiter = tokio::spawn(async move { serve(&p, strict(&k)).await });
    assert!(eventually(SETTLE, || pool.status().waiting == 1).await);
    (held, owner, waiter)
}

fn assert_lost(r: Result<WorkerId, Error<TestError>>, key: &str, want: AffinityLoss) {
    match r {
        Err(Error::AffinityLost { key: k, reason }) => {
            assert_eq!(k.as_str(), key);
            assert_eq!(reason, want);
        }
        other => panic!("expected AffinityLost({want:?}) for {key}, got {other:?}"),
    }
}

#[tokio::test]
async fn strict_waiter_learns_its_worker_crashed_and_the_session_stays_lost() {
    let book = TestFactory::default();
    let pool = builder(book.clone(), 2).build().await.unwrap();
    let (mut held, _, waiter) = strict_waiter_on_held_worker(&pool, "c").await;
    assert!(matches!(held.call(Op::Crash).await, Err(Error::Crashed(_))));
    drop(held);
    assert_lost(waiter.await.unwrap(), "c", AffinityLoss::Crashed);
    // Not moved behind the caller's back: every strict or fail-fast call
    // fails until the session is started over.
    assert_lost(serve(&pool, strict("c")).await, "c", AffinityLoss::Crashed);
    assert_lost(
        serve(&pool, session("c", AffinityMode::FailFast)).await,
        "c",
        AffinityLoss::Crashed,
    );
    assert!(pool.forget_affinity("c"));
    let fresh = pool
        .call_with(
            Op::Bump(7),
            CallOptions::default().affinity("c", AffinityMode::Strict),
        )
        .await
        .unwrap();
    assert_eq!(fresh, 1, "the session starts over on a fresh count");
    assert_eq!(pool.status().totals.affinity_lost, 3);
    settled(&pool, 2).await;
    assert_eq!(book.book.alive(), 2);
    pool.close().await;
}

#[tokio::test]
async fn hint_waiter_whose_worker_crashes_is_served_by_another() {
    let (pool, mut held, owner) = hint_held(Duration::from_secs(3)).await;
    let p = pool.clone();
    let waiter = tokio::spawn(async move { serve(&p, session("h", AffinityMode::Hint)).await });
    assert!(eventually(SETTLE, || pool.status().waiting == 1).await);
    let _ = held.call(Op::Crash).await;
    drop(held);
    let got = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the hint waited out its whole bound")
        .unwrap()
        .unwrap();
    assert_ne!(got, owner);
    settled(&pool, 2).await;
    pool.close().await;
}

#[tokio::test]
async fn strict_waiter_learns_its_worker_was_recycled_at_the_cap() {
    let f = TestFactory::default();
    f.book.quota.store(1, std::sync::atomic::Ordering::SeqCst);
    // At the cap (no overflow): the retiring worker stops first.
    let pool = builder(f.clone(), 1).build().await.unwrap();
    let (mut held, _, waiter) = strict_waiter_on_held_worker(&pool, "r").await;
    held.call(Op::Ok).await.unwrap();
    drop(held);
    assert_lost(waiter.await.unwrap(), "r", AffinityLoss::Recycled);
    assert!(pool.forget_affinity("r"));
    settled(&pool, 1).await;
    pool.close().await;
}

#[tokio::test]
async fn a_session_worker_replaced_warm_serves_its_waiter_then_the_session_is_lost() {
    let f = TestFactory::default();
    f.book.quota.store(1, std::sync::atomic::Ordering::SeqCst);
    f.book
        .start_ms
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let pool = builder(f.clone(), 1).max_overflow(1).build().await.unwrap();
    let (mut held, owner, waiter) = strict_waiter_on_held_worker(&pool, "w").await;
    held.call(Op::Ok).await.unwrap();
    drop(held);
    // Room under the cap: the worker serves on until its replacement is up,
    // and its own waiter first.
    assert_eq!(waiter.await.unwrap().unwrap(), owner);
    assert!(
        eventually(SETTLE, || pool.status().totals.affinity_lost == 0
            && pool.status().retiring == 0
            && pool.status().live == 1)
        .await,
        "{:?}",
        pool.status()
    );
    assert_lost(serve(&pool, strict("w")).await, "w", AffinityLoss::Recycled);
    pool.check_invariants().unwrap();
    pool.close().await;
}

#[tokio::test]
async fn strict_waiter_learns_its_worker_was_removed_by_a_shrink() {
    let pool = builder(TestFactory::default(), 2).build().await.unwrap();
    let (held, _, waiter) = strict_waiter_on_held_worker(&pool, "s").await;
    let other = pool.get().await.unwrap();
    pool.resize(1).unwrap();
    // Both busy: the shrink takes effect as they come back.
    drop(held);
    assert_lost(waiter.await.unwrap(), "s", AffinityLoss::Removed);
    drop(other);
    settled(&pool, 1).await;
    pool.close().await;
}

#[tokio::test]
async fn an_idle_session_worker_removed_loses_its_sessions() {
    let pool = builder(TestFactory::default(), 1).build().await.unwrap();
    serve(&pool, strict("a")).await.unwrap();
    serve(&pool, strict("b")).await.unwrap();
    assert_eq!(pool.remove_idle_workers(1).await, 1);
    assert_lost(serve(&pool, strict("a")).await, "a", AffinityLoss::Removed);
    assert_lost(
        serve(&pool, session("b", AffinityMode::FailFast)).await,
        "b",
        AffinityLoss::Removed,
    );
    // A hint does not care: it starts over wherever it can (here: nowhere,
    // until the pool grows again).
    pool.add_workers(1);
    assert!(serve(&pool, session("a", AffinityMode::Hint)).await.is_ok());
    settled(&pool, 1).await;
    pool.close().await;
}

#[tokio::test]
async fn close_tells_strict_waiters_closed() {
    let pool = builder(TestFactory::default(), 1).build().await.unwrap();
    let (held, _, waiter) = strict_waiter_on_held_worker(&pool, "z").await;
    let p = pool.clone();
    let closing = tokio::spawn(async move { p.close().await });
    assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
    drop(held);
    closing.await.unwrap();
    pool.check_invariants().unwrap();
}

/// A session waiter dropped at each point of its wait: queued for its
/// busy worker, moved to the general queue after its hint gave up, left a
/// worker it never collected. Nothing is lost.
#[tokio::test]
async fn session_waiters_cancelled_at_any_point_lose_nothing() {
    let (f, pool) = pool_with(2, |b| b.affinity_hint_wait(Duration::from_millis(20))).await;
    let held = pool.get_with(strict("k")).await.unwrap();
    let other = pool.get().await.unwrap();
    // Pinned to the busy worker.
    let r = tokio::time::timeout(Duration::from_millis(30), pool.get_with(strict("k"))).await;
    assert!(r.is_err());
    assert_eq!(pool.status().waiting, 0, "{:?}", pool.status());
    pool.check_invariants().unwrap();
    // A hint past its bound: in the general queue when dropped.
    let r = tokio::time::timeout(
        Duration::from_millis(60),
        pool.get_with(session("k", AffinityMode::Hint)),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(pool.status().waiting, 0, "{:?}", pool.status());
    pool.check_invariants().unwrap();
    // Left its worker, then dropped before it collected it.
    let mut pending = Box::pin(pool.get_with(strict("k")));
    assert!(futures::poll!(pending.as_mut()).is_pending());
    drop(held);
    assert_eq!(pool.status().waiting, 0);
    drop(pending);
    drop(other);
    settled(&pool, 2).await;
    assert_eq!(f.book.alive(), 2);
    assert!(serve(&pool, strict("k")).await.is_ok());
    pool.close().await;
}

/// Many sessions, strict, with random cancellations and crashes: a session
/// never sees another worker's count, and at the end every worker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sessions_under_a_storm_never_see_a_wrong_count() {
    let (f, pool) = pool_with(3, |b| b.max_overflow(1).affinity_capacity(64)).await;
    let mut tasks = Vec::new();
    for s in 0..12u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            // The count the session's worker last answered, and how many
            // calls were cancelled since (each may or may not have counted).
            let (mut expected, mut slack, mut lost) = (0u64, 0u64, 0u32);
            let mut seed = s * 7919 + 1;
            let key = format!("s{s}");
            for _ in 0..150 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let opts = CallOptions::default()
                    .affinity(key.as_str(), AffinityMode::Strict)
                    .checkout_timeout(Duration::from_secs(3));
                let op = if (seed >> 33) % 97 == 0 {
                    Op::Crash
                } else {
                    Op::Bump(s)
                };
                let call = pool.call_with(op, opts);
                if (seed >> 33) % 11 == 0 {
                    // Cancelled at whatever point the timeout finds it.
                    let _ =
                        tokio::time::timeout(Duration::from_micros((seed >> 40) % 300), call).await;
                    slack += 1;
                    continue;
                }
                match call.await {
                    // Another worker would answer 1 (a fresh count) or some
                    // other session's count: never within this window.
                    Ok(n) if (expected + 1..=expected + 1 + slack).contains(&n) => {
                        (expected, slack) = (n, 0);
                    }
                    Ok(n) => panic!("session {s}: count {n} after {expected} (+{slack} cancelled)"),
                    Err(Error::AffinityLost { .. }) | Err(Error::Crashed(_)) => {
                        lost += 1;
                        pool.forget_affinity(key.as_str());
                        (expected, slack) = (0, 0);
                    }
                    Err(e) => panic!("session {s}: {e:?}"),
                }
            }
            lost
        }));
    }
    let mut lost = 0;
    for t in tasks {
        lost += t.await.unwrap();
    }
    assert!(lost > 0, "the storm crashed no session worker");
    assert!(
        eventually(SETTLE, || {
            let s = pool.status();
            s.busy == 0 && s.waiting == 0 && s.starting == 0
        })
        .await,
        "{:?}",
        pool.status()
    );
    pool.check_invariants().unwrap();
    assert!(!f.book.double_use.load(std::sync::atomic::Ordering::SeqCst));
    close_clean(pool, &f).await;
}

#[tokio::test]
async fn the_key_map_is_bounded_by_capacity_and_ttl() {
    let pool = builder(TestFactory::default(), 2)
        .affinity_capacity(3)
        .affinity_ttl(Some(Duration::from_millis(100)))
        .build()
        .await
        .unwrap();
    for k in ["a", "b", "c", "d", "e"] {
        serve(&pool, strict(k)).await.unwrap();
    }
    assert_eq!(pool.status().sessions, 3, "least recently used forgotten");
    assert!(!pool.forget_affinity("a"), "the oldest key went first");
    assert!(pool.forget_affinity("e"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    serve(&pool, strict("f")).await.unwrap();
    assert_eq!(
        pool.status().sessions,
        1,
        "keys unused for the ttl forgotten"
    );
    settled(&pool, 2).await;
    pool.close().await;
}

#[tokio::test]
async fn bad_affinity_config_is_refused() {
    for b in [
        builder(TestFactory::default(), 1).affinity_capacity(0),
        builder(TestFactory::default(), 1).affinity_ttl(Some(Duration::ZERO)),
    ] {
        let err = b.build().await.unwrap_err();
        assert!(err.to_string().contains("affinity"), "{err}");
    }
}

async fn sessions_stick_with<I: cenote::IdleStrategy>() {
    let pool: cenote::Pool<TestFactory, I, cenote::Fifo> =
        cenote::Pool::builder(TestFactory::default())
            .size(4)
            .health_interval(None)
            .build()
            .await
            .unwrap();
    let mut owners = std::collections::HashMap::new();
    for round in 0..5 {
        for s in 0..8u64 {
            let opts = CallOptions::default().affinity(s, AffinityMode::Strict);
            let mut g = pool.get_with(opts.checkout.clone()).await.unwrap();
            let n = g.call(Op::Bump(s)).await.unwrap();
            assert_eq!(n, round + 1, "{} session {s}", I::NAME);
            assert_eq!(
                *owners.entry(s).or_insert(Checkout::id(&g)),
                Checkout::id(&g)
            );
        }
    }
    pool.check_invariants().unwrap();
    pool.close().await;
}

#[tokio::test]
async fn affinity_composes_with_every_idle_strategy() {
    sessions_stick_with::<cenote::Lifo>().await;
    sessions_stick_with::<cenote::Fifo>().await;
    sessions_stick_with::<cenote::Priority>().await;
}

/// FIFO that ignores session claims: it breaks the Queue contract.
struct BlindQueue<W: Send + 'static>(cenote_strategies::FifoQueue<cenote::IdleWorker<W>>);

impl<W: Send + 'static> Default for BlindQueue<W> {
    fn default() -> Self {
        BlindQueue(Default::default())
    }
}

impl<W: Send + 'static> cenote::Queue<cenote::IdleWorker<W>> for BlindQueue<W> {
    type Key = cenote_strategies::SlotKey;

    fn push(&mut self, entry: cenote::IdleWorker<W>) -> Self::Key {
        self.0.push(entry)
    }

    fn pop(&mut self, caller: cenote::Caller<'_>) -> Option<cenote::IdleWorker<W>> {
        self.0.pop(caller.with_affinity(None))
    }

    fn remove(&mut self, key: Self::Key) -> Option<cenote::IdleWorker<W>> {
        self.0.remove(key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn take_matching(
        &mut self,
        limit: usize,
        pred: &mut dyn FnMut(&mut cenote::IdleWorker<W>) -> bool,
    ) -> Vec<cenote::IdleWorker<W>> {
        self.0.take_matching(limit, pred)
    }
}

struct Blind;
impl cenote::IdleStrategy for Blind {
    type Queue<W: Send + 'static> = BlindQueue<W>;
    const NAME: &'static str = "blind";
}

#[tokio::test]
async fn a_queue_that_ignores_session_claims_fails_conformance_and_the_pool_still_keeps_sessions() {
    let err = cenote_core::conformance::check_idle_strategy::<Blind>().unwrap_err();
    assert!(err.0.starts_with("session claim"), "{err}");
    sessions_stick_with::<Blind>().await;
}
