//! A pool keeps its registry entries itself: it registers on build (a taken
//! name fails the build), writes each worker as it starts and becomes ready,
//! removes it when it ends, and leaves the registry on close — through the
//! `Registry` trait only, so the same test runs on a real etcd too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cenote::registry::{RegistryError, WorkerState};
use cenote::{BuildError, Registry};
use cenote_testkit::eventually_async;
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
    assert!(
        eventually_async(
            SETTLE,
            || async move { ready_ids(r, "kept").await.len() == 2 }
        )
        .await
    );

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
        eventually_async(SETTLE, || async move {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_local_registry() {
    pool_keeps_its_entries(Arc::new(cenote::registry::LocalRegistry::new("here"))).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd() {
    let server = cenote_testkit::EtcdServer::start();
    let reg = cenote::registry::EtcdRegistry::builder([server.url.clone()])
        .node("here")
        .connect()
        .await
        .expect("connect to the test etcd");
    pool_keeps_its_entries(Arc::new(reg)).await;
}
