//! Large bytes through the worker's shared-memory regions (protocol 6):
//! intact both ways at every size, in both start modes, as read-only views
//! in Python; results built in place; bad descriptors refused with the
//! worker replaced; and no shared memory left behind by crashes.
//!
//! The tests take turns (`SERIAL`): two of them read the machine's
//! `Shmem`, which the others' regions would move.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cenote_core::{CrashBudget, Error};
use cenote_python::{PyCall, PythonConfig, PythonError, StartMode, TypedCall};
use common::*;
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shm(tag: &str, mode: StartMode) -> PythonConfig {
    py_config("shm.py", tag, mode)
}

/// The bytes `shm.py`'s `make(n)` makes: byte i is i % 251.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn echo(data: Bytes) -> TypedCall<Bytes> {
    PyCall::new("echo", json!([]))
        .kwarg_bytes("data", data)
        .returning::<Bytes>()
}

/// Shared memory in use on this machine, from `/proc/meminfo`, in bytes.
fn shmem() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Shmem in /proc/meminfo");
    kib * 1024
}

#[tokio::test]
async fn payloads_of_every_size_cross_intact_both_ways() {
    let _turn = SERIAL.lock().await;
    for (mode, tag) in modes("shm-sizes") {
        let config = shm(&tag, mode).max_frame_size(600 << 20);
        let pool = chaos_pool(config, 1).await;
        for n in [1 << 10, 300 << 10, 64 << 20, 512 << 20] {
            let data = Bytes::from(pattern(n));
            let back = pool.call(echo(data.clone())).await.unwrap();
            assert!(back == data, "{mode:?}: {n} bytes came back changed");
            let made = pool
                .call(PyCall::new("make", json!([n])).returning::<Bytes>())
                .await
                .unwrap();
            assert!(made == data, "{mode:?}: {n} bytes made in Python changed");
        }
        // Small bytes arrive as bytes; large ones as a read-only view on
        // the region.
        let small = pool
            .call(PyCall::new("arrived", json!([])).kwarg_bytes("data", vec![1u8; 1000]))
            .await
            .unwrap();
        assert_eq!(
            small,
            json!({"type": "bytes", "len": 1000, "shared": false, "readonly": false})
        );
        let large = pool
            .call(PyCall::new("arrived", json!([])).kwarg_bytes("data", vec![1u8; 300 << 10]))
            .await
            .unwrap();
        assert_eq!(
            large,
            json!({"type": "memoryview", "len": 300 << 10, "shared": true, "readonly": true})
        );
        assert_eq!(pool.status().totals.crashes, 0);
        close_clean(pool, &tag).await;
    }
}

#[tokio::test]
async fn without_shared_memory_the_pipe_carries_everything() {
    let _turn = SERIAL.lock().await;
    let tag = test_tag("shm-off");
    let pool = chaos_pool(shm(&tag, test_start_mode()).shm_threshold(None), 1).await;
    let data = Bytes::from(pattern(3 << 20));
    assert!(pool.call(echo(data.clone())).await.unwrap() == data);
    let large = pool
        .call(PyCall::new("arrived", json!([])).kwarg_bytes("data", vec![1u8; 300 << 10]))
        .await
        .unwrap();
    assert_eq!(large["type"], "bytes");
    // cenote.buffer still works, as a plain buffer.
    let got = pool
        .call(PyCall::new("filled", json!([1 << 20, 7])).returning::<Filled>())
        .await
        .unwrap();
    assert!(!got.shared);
    assert!(got.data.iter().all(|&b| b == 7) && got.data.len() == 1 << 20);
    close_clean(pool, &tag).await;
}

#[derive(serde::Deserialize)]
struct Filled {
    shared: bool,
    data: Bytes,
}

#[tokio::test]
async fn results_built_in_place_reach_the_host_and_free_their_blocks() {
    let _turn = SERIAL.lock().await;
    for (mode, tag) in modes("shm-buffer") {
        let pool = chaos_pool(shm(&tag, mode), 1).await;
        for round in 0..20u8 {
            let got = pool
                .call(PyCall::new("filled", json!([4 << 20, round])).returning::<Filled>())
                .await
                .unwrap();
            assert!(got.shared, "{mode:?}: a buffer of 4 MiB is in the region");
            assert_eq!(got.data.len(), 4 << 20);
            assert!(
                got.data.iter().all(|&b| b == round),
                "{mode:?}: round {round}"
            );
            // Blocks lent and never returned are freed, not leaked: the
            // region does not grow round after round.
            let ok = pool.call(PyCall::new("unreturned", json!([4 << 20]))).await;
            assert_eq!(ok.unwrap(), json!("ok"));
        }
        // Below the threshold, a plain buffer.
        let small = pool
            .call(PyCall::new("filled", json!([100, 1])).returning::<Filled>())
            .await
            .unwrap();
        assert!(!small.shared && small.data.len() == 100);
        close_clean(pool, &tag).await;
    }
}

#[tokio::test]
async fn numpy_reads_a_payload_in_place() {
    let _turn = SERIAL.lock().await;
    let tag = test_tag("shm-numpy");
    let pool = chaos_pool(shm(&tag, test_start_mode()), 1).await;
    let data = pattern(8 << 20);
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    match pool
        .call(PyCall::new("numpy_sum", json!([])).kwarg_bytes("data", data))
        .await
    {
        Ok(sum) => assert_eq!(sum, json!(want)),
        Err(Error::Worker(PythonError::Raised { type_name, .. }))
            if type_name == "ModuleNotFoundError" =>
        {
            println!("skipped: numpy is not installed here (python3 -m pip install numpy)");
        }
        Err(e) => panic!("{e}"),
    }
    close_clean(pool, &tag).await;
}

/// A bridge that names memory outside its region, or a block it never
/// handed over, breaks the protocol: the call fails, the worker is
/// replaced, and the host reads nothing.
#[tokio::test]
async fn bad_descriptors_get_the_worker_replaced() {
    let _turn = SERIAL.lock().await;
    for (mode, tag) in modes("shm-bad") {
        let pool = chaos_pool(shm(&tag, mode), 1).await;
        // Grow the region first, so that in-range offsets exist.
        let data = Bytes::from(pattern(1 << 20));
        assert!(pool.call(echo(data.clone())).await.unwrap() == data);
        for (offset, length, why) in [
            (1u64 << 40, 16u64, "past the region's limit"),
            (u64::MAX - 8, 100, "past the region's limit"),
            (65, 10, "starts no block"),
            (64, 1 << 30, "past the region's limit"),
            (64 + (1 << 20) * 64, 10, "which holds"),
            (64, 10, "had not handed over"),
        ] {
            // This worker's own region grown (a fresh one holds nothing).
            assert!(pool.call(echo(data.clone())).await.unwrap() == data);
            let before = pool.status().totals.crashes;
            let err = pool
                .call(PyCall::new("bad_descriptor", json!([1, offset, length])))
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, Error::Crashed(PythonError::Protocol { .. })),
                "{mode:?} {offset}/{length}: {err:?}"
            );
            assert!(text.contains(why), "{mode:?}: {text}");
            let ok = eventually(Duration::from_secs(10), || {
                pool.status().totals.crashes > before && pool.status().idle == 1
            })
            .await;
            assert!(ok, "{mode:?}: not replaced: {:?}", pool.status());
        }
        assert!(pool.call(echo(data.clone())).await.unwrap() == data);
        close_clean(pool, &tag).await;
    }
}

/// 100 workers that die holding a call's bytes in their region: each call
/// fails as a crash, and the machine's shared memory comes back.
#[tokio::test]
async fn crashes_leave_no_shared_memory_behind() {
    let _turn = SERIAL.lock().await;
    let tag = test_tag("shm-crash");
    // Crashing on purpose, 100 times in a row: the crash guard would
    // rightly hold restarts back.
    let pool = chaos_builder(shm(&tag, test_start_mode()), 1)
        .crash_budget(CrashBudget {
            max_restarts: 1000,
            window: Duration::from_secs(1),
        })
        .build()
        .await
        .unwrap();
    let data = Bytes::from(pattern(8 << 20));
    // One region's worth in use before counting.
    assert!(pool.call(echo(data.clone())).await.unwrap() == data);
    let before = shmem();
    for i in 0..100 {
        let err = pool
            .call(PyCall::new("die_holding", json!([])).kwarg_bytes("data", data.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Crashed(PythonError::Crashed { .. })),
            "crash {i}: {err:?}"
        );
    }
    assert!(pool.call(echo(data.clone())).await.unwrap() == data);
    // Each dead worker held at least 16 MiB of regions: 100 of them would
    // be 1.6 GiB. What is left is the live worker's, and noise.
    let ok = eventually(Duration::from_secs(10), || {
        shmem().saturating_sub(before) < 64 << 20
    })
    .await;
    assert!(
        ok,
        "Shmem grew by {} MiB over 100 crashes",
        shmem().saturating_sub(before) >> 20
    );
    close_clean(pool, &tag).await;
}

/// Many calls with large bytes in flight on processes serving several at
/// once: every answer is its own call's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_calls_get_their_own_bytes() {
    let _turn = SERIAL.lock().await;
    for (mode, tag) in modes("shm-mux") {
        let pool = chaos_pool(shm(&tag, mode).concurrency(4), 2).await;
        let calls = (0..64u8).map(|i| {
            let pool = pool.clone();
            async move {
                let data = Bytes::from(vec![i; (1 << 20) + usize::from(i)]);
                let back = pool.call(echo(data.clone())).await.unwrap();
                assert!(back == data, "{mode:?}: call {i} got other bytes");
            }
        });
        futures::future::join_all(calls).await;
        let s = pool.status();
        assert_eq!((s.totals.crashes, s.totals.served), (0, 64), "{mode:?}");
        close_clean(pool, &tag).await;
    }
}

#[tokio::test]
async fn arrived_reports_plain_json_calls_unchanged() {
    let _turn = SERIAL.lock().await;
    let tag = test_tag("shm-json");
    let pool = chaos_pool(shm(&tag, test_start_mode()), 1).await;
    let got: Value = pool.call(PyCall::new("pid", json!([]))).await.unwrap();
    assert!(got.as_i64().unwrap() > 0);
    close_clean(pool, &tag).await;
}

/// Memory-based recycling counts what the worker alone maps: regions of
/// 64 MiB payloads, mapped by the host too, do not get it replaced.
#[tokio::test]
async fn recycling_by_memory_does_not_count_the_regions() {
    let _turn = SERIAL.lock().await;
    let tag = test_tag("shm-rss");
    let config = shm(&tag, test_start_mode())
        .max_rss_growth(32 << 20)
        .rss_check_interval(Duration::ZERO);
    let pool = chaos_pool(config, 1).await;
    let first = pool.call(PyCall::new("pid", json!([]))).await.unwrap();
    let data = Bytes::from(pattern(64 << 20));
    for _ in 0..4 {
        assert!(pool.call(echo(data.clone())).await.unwrap() == data);
    }
    let last = pool.call(PyCall::new("pid", json!([]))).await.unwrap();
    assert_eq!(first, last, "replaced for its regions: {:?}", pool.status());
    close_clean(pool, &tag).await;
}
