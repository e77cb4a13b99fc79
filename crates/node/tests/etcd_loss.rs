//! A caller that loses etcd (its connection runs through a proxy this test
//! cuts) while the nodes keep theirs: it keeps calling the nodes it knows
//! until their leases would have expired, says so in a warning, then
//! refuses with `NoNode` rather than call nodes that may be gone; when etcd
//! is back, so are its calls.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cenote_core::{AffinityMode, CallOptions, Registry, RegistryEvent};
use cenote_node::{CallError, Node, Remote};
use cenote_registry::EtcdRegistry;
use cenote_testkit::EtcdServer;
use common::{eventually_async, job_pool, Job, Logs};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(2);

/// A TCP proxy on loopback that can cut every connection and refuse new
/// ones, then let them through again.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, conns) = (cut.clone(), conns.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: refused
                    }
                    conns.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            }
        });
        Proxy {
            addr,
            cut,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn etcd_registry(url: &str, node: &str) -> EtcdRegistry {
    EtcdRegistry::builder([url.to_string()])
        .prefix("/loss")
        .node(node)
        .lease_ttl(TTL)
        .op_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_loses_etcd_calls_known_nodes_until_their_leases_would_expire() {
    let logs = Logs::default();
    tracing::subscriber::set_global_default(logs.subscriber(tracing::Level::INFO)).unwrap();

    let server = EtcdServer::start();
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut nodes = Vec::new();
        for name in ["n1", "n2"] {
            let registry: Arc<dyn Registry> = Arc::new(etcd_registry(&server.url, name).await);
            nodes.push(
                Node::builder(registry)
                    .token("t")
                    .pool::<Job>("jobs", job_pool(name, 2).await)
                    .serve("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap(),
            );
        }
        let etcd_addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
        let proxy = Proxy::start(etcd_addr).await;
        let caller = Arc::new(etcd_registry(&format!("http://{}", proxy.addr), "caller").await);
        let mut events = caller.watch();
        let remote = Remote::builder(caller.clone())
            .token("t")
            .connect()
            .await
            .unwrap();
        let jobs = remote.pool::<Job, String>("jobs");
        assert_eq!(remote.nodes("jobs").len(), 2);
        jobs.call(Job::Whoami).await.unwrap();
        // A strict session, placed before etcd is lost.
        let session = CallOptions::default().affinity("s", AffinityMode::Strict);
        let home = jobs.call_with(Job::Whoami, session.clone()).await.unwrap();

        proxy.cut();
        let lost = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
                Ok(Some(RegistryEvent::Disconnected { .. })) => break Instant::now(),
                Ok(Some(_)) => continue,
                other => panic!("the caller did not notice losing etcd: {other:?}"),
            }
        };
        // The nodes it knows are still called...
        for _ in 0..10 {
            jobs.call(Job::Whoami).await.unwrap();
        }
        tokio::time::sleep_until((lost + TTL / 2).into()).await;
        jobs.call(Job::Whoami).await.unwrap();
        assert!(logs
            .text()
            .contains("calling the nodes known until their leases would have expired"));
        // ...until their leases would have expired: then none is.
        assert!(
            eventually_async(TTL, || async {
                matches!(jobs.call(Job::Whoami).await, Err(CallError::NoNode { .. }))
            })
            .await,
            "still calling nodes {:?} after etcd was lost",
            lost.elapsed()
        );
        assert!(lost.elapsed() >= TTL, "gave up after {:?}", lost.elapsed());
        let err = jobs.call(Job::Whoami).await.unwrap_err();
        assert!(
            matches!(&err, CallError::NoNode { reason, .. } if reason.contains("registry")),
            "{err:?}"
        );
        assert!(logs.text().contains("longer than a lease"));
        assert!(remote.nodes("jobs").iter().all(|n| !n.callable));
        // Its session is not lost for that: no node can be called, and
        // the error says so.
        let err = jobs
            .call_with(Job::Whoami, session.clone())
            .await
            .unwrap_err();
        assert!(matches!(&err, CallError::NoNode { .. }), "{err:?}");

        // etcd back: calls again.
        proxy.restore();
        assert!(
            eventually_async(Duration::from_secs(15), || async {
                jobs.call(Job::Whoami).await.is_ok()
            })
            .await,
            "calls did not resume once etcd was back"
        );
        assert!(logs.text().contains("registry reachable again"));
        assert_eq!(jobs.call_with(Job::Whoami, session).await.unwrap(), home);
        for node in nodes {
            node.shutdown().await;
        }
        drop(remote);
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                caller.endpoints().await.is_ok_and(|e| e.is_empty())
            })
            .await
        );
        drop(proxy);
    })
    .await
    .expect("test timed out");
}
