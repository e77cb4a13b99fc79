//! A call past its deadline, or dropped by its caller, is cancelled where it
//! runs, and its worker serves on with what it loaded; only a worker that
//! does not let go within `cancel_grace` is killed and replaced. Each case
//! runs in both start modes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cenote_core::{CallOptions, Error, Pool};
use cenote_python::{PyCall, PythonConfig, PythonFactory, PythonPool, StartMode};
use common::*;
use futures::StreamExt;
use serde_json::json;

const DEADLINE: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(250);

fn late(tag: &str, mode: StartMode) -> PythonConfig {
    py_config("late.py", tag, mode)
}

/// A pool of `size` workers for `late.py`, with the default `cancel_grace`.
async fn late_pool(tag: &str, mode: StartMode, size: usize) -> PyPool {
    chaos_builder(late(tag, mode), size)
        .build()
        .await
        .expect("pool builds")
}

/// A fresh path for a handler's mark, in a directory of the test's own.
fn mark_path(tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cenote-late-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

async fn marked(path: &Path) -> bool {
    eventually(Duration::from_secs(3), || path.exists()).await
}

async fn pid_of(pool: &PyPool) -> u64 {
    pool.call(PyCall::new("pid", json!(null)))
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

fn late_call(function: &str, mark: &Path) -> PyCall {
    PyCall::new(function, json!([30])).kwarg("mark", json!(mark.to_str().unwrap()))
}

fn within(d: Duration) -> CallOptions {
    CallOptions::default().timeout(d)
}

/// Call `function` (which would run 30 s) with a deadline of `DEADLINE`:
/// the caller gets `CallTimeout` at once, the handler's cleanup runs, and
/// the same process serves the next call, with nothing killed or charged.
async fn cancelled_in_place(function: &str) {
    init_tracing();
    for mode in MODES {
        let tag = new_tag(function);
        let pool = late_pool(&tag, mode, 1).await;
        let before = pid_of(&pool).await;
        let mark = mark_path(&tag, "finally");
        let began = Instant::now();
        let err = pool
            .call_with(late_call(function, &mark), within(DEADLINE))
            .await
            .unwrap_err();
        let took = began.elapsed();
        assert!(
            matches!(err, Error::CallTimeout(d) if d == DEADLINE),
            "{mode:?}: {err:?}"
        );
        assert!(
            took < DEADLINE + Duration::from_millis(100),
            "{mode:?}: the caller waited {took:?}"
        );
        assert!(
            marked(&mark).await,
            "{mode:?}: {function}'s finally did not run"
        );
        assert_eq!(
            pid_of(&pool).await,
            before,
            "{mode:?}: the worker was replaced"
        );
        let t = pool.status().totals;
        assert_eq!(
            (
                t.call_timeouts,
                t.cancelled,
                t.killed,
                t.restarts,
                t.crashes
            ),
            (1, 1, 0, 0, 0),
            "{mode:?}: {t:?}"
        );
        close_clean(pool, &tag).await;
    }
}

#[tokio::test]
async fn an_async_handler_past_its_deadline_is_cancelled_at_its_await() {
    cancelled_in_place("async_hang").await;
}

#[tokio::test]
async fn a_sync_busy_loop_past_its_deadline_is_interrupted() {
    cancelled_in_place("busy_loop").await;
}

/// `time.sleep` blocks in C: the cancel signal wakes it, and the handler
/// sees `cenote.Cancelled` (which it may catch to clean up, then re-raise).
#[tokio::test]
async fn time_sleep_in_a_sync_handler_is_interrupted_by_the_cancel_signal() {
    cancelled_in_place("sleep_sync").await;
    cancelled_in_place("catch_cancelled").await;
}

/// Code that will not let go (swallows the exception, or loops in C) is
/// killed when the grace runs out, and replaced; the kill is the pool's
/// choice, so nothing is charged to the crash budget.
#[tokio::test]
async fn a_call_that_does_not_let_go_is_killed_within_the_grace() {
    init_tracing();
    for mode in MODES {
        for function in ["stubborn", "c_loop"] {
            let tag = new_tag(function);
            let pool = late_pool(&tag, mode, 1).await;
            let before = pid_of(&pool).await;
            let began = Instant::now();
            let err = pool
                .call_with(PyCall::new(function, json!([])), within(DEADLINE))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::CallTimeout(_)),
                "{mode:?} {function}: {err:?}"
            );
            let old = u32::try_from(before).unwrap();
            assert!(
                eventually(DEADLINE + GRACE + Duration::from_secs(1), || !alive(old)).await,
                "{mode:?} {function}: the stuck worker still runs"
            );
            let gone_after = began.elapsed();
            assert!(
                gone_after < DEADLINE + GRACE + Duration::from_millis(500),
                "{mode:?} {function}: killed only after {gone_after:?}"
            );
            assert_ne!(pid_of(&pool).await, before, "{mode:?} {function}");
            let st = pool.status();
            let t = &st.totals;
            assert_eq!(
                (
                    t.call_timeouts,
                    t.cancelled,
                    t.killed,
                    t.restarts,
                    t.crashes
                ),
                (1, 0, 1, 1, 0),
                "{mode:?} {function}: {t:?}"
            );
            assert!(!st.crash_looping, "{mode:?} {function}");
            close_clean(pool, &tag).await;
        }
    }
}

/// A dropped caller's call is cancelled, not waited for and not killed.
#[tokio::test]
async fn a_dropped_caller_cancels_its_call_and_spares_its_worker() {
    init_tracing();
    for mode in MODES {
        for function in ["async_hang", "sleep_sync", "busy_loop"] {
            let tag = new_tag("dropped");
            let pool = late_pool(&tag, mode, 1).await;
            let before = pid_of(&pool).await;
            let mark = mark_path(&tag, "finally");
            let p = pool.clone();
            let call = late_call(function, &mark);
            let caller = tokio::spawn(async move { p.call(call).await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            caller.abort();
            let _ = caller.await;
            let began = Instant::now();
            assert_eq!(pid_of(&pool).await, before, "{mode:?} {function}");
            assert!(
                began.elapsed() < GRACE,
                "{mode:?} {function}: the next caller waited {:?}",
                began.elapsed()
            );
            assert!(marked(&mark).await, "{mode:?} {function}");
            let t = pool.status().totals;
            assert_eq!(
                (t.call_timeouts, t.cancelled, t.killed, t.restarts),
                (0, 1, 0, 0),
                "{mode:?} {function}: {t:?}"
            );
            close_clean(pool, &tag).await;
        }
    }
}

/// A cancel that arrives as the reply does: the caller gets one answer,
/// the right one or `CallTimeout`, and the next call is never answered
/// with the previous call's reply.
#[tokio::test]
async fn a_cancel_racing_the_reply_never_crosses_answers() {
    for (mode, tag) in modes("race") {
        let pool = late_pool(&tag, mode, 1).await;
        let before = pid_of(&pool).await;
        let deadline = Duration::from_millis(30);
        let (mut on_time, mut late) = (0, 0);
        for i in 0..60u64 {
            // Around the deadline: some answers make it, some do not.
            let seconds = 0.026 + (i % 9) as f64 * 0.001;
            let call = PyCall::new("reply_after", json!([format!("late-{i}"), seconds]));
            match pool.call_with(call, within(deadline)).await {
                Ok(v) => {
                    assert_eq!(v, json!(format!("late-{i}")), "{mode:?}");
                    on_time += 1;
                }
                Err(Error::CallTimeout(_)) => late += 1,
                Err(e) => panic!("{mode:?}: unexpected {e:?}"),
            }
            let next = pool
                .call(PyCall::new("echo", json!([format!("next-{i}")])))
                .await
                .unwrap();
            assert_eq!(
                next,
                json!(format!("next-{i}")),
                "{mode:?}: crossed answers"
            );
        }
        eprintln!("{mode:?}: {on_time} on time, {late} late");
        assert!(late > 0, "{mode:?}: no call was late");
        assert_eq!(pid_of(&pool).await, before, "{mode:?}");
        let t = pool.status().totals;
        assert_eq!((t.killed, t.restarts), (0, 0), "{t:?}");
        close_clean(pool, &tag).await;
    }
}

/// A stream past its deadline, or dropped by its consumer, has its
/// generator closed (its `finally` runs) and its worker serves on.
#[tokio::test]
async fn a_late_or_dropped_stream_closes_its_generator() {
    init_tracing();
    for mode in MODES {
        for function in ["count", "async_count"] {
            let tag = new_tag("stream");
            let pool = late_pool(&tag, mode, 1).await;
            let before = pid_of(&pool).await;
            // Dropped after two items.
            let mark = mark_path(&tag, "dropped");
            {
                let call = PyCall::new(function, json!([1000, 0.01]))
                    .kwarg("mark", json!(mark.to_str().unwrap()));
                let mut s = pool.stream(call).await.unwrap();
                assert_eq!(s.next().await.unwrap().unwrap(), json!(0));
                assert_eq!(s.next().await.unwrap().unwrap(), json!(1));
            }
            assert!(marked(&mark).await, "{mode:?} {function}: dropped");
            assert_eq!(pid_of(&pool).await, before, "{mode:?} {function}");
            // Past its deadline.
            let mark = mark_path(&tag, "late");
            let call = PyCall::new(function, json!([1000, 0.01]))
                .kwarg("mark", json!(mark.to_str().unwrap()));
            let items: Vec<_> = pool
                .stream_with(call, within(DEADLINE))
                .await
                .unwrap()
                .collect()
                .await;
            let last = items.last().expect("items, then the timeout");
            assert!(
                matches!(last, Err(cenote_python::PythonError::Timeout { .. })),
                "{mode:?} {function}: {last:?}"
            );
            assert!(
                items.len() > 3,
                "{mode:?} {function}: {} items",
                items.len()
            );
            assert!(marked(&mark).await, "{mode:?} {function}: late");
            assert_eq!(pid_of(&pool).await, before, "{mode:?} {function}");
            let t = pool.status().totals;
            assert_eq!(
                (t.call_timeouts, t.cancelled, t.killed),
                (1, 2, 0),
                "{mode:?} {function}: {t:?}"
            );
            close_clean(pool, &tag).await;
        }
    }
}

/// Used without a pool, a worker cancels a call whose future was dropped
/// at its next call, and keeps its process.
#[tokio::test]
async fn a_worker_used_directly_cancels_a_dropped_call_at_its_next() {
    for (mode, tag) in modes("direct") {
        let factory = PythonFactory::new(late(&tag, mode));
        let mut w = factory.spawn("t/direct").await.unwrap();
        let before = w.ready_info().pid;
        let mark = mark_path(&tag, "finally");
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            w.call_json(late_call("sleep_sync", &mark), ctx()),
        )
        .await;
        assert!(cut.is_err());
        assert!(w.has_pending());
        let began = Instant::now();
        let v = w
            .call_json(PyCall::new("echo", json!([7])), ctx())
            .await
            .unwrap();
        assert_eq!(v, json!(7));
        assert!(began.elapsed() < GRACE, "{:?}", began.elapsed());
        assert!(marked(&mark).await);
        assert_eq!(w.ready_info().pid, before);
        // One that does not let go is killed, and says so.
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            w.call_json(PyCall::new("stubborn", json!([])), ctx()),
        )
        .await;
        assert!(cut.is_err());
        let err = w
            .call_json(PyCall::new("echo", json!([8])), ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err, cenote_python::PythonError::Abandoned { .. }),
            "{err:?}"
        );
        assert!(cenote_core::Worker::is_broken(&mut w));
        cenote_core::Worker::shutdown(w, Duration::ZERO).await;
        cenote_core::Factory::shutdown(&factory).await;
        assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
    }
}

/// The late-call storm: 48 callers, one call in ten past its deadline in
/// every kind above, for 30 s. Nothing lost, nothing crossed, and a
/// restart only for each late call that could not be cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_call_storm_loses_nothing_and_restarts_only_the_stuck() {
    init_tracing();
    let secs = std::env::var("CENOTE_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let tag = new_tag("late-storm");
    let pool: PyPool = Pool::builder(PythonFactory::new(late(&tag, test_start_mode())))
        .name("late-storm")
        .size(8)
        .checkout_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    const KINDS: [&str; 5] = [
        "async_hang",
        "busy_loop",
        "sleep_sync",
        "stubborn",
        "c_loop",
    ];
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut callers = Vec::new();
    for c in 0..48u64 {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move {
            // (ok, late by kind, wrong, lost)
            let mut ok = 0u64;
            let mut late = [0u64; 5];
            let mut bad = Vec::new();
            let mut i = 0u64;
            while Instant::now() < stop_at {
                i += 1;
                let n = c * 1_000_000 + i;
                if n % 10 == 3 {
                    let kind = ((n / 10) % 5) as usize;
                    let call = PyCall::new(KINDS[kind], json!([]));
                    match pool
                        .call_with(call, within(Duration::from_millis(100)))
                        .await
                    {
                        Err(Error::CallTimeout(_)) => late[kind] += 1,
                        other => bad.push(format!("late {}: {other:?}", KINDS[kind])),
                    }
                } else {
                    let call = PyCall::new("work", json!([n, 0.002]));
                    match pool.call(call).await {
                        Ok(v) if v == json!(n) => ok += 1,
                        other => bad.push(format!("call {n}: {other:?}")),
                    }
                }
            }
            (ok, late, bad)
        }));
    }
    let (mut ok, mut late, mut bad) = (0u64, [0u64; 5], Vec::<String>::new());
    for c in callers {
        let (o, l, b) = tokio::time::timeout(Duration::from_secs(secs + 60), c)
            .await
            .expect("a caller hung")
            .unwrap();
        ok += o;
        for k in 0..5 {
            late[k] += l[k];
        }
        bad.extend(b);
    }
    // The last late calls' cancels (and kills) finish after their callers.
    let settled = eventually(Duration::from_secs(5), || {
        let t = pool.status().totals;
        t.cancelled + t.killed == t.call_timeouts && pool.status().idle == 8
    })
    .await;
    let st = pool.status();
    eprintln!("storm: {ok} ok, late by kind {late:?}; {:?}", st.totals);
    assert!(settled, "{st:?}");
    assert!(
        bad.is_empty(),
        "{} lost or wrong, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(ok > 1000, "only {ok} calls served");
    assert!(late.iter().all(|&n| n > 0), "{late:?}");
    let stuck = late[3] + late[4];
    let t = &st.totals;
    assert_eq!(t.call_timeouts, late.iter().sum::<u64>(), "{t:?}");
    assert_eq!(t.killed, stuck, "only the stuck kinds are killed: {t:?}");
    assert_eq!(t.restarts, stuck, "{t:?}");
    assert_eq!(t.cancelled, late[0] + late[1] + late[2], "{t:?}");
    assert_eq!(t.crashes, 0, "{t:?}");
    pool.check_invariants().unwrap();
    close_clean(pool, &tag).await;
}
