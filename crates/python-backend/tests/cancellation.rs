//! A caller that drops its future mid-call: the worker takes no new call
//! until the abandoned call has been cancelled (or its worker killed for
//! not letting go). Same for a stream dropped before its end. (Late calls,
//! and each kind of handler code a cancel meets, are in `late_calls.rs`.)

mod common;

use std::time::{Duration, Instant};

use cenote_core::Worker;
use cenote_python::{PyCall, PythonPool};
use common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn worker_cancels_an_abandoned_call_before_the_next() {
    let (tag, mut w) = chaos_worker("wdrain", "t/drain").await;
    let pid = w.pid();
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        w.call_json(PyCall::new("sleep", json!([5])), ctx()),
    )
    .await;
    assert!(cut.is_err());
    assert!(w.has_pending());
    assert!(!w.is_broken());
    // recycle (a health check) cancels it first, without waiting it out.
    let began = Instant::now();
    w.recycle().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(250),
        "{:?}",
        began.elapsed()
    );
    assert!(!w.has_pending());
    assert_eq!(w.tasks_served(), 1);
    // A direct user who skips recycle is protected too: the next call
    // cancels the abandoned one first.
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        w.call_json(PyCall::new("sleep", json!([5])), ctx()),
    )
    .await;
    assert!(cut.is_err());
    let v = w
        .call_json(PyCall::new("add", json!([1, 2])), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!(3));
    assert_eq!(w.pid(), pid);
    assert_eq!(w.tasks_served(), 3);
    shut_clean(w, &tag).await;
}

#[tokio::test]
async fn worker_cancels_an_abandoned_stream() {
    let (tag, mut w) = chaos_worker("wstream", "t/stream").await;
    {
        let mut s = w.stream(PyCall::new("count", json!([500, 0.01])), ctx());
        assert_eq!(s.next().await.unwrap().unwrap(), json!(0));
        assert_eq!(s.next().await.unwrap().unwrap(), json!(1));
    }
    assert!(w.has_pending());
    let began = Instant::now();
    w.recycle().await.unwrap();
    assert!(began.elapsed() < Duration::from_millis(250));
    assert!(!w.has_pending());
    assert_eq!(
        w.call_json(PyCall::new("add", json!([1, 2])), ctx())
            .await
            .unwrap(),
        json!(3)
    );
    shut_clean(w, &tag).await;
}

#[tokio::test]
async fn pool_cancels_a_dropped_call_and_the_next_caller_gets_the_same_worker() {
    let tag = test_tag("pdrain");
    let pool = chaos_pool(chaos(&tag), 1).await;
    let first_pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let p2 = pool.clone();
    let abandoned = tokio::spawn(async move { p2.call(PyCall::new("sleep", json!([30]))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    abandoned.abort();
    let _ = abandoned.await;
    // The only worker is still running the dead caller's job until it is
    // cancelled: the next caller waits for the cancel, not for the job.
    let began = Instant::now();
    let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let waited = began.elapsed();
    assert!(
        waited < Duration::from_millis(250),
        "waited {waited:?} for a cancel"
    );
    assert_eq!(pid, first_pid, "same worker, not a replacement");
    let t = pool.status().totals;
    assert_eq!((t.cancelled, t.crashes, t.killed), (1, 0, 0), "{t:?}");
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn pool_stream_dropped_early_is_cancelled_before_reuse() {
    let tag = test_tag("pstream");
    let pool = chaos_pool(chaos(&tag), 1).await;
    let first_pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    {
        let mut s = pool
            .stream(PyCall::new("count", json!([400, 0.01])))
            .await
            .unwrap();
        for i in 0..3 {
            assert_eq!(s.next().await.unwrap().unwrap(), json!(i));
        }
    }
    let began = Instant::now();
    let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    assert_eq!(pid, first_pid);
    assert!(
        began.elapsed() < Duration::from_millis(250),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(pool.status().totals.cancelled, 1);
    // A full stream through the pool, typed.
    let items: Vec<i64> = pool
        .stream(PyCall::new("count", json!([5])))
        .await
        .unwrap()
        .typed::<i64>()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    close_none_left(pool, &tag).await;
}
