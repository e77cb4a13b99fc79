//! An idle worker that stops answering (SIGSTOP) is found by the heartbeat
//! and replaced.

mod common;

use std::time::Duration;

use cenote_core::{Pool, Worker};
use cenote_python::{PyCall, PythonError, PythonFactory};
use common::*;
use serde_json::json;

#[tokio::test]
async fn stopped_worker_fails_its_heartbeat() {
    let tag = test_tag("whb");
    let mut w = PythonFactory::new(chaos(&tag).heartbeat_timeout(Duration::from_millis(300)))
        .spawn("t/hb")
        .await
        .unwrap();
    w.heartbeat().await.unwrap();
    w.signal(libc::SIGSTOP);
    let err = w.recycle().await.unwrap_err();
    assert!(matches!(err, PythonError::Heartbeat { .. }), "{err:?}");
    w.shutdown(Duration::ZERO).await;
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn pool_replaces_a_stopped_idle_worker() {
    let tag = test_tag("phb");
    let pool: PyPool = Pool::builder(PythonFactory::new(
        chaos(&tag).heartbeat_timeout(Duration::from_millis(300)),
    ))
    .name("hb")
    .size(2)
    .health_interval(Some(Duration::from_millis(200)))
    .build()
    .await
    .unwrap();
    let pids = tagged(&tag);
    assert_eq!(pids.len(), 2);
    let victim = pids[0];
    // SAFETY: signalling a process this test's pool started.
    unsafe { libc::kill(victim as i32, libc::SIGSTOP) };
    let replaced = eventually(Duration::from_secs(10), || {
        let now = tagged(&tag);
        !now.contains(&victim) && now.len() == 2 && pool.status().idle == 2
    })
    .await;
    assert!(
        replaced,
        "pids {:?} status {:?}",
        tagged(&tag),
        pool.status()
    );
    assert!(pool.status().totals.crashes >= 1);
    for _ in 0..4 {
        assert_eq!(
            pool.call(PyCall::new("add", json!([1, 2]))).await.unwrap(),
            json!(3)
        );
    }
    close_none_left(pool, &tag).await;
}
