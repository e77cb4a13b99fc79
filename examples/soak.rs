//! Soak test: a mixed storm against a pool of Python workers for a set
//! time, with the faults of `tests/chaos_python.rs` — worker processes
//! SIGKILLed and SIGSTOPped, callers giving up at random, calls running past
//! their deadline — then a check that nothing was lost or leaked.
//!
//! ```sh
//! cargo run --example soak -- --secs 30
//! cargo run --release --example soak -- --minutes 30 --workers 8 --callers 128
//! ```
//!
//! Options: `--secs N` / `--minutes N` (default 60 s), `--workers N`
//! (default 4), `--callers N` (default 64), `--kill-every-ms N` (default 50,
//! 0 for no signals), `--rss-growth-mb N` (see below), `--seed N`.
//!
//! Progress goes to stderr; stdout gets exactly one line at the end:
//!
//! `issued N ok N errors N lost 0 orphans 0 rss_start_mb X rss_end_mb Y`
//!
//! * `errors` counts every call that ended in a typed error, including the
//!   ones the caller gave up on itself (cancelled); stderr breaks them down.
//! * `lost` is issued minus resolved: a call that never came back. Calls that
//!   came back later than their deadlines plus a grace count as lost too.
//! * `orphans`: processes of the pool (found in /proc by an env tag the
//!   workers carry) still alive 5 s after `close()`.
//! * RSS is this host process's resident memory from /proc/self/statm:
//!   `rss_start_mb` after a warm-up (a tenth of the run, 5 s to 60 s), when
//!   the pool, its workers and the runtime have reached their working size;
//!   `rss_end_mb` after the storm, once the pool is back at full size. The
//!   run fails if it grew by more than 16 MiB + 10% of the start (override
//!   the absolute part with `--rss-growth-mb`). Allocator slack and the
//!   latency histograms fit well inside that; a leak of a few hundred bytes
//!   per call does not, over a long run.
//!
//! Exit status: 0 if all is well, 1 if anything was lost or late, an orphan
//! remains, RSS grew past the bound, an untyped error was seen or the pool
//! did not recover; 2 for bad arguments.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonError, PythonFactory};
use cenote::{Backoff, CallOptions, Error, Pool};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use cenote_testkit::eventually;
use cenote_testkit::procs::{tagged, TAG_VAR};
use cenote_testkit::storm::*;

const CALL_TIMEOUT: Duration = Duration::from_millis(400);
const SHORT_DEADLINE: Duration = Duration::from_millis(50);
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(1);

struct Args {
    run_for: Duration,
    workers: usize,
    callers: u64,
    kill_every: Duration,
    rss_growth_mb: f64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        run_for: Duration::from_secs(60),
        workers: 4,
        callers: 64,
        kill_every: Duration::from_millis(50),
        rss_growth_mb: 16.0,
        seed: rand::thread_rng().gen(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}")))
        };
        match flag.as_str() {
            "--secs" => args.run_for = Duration::from_secs(value()?),
            "--minutes" => args.run_for = Duration::from_secs(value()? * 60),
            "--workers" => args.workers = usize::try_from(value()?).map_err(|e| e.to_string())?,
            "--callers" => args.callers = value()?,
            "--kill-every-ms" => args.kill_every = Duration::from_millis(value()?),
            "--rss-growth-mb" => args.rss_growth_mb = value()? as f64,
            "--seed" => args.seed = value()?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.workers == 0 || args.callers == 0 || args.run_for.is_zero() {
        return Err("--workers, --callers and the duration must be at least 1".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------- /proc

fn rss_mb() -> f64 {
    let pages: f64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    pages * page / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------- storm

#[derive(Default)]
struct Tally {
    issued: AtomicU64,
    ok: AtomicU64,
    crashed: AtomicU64,
    call_timeouts: AtomicU64,
    checkout_timeouts: AtomicU64,
    start_errors: AtomicU64,
    cancelled: AtomicU64,
    untyped: AtomicU64,
    wrong: AtomicU64,
    late: AtomicU64,
}

impl Tally {
    fn n(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
    fn errors(&self) -> u64 {
        [
            &self.crashed,
            &self.call_timeouts,
            &self.checkout_timeouts,
            &self.start_errors,
            &self.cancelled,
            &self.untyped,
        ]
        .iter()
        .map(|c| Self::n(c))
        .sum()
    }
}

async fn caller(pool: Pool<PythonFactory>, seed: u64, tally: Arc<Tally>, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut i = 0u64;
    while !stop.is_cancelled() {
        i += 1;
        let roll = rng.gen_range(0..1000);
        let (req, opts, want, deadline) = if roll < 5 {
            (
                PyCall::new("sleep", json!({ "seconds": 0.2 })),
                CallOptions::default().timeout(SHORT_DEADLINE),
                json!(0.2),
                SHORT_DEADLINE,
            )
        } else if roll < 105 {
            let secs = f64::from(rng.gen_range(1u32..20)) / 1000.0;
            (
                PyCall::new("sleep", json!({ "seconds": secs })),
                CallOptions::default(),
                json!(secs),
                CALL_TIMEOUT,
            )
        } else {
            let value = (seed % 1_000_000) * 1_000_000_000 + i;
            (
                PyCall::new("echo", json!({ "value": value })),
                CallOptions::default(),
                json!(value),
                CALL_TIMEOUT,
            )
        };
        let give_up =
            (rng.gen_range(0..10) == 0).then(|| Duration::from_micros(rng.gen_range(100..20_000)));
        tally.issued.fetch_add(1, Ordering::SeqCst);
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
                    eprintln!("soak: wrong answer {v} for {want}");
                    tally.wrong.fetch_add(1, Ordering::SeqCst);
                }
                &tally.ok
            }
            Some(Err(Error::Crashed(PythonError::Crashed { .. }))) => &tally.crashed,
            Some(Err(Error::CallTimeout(_))) => &tally.call_timeouts,
            Some(Err(Error::CheckoutTimeout { .. })) => &tally.checkout_timeouts,
            Some(Err(Error::Start(_))) => &tally.start_errors,
            Some(Err(e)) => {
                eprintln!("soak: unexpected error: {e:?}");
                &tally.untyped
            }
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let took = began.elapsed();
        if std::ptr::eq(counter, &tally.start_errors) {
            // While every slot is restarting after a failed start the pool
            // fails callers at once; back off as a client should.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if took > CHECKOUT_TIMEOUT + deadline + GRACE {
            eprintln!("soak: a call took {took:?}");
            tally.late.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn build_pool(
    args: &Args,
    tag: &str,
) -> cenote::PoolBuilder<PythonFactory, cenote::Lifo, cenote::Fifo> {
    let config = PythonConfig::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/handlers.py"
    ))
    .env(TAG_VAR, tag)
    .start_mode(cenote_testkit::start_mode())
    .heartbeat_timeout(Duration::from_millis(500))
    .startup_timeout(Duration::from_secs(3));
    Pool::builder(PythonFactory::new(config))
        .name("soak")
        .size(args.workers)
        .checkout_timeout(CHECKOUT_TIMEOUT)
        .call_timeout(CALL_TIMEOUT)
        .create_timeout(Duration::from_secs(3))
        .recycle_timeout(CALL_TIMEOUT + Duration::from_millis(200))
        .health_interval(Some(Duration::from_millis(100)))
        .max_waiters(usize::try_from(args.callers).unwrap_or(usize::MAX))
        .shutdown_grace(Duration::from_millis(500))
        .start_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(100),
        })
        .crash_budget(cenote::CrashBudget {
            max_restarts: u32::MAX,
            window: Duration::from_secs(1),
        })
}

async fn run(args: Args) -> bool {
    let tag = format!("soak-{}-{}", std::process::id(), args.seed);
    eprintln!(
        "soak: {:?} with {} workers, {} callers, a signal every ~{:?}; seed {} (--seed to replay)",
        args.run_for, args.workers, args.callers, args.kill_every, args.seed
    );
    let pool = match build_pool(&args, &tag).build().await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("soak: pool did not build: {e}");
            return false;
        }
    };
    let began = Instant::now();
    let tally = Arc::new(Tally::default());
    let log = Arc::new(ChaosLog::default());
    let stop_calls = CancellationToken::new();
    let stop_chaos = CancellationToken::new();
    let monkey = tokio::spawn(chaos_monkey(
        tag.clone(),
        args.kill_every,
        args.seed,
        Arc::clone(&log),
        stop_chaos.clone(),
    ));
    let callers: Vec<_> = (0..args.callers)
        .map(|c| {
            tokio::spawn(caller(
                pool.clone(),
                args.seed ^ (c.wrapping_mul(0x9E37_79B9)),
                Arc::clone(&tally),
                stop_calls.clone(),
            ))
        })
        .collect();

    let warm_up = (args.run_for / 10).clamp(Duration::from_secs(5), Duration::from_secs(60));
    let warm_up = warm_up.min(args.run_for / 2);
    let mut rss_start = None;
    let mut seen_pids = HashSet::new();
    let mut next_report = began + Duration::from_secs(10);
    while began.elapsed() < args.run_for {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen_pids.extend(python_children(&tag).iter().map(|p| p.pid));
        if rss_start.is_none() && began.elapsed() >= warm_up {
            rss_start = Some(rss_mb());
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            eprintln!(
                "soak: {:>5.0}s issued {} ok {} errors {} kills {} stops {} rss {:.1} MiB",
                began.elapsed().as_secs_f64(),
                Tally::n(&tally.issued),
                Tally::n(&tally.ok),
                tally.errors(),
                Tally::n(&log.kills),
                Tally::n(&log.stops),
                rss_mb()
            );
        }
    }
    let rss_start = rss_start.unwrap_or_else(rss_mb);
    stop_calls.cancel();
    // Every call in flight has its deadlines; give them those and more.
    let mut hung = 0;
    for c in callers {
        match tokio::time::timeout(CHECKOUT_TIMEOUT + CALL_TIMEOUT + Duration::from_secs(10), c)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("soak: a caller panicked: {e}");
                hung += 1;
            }
            Err(_) => hung += 1,
        }
    }
    stop_chaos.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), monkey).await;
    let storm = began.elapsed();

    let size = args.workers;
    let recovered = eventually(Duration::from_secs(20), || {
        let s = pool.status();
        let procs = python_children(&tag);
        s.idle == size
            && s.live == size
            && s.busy == 0
            && s.starting == 0
            && procs.len() == size
            && procs.iter().all(|p| p.state != 'T')
    })
    .await;
    let invariants = pool.check_invariants();
    let status = pool.status();
    let rss_end = rss_mb();
    let closing = Instant::now();
    pool.close().await;
    let close_took = closing.elapsed();
    eventually(Duration::from_secs(5), || tagged(&tag).is_empty()).await;
    let orphans = tagged(&tag);

    let issued = Tally::n(&tally.issued);
    let resolved = Tally::n(&tally.ok) + tally.errors();
    let late = Tally::n(&tally.late);
    let lost = issued.saturating_sub(resolved) + late;
    let bound = args.rss_growth_mb + rss_start * 0.10;
    let t = &status.totals;
    eprintln!(
        "soak: {storm:?}: ok {} crashed {} call_timeouts {} checkout_timeouts {} start_errors {} \
         cancelled {} untyped {} wrong {} late {} hung_callers {hung}",
        Tally::n(&tally.ok),
        Tally::n(&tally.crashed),
        Tally::n(&tally.call_timeouts),
        Tally::n(&tally.checkout_timeouts),
        Tally::n(&tally.start_errors),
        Tally::n(&tally.cancelled),
        Tally::n(&tally.untyped),
        Tally::n(&tally.wrong),
        late,
    );
    eprintln!(
        "soak: {} SIGKILLs, {} SIGSTOPs, {} worker pids seen; pool totals: served {} crashes {} \
         call_timeouts {} checkout_timeouts {} restarts {} start_failures {}; close took {close_took:?}",
        Tally::n(&log.kills),
        Tally::n(&log.stops),
        seen_pids.len(),
        t.served,
        t.crashes,
        t.call_timeouts,
        t.checkout_timeouts,
        t.restarts,
        t.start_failures,
    );
    let mut ok = true;
    let mut fail = |why: String| {
        eprintln!("soak: FAIL: {why}");
        ok = false;
    };
    if lost > 0 || hung > 0 {
        fail(format!("{lost} calls lost or late, {hung} callers hung"));
    }
    if !orphans.is_empty() {
        fail(format!("python processes left after close: {orphans:?}"));
    }
    if rss_end - rss_start > bound {
        fail(format!(
            "RSS grew by {:.1} MiB, over the bound of {bound:.1} MiB",
            rss_end - rss_start
        ));
    }
    if Tally::n(&tally.untyped) > 0 || Tally::n(&tally.wrong) > 0 {
        fail("untyped errors or wrong answers".into());
    }
    if !recovered {
        fail(format!("pool not back at full size: {status:?}"));
    }
    if let Err(e) = invariants {
        fail(format!("pool invariants: {e}"));
    }
    if t.call_timeouts != Tally::n(&tally.call_timeouts)
        || t.checkout_timeouts != Tally::n(&tally.checkout_timeouts)
        || t.crashes < Tally::n(&tally.crashed)
    {
        fail(format!("pool totals disagree with the callers': {t:?}"));
    }
    println!(
        "issued {issued} ok {} errors {} lost {lost} orphans {} rss_start_mb {rss_start:.1} rss_end_mb {rss_end:.1}",
        Tally::n(&tally.ok),
        tally.errors(),
        orphans.len(),
    );
    ok
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("soak: {why}");
            }
            eprintln!(
                "usage: soak [--secs N | --minutes N] [--workers N] [--callers N] \
                 [--kill-every-ms N] [--rss-growth-mb N] [--seed N]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if runtime.block_on(run(args)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
