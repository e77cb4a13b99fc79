//! Node benchmark: what calling a pool on another node costs over calling
//! it locally, and how calls/s grow with nodes.
//!
//! `cargo bench --bench node --features node` prints tables; `-- --json` adds one JSON
//! object on the last line. Needs `python3` on PATH.
//!
//! * overhead: one caller, sequential calls, the same pool called locally
//!   (`pool.call`) and through a node on loopback (`RemotePool::call`:
//!   JSON, gRPC over HTTP/2, the node's dispatch); in-process echo worker
//!   and Python echo. Local and remote calls alternate in blocks, so a
//!   burst of load from elsewhere lands on both.
//! * bytes: a 16 MiB round trip through a Python handler (`invert`: the
//!   bytes in, as many back), locally and through a node (raw bytes beside
//!   the JSON on the node's wire); MB/s is the payload's size over the
//!   round trip's median time.
//! * streams: a generator's 10,000 small items (`count`), read locally
//!   (`PythonPool::stream`) and through a node (`RemotePool::stream`);
//!   items/s over the whole stream's median time.
//! * throughput: 64 callers against 1 and 3 nodes on loopback, each node a
//!   pool of 4 workers whose call sleeps 5 ms — workers, not cores, are the
//!   bottleneck, so 3 nodes should serve about 3× the calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::node::{Node, Remote, RemotePool};
use cenote::python::{Bytes, PythonPool};
use cenote::python::{PyCall, PythonConfig, PythonFactory, RawCall};
use cenote::registry::LocalRegistry;
use cenote::{Call, CallCtx, Factory, Pool, Registry, Worker, WorkerCtx};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const BLOCKS: usize = 20;
const BLOCK_CALLS: usize = 250;
const PY_BLOCKS: usize = 10;
const PY_BLOCK_CALLS: usize = 200;
const BIG: usize = 16 << 20;
const BIG_BLOCKS: usize = 5;
const BIG_BLOCK_CALLS: usize = 3;
const STREAM_ITEMS: usize = 10_000;
const STREAM_BLOCKS: usize = 7;
const CALLERS: usize = 64;
const WORKERS_PER_NODE: usize = 4;
const SLEEP: Duration = Duration::from_millis(5);
const THROUGHPUT_SECS: f64 = 3.0;
const TOKEN: &str = "bench";

/// What the in-process worker does with a request.
#[derive(Clone, Serialize, Deserialize)]
enum Req {
    Echo(String),
    Sleep,
}

struct Bench;

impl Worker for Bench {
    type Error = std::io::Error;
    async fn shutdown(self, _grace: Duration) {}
}

impl Call<Req> for Bench {
    type Response = String;
    async fn call(&mut self, req: Req, _ctx: CallCtx) -> Result<String, std::io::Error> {
        match req {
            Req::Echo(s) => Ok(s),
            Req::Sleep => {
                tokio::time::sleep(SLEEP).await;
                Ok(String::new())
            }
        }
    }
}

struct Benches;

impl Factory for Benches {
    type Worker = Bench;
    async fn create(&self, _: WorkerCtx) -> Result<Bench, std::io::Error> {
        Ok(Bench)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_nanos() as f64 / 1000.0
}

struct Latency {
    p50_us: f64,
    p99_us: f64,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    Latency {
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
    }
}

/// Sequential calls, local and remote alternating in blocks.
async fn overhead<L, LF, R, RF>(
    blocks: usize,
    per_block: usize,
    mut local: L,
    mut remote: R,
) -> (Latency, Latency)
where
    L: FnMut() -> LF,
    LF: std::future::Future<Output = ()>,
    R: FnMut() -> RF,
    RF: std::future::Future<Output = ()>,
{
    for _ in 0..per_block {
        local().await;
        remote().await;
    }
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for _ in 0..blocks {
        for _ in 0..per_block {
            let t = Instant::now();
            local().await;
            l.push(t.elapsed());
        }
        for _ in 0..per_block {
            let t = Instant::now();
            remote().await;
            r.push(t.elapsed());
        }
    }
    (latency(l), latency(r))
}

async fn bench_pool(size: usize) -> Pool<Benches> {
    Pool::builder(Benches)
        .size(size)
        .build()
        .await
        .expect("pool")
}

async fn serve(registry: &LocalRegistry, name: &str, pool: Pool<Benches>) -> Node {
    Node::builder(Arc::new(registry.as_node(name)))
        .token(TOKEN)
        .pool::<Req>("bench", pool)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve")
}

async fn caller(registry: &LocalRegistry) -> Remote {
    Remote::builder(Arc::new(registry.as_node("caller")) as Arc<dyn Registry>)
        .token(TOKEN)
        .connect()
        .await
        .expect("connect")
}

/// Calls/s of 64 callers through `pool` for a few seconds.
async fn throughput(pool: RemotePool<Req, String>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let end = began + Duration::from_secs_f64(THROUGHPUT_SECS);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    pool.call(Req::Sleep).await.expect("call");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64()
}

fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // Overhead, in-process echo worker.
        let registry = LocalRegistry::new("-");
        let pool = bench_pool(2).await;
        let node = serve(&registry, "n1", pool.clone()).await;
        let remote = caller(&registry).await.pool::<Req, String>("bench");
        let text = "x".repeat(32);
        let (local_echo, remote_echo) = overhead(
            BLOCKS,
            BLOCK_CALLS,
            || {
                let (pool, text) = (pool.clone(), text.clone());
                async move {
                    pool.call(Req::Echo(text)).await.expect("local call");
                }
            },
            || {
                let (remote, text) = (remote.clone(), text.clone());
                async move {
                    remote.call(Req::Echo(text)).await.expect("remote call");
                }
            },
        )
        .await;
        node.shutdown().await;
        pool.close().await;

        // Overhead, Python echo.
        let handlers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/handlers.py");
        let py: Pool<PythonFactory> = Pool::builder(PythonFactory::new(PythonConfig::new(handlers)))
            .size(1)
            .build()
            .await
            .expect("python pool");
        let py_registry = LocalRegistry::new("-");
        let py_node = Node::builder(Arc::new(py_registry.as_node("py1")))
            .token(TOKEN)
            .pool::<RawCall>("py", py.clone())
            .streams::<PyCall>("py", py.clone())
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .expect("serve python");
        let py_remote = caller(&py_registry).await.pool::<PyCall, Value>("py");
        let call = || PyCall::new("echo", json!({"value": {"id": 42, "tags": ["a", "b"]}}));
        let (local_py, remote_py) = overhead(
            PY_BLOCKS,
            PY_BLOCK_CALLS,
            || {
                let py = py.clone();
                async move {
                    py.call(call()).await.expect("local python call");
                }
            },
            || {
                let py_remote = py_remote.clone();
                async move {
                    py_remote.call(call()).await.expect("remote python call");
                }
            },
        )
        .await;

        // 16 MiB each way, local and remote alternating.
        let payload = Bytes::from(vec![7u8; BIG]);
        let invert = |data: &Bytes| PyCall::new("invert", json!({})).kwarg_bytes("data", data.clone());
        let py_bytes = caller(&py_registry).await.pool::<PyCall, Bytes>("py");
        let (local_big, remote_big) = overhead(
            BIG_BLOCKS,
            BIG_BLOCK_CALLS,
            || {
                let (py, call) = (py.clone(), invert(&payload));
                async move {
                    let back = py.call(call.returning::<Bytes>()).await.expect("local 16 MiB");
                    assert_eq!(back.len(), BIG);
                }
            },
            || {
                let (py_bytes, call) = (py_bytes.clone(), invert(&payload));
                async move {
                    let back = py_bytes.call(call).await.expect("remote 16 MiB");
                    assert_eq!(back.len(), BIG);
                }
            },
        )
        .await;

        // A whole stream of small items, local and remote alternating.
        let count = || PyCall::new("count", json!([STREAM_ITEMS]));
        let (local_stream, remote_stream) = overhead(
            STREAM_BLOCKS,
            1,
            || {
                let py = py.clone();
                async move {
                    let items = py.stream(count()).await.expect("local stream");
                    assert_eq!(items.count().await, STREAM_ITEMS);
                }
            },
            || {
                let py_remote = py_remote.clone();
                async move {
                    let items = py_remote.stream(count()).await.expect("remote stream");
                    assert_eq!(items.count().await, STREAM_ITEMS);
                }
            },
        )
        .await;
        py_node.shutdown().await;
        py.close().await;

        // Throughput, 1 node then 3.
        let mut per_nodes = Vec::new();
        for n in [1, 3] {
            let registry = LocalRegistry::new("-");
            let mut nodes = Vec::new();
            for i in 0..n {
                nodes.push(serve(&registry, &format!("n{i}"), bench_pool(WORKERS_PER_NODE).await).await);
            }
            let pool = caller(&registry).await.pool::<Req, String>("bench");
            per_nodes.push(throughput(pool).await);
            for node in nodes {
                node.shutdown().await;
            }
        }

        let over = |l: &Latency, r: &Latency| (r.p50_us - l.p50_us, r.p99_us - l.p99_us);
        let (echo50, echo99) = over(&local_echo, &remote_echo);
        let (py50, py99) = over(&local_py, &remote_py);
        println!("Remote call overhead over the same local call (sequential, loopback)");
        println!("| worker              | local p50 µs | local p99 µs | remote p50 µs | remote p99 µs | overhead p50 µs | overhead p99 µs |");
        println!("|---------------------|-------------:|-------------:|--------------:|--------------:|----------------:|----------------:|");
        for (name, l, r, o50, o99) in [
            ("in-process echo", &local_echo, &remote_echo, echo50, echo99),
            ("Python echo", &local_py, &remote_py, py50, py99),
        ] {
            println!(
                "| {name:<19} | {:>12.1} | {:>12.1} | {:>13.1} | {:>13.1} | {o50:>15.1} | {o99:>15.1} |",
                l.p50_us, l.p99_us, r.p50_us, r.p99_us
            );
        }
        let mb_s = |l: &Latency| BIG as f64 / 1e6 / (l.p50_us / 1e6);
        let (local_mb, remote_mb) = (mb_s(&local_big), mb_s(&remote_big));
        let items_s = |l: &Latency| STREAM_ITEMS as f64 / (l.p50_us / 1e6);
        let (local_items, remote_items) = (items_s(&local_stream), items_s(&remote_stream));
        println!();
        println!("16 MiB through a Python handler and back (median of {} round trips each)", BIG_BLOCKS * BIG_BLOCK_CALLS);
        println!("| path   | p50 ms | MB/s  |");
        println!("|--------|-------:|------:|");
        println!("| local  | {:>6.1} | {local_mb:>5.0} |", local_big.p50_us / 1e3);
        println!("| remote | {:>6.1} | {remote_mb:>5.0} |", remote_big.p50_us / 1e3);
        println!("remote / local: {:.2}x (target >= 0.5x)", remote_mb / local_mb);
        println!();
        println!("A stream of {STREAM_ITEMS} items (median of {STREAM_BLOCKS} streams each)");
        println!("| path   | p50 ms | items/s |");
        println!("|--------|-------:|--------:|");
        println!("| local  | {:>6.1} | {local_items:>7.0} |", local_stream.p50_us / 1e3);
        println!("| remote | {:>6.1} | {remote_items:>7.0} |", remote_stream.p50_us / 1e3);
        println!("remote / local: {:.2}x (target >= 0.5x)", remote_items / local_items);
        println!();
        println!(
            "Throughput: {CALLERS} callers, {WORKERS_PER_NODE} workers per node, each call sleeps {SLEEP:?}"
        );
        println!("| nodes | calls/s |");
        println!("|------:|--------:|");
        println!("|     1 | {:>7.0} |", per_nodes[0]);
        println!("|     3 | {:>7.0} |", per_nodes[1]);
        println!(
            "3 nodes / 1 node: {:.2}x (target >= 2.5x); remote p50 overhead {echo50:.1} us (target <= 150 us)",
            per_nodes[1] / per_nodes[0]
        );
        if json_out {
            let out = json!({
                "remote_overhead_us": {"p50": round1(echo50), "p99": round1(echo99)},
                "calls_per_sec": {"nodes1": per_nodes[0].round(), "nodes3": per_nodes[1].round()},
                "bytes_mb_s": {"remote_16m": round1(remote_mb), "local_16m": round1(local_mb)},
                "stream_items_per_sec": {"remote": remote_items.round(), "local": local_items.round()},
            });
            println!("{out}");
        }
    });
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
