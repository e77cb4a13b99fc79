//! The chaos storm against in-process workers: 64 callers, 10,000 calls of
//! mixed duration, while workers crash, panic, hang past their deadline and
//! answer with errors, and callers give up at random. Every call resolves
//! within its deadline plus a small grace, the test's own counts add up to
//! what it issued, the pool's totals agree with them, and afterwards the
//! pool is back at full size with nothing leaked.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::{Backoff, CallOptions, Error, RetryPolicy};
use common::*;
use futures::FutureExt;
use rand::{rngs::StdRng, Rng, SeedableRng};

const CALLERS: u64 = 64;
/// Calls per caller: 64 x 157 = 10,048, at least the 10,000 asked for.
const PER_CALLER: u64 = 10_000_u64.div_ceil(CALLERS);
const SIZE: usize = 4;
const CALL_TIMEOUT: Duration = Duration::from_millis(30);
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// What a call may take beyond its two deadlines before it counts as hung.
const GRACE: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    crashed: AtomicU64,
    call_timeouts: AtomicU64,
    checkout_timeouts: AtomicU64,
    panicked: AtomicU64,
    cancelled: AtomicU64,
    other: AtomicU64,
    slowest_us: AtomicU64,
}

impl Tally {
    fn resolved(&self) -> u64 {
        [
            &self.ok,
            &self.failed,
            &self.crashed,
            &self.call_timeouts,
            &self.checkout_timeouts,
            &self.panicked,
            &self.cancelled,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }
}

/// The storm's panics are deliberate; keep them out of the test output.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("on purpose") {
            default(info);
        }
    }));
}

fn seed() -> u64 {
    let seed = std::env::var("CENOTE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("chaos seed: {seed} (set CENOTE_CHAOS_SEED to replay)");
    seed
}

fn random_op(rng: &mut StdRng, with_app_faults: bool) -> Op {
    match rng.gen_range(0..100) {
        0..=4 => Op::Crash,
        5 => Op::Hang,
        6 if with_app_faults => Op::Panic,
        7..=11 if with_app_faults => Op::Err,
        12..=40 => Op::Slow(Duration::from_micros(rng.gen_range(50..2_000))),
        _ => Op::Ok,
    }
}

fn storm_pool(f: &TestFactory) -> cenote::PoolBuilder<TestFactory, cenote::Lifo, cenote::Fifo> {
    builder(f.clone(), SIZE)
        .checkout_timeout(CHECKOUT_TIMEOUT)
        .call_timeout(CALL_TIMEOUT)
        .max_waiters(CALLERS as usize)
        .crash_budget(cenote::CrashBudget {
            max_restarts: 10_000,
            window: Duration::from_secs(1),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_faults_loses_nothing() {
    quiet_deliberate_panics();
    let f = TestFactory::default();
    let pool = storm_pool(&f).build().await.unwrap();
    let tally = Arc::new(Tally::default());
    let issued = Arc::new(AtomicU64::new(0));
    let base = seed();
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (pool, tally, issued) = (pool.clone(), Arc::clone(&tally), Arc::clone(&issued));
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(base ^ (c * 0x9E37_79B9));
            for _ in 0..PER_CALLER {
                let op = random_op(&mut rng, true);
                let give_up = (rng.gen_range(0..10) == 0)
                    .then(|| Duration::from_micros(rng.gen_range(10..3_000)));
                issued.fetch_add(1, Ordering::SeqCst);
                let began = Instant::now();
                let call = AssertUnwindSafe(pool.call(op)).catch_unwind();
                let outcome = match give_up {
                    Some(limit) => tokio::time::timeout(limit, call).await.ok(),
                    None => Some(call.await),
                };
                let counter = match outcome {
                    None => &tally.cancelled,
                    Some(Err(_panic)) => &tally.panicked,
                    Some(Ok(Ok(_))) => &tally.ok,
                    Some(Ok(Err(Error::Worker(TestError::Failed)))) => &tally.failed,
                    Some(Ok(Err(Error::Crashed(_)))) => &tally.crashed,
                    Some(Ok(Err(Error::CallTimeout(_)))) => &tally.call_timeouts,
                    Some(Ok(Err(Error::CheckoutTimeout { .. }))) => &tally.checkout_timeouts,
                    Some(Ok(Err(e))) => {
                        eprintln!("unexpected error: {e}");
                        &tally.other
                    }
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tally
                    .slowest_us
                    .fetch_max(began.elapsed().as_micros() as u64, Ordering::SeqCst);
            }
        }));
    }
    for c in callers {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("a caller hung")
            .unwrap();
    }

    let issued = issued.load(Ordering::SeqCst);
    assert_eq!(issued, CALLERS * PER_CALLER);
    assert_eq!(tally.resolved(), issued, "calls lost");
    assert_eq!(tally.other.load(Ordering::SeqCst), 0);
    let slowest = Duration::from_micros(tally.slowest_us.load(Ordering::SeqCst));
    assert!(
        slowest <= CHECKOUT_TIMEOUT + CALL_TIMEOUT + GRACE,
        "a call took {slowest:?}"
    );
    for (name, c) in [
        ("ok", &tally.ok),
        ("crashed", &tally.crashed),
        ("panicked", &tally.panicked),
        ("cancelled", &tally.cancelled),
    ] {
        assert!(
            c.load(Ordering::SeqCst) > 0,
            "the storm produced no {name} outcome"
        );
    }

    assert!(
        eventually(Duration::from_secs(10), || {
            let s = pool.status();
            s.idle == SIZE && s.live == SIZE && s.busy == 0 && s.starting == 0
        })
        .await,
        "pool not back at full size: {:?}",
        pool.status()
    );
    pool.check_invariants().unwrap();
    let t = pool.status().totals;
    eprintln!(
        "in-process storm: {issued} calls: ok {} failed {} crashed {} call_timeouts {} \
         checkout_timeouts {} panicked {} cancelled {}; slowest {slowest:?}; totals {t:?}",
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
        tally.crashed.load(Ordering::SeqCst),
        tally.call_timeouts.load(Ordering::SeqCst),
        tally.checkout_timeouts.load(Ordering::SeqCst),
        tally.panicked.load(Ordering::SeqCst),
        tally.cancelled.load(Ordering::SeqCst),
    );
    // The pool's totals agree with what the callers saw.
    assert_eq!(
        t.crashes,
        tally.crashed.load(Ordering::SeqCst) + crashes_seen_by_cancelled(&t, &tally)
    );
    assert_eq!(t.call_timeouts, tally.call_timeouts.load(Ordering::SeqCst));
    assert_eq!(
        t.checkout_timeouts,
        tally.checkout_timeouts.load(Ordering::SeqCst)
    );
    assert_eq!(t.rejected, 0);
    assert!(t.served >= tally.ok.load(Ordering::SeqCst) + tally.failed.load(Ordering::SeqCst));
    assert!(
        !f.book.double_use.load(Ordering::SeqCst),
        "a worker was handed out twice or dirty"
    );
    pool.close().await;
    assert_eq!(f.book.alive(), 0, "workers leaked");
}

/// A caller that gave up while its worker was crashing never sees the
/// crash, but the pool counts it. Those are the only crashes callers do not
/// report, so the difference must not exceed the number of cancellations.
fn crashes_seen_by_cancelled(t: &cenote::Totals, tally: &Tally) -> u64 {
    let unseen = t
        .crashes
        .saturating_sub(tally.crashed.load(Ordering::SeqCst));
    assert!(
        unseen <= tally.cancelled.load(Ordering::SeqCst),
        "crashes unaccounted for: {unseen}"
    );
    unseen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retries_the_same_storm_ends_all_ok() {
    let f = TestFactory::default();
    let pool = storm_pool(&f).build().await.unwrap();
    let policy = RetryPolicy::new(20).backoff(Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(20),
    });
    let base = seed();
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (pool, policy) = (pool.clone(), policy.clone());
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(base ^ (c * 0x85EB_CA6B));
            let mut ok = 0u64;
            for _ in 0..PER_CALLER / 4 {
                let op = random_op(&mut rng, false);
                // Retrying a crash or a hang is only sound because these
                // requests are idempotent; the next attempt behaves.
                let first = std::sync::atomic::AtomicBool::new(true);
                let r = pool
                    .call_retry(
                        Replayed(op, Arc::new(first)),
                        CallOptions::default(),
                        &policy,
                    )
                    .await;
                match r {
                    Ok(_) => ok += 1,
                    Err(e) => panic!("a retried call failed: {e}"),
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for c in callers {
        ok += tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("a caller hung")
            .unwrap();
    }
    assert_eq!(ok, CALLERS * (PER_CALLER / 4));
    let t = pool.status().totals;
    eprintln!("in-process retry storm: {ok} calls all ok; totals {t:?}");
    assert!(
        t.crashes > 0 && t.call_timeouts > 0,
        "the storm did not strike: {t:?}"
    );
    close_clean(pool, &f).await;
}

/// A request that misbehaves on its first attempt only, the way a transient
/// fault does.
#[derive(Clone)]
struct Replayed(Op, Arc<std::sync::atomic::AtomicBool>);

impl cenote::Call<Replayed> for TestWorker {
    type Response = u64;

    async fn call(&mut self, req: Replayed, ctx: cenote::CallCtx) -> Result<u64, TestError> {
        let op = if req.1.swap(false, Ordering::SeqCst) {
            req.0
        } else {
            Op::Ok
        };
        cenote::Call::<Op>::call(self, op, ctx).await
    }
}
