//! Closing: in-flight calls finish within the grace, then no process of the
//! pool is left (bridges and their children, counted through /proc).

mod common;

use std::time::{Duration, Instant};

use cenote_core::{Error, Pool};
use cenote_python::{PyCall, PythonFactory};
use common::*;
use serde_json::json;

#[tokio::test]
async fn close_under_load_finishes_in_flight_calls_then_leaves_nothing() {
    let tag = test_tag("closeload");
    let pool = chaos_pool(chaos(&tag), 3).await;
    // Give every worker a grandchild in its process group.
    let grand: Vec<u32> = futures::future::join_all((0..3).map(|_| {
        let p = pool.clone();
        async move {
            let g = p.get().await.unwrap();
            drop(g);
            p.call(PyCall::new("spawn_sleeper", json!([60]))).await
        }
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap().as_u64().unwrap() as u32)
    .collect();
    assert!(grand.iter().all(|p| alive(*p)));
    let calls: Vec<_> = (0..9)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.call(PyCall::new("sleep", json!([0.4]))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.status().busy, 3);
    let began = Instant::now();
    pool.close().await;
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "drained within the grace: {took:?}"
    );
    assert!(
        tagged(&tag).is_empty(),
        "after close no process of the pool remains: {:?}",
        tagged(&tag)
    );
    assert!(grand.iter().all(|p| !alive(*p)));
    let mut finished = 0;
    let mut closed = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, json!(0.4));
                finished += 1;
            }
            Err(Error::Closed) => closed += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(finished, 3, "in-flight calls finished");
    assert_eq!(closed, 6, "waiters were turned away");
}

#[tokio::test]
async fn close_past_the_grace_kills_running_calls() {
    let tag = test_tag("closegrace");
    let pool: PyPool = Pool::builder(PythonFactory::new(chaos(&tag)))
        .name("grace")
        .size(2)
        .shutdown_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.call(PyCall::new("spawn_and_hang", json!([30]))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tagged(&tag).len(), 4, "two bridges, two grandchildren");
    let began = Instant::now();
    pool.close().await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    for c in calls {
        assert!(matches!(c.await.unwrap(), Err(Error::Closed)));
    }
    // `close` waits for the cut-off calls' workers to come back and be
    // killed: nothing of the pool is left when it returns.
    let left = wait_gone(&tag, Duration::ZERO).await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn dropping_every_handle_closes_the_pool() {
    let tag = test_tag("dropped");
    let pool = chaos_pool(chaos(&tag), 2).await;
    assert_eq!(tagged(&tag).len(), 2);
    drop(pool);
    assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
}

#[tokio::test]
async fn removed_and_shrunk_workers_really_stop() {
    let tag = test_tag("shrink");
    let pool = chaos_pool(chaos(&tag), 3).await;
    assert_eq!(tagged(&tag).len(), 3);
    assert_eq!(pool.remove_idle_workers(1).await, 1);
    assert!(eventually(Duration::from_secs(2), || tagged(&tag).len() == 2).await);
    pool.resize(1).unwrap();
    assert!(eventually(Duration::from_secs(5), || tagged(&tag).len() == 1).await);
    pool.resize(2).unwrap();
    assert!(eventually(Duration::from_secs(10), || pool.status().idle == 2).await);
    assert_eq!(tagged(&tag).len(), 2);
    close_none_left(pool, &tag).await;
}
