//! Streams across nodes (real etcd, real node processes on loopback, each
//! serving a Python pool's generators): every item, in order; a slow
//! reader holds the producer back (bounded memory on the node); one
//! deadline for the whole stream; a dropped stream cancels the generator,
//! not its worker; a node killed mid-stream ends it with `NodeLost` after
//! the items already received, never a hang.

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cenote_core::CallOptions;
use cenote_node::{CallError, RemotePool};
use cenote_python::PyCall;
use cluster::*;
use futures::StreamExt;
use serde_json::{json, Value};

const TEST_LIMIT: Duration = Duration::from_secs(120);

cluster::node_process_test!();

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The two worker pids of the Python pool on `node` (two calls at once,
/// each held 300 ms, so each gets its own worker).
async fn worker_pids(py: &RemotePool<PyCall, Value>, node: &str) -> HashSet<u64> {
    let on = py.on_node(node);
    let calls = (0..2).map(|_| on.call_with(PyCall::new("whoami", json!([0.3])), deadline(10_000)));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_streams_carry_every_item_with_back_pressure_and_a_deadline() {
    let cluster = Cluster::start("streams", 1, true).await;
    tokio::time::timeout(TEST_LIMIT, async {
        let py = cluster.remote.pool::<PyCall, Value>("py");

        // 10,000 items, all of them, in order.
        let stream = py
            .stream_with(PyCall::new("count", json!([10_000])), deadline(60_000))
            .await
            .unwrap();
        let items: Vec<Value> = stream.map(|i| i.unwrap()).collect().await;
        assert_eq!(items.len(), 10_000);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item["i"], i as u64);
        }

        // A slow reader: 4,000 chunks of 64 KiB (250 MiB) are produced
        // only as fast as they are read, so the node never holds much.
        let chunks = cluster.remote.pool::<PyCall, Bytes>("py");
        let mut stream = chunks
            .stream_with(
                PyCall::new("chunks", json!([4000, 65536])),
                CallOptions::default(),
            )
            .await
            .unwrap();
        let node = stream.node().to_string();
        let pid = cluster.nodes.iter().find(|n| n.name == node).unwrap().pid;
        for i in 0..10 {
            let chunk = stream.next().await.unwrap().unwrap();
            assert_eq!((chunk.len(), chunk[0]), (65536, i as u8));
        }
        let before = rss_kib(pid);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let paused = rss_kib(pid);
        let mut read = 10;
        let mut peak = paused;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk[65535], (read % 256) as u8);
            read += 1;
            if read % 500 == 0 {
                peak = peak.max(rss_kib(pid));
            }
        }
        assert_eq!(read, 4000);
        eprintln!(
            "slow reader: node RSS {before} KiB, {paused} KiB after a 1.5 s pause, \
             peak {peak} KiB, for a 250 MiB stream"
        );
        assert!(
            paused < before + 32 * 1024,
            "the node buffered {} KiB while the reader paused",
            paused - before
        );
        // Reading at full speed, the node's memory levels off (here about
        // 60 MiB up, the allocator keeping freed chunks); it does not grow
        // with the stream: half of it would be 125 MiB.
        assert!(
            peak < before + 120 * 1024,
            "peak {peak} KiB from {before} KiB"
        );

        // One deadline for the whole stream: 1,000 items 10 ms apart
        // under 500 ms end with `CallTimeout` after the items in time.
        let began = Instant::now();
        let budget = CallOptions::default().budget(Duration::from_millis(500));
        let mut stream = py
            .stream_with(PyCall::new("count", json!([1000, 0.01])), budget)
            .await
            .unwrap();
        let mut got = 0;
        let end = loop {
            match stream.next().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("the stream ended without its deadline"),
            }
        };
        assert!(matches!(end, CallError::CallTimeout { .. }), "{end:?}");
        assert!((1..60).contains(&got), "{got} items in 500 ms");
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
        assert!(stream.next().await.is_none(), "items after the last error");
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_cancels_its_generator_and_keeps_its_worker() {
    let cluster = Cluster::start("streamdrop", 1, true).await;
    tokio::time::timeout(TEST_LIMIT, async {
        let py = cluster.remote.pool::<PyCall, Value>("py");
        let n1 = py.on_node("n1");
        let pids = worker_pids(&py, "n1").await;
        assert_eq!(pids.len(), 2);
        for _ in 0..3 {
            let mut stream = n1
                .stream_with(PyCall::new("count", json!([1_000_000, 0.001])), CallOptions::default())
                .await
                .unwrap();
            for _ in 0..5 {
                stream.next().await.unwrap().unwrap();
            }
            drop(stream);
        }
        // Both workers serve again, and they are the same processes: the
        // generators were closed, their workers not killed.
        let began = Instant::now();
        loop {
            let load = cluster
                .remote
                .nodes("py")
                .into_iter()
                .find(|n| n.node == "n1")
                .unwrap()
                .load;
            if load.idle == 2 {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "n1's workers still busy after the streams were dropped: {load:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(worker_pids(&py, "n1").await, pids);
        // Streams of a pool a node serves only calls of are refused,
        // typed, saying what to do.
        let jobs = cluster.remote.pool::<common::Job, String>("jobs");
        let err = jobs.stream(common::Job::Whoami).await.unwrap_err();
        assert!(
            matches!(&err, CallError::BadRequest { message } if message.contains("NodeBuilder::streams")),
            "{err:?}"
        );
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_ends_it_with_node_lost() {
    let mut cluster = Cluster::start("streamkill", 1, true).await;
    let py = cluster.remote.pool::<PyCall, Value>("py");
    let mut stream = py
        .on_node("n2")
        .stream(PyCall::new("count", json!([100_000, 0.001])))
        .await
        .unwrap();
    let mut got = 0;
    while got < 50 {
        assert_eq!(stream.next().await.unwrap().unwrap()["i"], got);
        got += 1;
    }
    cluster.node("n2").sigkill();
    let killed = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(item)) => {
                    assert_eq!(item["i"], got, "an item lost or out of order");
                    got += 1;
                }
                Some(Err(e)) => return e,
                None => panic!("the stream ended cleanly with its node killed"),
            }
        }
    })
    .await
    .expect("a stream hung with its node killed");
    assert!(
        matches!(&end, CallError::NodeLost { node, .. } if node == "n2"),
        "{end:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    assert!(stream.next().await.is_none());
    // New streams go elsewhere.
    let other = py.stream(PyCall::new("count", json!([3]))).await.unwrap();
    assert_ne!(other.node(), "n2");
    assert_eq!(other.collect::<Vec<_>>().await.len(), 3);
    cluster.bury("n2").await;
    cluster.stop().await;
}
