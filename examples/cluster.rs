//! Three nodes on loopback, each serving a Python pool, found through etcd.
//! Calls spread over them by load; a generator streams its items from a
//! node, and raw bytes cross at their own size; strict sessions keep their
//! node (and worker) through a scale-up to four nodes; one node is
//! SIGKILLed mid-run: the calls move to the others, and its sessions fail
//! loudly with `AffinityLost` instead of moving.
//!
//! ```sh
//! cargo run --release --example cluster --features node,etcd
//! ```
//!
//! Needs `etcd` on PATH (Debian/Ubuntu: `apt-get install etcd-server`) and
//! `python3`. The example starts etcd on free loopback ports (through
//! `cenote-testkit`, the workspace's test harness), and the nodes
//! by running itself again with `--node`; it signals only the pids it
//! started, and checks that none is left when it ends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cenote::node::{CallError, Node, Remote, RemotePool};
use cenote::python::Bytes;
use cenote::python::{PyCall, PythonConfig, PythonFactory, RawCall};
use cenote::registry::EtcdRegistry;
use cenote::{AffinityMode, CallOptions, Pool, Registry};
use cenote_testkit::procs::{tagged, TAG_VAR};
use cenote_testkit::EtcdServer;
use futures::StreamExt;
use serde_json::{json, Value};

const TOKEN: &str = "cluster-example";
const PREFIX: &str = "/cluster-example";
const LEASE: Duration = Duration::from_secs(2);

type Py = RemotePool<PyCall, Value>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match args.iter().position(|a| a == "--node") {
        Some(at) => runtime.block_on(node(&args[at + 1], &args[at + 2])),
        None => runtime.block_on(drive()),
    }
}

async fn registry(etcd: &str, name: &str) -> EtcdRegistry {
    EtcdRegistry::builder([etcd.to_string()])
        .prefix(PREFIX)
        .node(name)
        .lease_ttl(LEASE)
        .op_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect to etcd")
}

/// One node: a Python pool of 2 workers served as "py" (calls, answered
/// with their raw bytes, and streams), until stdin closes.
async fn node(name: &str, etcd: &str) {
    let handlers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/handlers.py");
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(PythonConfig::new(handlers)))
        .size(2)
        .build()
        .await
        .expect("python pool");
    let node = Node::builder(Arc::new(registry(etcd, name).await))
        .token(TOKEN)
        .pool::<RawCall>("py", pool.clone())
        .streams::<PyCall>("py", pool.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve");
    println!("READY");
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    })
    .await;
    node.shutdown().await;
    pool.close().await;
}

/// A node process this example started.
struct NodeProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl NodeProc {
    fn start(name: &str, etcd: &str, tag: &str) -> NodeProc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--node", name, etcd])
            .env(TAG_VAR, tag)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a node");
        let stdout = child.stdout.take().unwrap();
        let (ready, is_ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "READY" {
                    let _ = ready.send(());
                }
            }
        });
        let stdin = child.stdin.take();
        let node = NodeProc {
            name: name.into(),
            child,
            stdin,
        };
        is_ready
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("node {name} did not start within 30 s"));
        node
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill(); // SIGKILL, to this pid only
        let _ = self.child.wait();
    }

    /// Close stdin (the node shuts down cleanly), wait up to 15 s.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.sigkill();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.sigkill();
        }
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
}

/// Calls per node (and lost calls) of `callers` callers for `secs`.
#[derive(Default)]
struct Tally {
    per_node: BTreeMap<String, u64>,
    lost: u64,
    other_errors: u64,
}

async fn storm(py: &Py, callers: usize, run_for: Duration) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let opts = CallOptions::default()
        .checkout_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let end = Instant::now() + run_for;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (py, tally, opts) = (py.clone(), tally.clone(), opts.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let call = PyCall::new("sleep", json!([0.01]));
                    let outcome = py.call_answered(call, opts.clone()).await.map(|a| a.node);
                    let mut t = tally.lock().unwrap();
                    match outcome {
                        Ok(node) => *t.per_node.entry(node).or_default() += 1,
                        Err(CallError::NodeLost { .. }) => t.lost += 1,
                        Err(e) => {
                            eprintln!("call failed: {e}");
                            t.other_errors += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(tally)
        .ok()
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default()
}

fn show(title: &str, tally: &Tally) {
    println!("\n{title}");
    println!("| node       | calls |");
    println!("|------------|------:|");
    for (node, n) in &tally.per_node {
        println!("| {node:<10} | {n:>5} |");
    }
    println!("| NodeLost   | {:>5} |", tally.lost);
    if tally.other_errors > 0 {
        println!("| other errs | {:>5} |", tally.other_errors);
    }
}

async fn drive() {
    let etcd_bin = std::env::var("CENOTE_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    if !(on_path(&etcd_bin) || std::path::Path::new(&etcd_bin).is_file()) {
        eprintln!(
            "cluster example: `etcd` is not on PATH (Debian/Ubuntu: apt-get install \
             etcd-server, or set CENOTE_ETCD_BIN); nothing to run"
        );
        return;
    }
    let mut server = EtcdServer::start();
    println!("etcd at {}", server.url);
    let tag = format!("cluster-{}", std::process::id());
    let mut nodes: Vec<NodeProc> = ["node-1", "node-2", "node-3"]
        .into_iter()
        .map(|name| NodeProc::start(name, &server.url, &tag))
        .collect();
    println!("3 nodes up, each serving a Python pool of 2 workers as \"py\" (calls and streams)");

    let driver: Arc<dyn Registry> = Arc::new(registry(&server.url, "driver").await);
    let remote = Remote::builder(driver.clone())
        .token(TOKEN)
        .connect()
        .await
        .expect("connect the caller");
    let py: Py = remote.pool("py");
    while remote.nodes("py").len() < 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let spread = storm(&py, 12, Duration::from_secs(2)).await;
    show(
        "12 callers for 2 s, each call sleeping 10 ms in Python:",
        &spread,
    );

    // A generator on one node, its items read as they come.
    let mut words = py
        .stream(PyCall::new(
            "tokens",
            json!({"text": "streamed from a node, word by word", "delay": 0.02}),
        ))
        .await
        .expect("stream");
    print!("\na stream from {}:", words.node());
    while let Some(word) = words.next().await {
        print!(" {}", word.expect("an item").as_str().unwrap_or_default());
    }
    println!();

    // 4 MiB of raw bytes each way: on the wire, about 4 MiB each way.
    let bytes: RemotePool<PyCall, Bytes> = remote.pool("py");
    let image = Bytes::from(vec![0x0f_u8; 4 << 20]);
    let call = PyCall::new("invert", json!({})).kwarg_bytes("data", image.clone());
    let inverted = bytes.call(call).await.expect("4 MiB round trip");
    assert!(inverted.iter().all(|&b| b == 0xf0));
    println!("4 MiB of bytes inverted on a node and back, intact");

    // Strict sessions: each keeps its node, and its worker's state there.
    let sessions = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let strict = |key: &str| CallOptions::default().affinity(key, AffinityMode::Strict);
    let tally = |key: &str| PyCall::new("tally", json!({ "session": key }));
    let mut homes = BTreeMap::new();
    for _ in 0..3 {
        for key in sessions {
            let a = py
                .call_answered(tally(key), strict(key))
                .await
                .expect("session call");
            homes.insert(key, (a.node, a.value["count"].as_u64().unwrap_or_default()));
        }
    }
    let probes: Vec<String> = (0..1000).map(|i| format!("probe-{i}")).collect();
    let placed: Vec<Option<String>> = probes.iter().map(|k| py.session_node(k.as_str())).collect();

    // Scale up: a fourth node joins.
    nodes.push(NodeProc::start("node-4", &server.url, &tag));
    while remote.nodes("py").len() < 4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("\nnode-4 joined; strict sessions, 3 calls before and 3 after:");
    println!("| session | node   | count before | count after |");
    println!("|---------|--------|-------------:|------------:|");
    for key in sessions {
        let mut last = None;
        for _ in 0..3 {
            last = Some(
                py.call_answered(tally(key), strict(key))
                    .await
                    .expect("session call"),
            );
        }
        let a = last.unwrap();
        let (home, before) = &homes[key];
        assert_eq!(&a.node, home, "session {key} moved");
        let after = a.value["count"].as_u64().unwrap_or_default();
        println!("| {key:<7} | {home:<6} | {before:>12} | {after:>11} |");
    }
    let moved = probes
        .iter()
        .zip(&placed)
        .filter(|(k, was)| &py.session_node(k.as_str()) != *was)
        .count();
    println!(
        "sessions moved by the scale-up: 0 of {} held by this caller; \
         {moved} of 1000 new keys now hash to another node (the new node's share)",
        sessions.len()
    );

    // node-2 dies mid-run, by SIGKILL.
    let mid_run = tokio::spawn({
        let py = py.clone();
        async move { storm(&py, 12, Duration::from_secs(3)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[1].sigkill();
    println!("\nSIGKILLed {} after 1 s of a 3 s run", nodes[1].name);
    let after = mid_run.await.expect("storm");
    show(
        "the same run, across the kill (only calls in flight on node-2 are lost):",
        &after,
    );

    println!(
        "(a lost call may have run; idempotent ones can use RemotePool::call_retry, \
         which retries on another node)"
    );
    let deadline = Instant::now() + LEASE * 3;
    while remote.nodes("py").iter().any(|n| n.node == "node-2") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed: Vec<String> = remote.nodes("py").into_iter().map(|n| n.node).collect();
    println!("\nnodes listed once node-2's lease expired: {listed:?}");

    // Its strict sessions fail loudly; the others go on.
    println!("\nstrict sessions after the kill:");
    for key in sessions {
        match py.call_answered(tally(key), strict(key)).await {
            Ok(a) => println!("  {key}: count {} on {}", a.value["count"], a.node),
            Err(e @ CallError::AffinityLost { .. }) => {
                println!(
                    "  {key}: {e} (was on {}); start it over with forget_session",
                    homes[key].0
                )
            }
            Err(e) => println!("  {key}: {e}"),
        }
    }

    for node in &mut nodes {
        node.stop();
    }
    let left = driver
        .endpoints()
        .await
        .map(|e| e.len())
        .unwrap_or(usize::MAX);
    drop(remote);
    drop(driver);
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tagged(&tag).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let procs = tagged(&tag);
    println!(
        "\nstopped: {} endpoints left in etcd, {} processes left behind",
        left,
        procs.len()
    );
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}
