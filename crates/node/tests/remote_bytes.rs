//! Raw bytes across nodes (real etcd, three real node processes on
//! loopback, each serving a Python pool as `RawCall`): a `PyCall`'s bytes
//! and a handler's bytes cross raw beside the JSON, intact, at about their
//! own size on the wire; an oversize payload is `TooLarge` on either side.

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cenote_node::CallError;
use cenote_python::PyCall;
use cluster::*;
use futures::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::{Deserialize, Serialize};

const TEST_LIMIT: Duration = Duration::from_secs(120);

cluster::node_process_test!();

/// The body bytes this process has sent to and received from pool `py`,
/// every node together.
fn wire_bytes(snapshotter: &Snapshotter) -> (u64, u64) {
    let (mut sent, mut received) = (0, 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if key.name() != "cenote.node.bytes"
            || !key.labels().any(|l| l.key() == "pool" && l.value() == "py")
        {
            continue;
        }
        let DebugValue::Counter(n) = value else {
            continue;
        };
        match key
            .labels()
            .find(|l| l.key() == "direction")
            .map(|l| l.value())
        {
            Some("sent") => sent += n,
            Some("received") => received += n,
            _ => {}
        }
    }
    (sent, received)
}

fn inverted(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| 255 - b).collect()
}

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// `invert(data=...)` with `data` as a typed argument.
#[derive(Serialize)]
struct Invert {
    data: Bytes,
}

/// A typed answer with a bytes field: `echo(value=..., blob=...)`
/// returns `{"value": ..., "blob": ...}`.
#[derive(Debug, Deserialize, PartialEq)]
struct Tagged {
    value: String,
    blob: Bytes,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_cross_nodes_raw_and_intact() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this test binary");
    let cluster = Cluster::start("bytes", 1, true).await;
    tokio::time::timeout(TEST_LIMIT, async {
        let py = cluster.remote.pool::<PyCall, Bytes>("py");
        // 1 KiB and 16 MiB, each way, on whichever node.
        for len in [1 << 10, 16 << 20] {
            let data = payload(len);
            let before = wire_bytes(&snapshotter);
            let call =
                PyCall::new("invert", serde_json::json!({})).kwarg_bytes("data", data.clone());
            let back = py.call_with(call, deadline(60_000)).await.unwrap();
            assert_eq!(back.len(), len);
            assert!(
                back[..] == inverted(&data)[..],
                "{len} bytes came back changed"
            );
            let after = wire_bytes(&snapshotter);
            let (sent, received) = (after.0 - before.0, after.1 - before.1);
            // The bytes once, plus a little JSON: not 4x as numbers, not
            // doubled.
            let overhead = 256;
            assert!(
                sent >= len as u64 && sent < (len + overhead) as u64,
                "{len} bytes went out as a {sent}-byte body"
            );
            assert!(
                received >= len as u64 && received < (len + overhead) as u64,
                "{len} bytes came back as a {received}-byte body"
            );
            eprintln!("{len} bytes: {sent} sent, {received} received on the wire");
        }

        // A stream's items are counted too, raw: 8 chunks of 64 KiB.
        let before = wire_bytes(&snapshotter);
        let stream = py
            .stream(PyCall::new("chunks", serde_json::json!([8, 65536])))
            .await
            .unwrap();
        let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.len(), 8);
        assert!(chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.len() == 65536 && c[0] == i as u8));
        let received = wire_bytes(&snapshotter).1 - before.1;
        assert!(
            (8 * 65536..8 * 65536 + 8 * 64).contains(&received),
            "8 chunks of 64 KiB came as {received} bytes"
        );

        // Typed arguments and typed answers with bytes fields.
        let data = payload(100_000);
        let call = PyCall::with_args("invert", &Invert { data: data.clone() }).unwrap();
        let back = py.call(call).await.unwrap();
        assert!(back[..] == inverted(&data)[..]);
        let typed = cluster.remote.pool::<PyCall, Tagged>("py");
        let call = PyCall::new("echo", serde_json::json!({"value": "v"}))
            .kwarg_bytes("blob", Bytes::from_static(b"\x00\xffraw"));
        assert_eq!(
            typed.call(call).await.unwrap(),
            Tagged {
                value: "v".into(),
                blob: Bytes::from_static(b"\x00\xffraw")
            }
        );

        // A JSON answer still decodes as JSON; bytes asked for as JSON are
        // a clear error, not numbers.
        let json = cluster.remote.pool::<PyCall, serde_json::Value>("py");
        let digest =
            PyCall::new("digest", serde_json::json!({})).kwarg_bytes("data", payload(5000));
        let answer = json.call(digest).await.unwrap();
        assert_eq!(answer["length"], 5000);
        let err = json
            .call(PyCall::new("invert", serde_json::json!({})).kwarg_bytes("data", payload(10)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::BadResponse { message } if message.contains("byte")),
            "{err:?}"
        );

        // Too large for the Python pool's frames (32 MiB on these nodes):
        // `TooLarge`, and the worker serves on.
        let big =
            PyCall::new("invert", serde_json::json!({})).kwarg_bytes("data", payload(40 << 20));
        let err = py.call_with(big, deadline(60_000)).await.unwrap_err();
        assert!(matches!(err, CallError::TooLarge { .. }), "{err:?}");
        // Too large for what this caller accepts: `TooLarge` too.
        let small = cenote_node::Remote::builder(Arc::clone(&cluster.registry))
            .token(TOKEN)
            .max_response_bytes(1 << 20)
            .connect()
            .await
            .unwrap();
        wait_for_nodes(&small, "py", 3).await;
        let call =
            PyCall::new("invert", serde_json::json!({})).kwarg_bytes("data", payload(2 << 20));
        let err = small
            .pool::<PyCall, Bytes>("py")
            .call_with(call, deadline(60_000))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::TooLarge { .. }), "{err:?}");
        let again = PyCall::new("invert", serde_json::json!({})).kwarg_bytes("data", payload(10));
        assert_eq!(py.call(again).await.unwrap().len(), 10);
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}
