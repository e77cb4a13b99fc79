//! A pool keeps its registry entries itself: it registers on build (a taken
//! name fails the build), writes each worker as it starts and becomes ready,
//! removes it when it ends, and leaves the registry on close — through the
//! `Registry` trait only, so the same test runs on a real etcd too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cenote::registry::{RegistryError, WorkerState};
use cenote::{BuildError, Registry};
use common::*;

const SETTLE: Duration = Duration::from_secs(10);

async fn ready_ids(reg: &Arc<dyn Registry>, pool: &str) -> Vec<u64> {
    reg.workers(pool)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.state == WorkerState::Ready)
        .map(|w| w.id.0)
        .collect()
}

async fn pool_keeps_its_entries(reg: Arc<dyn Registry>) {
    let f = TestFactory::default();
    let pool = builder(f.clone(), 2)
        .name("kept")
        .registry(Arc::clone(&reg))
        .build()
        .await
        .unwrap();
    let entry = reg
        .pools()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "kept")
        .expect("pool not registered");
    assert_eq!(
        (
            entry.size,
            entry.idle_strategy.as_str(),
            entry.wait_strategy.as_str()
        ),
        (2, "lifo", "fifo")
    );
    let r = &reg;
    assert!(eventually_async(|| async move { ready_ids(r, "kept").await.len() == 2 }).await);

    // A second pool under the same name is refused, not overwritten.
    let dup = builder(TestFactory::default(), 1)
        .name("kept")
        .registry(Arc::clone(&reg))
        .build()
        .await;
    assert!(
        matches!(dup, Err(BuildError::Registry(RegistryError::Duplicate(_)))),
        "{dup:?}"
    );

    // A crashed worker leaves the registry; its replacement joins.
    let before = ready_ids(&reg, "kept").await;
    let _ = pool.call(Op::Crash).await;
    let before = &before;
    assert!(
        eventually_async(|| async move {
            let now = ready_ids(r, "kept").await;
            now.len() == 2 && now != *before
        })
        .await,
        "registry did not follow the replacement: {:?}",
        reg.workers("kept").await
    );

    pool.close().await;
    assert!(
        reg.pools().await.unwrap().iter().all(|p| p.name != "kept"),
        "pool still registered after close"
    );
    assert!(
        reg.workers("kept").await.unwrap().is_empty(),
        "workers still registered after close"
    );
    assert_eq!(f.book.alive(), 0);
}

async fn eventually_async<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_local_registry() {
    pool_keeps_its_entries(Arc::new(cenote::registry::LocalRegistry::new("here"))).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd() {
    let server = etcd::Server::start();
    let reg = cenote::registry::EtcdRegistry::builder([server.url.clone()])
        .node("here")
        .connect()
        .await
        .expect("connect to the test etcd");
    pool_keeps_its_entries(Arc::new(reg)).await;
}

#[cfg(feature = "etcd")]
#[path = "../crates/registry/tests/common/mod.rs"]
mod etcd_harness;

#[cfg(feature = "etcd")]
mod etcd {
    pub use super::etcd_harness::EtcdServer as Server;
}
