//! One suite, two backends: every `Registry` behaves the same whether it is
//! the in-process `LocalRegistry` or an `EtcdRegistry` on a real etcd.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cenote_core::{
    PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId, WorkerState,
};
use futures::StreamExt;

fn pool(name: &str) -> PoolEntry {
    PoolEntry {
        name: name.into(),
        node: "n1".into(),
        idle_strategy: "lifo".into(),
        wait_strategy: "fifo".into(),
        size: 4,
        max_overflow: 1,
    }
}

fn worker(pool: &str, id: u64, state: WorkerState) -> WorkerEntry {
    WorkerEntry {
        pool: pool.into(),
        id: WorkerId(id),
        node: "n1".into(),
        pid: Some(1000 + id as u32),
        state,
        started_at_ms: 1_700_000_000_000,
        tasks_served: id * 10,
    }
}

async fn register_list_unregister(reg: Arc<dyn Registry>) {
    reg.register_pool(pool("b")).await.unwrap();
    reg.register_pool(pool("a")).await.unwrap();
    let names: Vec<_> = reg
        .pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        reg.pools().await.unwrap()[0],
        pool("a"),
        "entry changed on the way"
    );
    reg.unregister_pool("a").await.unwrap();
    let names: Vec<_> = reg
        .pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["b"]);
    // Once gone, the name can be taken again.
    reg.register_pool(pool("a")).await.unwrap();
}

async fn a_name_is_registered_once(reg: Arc<dyn Registry>) {
    reg.register_pool(pool("x")).await.unwrap();
    let mut other = pool("x");
    other.size = 99;
    assert_eq!(
        reg.register_pool(other).await,
        Err(RegistryError::Duplicate("x".into()))
    );
    assert_eq!(
        reg.pools().await.unwrap()[0].size,
        4,
        "the first registration was overwritten"
    );
}

async fn concurrent_registration_has_one_winner(reg: Arc<dyn Registry>) {
    let attempts = (0..16).map(|i| {
        let reg = Arc::clone(&reg);
        tokio::spawn(async move {
            let mut p = pool("contested");
            p.size = i;
            reg.register_pool(p).await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    let dups = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(RegistryError::Duplicate(_)))))
        .count();
    assert_eq!((wins, dups), (1, 15));
}

async fn workers_are_written_replaced_sorted_and_removed(reg: Arc<dyn Registry>) {
    reg.register_pool(pool("p")).await.unwrap();
    for id in [3, 1, 2] {
        reg.put_worker(worker("p", id, WorkerState::Starting))
            .await
            .unwrap();
    }
    reg.put_worker(worker("p", 2, WorkerState::Ready))
        .await
        .unwrap();
    let ws = reg.workers("p").await.unwrap();
    assert_eq!(ws.iter().map(|w| w.id.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(ws[1], worker("p", 2, WorkerState::Ready));
    reg.remove_worker("p", WorkerId(1)).await.unwrap();
    reg.remove_worker("p", WorkerId(1)).await.unwrap();
    assert_eq!(reg.workers("p").await.unwrap().len(), 2);
    assert!(reg.workers("nobody").await.unwrap().is_empty());
    reg.unregister_pool("p").await.unwrap();
    assert!(
        reg.workers("p").await.unwrap().is_empty(),
        "workers outlived their pool"
    );
}

async fn watch_sees_every_kind_of_change(reg: Arc<dyn Registry>) {
    let mut events = reg.watch();
    // Give a remote watch time to be established before the writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reg.register_pool(pool("w")).await.unwrap();
    reg.put_worker(worker("w", 7, WorkerState::Ready))
        .await
        .unwrap();
    reg.remove_worker("w", WorkerId(7)).await.unwrap();
    reg.put_worker(worker("w", 8, WorkerState::Ready))
        .await
        .unwrap();
    reg.unregister_pool("w").await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 6 {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(e)) => seen.push(e),
            _ => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            RegistryEvent::PoolUp(pool("w")),
            RegistryEvent::WorkerUp(worker("w", 7, WorkerState::Ready)),
            RegistryEvent::WorkerDown {
                pool: "w".into(),
                id: WorkerId(7)
            },
            RegistryEvent::WorkerUp(worker("w", 8, WorkerState::Ready)),
            RegistryEvent::WorkerDown {
                pool: "w".into(),
                id: WorkerId(8)
            },
            RegistryEvent::PoolDown { name: "w".into() },
        ]
    );
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $make; register_list_unregister, a_name_is_registered_once,
                concurrent_registration_has_one_winner, workers_are_written_replaced_sorted_and_removed,
                watch_sees_every_kind_of_change);
        }
    };
    (@tests $make:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                // The server (if any) lives until the test ends.
                let (reg, _server) = $make;
                super::$test(reg).await;
            }
        )*
    };
}

conformance!(
    local,
    (
        Arc::new(cenote_registry::LocalRegistry::new("n1")) as Arc<dyn Registry>,
        ()
    )
);

#[cfg(feature = "etcd")]
conformance!(etcd, {
    let server = common::EtcdServer::start();
    let reg = cenote_registry::EtcdRegistry::builder([server.url.clone()])
        .node("n1")
        .prefix("/conformance")
        .connect()
        .await
        .expect("connect to the test etcd");
    (Arc::new(reg) as Arc<dyn Registry>, server)
});
