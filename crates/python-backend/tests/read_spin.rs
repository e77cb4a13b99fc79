//! Reads that spin before parking (`PythonConfig::read_spin`), against real
//! workers. One test in its own binary: a read spins only when no other
//! read is in progress in the process, so other tests running beside it
//! would make which path a read takes a matter of timing.

mod common;

use std::time::Duration;

use cenote_core::Worker;
use cenote_python::{PyCall, PythonError, PythonFactory};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_crashes_and_bad_frames_come_through_spinning_and_parked_reads() {
    let tag = test_tag("spin");
    let factory = PythonFactory::new(chaos(&tag));

    let mut w = factory.spawn("t/spin").await.unwrap();
    // Fast replies (caught while spinning), slow ones (the spin runs out,
    // the read parks, the next reads park at once), and fast ones again.
    for round in 0..3 {
        for i in 0..200 {
            let v = w
                .call_json(PyCall::new("echo", json!([[round, i]])), ctx())
                .await
                .unwrap();
            assert_eq!(v, json!([round, i]));
        }
        for _ in 0..3 {
            let v = w
                .call_json(PyCall::new("sleep", json!([0.002])), ctx())
                .await
                .unwrap();
            assert_eq!(v, json!(0.002));
        }
    }
    // A stream's chunks, read one after another.
    let mut items = Vec::new();
    {
        use futures::StreamExt;
        let mut s = w.stream(PyCall::new("count", json!([50])), ctx());
        while let Some(item) = s.next().await {
            items.push(item.unwrap());
        }
    }
    assert_eq!(items, (0..50).map(|i| json!(i)).collect::<Vec<_>>());

    // A frame that is not one, found by a read.
    let err = w
        .call_json(PyCall::new("garbage", json!(null)), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PythonError::Protocol { .. }), "{err:?}");
    w.shutdown(Duration::from_secs(2)).await;

    // A worker that dies instead of answering: its end of stream is found
    // by a read.
    let mut w = factory.spawn("t/spin-exit").await.unwrap();
    w.call_json(PyCall::new("echo", json!([1])), ctx())
        .await
        .unwrap();
    let err = w
        .call_json(PyCall::new("exit_now", json!([3])), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PythonError::Crashed { .. }), "{err:?}");
    w.shutdown(Duration::from_secs(2)).await;

    // With the spin off, the same calls.
    let factory = PythonFactory::new(chaos(&tag).read_spin(Duration::ZERO));
    let mut w = factory.spawn("t/no-spin").await.unwrap();
    for i in 0..50 {
        let v = w
            .call_json(PyCall::new("echo", json!([i])), ctx())
            .await
            .unwrap();
        assert_eq!(v, json!(i));
    }
    w.shutdown(Duration::from_secs(2)).await;

    // Through a pool, callers one after another and then many at once (no
    // read spins while another is in progress).
    let pool: PyPool = cenote_core::Pool::builder(PythonFactory::new(chaos(&tag)))
        .name("spin")
        .size(2)
        .build()
        .await
        .unwrap();
    for i in 0..100 {
        let v = pool.call(PyCall::new("add", json!([i, 1]))).await.unwrap();
        assert_eq!(v, json!(i + 1));
    }
    let calls = (0..32).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for j in 0..20 {
                let v = pool.call(PyCall::new("add", json!([i, j]))).await.unwrap();
                assert_eq!(v, json!(i + j));
            }
        })
    });
    for c in futures::future::join_all(calls).await {
        c.unwrap();
    }
    pool.close().await;
    assert!(eventually(Duration::from_secs(5), || tagged(&tag).is_empty()).await);
}
