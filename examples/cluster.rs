//! Three nodes on loopback, each serving a Python pool, found through etcd.
//! Calls spread over them by load; one node is SIGKILLed mid-run and the
//! calls move to the other two.
//!
//! ```sh
//! cargo run --release --example cluster --features etcd
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
use cenote::python::{PyCall, PythonConfig, PythonFactory, RawCall};
use cenote::registry::EtcdRegistry;
use cenote::{CallOptions, Pool, Registry};
use cenote_testkit::procs::{tagged, TAG_VAR};
use cenote_testkit::EtcdServer;
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

/// One node: a Python pool of 2 workers served as "py", until stdin closes.
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
    println!("3 nodes up, each serving a Python pool of 2 workers as \"py\"");

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
