//! Node processes for the cluster tests: this test binary, run again with
//! `node_process` selected, serves pools from a real etcd registry until
//! its stdin closes (so it also ends if the test dies). The test talks to it
//! only through etcd and gRPC, and ends it by closing stdin, by SIGKILL, or
//! stops and resumes it — always by its own pid.
//!
//! Every process a node starts (itself, its Python workers) carries a tag
//! in its environment, so a test can check that none is left behind.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote_core::{Pool, Registry};
use cenote_node::Node;
use cenote_python::{PyCall, PythonConfig, PythonFactory};
use cenote_registry::EtcdRegistry;
use cenote_strategies::{Fifo, Lifo};

use crate::common::{job_pool, Job};

/// The token every test node wants.
pub const TOKEN: &str = "cluster-token";
/// Lease TTL of nodes and callers: short, so expiry is quick to see.
pub const TTL: Duration = Duration::from_secs(2);
pub use cenote_testkit::procs::{new_tag, tagged, TAG_VAR};

const ETCD: &str = "CENOTE_NODE_ETCD";
const PREFIX: &str = "CENOTE_NODE_PREFIX";
const NAME: &str = "CENOTE_NODE_NAME";
const SIZE: &str = "CENOTE_NODE_SIZE";
const PYTHON: &str = "CENOTE_NODE_PYTHON";

/// A registry on the test etcd, as `node`.
pub async fn registry(etcd: &str, prefix: &str, node: &str) -> EtcdRegistry {
    EtcdRegistry::builder([etcd.to_string()])
        .prefix(prefix)
        .node(node)
        .lease_ttl(TTL)
        .op_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect to the test etcd")
}

/// The body of a node process (see the module docs); returns at once when
/// not run as one.
pub fn node_process_main() {
    let Ok(etcd) = std::env::var(ETCD) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("node runtime");
    runtime.block_on(serve_until_stdin_closes(etcd));
}

async fn serve_until_stdin_closes(etcd: String) {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let name = var(NAME);
    let size = var(SIZE).parse().unwrap_or(2);
    let registry = Arc::new(registry(&etcd, &var(PREFIX), &name).await);
    let jobs = job_pool(&name, size).await;
    let mut builder = Node::builder(registry.clone())
        .token(TOKEN)
        .load_interval(Duration::from_millis(50))
        .shutdown_grace(Duration::from_secs(5))
        .pool::<Job>("jobs", jobs.clone());
    let mut python = None;
    if let Ok(handlers) = std::env::var(PYTHON) {
        let pool: Pool<PythonFactory, Lifo, Fifo> =
            Pool::builder(PythonFactory::new(PythonConfig::new(handlers)))
                .size(1)
                .build()
                .await
                .expect("python pool");
        builder = builder.pool::<PyCall>("py", pool.clone());
        python = Some(pool);
    }
    let node = builder
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve");
    println!("NODE-READY {}", node.url());
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    })
    .await;
    node.shutdown().await;
    jobs.close().await;
    if let Some(pool) = python {
        pool.close().await;
    }
    if let Ok(registry) = Arc::try_unwrap(registry) {
        let _ = registry.shutdown().await;
    }
    println!("NODE-STOPPED");
}

/// A node process started by a test.
pub struct NodeProc {
    pub name: String,
    pub url: String,
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    stopped: mpsc::Receiver<()>,
}

/// What a node process serves.
pub struct NodeSpec<'a> {
    pub etcd: &'a str,
    pub prefix: &'a str,
    pub tag: &'a str,
    pub size: usize,
    pub python: bool,
}

impl NodeProc {
    /// Start node `name` and wait (at most 30 s) until it serves.
    pub fn start(spec: &NodeSpec<'_>, name: &str) -> NodeProc {
        let handlers = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/python/handlers.py"
        );
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["node_process", "--exact", "--ignored", "--nocapture"])
            .env(ETCD, spec.etcd)
            .env(PREFIX, spec.prefix)
            .env(NAME, name)
            .env(SIZE, spec.size.to_string())
            .env(TAG_VAR, spec.tag)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if spec.python {
            cmd.env(PYTHON, handlers);
        }
        let mut child = cmd.spawn().expect("start a node process");
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stopped_tx, stopped) = mpsc::channel();
        // Reads the node's stdout to its end, so it never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("NODE-READY ") {
                    let _ = ready_tx.send(url.to_string());
                } else if line == "NODE-STOPPED" {
                    let _ = stopped_tx.send(());
                }
            }
        });
        let stdin = child.stdin.take();
        let mut proc = NodeProc {
            name: name.to_string(),
            url: String::new(),
            pid,
            child,
            stdin,
            stopped,
        };
        proc.url = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("node {name} (pid {pid}) did not serve within 30 s"));
        proc
    }

    /// SIGKILL, by its own pid, and reap it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP or SIGCONT, by its own pid (only while it is our child).
    pub fn signal(&mut self, sig: i32) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own, unreaped child's pid.
            unsafe { libc::kill(self.pid as i32, sig) };
        }
    }

    /// Close its stdin and wait (at most 20 s) for a clean exit; true if it
    /// stopped cleanly. Killed if it did not.
    pub fn stop(&mut self) -> bool {
        drop(self.stdin.take());
        let clean = self.stopped.recv_timeout(Duration::from_secs(20)).is_ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return clean && status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.sigkill();
        false
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGCONT);
            self.sigkill();
        }
    }
}

/// Wait (at most `limit`) until no process carries `tag`; those left.
pub async fn wait_gone(tag: &str, limit: Duration) -> Vec<u32> {
    cenote_testkit::procs::wait_gone(limit, || tagged(tag)).await
}

/// A Python echo call.
pub fn py_echo(value: i64) -> PyCall {
    PyCall::new("echo", serde_json::json!({ "value": value }))
}

/// Registry helper: the nodes etcd lists for `service`.
pub async fn endpoint_nodes(registry: &dyn Registry, service: &str) -> Vec<String> {
    registry
        .endpoints()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.service == service)
        .map(|e| e.node)
        .collect()
}
