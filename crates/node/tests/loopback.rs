//! One process, real gRPC on loopback: a node serves a pool, a caller finds
//! it through a shared in-process registry and calls it. Every error of the
//! pool comes back typed; the deadline crosses as the time left and the node
//! enforces it too; load is published on change and only then; a clean
//! shutdown withdraws the node's endpoints.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote_core::{CallOptions, EndpointEntry, Load, Pool, Registry, RegistryError, RegistryEvent};
use cenote_node::{CallError, Remote};
use cenote_registry::LocalRegistry;
use common::*;
use futures::StreamExt;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Every event that arrives within `within`.
async fn drain(
    events: &mut futures::stream::BoxStream<'static, RegistryEvent>,
    within: Duration,
) -> Vec<RegistryEvent> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + within;
    while let Ok(Some(e)) = tokio::time::timeout_at(end, events.next()).await {
        seen.push(e);
    }
    seen
}

async fn caller(registry: &LocalRegistry) -> Remote {
    Remote::builder(as_node(registry, "caller"))
        .token("test-token")
        .connect()
        .await
        .expect("connect the caller")
}

fn opts(checkout_ms: u64, call_ms: u64) -> CallOptions {
    CallOptions::default()
        .checkout_timeout(Duration::from_millis(checkout_ms))
        .timeout(Duration::from_millis(call_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_node_and_come_back() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let node = serve_jobs(as_node(&registry, "n1"), job_pool("n1", 2).await).await;
        let remote = caller(&registry).await;
        let jobs = remote.pool::<Job, String>("jobs");

        assert_eq!(jobs.call(Job::Echo("héllo".into())).await.unwrap(), "héllo");
        let answered = jobs
            .call_answered(Job::Whoami, CallOptions::default())
            .await
            .unwrap();
        assert_eq!(
            (answered.value.as_str(), answered.node.as_str()),
            ("n1", "n1")
        );
        // Pinned to the node by name.
        assert_eq!(jobs.on_node("n1").call(Job::Whoami).await.unwrap(), "n1");
        assert!(matches!(
            jobs.on_node("n9").call(Job::Whoami).await,
            Err(CallError::NoNode { reason, .. }) if reason.contains("n9")
        ));
        // Many concurrent calls over the one connection.
        let all =
            futures::future::join_all((0..50).map(|i| jobs.call(Job::Echo(i.to_string())))).await;
        for (i, r) in all.into_iter().enumerate() {
            assert_eq!(r.unwrap(), i.to_string());
        }
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_errors_come_back_typed_with_their_kind() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let pool = job_pool("n1", 1).await;
        let node = serve_jobs(as_node(&registry, "n1"), pool.clone()).await;
        let jobs = caller(&registry).await.pool::<Job, String>("jobs");

        let err = jobs
            .call(Job::Fail("no such model".into()))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            CallError::Worker {
                kind: "Failed".into(),
                message: "no such model".into()
            }
        );
        let err = jobs.call(Job::Crash).await.unwrap_err();
        assert!(
            matches!(&err, CallError::Crashed { kind, .. } if kind == "Crashed"),
            "{err:?}"
        );
        // The crashed worker was replaced; the node serves on.
        assert_eq!(jobs.call(Job::Whoami).await.unwrap(), "n1");
        assert!(pool.status().totals.crashes >= 1);

        // A response type that does not fit is the caller's typed error.
        let wrong = caller(&registry).await.pool::<Job, u64>("jobs");
        assert!(matches!(
            wrong.call(Job::Echo("x".into())).await,
            Err(CallError::BadResponse { .. })
        ));
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_crosses_as_time_left_and_the_node_enforces_it() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let pool = job_pool("n1", 1).await;
        let node = serve_jobs(as_node(&registry, "n1"), pool.clone()).await;
        let jobs = caller(&registry).await.pool::<Job, String>("jobs");

        // 50 ms to check out + 200 ms to run: the call is over at 250 ms.
        let began = Instant::now();
        let err = jobs.call_with(Job::Sleep(5_000), opts(50, 200)).await.unwrap_err();
        let took = began.elapsed();
        assert!(matches!(err, CallError::CallTimeout { .. }), "{err:?}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(1_500),
            "timed out after {took:?}"
        );
        // The node cut the call off too: its worker was killed, not left
        // sleeping for 5 s.
        assert!(
            eventually_async(Duration::from_secs(2), || async {
                pool.status().totals.call_timeouts == 1
            })
            .await,
            "the node did not enforce the deadline: {:?}",
            pool.status().totals
        );

        // Waiting for a worker is bounded by the checkout timeout, and
        // says so.
        let hog = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.call_with(Job::Sleep(800), opts(1_000, 2_000)).await }
        });
        assert!(eventually_async(Duration::from_secs(2), || async { pool.load().busy == 1 }).await);
        let began = Instant::now();
        let err = jobs.call_with(Job::Whoami, opts(100, 1_000)).await.unwrap_err();
        assert!(
            matches!(err, CallError::CheckoutTimeout { waited, .. } if waited >= Duration::from_millis(90)),
            "{err:?}"
        );
        assert!(began.elapsed() < Duration::from_millis(700));
        assert_eq!(hog.await.unwrap().unwrap(), "n1");
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_and_closed_pools_say_so() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let pool: JobPool = Pool::builder(Jobs { node: "n1".into() })
            .size(1)
            .max_waiters(0)
            .build()
            .await
            .unwrap();
        let node = serve_jobs(as_node(&registry, "n1"), pool.clone()).await;
        let jobs = caller(&registry).await.pool::<Job, String>("jobs");

        let hog = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.call(Job::Sleep(500)).await }
        });
        assert!(eventually_async(Duration::from_secs(2), || async { pool.load().busy == 1 }).await);
        assert_eq!(
            jobs.call(Job::Whoami).await.unwrap_err(),
            CallError::Saturated { waiting: 0 }
        );
        hog.await.unwrap().unwrap();

        pool.close().await;
        assert_eq!(jobs.call(Job::Whoami).await.unwrap_err(), CallError::Closed);
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_the_node_does_not_serve_is_unknown_pool() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let node = serve_jobs(as_node(&registry, "n1"), job_pool("n1", 1).await).await;
        // A stale or forged entry says n1 serves "ghost".
        registry
            .put_endpoint(EndpointEntry {
                service: "ghost".into(),
                node: "n1".into(),
                addr: node.url().into(),
                load: Load::default(),
            })
            .await
            .unwrap();
        let remote = caller(&registry).await;
        let err = remote.pool::<Job, String>("ghost").call(Job::Whoami).await;
        assert_eq!(
            err.unwrap_err(),
            CallError::UnknownPool {
                pool: "ghost".into(),
                node: "n1".into()
            }
        );
        let err = remote.pool::<Job, String>("nobody").call(Job::Whoami).await;
        assert!(matches!(err, Err(CallError::NoNode { pool, .. }) if pool == "nobody"));
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_published_on_change_rate_limited_and_a_quiet_pool_writes_nothing() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let mut events = registry.watch();
        let pool = job_pool("n1", 2).await;
        let node = jobs_node(as_node(&registry, "n1"), pool.clone())
            .load_interval(Duration::from_millis(200))
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let jobs = caller(&registry).await.pool::<Job, String>("jobs");
        let endpoint_ups = |events: Vec<RegistryEvent>| -> Vec<Load> {
            events
                .into_iter()
                .filter_map(|e| match e {
                    RegistryEvent::EndpointUp(e) => Some(e.load),
                    _ => None,
                })
                .collect()
        };
        // Published once at start, with the pool's load.
        let first = endpoint_ups(drain(&mut events, Duration::from_millis(300)).await);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].live, 2);

        // Quiet: no writes at all (the idle check runs every second).
        let quiet = endpoint_ups(drain(&mut events, Duration::from_millis(2_500)).await);
        assert!(quiet.is_empty(), "a quiet pool wrote {quiet:?}");

        // Busy for a second: writes go out, at most one per 200 ms, and the
        // last one shows the pool at rest again.
        let storm = async {
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                let batch = (0..4).map(|_| jobs.call(Job::Sleep(10)));
                for r in futures::future::join_all(batch).await {
                    r.unwrap();
                }
            }
        };
        let (_, busy) = tokio::join!(storm, drain(&mut events, Duration::from_millis(1_800)));
        let busy = endpoint_ups(busy);
        assert!(busy.len() >= 2, "a busy pool published {busy:?}");
        assert!(
            busy.len() <= 1_800 / 200 + 2,
            "{} writes in 1.8 s at one per 200 ms",
            busy.len()
        );
        assert!(busy.iter().any(|l| l.busy > 0 || l.waiting > 0), "{busy:?}");
        assert_eq!(
            busy.last().map(|l| (l.idle, l.busy, l.waiting)),
            Some((2, 0, 0))
        );
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_withdraws_the_endpoints_and_callers_stop_choosing_the_node() {
    tokio::time::timeout(TEST_LIMIT, async {
        let registry = LocalRegistry::new("-");
        let node = serve_jobs(as_node(&registry, "n1"), job_pool("n1", 1).await).await;
        let remote = caller(&registry).await;
        let jobs = remote.pool::<Job, String>("jobs");
        assert_eq!(jobs.call(Job::Whoami).await.unwrap(), "n1");
        assert_eq!(remote.nodes("jobs").len(), 1);

        let began = Instant::now();
        node.shutdown().await;
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "shutdown took {:?}",
            began.elapsed()
        );
        assert!(registry.endpoints().await.unwrap().is_empty());
        assert!(
            eventually_async(Duration::from_secs(2), || async {
                remote.nodes("jobs").is_empty()
            })
            .await
        );
        assert!(matches!(
            jobs.call(Job::Whoami).await,
            Err(CallError::NoNode { .. })
        ));
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_pools_or_with_twice_the_same_name_does_not_start() {
    let registry = LocalRegistry::new("-");
    let empty = cenote_node::Node::builder(Arc::new(registry.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await;
    assert!(matches!(empty, Err(cenote_node::NodeError::NoPools)));
    let pool = job_pool("n1", 1).await;
    let twice = jobs_node(as_node(&registry, "n1"), pool.clone())
        .pool::<Job>("jobs", pool)
        .serve("127.0.0.1:0".parse().unwrap())
        .await;
    assert!(matches!(twice, Err(cenote_node::NodeError::DuplicatePool(n)) if n == "jobs"));
    assert!(
        registry.endpoints().await.unwrap().is_empty(),
        "a node that did not start published"
    );
    let unspecified = jobs_node(as_node(&registry, "n1"), job_pool("n1", 1).await)
        .serve("0.0.0.0:0".parse().unwrap())
        .await;
    assert!(matches!(
        unspecified,
        Err(cenote_node::NodeError::Address(_))
    ));
}

/// A registry that refuses endpoints of one service.
struct Refusing {
    inner: LocalRegistry,
    service: &'static str,
}

#[async_trait::async_trait]
impl Registry for Refusing {
    fn node(&self) -> &str {
        self.inner.node()
    }
    async fn register_pool(&self, e: cenote_core::PoolEntry) -> Result<(), RegistryError> {
        self.inner.register_pool(e).await
    }
    async fn unregister_pool(&self, name: &str) -> Result<(), RegistryError> {
        self.inner.unregister_pool(name).await
    }
    async fn put_worker(&self, e: cenote_core::WorkerEntry) -> Result<(), RegistryError> {
        self.inner.put_worker(e).await
    }
    async fn remove_worker(
        &self,
        pool: &str,
        id: cenote_core::WorkerId,
    ) -> Result<(), RegistryError> {
        self.inner.remove_worker(pool, id).await
    }
    async fn pools(&self) -> Result<Vec<cenote_core::PoolEntry>, RegistryError> {
        self.inner.pools().await
    }
    async fn workers(&self, pool: &str) -> Result<Vec<cenote_core::WorkerEntry>, RegistryError> {
        self.inner.workers(pool).await
    }
    async fn put_endpoint(&self, e: EndpointEntry) -> Result<(), RegistryError> {
        if e.service == self.service {
            return Err(RegistryError::Unavailable("refused by the test".into()));
        }
        self.inner.put_endpoint(e).await
    }
    async fn remove_endpoint(&self, service: &str, node: &str) -> Result<(), RegistryError> {
        self.inner.remove_endpoint(service, node).await
    }
    async fn endpoints(&self) -> Result<Vec<EndpointEntry>, RegistryError> {
        self.inner.endpoints().await
    }
    fn watch(&self) -> futures::stream::BoxStream<'static, RegistryEvent> {
        self.inner.watch()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_endpoints_are_refused_does_not_start_and_leaves_nothing_behind() {
    let registry = LocalRegistry::new("-");
    for refused in ["a", "b"] {
        let result = cenote_node::Node::builder(Arc::new(Refusing {
            inner: registry.as_node("n1"),
            service: refused,
        }))
        .pool::<Job>("a", job_pool("n1", 1).await)
        .pool::<Job>("b", job_pool("n1", 1).await)
        .serve("127.0.0.1:0".parse().unwrap())
        .await;
        assert!(
            matches!(
                result,
                Err(cenote_node::NodeError::Registry(
                    RegistryError::Unavailable(_)
                ))
            ),
            "refusing {refused}"
        );
        assert!(
            registry.endpoints().await.unwrap().is_empty(),
            "refusing {refused}: an endpoint was left behind"
        );
    }
}
