//! The chaos storm against real Python workers: 4 workers, 64 callers,
//! 10,000+ calls of mixed duration, while a chaos task SIGKILLs a random
//! worker process every ~50 ms and SIGSTOPs others now and then, callers
//! give up at random and some calls run past their deadline.
//!
//! Every call resolves within its deadlines plus a small grace, the test's
//! own counts add up to what it issued, the pool's totals agree with them,
//! afterwards the pool is back at full size and healthy, and after `close()`
//! no Python process of the pool is left, stopped ones included.
//!
//! Worker processes are found by scanning /proc for direct children of this
//! test process whose comm starts with "python" and whose environment
//! carries this storm's tag; only pids found that way are ever signalled.
//! `CENOTE_CHAOS_SEED` replays a run's random choices (the kills' timing
//! still depends on the machine).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonError, PythonFactory};
use cenote::{Backoff, CallOptions, Error, Pool, RetryPolicy};
use rand::{rngs::StdRng, Rng, SeedableRng};

use cenote_testkit::eventually;
use cenote_testkit::procs::{new_tag, TAG_VAR};
use cenote_testkit::storm::*;
use serde_json::{json, Value};

const SIZE: usize = 4;
const CALLERS: u64 = 64;
/// Calls per caller: 64 x 157 = 10,048, at least the 10,000 asked for.
const PER_CALLER: u64 = 10_000_u64.div_ceil(CALLERS);
/// The retry storm runs half as many calls (64 x 78 = 4,992): each retried call may
/// cost several attempts, and the test must stay well under a minute on two
/// busy cores.
const RETRY_PER_CALLER: u64 = PER_CALLER / 2;
const CALL_TIMEOUT: Duration = Duration::from_millis(400);
/// The deadline of the calls meant to overrun it (they sleep 200 ms, well
/// within the worker's own drain deadline if their caller gives up first).
const SHORT_DEADLINE: Duration = Duration::from_millis(50);
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(3);
/// What a call may take beyond its two deadlines before it counts as hung:
/// a crashed call collects the dead process's status and stderr tail.
const GRACE: Duration = Duration::from_secs(1);
/// The storms share two cores; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type PyPool = Pool<PythonFactory>;

fn seed() -> u64 {
    let seed = std::env::var("CENOTE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("chaos seed: {seed} (set CENOTE_CHAOS_SEED to replay)");
    seed
}

fn handlers() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/handlers.py")
}

// ---------------------------------------------------------------- pool

fn storm_pool(
    tag: &str,
    size: usize,
) -> cenote::PoolBuilder<PythonFactory, cenote::Lifo, cenote::Fifo> {
    let config = PythonConfig::new(handlers())
        .env(TAG_VAR, tag)
        .start_mode(cenote_testkit::start_mode())
        .heartbeat_timeout(Duration::from_millis(500))
        .startup_timeout(Duration::from_secs(3));
    Pool::builder(PythonFactory::new(config))
        .name("chaos-python")
        .size(size)
        .checkout_timeout(CHECKOUT_TIMEOUT)
        .call_timeout(CALL_TIMEOUT)
        .create_timeout(Duration::from_secs(3))
        .recycle_timeout(CALL_TIMEOUT + Duration::from_millis(200))
        .health_interval(Some(Duration::from_millis(100)))
        .max_waiters(CALLERS as usize)
        .shutdown_grace(Duration::from_millis(500))
        .start_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(100),
        })
        .crash_budget(cenote::CrashBudget {
            max_restarts: 1_000_000,
            window: Duration::from_secs(1),
        })
}

/// One call of the storm's mix.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// echo, answered at once.
    Echo,
    /// sleep a few ms.
    Nap(u32),
    /// sleep 200 ms under a 50 ms deadline.
    Overrun,
}

impl Kind {
    fn random(rng: &mut StdRng, overruns: bool) -> Self {
        // Each overrun costs a worker (killed at its deadline), so they are
        // rare: 1 call in 200.
        match rng.gen_range(0..1000) {
            0..=4 if overruns => Kind::Overrun,
            5..=104 => Kind::Nap(rng.gen_range(1..20)),
            _ => Kind::Echo,
        }
    }

    fn request(self, tag: u64) -> (PyCall, CallOptions, Value) {
        match self {
            Kind::Echo => (
                PyCall::new("echo", json!({ "value": tag })),
                CallOptions::default(),
                json!(tag),
            ),
            Kind::Nap(ms) => {
                let secs = f64::from(ms) / 1000.0;
                (
                    PyCall::new("sleep", json!({ "seconds": secs })),
                    CallOptions::default(),
                    json!(secs),
                )
            }
            Kind::Overrun => (
                PyCall::new("sleep", json!({ "seconds": 0.2 })),
                CallOptions::default().timeout(SHORT_DEADLINE),
                json!(0.2),
            ),
        }
    }

    fn deadline(self) -> Duration {
        match self {
            Kind::Overrun => SHORT_DEADLINE,
            _ => CALL_TIMEOUT,
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    crashed: AtomicU64,
    call_timeouts: AtomicU64,
    checkout_timeouts: AtomicU64,
    start_errors: AtomicU64,
    cancelled: AtomicU64,
    other: AtomicU64,
    wrong_answer: AtomicU64,
    overruns_issued: AtomicU64,
    /// Calls that took longer than their deadlines plus the grace.
    late: AtomicU64,
    slowest_us: AtomicU64,
}

impl Tally {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }

    fn resolved(&self) -> u64 {
        [
            &self.ok,
            &self.crashed,
            &self.call_timeouts,
            &self.checkout_timeouts,
            &self.start_errors,
            &self.cancelled,
            &self.other,
        ]
        .iter()
        .map(|c| Self::get(c))
        .sum()
    }
}

/// Wait for the pool to be back at full size with every process running
/// (none left stopped), then check it serves.
async fn assert_recovered(pool: &PyPool, tag: &str) {
    let healthy = eventually(Duration::from_secs(20), || {
        let s = pool.status();
        let procs = python_children(tag);
        s.idle == SIZE
            && s.live == SIZE
            && s.busy == 0
            && s.starting == 0
            && s.waiting == 0
            && !s.crash_looping
            && procs.len() == SIZE
            && procs.iter().all(|p| p.state != 'T')
    })
    .await;
    assert!(
        healthy,
        "pool not back at full size and healthy: {:?}; processes: {:?}",
        pool.status(),
        python_children(tag)
            .iter()
            .map(|p| (p.pid, p.state))
            .collect::<Vec<_>>()
    );
    pool.check_invariants().unwrap();
    for i in 0..20u64 {
        let v = pool
            .call(PyCall::new("echo", json!({ "value": i })))
            .await
            .expect("a recovered pool serves");
        assert_eq!(v, json!(i));
    }
}

/// Close the pool and check nothing of it is left: no tagged Python
/// process, and none of the pids ever stopped.
async fn assert_closed_clean(pool: PyPool, tag: &str, log: &ChaosLog) {
    let began = Instant::now();
    pool.close().await;
    let close_took = began.elapsed();
    let gone = eventually(Duration::from_secs(5), || python_children(tag).is_empty()).await;
    assert!(
        gone,
        "python processes left after close: {:?}",
        python_children(tag)
            .iter()
            .map(|p| (p.pid, p.state))
            .collect::<Vec<_>>()
    );
    let stopped: Vec<u32> = log.stopped.lock().unwrap().iter().copied().collect();
    let left: Vec<u32> = stopped
        .iter()
        .copied()
        .filter(|&pid| still_ours(pid, tag))
        .collect();
    assert!(left.is_empty(), "stopped workers survived close: {left:?}");
    assert!(
        close_took < Duration::from_secs(10),
        "close took {close_took:?}"
    );
}

// ---------------------------------------------------------------- storms

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_storm_of_faults_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let tag = new_tag("storm");
    let pool = storm_pool(&tag, SIZE).build().await.unwrap();
    assert_eq!(python_children(&tag).len(), SIZE);
    let base = seed();
    let log = Arc::new(ChaosLog::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let monkey = tokio::spawn(chaos_monkey(
        tag.clone(),
        Duration::from_millis(50),
        base,
        Arc::clone(&log),
        stop.clone(),
    ));

    let tally = Arc::new(Tally::default());
    let issued = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (pool, tally, issued) = (pool.clone(), Arc::clone(&tally), Arc::clone(&issued));
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(base ^ (c * 0x9E37_79B9));
            for i in 0..PER_CALLER {
                let kind = Kind::random(&mut rng, true);
                let (req, opts, want) = kind.request(c * 1_000_000 + i);
                let give_up = (rng.gen_range(0..10) == 0)
                    .then(|| Duration::from_micros(rng.gen_range(100..20_000)));
                issued.fetch_add(1, Ordering::SeqCst);
                if matches!(kind, Kind::Overrun) {
                    tally.overruns_issued.fetch_add(1, Ordering::SeqCst);
                }
                let began = Instant::now();
                let call = pool.call_with(req, opts);
                let outcome = match give_up {
                    Some(limit) => tokio::time::timeout(limit, call).await.ok(),
                    None => Some(call.await),
                };
                let counter = match outcome {
                    None => &tally.cancelled,
                    Some(Ok(v)) => {
                        if v != want {
                            eprintln!("wrong answer: {v} for {want}");
                            tally.wrong_answer.fetch_add(1, Ordering::SeqCst);
                        }
                        &tally.ok
                    }
                    Some(Err(Error::Crashed(PythonError::Crashed { .. }))) => &tally.crashed,
                    Some(Err(Error::CallTimeout(limit))) => {
                        assert_eq!(limit, kind.deadline());
                        &tally.call_timeouts
                    }
                    Some(Err(Error::CheckoutTimeout { .. })) => &tally.checkout_timeouts,
                    Some(Err(Error::Start(_))) => &tally.start_errors,
                    Some(Err(e)) => {
                        eprintln!("unexpected error: {e:?}");
                        &tally.other
                    }
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let took = began.elapsed();
                if std::ptr::eq(counter, &tally.start_errors) {
                    // While every slot is restarting after a failed start
                    // the pool fails callers at once; back off as a client
                    // should, or the storm turns into a spin on that error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if took > CHECKOUT_TIMEOUT + kind.deadline() + GRACE {
                    eprintln!("a {kind:?} call took {took:?}");
                    tally.late.fetch_add(1, Ordering::SeqCst);
                }
                tally
                    .slowest_us
                    .fetch_max(took.as_micros() as u64, Ordering::SeqCst);
            }
        }));
    }
    for c in callers {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("a caller hung")
            .unwrap();
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), monkey)
        .await
        .expect("chaos task did not stop")
        .unwrap();
    let storm_took = started.elapsed();

    let issued = Tally::get(&issued);
    let (kills, stops) = (Tally::get(&log.kills), Tally::get(&log.stops));
    eprintln!(
        "storm: {issued} calls in {storm_took:?}: ok {} crashed {} call_timeouts {} \
         checkout_timeouts {} start_errors {} cancelled {} other {}; \
         overruns issued {}; slowest {:?}; {kills} SIGKILLs, {stops} SIGSTOPs, {} pids seen",
        Tally::get(&tally.ok),
        Tally::get(&tally.crashed),
        Tally::get(&tally.call_timeouts),
        Tally::get(&tally.checkout_timeouts),
        Tally::get(&tally.start_errors),
        Tally::get(&tally.cancelled),
        Tally::get(&tally.other),
        Tally::get(&tally.overruns_issued),
        Duration::from_micros(Tally::get(&tally.slowest_us)),
        log.seen.lock().unwrap().len(),
    );
    eprintln!("status after storm: {:?}", pool.status());

    // Nothing lost, nothing hung, nothing untyped, nothing garbled.
    assert_eq!(issued, CALLERS * PER_CALLER);
    assert_eq!(tally.resolved(), issued, "calls lost");
    assert_eq!(Tally::get(&tally.other), 0, "untyped or unexpected errors");
    assert_eq!(Tally::get(&tally.wrong_answer), 0, "answers mixed up");
    assert_eq!(Tally::get(&tally.late), 0, "calls past their deadlines");
    // The storm really struck.
    assert!(kills >= 12, "only {kills} SIGKILLs");
    assert!(stops >= 3, "only {stops} SIGSTOPs");
    for (name, c) in [
        ("ok", &tally.ok),
        ("crashed", &tally.crashed),
        ("call timeout", &tally.call_timeouts),
        ("cancelled", &tally.cancelled),
    ] {
        assert!(Tally::get(c) > 0, "the storm produced no {name} outcome");
    }

    // The pool's totals agree with what the callers saw, once it is at
    // rest (a stopped worker found by its heartbeat after the storm is
    // counted then, with its restart).
    assert_recovered(&pool, &tag).await;
    let t = pool.status().totals;
    assert_eq!(t.call_timeouts, Tally::get(&tally.call_timeouts));
    assert_eq!(t.checkout_timeouts, Tally::get(&tally.checkout_timeouts));
    assert_eq!(t.timeouts, t.call_timeouts + t.checkout_timeouts);
    assert_eq!(t.rejected, 0);
    // Every crash a caller saw is one the pool counted; the pool counts more
    // (idle workers killed, stopped workers failing their heartbeat,
    // cancelled callers' workers), but never more than the signals sent.
    assert!(t.crashes >= Tally::get(&tally.crashed), "{t:?}");
    assert!(t.crashes <= kills + stops, "{t:?}");
    // Each broken or killed worker and each failed start was replaced; a
    // late call's worker was killed only if it did not let go of the call.
    assert_eq!(t.restarts, t.crashes + t.killed + t.start_failures, "{t:?}");
    assert!(t.cancelled + t.killed >= t.call_timeouts, "{t:?}");
    assert!(t.served >= Tally::get(&tally.ok));

    assert_closed_clean(pool, &tag, &log).await;
    eprintln!("whole test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_storm_with_retries_ends_all_ok() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let tag = new_tag("retry");
    let pool = storm_pool(&tag, SIZE).build().await.unwrap();
    let base = seed();
    let log = Arc::new(ChaosLog::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let monkey = tokio::spawn(chaos_monkey(
        tag.clone(),
        Duration::from_millis(50),
        base,
        Arc::clone(&log),
        stop.clone(),
    ));
    // Up to ~5 s of retrying: longer than a stopped start takes to be
    // killed (startup_timeout) and replaced.
    let policy = RetryPolicy::new(50).backoff(Backoff {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(100),
    });
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (pool, policy) = (pool.clone(), policy.clone());
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(base ^ (c * 0x85EB_CA6B));
            let mut ok = 0u64;
            for i in 0..RETRY_PER_CALLER {
                // echo and short sleeps are idempotent; no call is meant to
                // overrun, so every failure is the storm's doing.
                let (req, opts, want) = Kind::random(&mut rng, false).request(c * 1_000_000 + i);
                match pool.call_retry(req, opts, &policy).await {
                    Ok(v) if v == want => ok += 1,
                    Ok(v) => panic!("wrong answer {v} for {want}"),
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
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), monkey)
        .await
        .expect("chaos task did not stop")
        .unwrap();
    let (kills, stops) = (Tally::get(&log.kills), Tally::get(&log.stops));
    let t = pool.status().totals;
    eprintln!(
        "retry storm: {ok} ok in {:?}; {kills} SIGKILLs, {stops} SIGSTOPs; totals {t:?}",
        started.elapsed()
    );
    assert_eq!(ok, CALLERS * RETRY_PER_CALLER);
    assert!(kills >= 12 && stops >= 3, "the storm did not strike");
    assert!(
        t.crashes > 0,
        "no worker was found broken: the storm did not strike: {t:?}"
    );
    assert_recovered(&pool, &tag).await;
    assert_closed_clean(pool, &tag, &log).await;
}

/// A worker whose bridge writes garbage frames fails its call with a
/// protocol error (the worker-level details are covered by
/// `crates/python-backend/tests/bad_input.rs`); here the pool replaces it
/// and keeps serving, and nothing is left after close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_get_the_worker_replaced() {
    let _serial = SERIAL.lock().await;
    let tag = new_tag("garbage");
    let chaos_py = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/python-backend/tests/py/chaos.py"
    );
    let config = PythonConfig::new(chaos_py).env(TAG_VAR, &tag);
    let pool: PyPool = Pool::builder(PythonFactory::new(config))
        .name("garbage")
        .size(2)
        .call_timeout(Duration::from_secs(10))
        .checkout_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let mut retired = HashSet::new();
    for (f, expect) in [
        ("garbage", "not a protocol message"),
        ("huge_header", "max frame size"),
        ("garbage", "not a protocol message"),
    ] {
        let before: HashSet<u32> = python_children(&tag).iter().map(|p| p.pid).collect();
        assert_eq!(before.len(), 2);
        let began = Instant::now();
        let err = pool
            .call(PyCall::new(f, Value::Null))
            .await
            .expect_err("garbage cannot succeed");
        // The handler sleeps 5 s after writing; the worker must not wait.
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{f} took {:?}",
            began.elapsed()
        );
        match &err {
            Error::Crashed(PythonError::Protocol { message, pid, .. }) => {
                assert!(message.contains(expect), "{f}: {message}");
                assert!(before.contains(pid));
                retired.insert(*pid);
            }
            other => panic!("{f}: expected Crashed(Protocol), got {other:?}"),
        }
        let back = eventually(Duration::from_secs(10), || {
            let s = pool.status();
            let now: HashSet<u32> = python_children(&tag).iter().map(|p| p.pid).collect();
            s.idle == 2 && s.live == 2 && now.len() == 2 && now.is_disjoint(&retired)
        })
        .await;
        assert!(back, "worker not replaced: {:?}", pool.status());
        assert_eq!(
            pool.call(PyCall::new("add", json!([2, 3]))).await.unwrap(),
            json!(5)
        );
    }
    let t = pool.status().totals;
    assert_eq!(t.crashes, 3);
    assert_eq!(t.restarts, 3);
    pool.check_invariants().unwrap();
    pool.close().await;
    assert!(
        eventually(Duration::from_secs(5), || python_children(&tag).is_empty()).await,
        "python processes left after close"
    );
}

/// When the runtime stalls past both the pool's deadline and the worker's
/// own (later) one, the caller must still see the pool's `CallTimeout` (the
/// worker's deadline is only a backstop), and the pool must count it as a
/// call timeout, not a crash.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_runtime_still_reports_the_pools_call_timeout() {
    let _serial = SERIAL.lock().await;
    let tag = new_tag("stall");
    let limit = Duration::from_millis(200);
    let config = PythonConfig::new(handlers()).env(TAG_VAR, &tag);
    let pool: PyPool = Pool::builder(PythonFactory::new(config))
        .name("stall")
        .size(1)
        .call_timeout(limit)
        .build()
        .await
        .unwrap();
    let call = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.call(PyCall::new("sleep", json!({ "seconds": 2 })))
                .await
        })
    };
    // Let the call start, then block the only runtime thread past both
    // deadlines, as a busy host can.
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::thread::sleep(limit * 3);
    let r = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call resolves")
        .unwrap();
    assert!(
        matches!(r, Err(Error::CallTimeout(l)) if l == limit),
        "expected CallTimeout({limit:?}), got {r:?}"
    );
    let t = pool.status().totals;
    assert_eq!((t.call_timeouts, t.crashes), (1, 0), "{t:?}");
    pool.close().await;
    assert!(
        eventually(Duration::from_secs(5), || python_children(&tag).is_empty()).await,
        "python processes left after close"
    );
}
