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

use cenote_core::{CallOptions, Pool, Registry};
use cenote_node::{Node, Remote};
use cenote_python::{PyCall, PythonConfig, PythonFactory, RawCall};
use cenote_registry::EtcdRegistry;
use cenote_strategies::{Fifo, Lifo};
use cenote_testkit::EtcdServer;

use crate::common::{job_pool, Job};

/// The token every test node wants.
pub const TOKEN: &str = "cluster-token";
/// The Python pools' frame limit on test nodes.
pub const PY_MAX_FRAME: usize = 32 << 20;
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
        // Two workers, so a session's calls must find their own; frames of
        // at most 32 MiB, so a larger payload is refused cheaply.
        let mut config = PythonConfig::new(handlers);
        config.max_frame_size = PY_MAX_FRAME;
        let pool: Pool<PythonFactory, Lifo, Fifo> = Pool::builder(PythonFactory::new(config))
            .size(2)
            .build()
            .await
            .expect("python pool");
        builder = builder
            .pool::<RawCall>("py", pool.clone())
            .streams::<PyCall>("py", pool.clone());
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

/// Node processes and a caller, on a fresh etcd.
pub struct Cluster {
    pub etcd: EtcdServer,
    pub tag: String,
    pub prefix: String,
    pub size: usize,
    pub python: bool,
    pub nodes: Vec<NodeProc>,
    pub registry: Arc<dyn Registry>,
    pub remote: Remote,
}

impl Cluster {
    /// Nodes n1, n2 and n3, each serving `jobs` with `size` workers (and
    /// `py`, a Python pool, if `python`), and a caller that sees all three.
    pub async fn start(test: &str, size: usize, python: bool) -> Cluster {
        let etcd = EtcdServer::start();
        let prefix = format!("/{test}");
        let registry: Arc<dyn Registry> = Arc::new(registry(&etcd.url, &prefix, "caller").await);
        let remote = Remote::builder(registry.clone())
            .token(TOKEN)
            .connect()
            .await
            .unwrap();
        let mut cluster = Cluster {
            etcd,
            tag: new_tag(test),
            prefix,
            size,
            python,
            nodes: Vec::new(),
            registry,
            remote,
        };
        for name in ["n1", "n2", "n3"] {
            cluster.add(name);
        }
        cluster.wait_for("jobs", 3).await;
        if python {
            cluster.wait_for("py", 3).await;
        }
        cluster
    }

    /// Start one more node process, `name`.
    pub fn add(&mut self, name: &str) {
        let spec = NodeSpec {
            etcd: &self.etcd.url,
            prefix: &self.prefix,
            tag: &self.tag,
            size: self.size,
            python: self.python,
        };
        self.nodes.push(NodeProc::start(&spec, name));
    }

    /// Wait (at most 10 s) until the caller sees `count` nodes that can
    /// be called serving `pool`.
    pub async fn wait_for(&self, pool: &str, count: usize) {
        wait_for_nodes(&self.remote, pool, count).await;
    }

    /// A node that was killed: wait (at most a lease TTL and 3 s) until
    /// its endpoints expire with its lease, and stop tracking it.
    pub async fn bury(&mut self, name: &str) {
        let deadline = Instant::now() + TTL + Duration::from_secs(3);
        while endpoint_nodes(self.registry.as_ref(), "jobs")
            .await
            .iter()
            .any(|n| n == name)
        {
            assert!(
                Instant::now() < deadline,
                "{name}'s endpoint outlived its lease"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.nodes.retain(|n| n.name != name);
    }

    pub fn node(&mut self, name: &str) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// Stop every node cleanly; nothing may be left: no process, no etcd
    /// entry.
    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            assert!(node.stop(), "node {} did not stop cleanly", node.name);
        }
        assert_eq!(
            endpoint_nodes(self.registry.as_ref(), "jobs").await,
            Vec::<String>::new(),
            "a cleanly stopped node left its endpoint in etcd"
        );
        assert!(self.registry.endpoints().await.unwrap().is_empty());
        assert!(self.registry.pools().await.unwrap().is_empty());
        let left = wait_gone(&self.tag, Duration::from_secs(10)).await;
        assert!(left.is_empty(), "processes left behind: {left:?}");
        drop(self.remote);
        drop(self.registry);
        self.etcd.stop();
        self.etcd.assert_all_stopped();
    }
}

/// Wait (at most 10 s) until `remote` sees `count` nodes that can be
/// called serving `pool`.
pub async fn wait_for_nodes(remote: &Remote, pool: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while remote.nodes(pool).iter().filter(|n| n.callable).count() != count {
        assert!(
            Instant::now() < deadline,
            "the caller does not see {count} nodes serving {pool}: {:?}",
            remote.nodes(pool)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Options for a call whose checkout and call together take at most
/// `total_ms`.
pub fn deadline(total_ms: u64) -> CallOptions {
    CallOptions::default()
        .checkout_timeout(Duration::from_millis(total_ms / 2))
        .timeout(Duration::from_millis(total_ms / 2))
}

/// The `node_process` test that every binary starting node processes
/// needs: a node process is this binary, run again with it selected.
macro_rules! node_process_test {
    () => {
        #[test]
        #[ignore = "a node process for the cluster tests, started by them"]
        fn node_process() {
            cluster::node_process_main();
        }
    };
}
pub(crate) use node_process_test;
