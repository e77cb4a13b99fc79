//! Raw bytes between Rust and Python: in arguments anywhere, in results
//! anywhere, in stream items; and every way it can go wrong (over the max
//! frame size, a bad placeholder, a truncated or malformed frame, a bridge
//! of another protocol, a caller gone mid-upload), each with its typed error
//! and the worker kept or replaced as the error says.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cenote_core::{Error, Pool, StartError};
use cenote_python::{Exit, PyCall, PythonConfig, PythonError, PythonFactory, PythonPool};
use common::*;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::{json, Value};

/// The bytes `binary.py`'s `_pattern(n, seed)` makes.
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((seed + i % 251) % 251) as u8).collect()
}

/// `binary.py`'s checksum of a byte string: Adler-32 (`zlib.adler32`),
/// which Python computes in C, in a few milliseconds for tens of MiB, so a
/// handler describing a large payload is never stuck for long in one call
/// that a cancel cannot interrupt.
fn sum(bytes: &[u8]) -> u64 {
    let (mut a, mut b) = (1u64, 0u64);
    for &byte in bytes {
        a = (a + u64::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn binary(tag: &str) -> PythonConfig {
    PythonConfig::new(py_dir().join("binary.py"))
        .env(TAG_VAR, tag)
        .startup_timeout(Duration::from_secs(20))
        .start_mode(test_start_mode())
}

async fn pid(pool: &PyPool) -> i64 {
    pool.call(PyCall::new("pid", Value::Null).returning::<i64>())
        .await
        .expect("pid")
}

/// What `describe` says of one byte-string argument.
/// What `describe` reports for `bytes`: small ones arrive as `bytes`, those
/// at the shared-memory threshold or over as a `memoryview` on the region.
fn described(bytes: &[u8]) -> Value {
    let threshold = cenote_python::PythonConfig::new("x").shm_threshold.unwrap();
    let kind = if bytes.len() >= threshold {
        "memoryview"
    } else {
        "bytes"
    };
    json!({"type": kind, "len": bytes.len(), "sum": sum(bytes)})
}

#[tokio::test]
async fn bytes_go_anywhere_in_the_arguments_and_arrive_as_bytes() {
    let tag = test_tag("bin-args");
    let pool = chaos_pool(binary(&tag), 1).await;

    #[derive(Serialize)]
    struct Meta {
        thumbs: Vec<ByteBuf>,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
    }
    #[derive(Serialize)]
    struct Args {
        image: Bytes,
        meta: Meta,
        size: u32,
    }
    let image = Bytes::from(pattern(70_000, 1));
    let args = Args {
        image: image.clone(),
        meta: Meta {
            thumbs: vec![ByteBuf::from(pattern(10, 2)), ByteBuf::from(vec![])],
            raw: pattern(300, 3),
        },
        size: 128,
    };
    let call = PyCall::with_args("describe", &args).unwrap();
    assert_eq!(call.attachments().len(), 4);
    let got = pool.call(call).await.unwrap();
    assert_eq!(
        got["kwargs"],
        json!({
            "image": described(&image),
            "meta": {"thumbs": [described(&pattern(10, 2)), described(b"")], "raw": described(&pattern(300, 3))},
            "size": 128,
        })
    );

    // Positional, from a tuple.
    let call = PyCall::with_args("describe", &(Bytes::from_static(b"abc"), 5)).unwrap();
    let got = pool.call(call).await.unwrap();
    assert_eq!(got["args"], json!([described(b"abc"), 5]));

    // By hand: a placeholder put deep in JSON, and a keyword argument.
    let mut call = PyCall::new("describe", Value::Null);
    let deep = call.attach(pattern(5, 4));
    call.args = json!([{"a": [1, {"b": deep}]}]);
    let call = call.kwarg_bytes("extra", vec![9u8; 3]);
    let got = pool.call(call).await.unwrap();
    assert_eq!(
        got["args"],
        json!([{"a": [1, {"b": described(&pattern(5, 4))}]}])
    );
    assert_eq!(got["kwargs"], json!({"extra": described(&[9, 9, 9])}));

    // A call without bytes leaves look-alike objects alone.
    let got = pool
        .call(PyCall::new("describe", json!([{"$cenote_bytes": 0}])))
        .await
        .unwrap();
    assert_eq!(got["args"], json!([{"$cenote_bytes": 0}]));
    close_clean(pool, &tag).await;
}

#[tokio::test]
async fn handlers_return_bytes_anywhere_and_rust_gets_them_raw() {
    let tag = test_tag("bin-results");
    let pool = chaos_pool(binary(&tag), 1).await;
    for kind in ["bytes", "bytearray", "memoryview"] {
        let got: Bytes = pool
            .call(PyCall::new("make", json!({"n": 100_000, "kind": kind, "seed": 7})).returning())
            .await
            .unwrap();
        assert_eq!(got, pattern(100_000, 7), "{kind}");
    }
    // A view of C ints: its raw memory.
    let ints: ByteBuf = pool
        .call(PyCall::new("make", json!({"n": 0, "kind": "ints"})).returning())
        .await
        .unwrap();
    assert_eq!(ints.len(), 12);

    #[derive(Deserialize)]
    struct Rest {
        rest: ByteBuf,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Part {
        Raw(Bytes),
        Rest(Rest),
    }
    #[derive(Deserialize)]
    struct Nested {
        n: usize,
        parts: Vec<Part>,
        empty: Vec<u8>,
    }
    let n = 1001;
    let nested: Nested = pool
        .call(PyCall::new("make", json!({"n": n, "kind": "nested"})).returning())
        .await
        .unwrap();
    let data = pattern(n, 0);
    assert_eq!(nested.n, n);
    assert!(matches!(&nested.parts[0], Part::Raw(b) if b[..] == data[..n / 2]));
    assert!(matches!(&nested.parts[1], Part::Rest(r) if r.rest[..] == data[n / 2..]));
    assert!(nested.empty.is_empty());
    pool.close().await;
}

#[tokio::test]
async fn large_payloads_round_trip_intact() {
    let tag = test_tag("bin-large");
    let pool = chaos_pool(binary(&tag).max_frame_size(40 << 20), 1).await;
    let worker = pid(&pool).await as u32;
    let data = Bytes::from(pattern(32 << 20, 5));
    let back: Bytes = pool
        .call(
            PyCall::with_args("echo", &(data.clone(),))
                .unwrap()
                .returning(),
        )
        .await
        .unwrap();
    assert!(back == data, "32 MiB came back changed");
    // The pipes grown for the transfer are back to the default once it is
    // over, so an idle worker holds no extra pipe quota.
    let capacities = pipe_capacities(worker);
    assert!(
        capacities.len() >= 3,
        "frames in, frames out, stderr: {capacities:?}"
    );
    assert!(capacities.iter().all(|&c| c == 64 << 10), "{capacities:?}");
    pool.close().await;
}

/// The capacity of every pipe the process `pid` holds open.
fn pipe_capacities(pid: u32) -> Vec<i32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let path = entry.unwrap().path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if !target.starts_with("pipe:") || seen.contains_key(&target) {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
        let size = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETPIPE_SZ) };
        seen.insert(target, size);
    }
    seen.into_values().collect()
}

#[tokio::test]
async fn oversized_bytes_fail_the_call_and_keep_the_worker() {
    let tag = test_tag("bin-over");
    let max = 1 << 20;
    let pool = chaos_pool(binary(&tag).max_frame_size(max), 1).await;
    let before = pid(&pool).await;

    // Rust to Python: refused before anything is written.
    let call = PyCall::new("echo", Value::Null).kwarg_bytes("value", vec![0u8; max]);
    match pool.call(call).await {
        Err(Error::Worker(PythonError::RequestTooLarge { size, max: m, .. })) => {
            assert!(size > max, "{size}");
            assert_eq!(m, max);
        }
        other => panic!("expected RequestTooLarge, got {other:?}"),
    }
    // Just under the limit goes through (the frame's own bytes count).
    let fits = max - 200;
    let back: Bytes = pool
        .call(
            PyCall::new("echo", Value::Null)
                .kwarg_bytes("value", vec![1u8; fits])
                .returning(),
        )
        .await
        .unwrap();
    assert_eq!(back.len(), fits);

    // Python to Rust: the bridge refuses to send it and says so.
    match pool
        .call(PyCall::new("make", json!({"n": max})).returning::<Bytes>())
        .await
    {
        Err(Error::Worker(PythonError::ResultTooLarge { message, .. })) => {
            assert!(message.contains("raw bytes"), "{message}")
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    // The same for a stream item.
    let mut items = pool
        .stream(PyCall::new("chunks", json!({"count": 2, "size": max})))
        .await
        .unwrap();
    assert!(matches!(
        items.next().await,
        Some(Err(PythonError::ResultTooLarge { .. }))
    ));
    drop(items);
    assert_eq!(pid(&pool).await, before, "the worker was kept throughout");
    pool.close().await;
}

#[tokio::test]
async fn json_callers_and_bad_placeholders_get_clear_errors() {
    let tag = test_tag("bin-json");
    let pool = chaos_pool(binary(&tag), 1).await;
    let before = pid(&pool).await;

    // An untyped call cannot hold bytes in a JSON value: it is told how to
    // ask for them.
    match pool.call(PyCall::new("make", json!({"n": 10}))).await {
        Err(Error::Worker(e @ PythonError::Decode { .. })) => {
            assert!(e.to_string().contains("returning"), "{e}")
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    // A placeholder naming bytes the call does not carry.
    let mut call = PyCall::new("describe", Value::Null);
    let real = call.attach(vec![1u8]);
    call.args = json!([real, {"$cenote_bytes": 5}]);
    match pool.call(call).await {
        Err(Error::Worker(PythonError::BadRequest(message))) => {
            assert!(message.contains("attachment 5"), "{message}")
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    // A typed result with a Value where bytes arrive.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct WantsJson {
        parts: Vec<Value>,
    }
    let err = pool
        .call(PyCall::new("make", json!({"n": 10, "kind": "nested"})).returning::<WantsJson>())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Worker(PythonError::Decode { .. })),
        "{err:?}"
    );
    assert_eq!(pid(&pool).await, before, "the worker was kept throughout");
    pool.close().await;
}

#[tokio::test]
async fn streams_carry_bytes() {
    let tag = test_tag("bin-stream");
    let pool = chaos_pool(binary(&tag), 1).await;
    #[derive(Deserialize)]
    struct Item {
        i: usize,
        data: Bytes,
    }
    let items: Vec<Item> = pool
        .stream(PyCall::new("chunks", json!({"count": 5, "size": 200_000})))
        .await
        .unwrap()
        .typed::<Item>()
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(items.len(), 5);
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item.i, n);
        assert_eq!(item.data, pattern(200_000, n));
    }
    // Untyped, an item with bytes is an error that says what to do.
    let mut untyped = pool
        .stream(PyCall::new("chunks", json!({"count": 1, "size": 3})))
        .await
        .unwrap();
    assert!(matches!(
        untyped.next().await,
        Some(Err(PythonError::Decode { .. }))
    ));
    drop(untyped);
    let sum_back: Value = pool
        .call(PyCall::with_args("describe", &(Bytes::from_static(b"ok"),)).unwrap())
        .await
        .unwrap();
    assert_eq!(sum_back["args"][0], described(b"ok"));
    pool.close().await;
}

#[tokio::test]
async fn broken_frames_with_attachments_get_the_worker_replaced() {
    let tag = test_tag("bin-broken");
    let pool = chaos_pool(binary(&tag), 1).await;
    for (function, expect) in [
        ("truncated", "crash"),
        ("bad_table", "attachment table"),
        ("attachments_on_a_pong", "only results and chunks"),
    ] {
        let before = pid(&pool).await;
        let err = pool
            .call(PyCall::new(function, Value::Null))
            .await
            .unwrap_err();
        match (&err, expect) {
            (Error::Crashed(PythonError::Crashed { status, .. }), "crash") => {
                assert_eq!(*status, Exit::Code(3), "{status}")
            }
            (Error::Crashed(PythonError::Protocol { message, .. }), expect) => {
                assert!(message.contains(expect), "{function}: {message}")
            }
            _ => panic!("{function}: unexpected {err:?}"),
        }
        let after = pid(&pool).await;
        assert_ne!(after, before, "{function}: the worker was replaced");
    }
    close_clean(pool, &tag).await;
}

#[tokio::test]
async fn a_bridge_of_another_protocol_does_not_start() {
    let tag = test_tag("bin-version");
    let config = PythonConfig::new(py_dir().join("old_protocol.py"))
        .env(TAG_VAR, &tag)
        .start_mode(test_start_mode());
    let pool: PyPool = Pool::builder(PythonFactory::new(config))
        .name("old")
        .size(1)
        .checkout_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("a failing start does not fail build");
    let err = pool
        .call(PyCall::new("echo", json!([1])))
        .await
        .unwrap_err();
    match &err {
        Error::Start(e) => match &**e {
            StartError::Failed(PythonError::Startup { message, .. }) => {
                assert!(message.contains("wire protocol 1"), "{message}");
                assert!(message.contains("speaks 6"), "{message}");
            }
            other => panic!("expected a Startup failure, got {other:?}"),
        },
        other => panic!("expected Error::Start, got {other:?}"),
    }
    close_clean(pool, &tag).await;
}

#[tokio::test]
async fn a_caller_gone_mid_upload_leaves_the_worker_clean() {
    let tag = test_tag("bin-cancel");
    let pool = chaos_pool(binary(&tag), 1).await;
    let before = pid(&pool).await;
    let big = Bytes::from(pattern(48 << 20, 9));
    for wait_us in [0u64, 200, 2_000, 20_000] {
        let call = PyCall::with_args("describe", &(big.clone(),)).unwrap();
        let _ = tokio::time::timeout(Duration::from_micros(wait_us), pool.call(call)).await;
        // The next caller gets its own answer, whole.
        let small = Bytes::from(pattern(1000, wait_us as usize % 251));
        let got = pool
            .call(PyCall::with_args("describe", &(small.clone(),)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            got["args"],
            json!([described(&small)]),
            "after {wait_us} µs"
        );
    }
    assert_eq!(
        pid(&pool).await,
        before,
        "the abandoned uploads were finished, not killed"
    );
    pool.close().await;
}
