//! Batching on Python workers (`Pool::batched` with `PyItem`s): a handler
//! that takes a list and returns a list, per-item exceptions, per-item
//! bytes, a wrong-length or non-list answer, a raise, a crash and a hang
//! mid-batch. Each case runs in both start modes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cenote_core::{BatchConfig, BatchError, Error, ItemOptions};
use cenote_python::{PyItem, PythonConfig, PythonError, StartMode};
use common::*;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;

fn batch(tag: &str, mode: StartMode) -> PythonConfig {
    py_config("batch.py", tag, mode)
}

async fn pool_of(config: PythonConfig, size: usize) -> PyPool {
    chaos_builder(config, size)
        .call_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("pool builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_gather_into_batches_and_each_gets_its_own_result() {
    for (mode, tag) in modes("pbatch") {
        let pool = pool_of(batch(&tag, mode), 2).await;
        let batched = pool.batched(BatchConfig::new(32)).unwrap();
        // One caller: every item goes alone.
        for i in 0..20 {
            let got = batched.call(PyItem::new("double", json!(i))).await.unwrap();
            assert_eq!(got, json!(i * 2), "{mode:?}");
        }
        assert_eq!(batched.status().max_size, 1, "{mode:?}");
        // 256 callers at once: 2,560 items, each answered right, in batches.
        let calls = (0..2560).map(|i| batched.call(PyItem::new("double", json!(i))));
        for (i, got) in join_all(calls).await.into_iter().enumerate() {
            assert_eq!(got.unwrap(), json!(i * 2), "{mode:?}");
        }
        let s = batched.status();
        assert_eq!(s.items, 20 + 2560, "{mode:?}");
        assert!(s.max_size > 1 && s.max_size <= 32, "{mode:?}: {s:?}");
        assert!(s.mean_size > 1.0, "{mode:?}: {s:?}");
        drop(batched);
        close_clean(pool, &tag).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_item_fails_only_its_item() {
    for (mode, tag) in modes("pbatchexc") {
        let pool = pool_of(batch(&tag, mode), 1).await;
        let batched = pool.batched(BatchConfig::new(64)).unwrap();
        let calls = (-5..5).map(|i| batched.call(PyItem::new("picky", json!(i))));
        for (i, got) in (-5..5).zip(join_all(calls).await) {
            match got {
                Ok(v) => assert_eq!(v, json!(i), "{mode:?}"),
                Err(BatchError::Item(PythonError::Raised {
                    type_name, message, ..
                })) => {
                    assert!(i < 0, "{mode:?}: {i} failed");
                    assert_eq!(type_name, "ValueError");
                    assert_eq!(message, format!("negative: {i}"));
                }
                Err(e) => panic!("{mode:?}: {i}: {e}"),
            }
        }
        close_clean(pool, &tag).await;
    }
}

#[derive(Debug, Deserialize)]
struct Blob {
    len: usize,
    rev: Bytes,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_travel_per_item_both_ways() {
    for (mode, tag) in modes("pbatchbytes") {
        let pool = pool_of(batch(&tag, mode), 1).await;
        let batched = pool.batched(BatchConfig::new(16)).unwrap();
        let blobs: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                (0..(i * 997 % 70_000))
                    .map(|b| (b % 251) as u8 ^ i as u8)
                    .collect()
            })
            .collect();
        let calls = blobs.iter().map(|b| {
            let item = PyItem::with_value("lengths", &Bytes::from(b.clone())).unwrap();
            batched.call(item.returning::<Blob>())
        });
        for (blob, got) in blobs.iter().zip(join_all(calls).await) {
            let got = got.unwrap();
            assert_eq!(got.len, blob.len(), "{mode:?}");
            let want: Vec<u8> = blob.iter().rev().copied().collect();
            assert_eq!(&got.rev[..], &want[..], "{mode:?}");
        }
        close_clean(pool, &tag).await;
    }
}

/// The pid of the pool's one worker.
async fn pid_of(pool: &PyPool) -> u64 {
    let batched = pool.batched(BatchConfig::new(1)).unwrap();
    let got = batched.call(PyItem::new("sizes", json!(0))).await.unwrap();
    got[1].as_u64().unwrap()
}

/// Two items of `function` sent together (in one batch, while the one
/// worker is busy with another): their results.
async fn pair(
    pool: &PyPool,
    function: &str,
    items: [serde_json::Value; 2],
) -> Vec<Result<serde_json::Value, BatchError<PythonError>>> {
    let slow = pool.batched(BatchConfig::new(1)).unwrap();
    let batched = pool.batched(BatchConfig::new(8)).unwrap();
    let busy = slow.call(PyItem::new("slow", json!(0)));
    let rest = async {
        assert!(eventually(Duration::from_secs(10), || slow.status().batches == 1).await);
        join_all(items.map(|v| batched.call(PyItem::new(function, v)))).await
    };
    let (first, rest) = tokio::join!(busy, rest);
    first.unwrap();
    assert_eq!(batched.status().max_size, 2, "sent together");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_answer_fails_the_batch_and_the_worker_serves_on() {
    for (mode, tag) in modes("pbatchbad") {
        let pool = pool_of(batch(&tag, mode), 1).await;
        let pid = pid_of(&pool).await;
        for got in pair(&pool, "short", [json!(1), json!(2)]).await {
            match got {
                Err(BatchError::WrongLength { sent, answered }) => {
                    assert_eq!(answered + 1, sent, "{mode:?}")
                }
                other => panic!("{mode:?}: expected WrongLength, got {other:?}"),
            }
        }
        for got in pair(&pool, "not_a_list", [json!(1), json!(2)]).await {
            let e = got.unwrap_err();
            assert!(
                e.to_string().contains("must return a list"),
                "{mode:?}: {e}"
            );
        }
        for got in pair(&pool, "raises", [json!(1), json!(2)]).await {
            let e = got.unwrap_err();
            match e.pool_error() {
                Some(Error::Worker(PythonError::Raised { message, .. })) => {
                    assert_eq!(message, "the whole batch failed")
                }
                _ => panic!("{mode:?}: {e}"),
            }
        }
        // Nothing above cost the process.
        assert_eq!(pid_of(&pool).await, pid, "{mode:?}");
        assert_eq!(pool.status().totals.crashes, 0, "{mode:?}");
        close_clean(pool, &tag).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_fails_its_items_and_a_hang_is_cut_off() {
    for (mode, tag) in modes("pbatchcrash") {
        let pool = pool_of(batch(&tag, mode), 1).await;
        for got in pair(&pool, "crash", [json!("ok"), json!("die")]).await {
            let e = got.unwrap_err();
            assert!(
                matches!(e.pool_error(), Some(Error::Crashed(_))),
                "{mode:?}: {e}"
            );
        }
        // The worker was replaced and serves.
        let batched = pool.batched(BatchConfig::new(8)).unwrap();
        assert_eq!(
            batched.call(PyItem::new("double", json!(4))).await.unwrap(),
            json!(8)
        );
        assert_eq!(pool.status().totals.crashes, 1, "{mode:?}");
        // A hang: cut off at the earliest item's deadline, then cancelled
        // on its worker (a sync loop: interrupted, the same process).
        let pid = pid_of(&pool).await;
        let quick = ItemOptions::default().timeout(Duration::from_millis(300));
        let (a, b) = tokio::join!(
            batched.call_with(PyItem::new("hang", json!("hang")), quick.clone()),
            batched.call(PyItem::new("hang", json!("fine")))
        );
        for got in [a, b] {
            if let Err(e) = &got {
                assert!(e.is_timeout(), "{mode:?}: {e}");
            }
        }
        assert_eq!(
            batched.call(PyItem::new("double", json!(1))).await.unwrap(),
            json!(2)
        );
        let s = pool.status();
        assert_eq!(s.totals.cancelled + s.totals.killed, 1, "{mode:?}: {s:?}");
        if s.totals.cancelled == 1 {
            assert_eq!(pid_of(&pool).await, pid, "{mode:?}");
        }
        drop(batched);
        close_clean(pool, &tag).await;
    }
}
