//! A caller that drops its future mid-call: the worker takes no new call
//! until the abandoned answer arrives, or its deadline kills it. Same for a
//! stream dropped before its end.

mod common;

use std::time::{Duration, Instant};

use cenote_core::Worker;
use cenote_python::{PyCall, PythonFactory, PythonPool};
use common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn worker_drains_an_abandoned_call_before_the_next() {
    init_tracing();
    let tag = new_tag("wdrain");
    let mut w = PythonFactory::new(chaos(&tag))
        .spawn("t/drain")
        .await
        .unwrap();
    let pid = w.pid();
    let began = Instant::now();
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        w.call_json(PyCall::new("sleep", json!([0.5])), ctx()),
    )
    .await;
    assert!(cut.is_err());
    assert!(w.has_pending());
    assert!(!w.is_broken());
    // recycle (what the pool runs) waits for the late answer.
    w.recycle().await.unwrap();
    assert!(
        began.elapsed() >= Duration::from_millis(450),
        "{:?}",
        began.elapsed()
    );
    assert!(!w.has_pending());
    assert_eq!(w.tasks_served(), 1);
    // A direct user who skips recycle is protected too: the next call
    // settles the abandoned one first.
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        w.call_json(PyCall::new("sleep", json!([0.3])), ctx()),
    )
    .await;
    assert!(cut.is_err());
    let v = w
        .call_json(PyCall::new("add", json!([1, 2])), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!(3));
    assert_eq!(w.pid(), pid);
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn worker_kills_when_the_abandoned_call_passes_its_deadline() {
    init_tracing();
    let tag = new_tag("wabandon");
    let mut w = PythonFactory::new(chaos(&tag))
        .spawn("t/abandon")
        .await
        .unwrap();
    let began = Instant::now();
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        w.call_json(
            PyCall::new("sleep", json!([30])),
            CallCtx::within(Duration::from_millis(500)),
        ),
    )
    .await;
    assert!(cut.is_err());
    let err = w.recycle().await.unwrap_err();
    assert!(
        matches!(err, cenote_python::PythonError::Abandoned { .. }),
        "{err:?}"
    );
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(w.is_broken());
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
    w.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn worker_drains_an_abandoned_stream() {
    init_tracing();
    let tag = new_tag("wstream");
    let mut w = PythonFactory::new(chaos(&tag))
        .spawn("t/stream")
        .await
        .unwrap();
    {
        let mut s = w.stream(PyCall::new("count", json!([50, 0.005])), ctx());
        assert_eq!(s.next().await.unwrap().unwrap(), json!(0));
        assert_eq!(s.next().await.unwrap().unwrap(), json!(1));
    }
    assert!(w.has_pending());
    w.recycle().await.unwrap();
    assert!(!w.has_pending());
    assert_eq!(
        w.call_json(PyCall::new("add", json!([1, 2])), ctx())
            .await
            .unwrap(),
        json!(3)
    );
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn pool_holds_back_a_worker_until_its_abandoned_answer_arrives() {
    init_tracing();
    let tag = new_tag("pdrain");
    let pool = chaos_pool(chaos(&tag), 1).await;
    let first_pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let p2 = pool.clone();
    let began = Instant::now();
    let abandoned = tokio::spawn(async move { p2.call(PyCall::new("sleep", json!([0.6]))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    abandoned.abort();
    let _ = abandoned.await;
    // The only worker is still running the dead caller's job: the next
    // caller waits for it instead of being handed a busy process.
    let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(550),
        "served too early: {waited:?}"
    );
    assert_eq!(pid, first_pid, "same worker, not a replacement");
    assert_eq!(pool.status().totals.crashes, 0);
    pool.close().await;
    assert!(tagged(&tag).is_empty());
}

#[tokio::test]
async fn pool_kills_a_worker_whose_abandoned_call_passes_its_deadline() {
    init_tracing();
    let tag = new_tag("pabandon");
    let pool = chaos_pool_with_deadline(chaos(&tag), 1, Duration::from_millis(700)).await;
    let first_pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let p2 = pool.clone();
    let began = Instant::now();
    let abandoned = tokio::spawn(async move { p2.call(PyCall::new("sleep", json!([30]))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    abandoned.abort();
    let _ = abandoned.await;
    let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let waited = began.elapsed();
    assert_ne!(pid, first_pid, "the stuck worker was replaced");
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    let old = u32::try_from(first_pid.as_u64().unwrap()).unwrap();
    assert!(eventually(Duration::from_secs(2), || !alive(old)).await);
    pool.close().await;
    assert!(tagged(&tag).is_empty());
}

#[tokio::test]
async fn pool_stream_dropped_early_is_drained_before_reuse() {
    init_tracing();
    let tag = new_tag("pstream");
    let pool = chaos_pool(chaos(&tag), 1).await;
    let first_pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    let began = Instant::now();
    {
        let mut s = pool
            .stream(PyCall::new("count", json!([40, 0.01])))
            .await
            .unwrap();
        for i in 0..3 {
            assert_eq!(s.next().await.unwrap().unwrap(), json!(i));
        }
    }
    let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
    assert_eq!(pid, first_pid);
    assert!(
        began.elapsed() >= Duration::from_millis(350),
        "{:?}",
        began.elapsed()
    );
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
    pool.close().await;
    assert!(tagged(&tag).is_empty());
}
