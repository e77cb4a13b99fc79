//! Three nodes in one process, on loopback: calls spread over them by
//! load, a saturated node gets no new calls, and a node that dies mid-call
//! (its runtime torn down, connections and all, with its endpoint still
//! published) costs only its in-flight calls — typed `NodeLost`, fast — while
//! the rest go to the others; with retries every call succeeds.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cenote_core::CallOptions;
use cenote_node::{CallError, Node, Remote, RemoteRetry};
use cenote_registry::LocalRegistry;
use common::*;

const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn three_nodes(registry: &LocalRegistry, size: usize) -> Vec<(Node, JobPool)> {
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let pool = job_pool(name, size).await;
        nodes.push((
            serve_jobs(as_node(registry, name), pool.clone()).await,
            pool,
        ));
    }
    nodes
}

async fn caller(registry: &LocalRegistry) -> Remote {
    Remote::builder(as_node(registry, "caller"))
        .token("test-token")
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_three_nodes() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let nodes = three_nodes(&registry, 2).await;
        let jobs = caller(&registry).await.pool::<Job, String>("jobs");
        let mut served: HashMap<String, usize> = HashMap::new();
        let callers = (0..12).map(|_| {
            let jobs = jobs.clone();
            async move {
                let mut mine = Vec::new();
                for _ in 0..25 {
                    mine.push(jobs.call(Job::Sleep(5)).await.unwrap());
                }
                mine
            }
        });
        for node in futures::future::join_all(callers)
            .await
            .into_iter()
            .flatten()
        {
            *served.entry(node).or_default() += 1;
        }
        assert_eq!(served.values().sum::<usize>(), 300);
        for name in ["n1", "n2", "n3"] {
            let n = served.get(name).copied().unwrap_or(0);
            assert!(n >= 45, "{name} served {n} of 300: {served:?}");
        }
        for (node, _) in nodes {
            node.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_node_gets_no_new_calls() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let nodes = three_nodes(&registry, 1).await;
        let remote = caller(&registry).await;
        let jobs = remote.pool::<Job, String>("jobs");

        // n1's only worker is held, and four callers queue behind it: local
        // callers the remote caller knows nothing about but the load.
        let n1 = nodes[0].1.clone();
        let hogs: Vec<_> = (0..5)
            .map(|_| {
                let n1 = n1.clone();
                tokio::spawn(async move { n1.call(Job::Sleep(1_500)).await })
            })
            .collect();
        assert!(
            eventually_async(Duration::from_secs(3), || async {
                remote
                    .nodes("jobs")
                    .iter()
                    .any(|n| n.node == "n1" && n.load.waiting == 4 && n.load.idle == 0)
            })
            .await,
            "n1's saturation was not published: {:?}",
            remote.nodes("jobs")
        );
        // Two callers at a time keep n2 and n3 less loaded than n1 (the
        // choice balances queues: a flood would make them the busier ones).
        let callers = (0..2).map(|_| {
            let jobs = jobs.clone();
            async move {
                for _ in 0..20 {
                    let node = jobs.call(Job::Sleep(5)).await.unwrap();
                    assert_ne!(node, "n1", "a call went to the saturated node");
                }
            }
        });
        futures::future::join_all(callers).await;
        for h in hogs {
            h.await.unwrap().unwrap();
        }
        for (node, _) in nodes {
            node.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

/// A node on a runtime of its own, so that it can die all at once.
struct Doomed {
    runtime: Option<tokio::runtime::Runtime>,
    node: Option<Node>,
}

impl Doomed {
    async fn start(registry: &LocalRegistry, name: &'static str) -> Doomed {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let reg = as_node(registry, name);
        let node = runtime
            .spawn(async move { serve_jobs(reg, job_pool(name, 2).await).await })
            .await
            .unwrap();
        Doomed {
            runtime: Some(runtime),
            node: Some(node),
        }
    }

    /// Everything the node runs stops at once; its endpoint stays
    /// published, as after a crash.
    fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        drop(self.node.take());
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.crash();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_mid_call_gives_node_lost_and_calls_move_to_the_others() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let mut n1 = Doomed::start(&registry, "n1").await;
        let others = vec![
            serve_jobs(as_node(&registry, "n2"), job_pool("n2", 2).await).await,
            serve_jobs(as_node(&registry, "n3"), job_pool("n3", 2).await).await,
        ];
        let remote = caller(&registry).await;
        let jobs = remote.pool::<Job, String>("jobs");
        let deadline = CallOptions::default()
            .checkout_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));

        // A storm of slow calls; n1 dies while some are under way on it.
        let crash_at = Instant::now() + Duration::from_millis(300);
        let storm: Vec<_> = (0..12)
            .map(|i| {
                let (jobs, deadline) = (jobs.clone(), deadline.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    while outcomes.len() < 8 {
                        let began = Instant::now();
                        let r = jobs.call_with(Job::Sleep(100 + i), deadline.clone()).await;
                        outcomes.push((began, began.elapsed(), r));
                    }
                    outcomes
                })
            })
            .collect();
        tokio::time::sleep_until(crash_at.into()).await;
        n1.crash();
        let crashed = Instant::now();

        let mut lost = 0;
        let mut ok = 0;
        for task in storm {
            for (began, took, r) in task.await.unwrap() {
                match r {
                    Ok(_) => ok += 1,
                    Err(CallError::NodeLost { node, .. }) => {
                        assert_eq!(node, "n1");
                        // Never a hang: lost as soon as the node went.
                        assert!(took < Duration::from_secs(2), "NodeLost after {took:?}");
                        assert!(
                            began < crashed + Duration::from_millis(200),
                            "a call begun {:?} after the crash still went to n1",
                            began.saturating_duration_since(crashed)
                        );
                        lost += 1;
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
        }
        assert!(lost >= 1, "no call was under way on n1 when it died");
        assert_eq!(ok + lost, 96);
        let n1_view = remote.nodes("jobs").into_iter().find(|n| n.node == "n1");
        assert!(
            n1_view.is_some_and(|n| !n.callable),
            "the lost node is still callable"
        );

        // With retries, every call succeeds (the dead node's endpoint is
        // still published: it is the ejection that keeps calls away).
        let retry = RemoteRetry::new(3);
        let all = futures::future::join_all(
            (0..30).map(|_| jobs.call_retry(Job::Sleep(5), deadline.clone(), &retry)),
        )
        .await;
        for r in all {
            assert_ne!(r.unwrap(), "n1");
        }
        for node in others {
            node.shutdown().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_another_node() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let mut n1 = Doomed::start(&registry, "n1").await;
        let n2 = serve_jobs(as_node(&registry, "n2"), job_pool("n2", 1).await).await;
        let jobs = caller(&registry).await.pool::<Job, String>("jobs");
        n1.crash();
        // Each call either lands on n2 at once, or fails on n1 and is
        // retried on n2 (never on n1 again).
        let retry = RemoteRetry::new(2);
        for _ in 0..10 {
            let answer = jobs
                .call_retry(Job::Whoami, CallOptions::default(), &retry)
                .await
                .unwrap();
            assert_eq!(answer, "n2");
        }
        // A worker's own error is not retried.
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = calls.clone();
        let policy = RemoteRetry::new(5).retry_if(move |e| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            e.is_transient()
        });
        let err = jobs
            .call_retry(Job::Fail("no".into()), CallOptions::default(), &policy)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Worker { .. }));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        n2.shutdown().await;
    })
    .await
    .expect("test timed out");
}
