//! etcd across nodes: two registries see each other; a dead node's entries
//! expire with its lease; a registry survives etcd restarting under it.
#![cfg(feature = "etcd")]

mod common;

use std::time::Duration;

use cenote_core::{PoolEntry, Registry, RegistryEvent, WorkerEntry, WorkerId, WorkerState};
use cenote_registry::EtcdRegistry;
use common::{alive, eventually, EtcdServer};
use futures::StreamExt;

fn pool(name: &str, node: &str) -> PoolEntry {
    PoolEntry {
        name: name.into(),
        node: node.into(),
        idle_strategy: "lifo".into(),
        wait_strategy: "priority".into(),
        size: 2,
        max_overflow: 0,
    }
}

async fn node(server: &EtcdServer, name: &str, ttl: Duration) -> EtcdRegistry {
    EtcdRegistry::builder([server.url.clone()])
        .node(name)
        .prefix("/nodes")
        .lease_ttl(ttl)
        .op_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the test etcd")
}

async fn pool_names(reg: &EtcdRegistry) -> Vec<String> {
    reg.pools()
        .await
        .map(|ps| ps.into_iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

/// Wait for the first event matching `want` on `events`.
async fn expect_event(
    events: &mut (impl futures::Stream<Item = RegistryEvent> + Unpin),
    limit: Duration,
    want: impl Fn(&RegistryEvent) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
        if want(&e) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_others_pools() {
    let server = EtcdServer::start();
    let a = node(&server, "a", Duration::from_secs(10)).await;
    let b = node(&server, "b", Duration::from_secs(10)).await;
    let mut seen_by_b = b.watch();
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.register_pool(pool("embed", "a")).await.unwrap();
    assert!(
        expect_event(
            &mut seen_by_b,
            Duration::from_secs(5),
            |e| matches!(e, RegistryEvent::PoolUp(p) if p.name == "embed" && p.node == "a")
        )
        .await
    );
    assert_eq!(pool_names(&b).await, ["embed"]);
    // Names are global: b cannot take a's name.
    assert!(b.register_pool(pool("embed", "b")).await.is_err());

    a.unregister_pool("embed").await.unwrap();
    assert!(
        expect_event(
            &mut seen_by_b,
            Duration::from_secs(5),
            |e| matches!(e, RegistryEvent::PoolDown { name } if name == "embed")
        )
        .await
    );
    assert!(pool_names(&b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_entries_expire_with_its_lease() {
    let server = EtcdServer::start();
    let survivor = node(&server, "survivor", Duration::from_secs(10)).await;
    let url = server.url.clone();
    // The doomed node runs on its own runtime, which is torn down without
    // any chance to unregister or revoke: as if its process died.
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let reg = EtcdRegistry::builder([url])
                .node("doomed")
                .prefix("/nodes")
                .lease_ttl(Duration::from_secs(2))
                .connect()
                .await
                .unwrap();
            reg.register_pool(pool("doomed-pool", "doomed"))
                .await
                .unwrap();
            reg.put_worker(WorkerEntry {
                pool: "doomed-pool".into(),
                id: WorkerId(1),
                node: "doomed".into(),
                pid: Some(4242),
                state: WorkerState::Ready,
                started_at_ms: 0,
                tasks_served: 0,
            })
            .await
            .unwrap();
            std::mem::forget(reg);
        });
        rt.shutdown_background();
    });
    doomed.join().unwrap();
    assert_eq!(pool_names(&survivor).await, ["doomed-pool"]);
    let began = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            pool_names(&survivor).await.is_empty()
        })
        .await,
        "a dead node's pool outlived its lease"
    );
    assert!(survivor.workers("doomed-pool").await.unwrap().is_empty());
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "entries vanished before the lease could expire"
    );
}

async fn restart_under_a_live_registry(fresh_data: bool) {
    let mut server = EtcdServer::start();
    let reg = node(&server, "steady", Duration::from_secs(2)).await;
    let mut events = reg.watch();
    reg.register_pool(pool("kept", "steady")).await.unwrap();
    reg.put_worker(WorkerEntry {
        pool: "kept".into(),
        id: WorkerId(3),
        node: "steady".into(),
        pid: Some(7),
        state: WorkerState::Ready,
        started_at_ms: 0,
        tasks_served: 5,
    })
    .await
    .unwrap();
    let first_pid = server.pid().unwrap();

    server.stop();
    assert!(!alive(first_pid), "etcd did not stop");
    assert!(
        expect_event(&mut events, Duration::from_secs(15), |e| matches!(
            e,
            RegistryEvent::Disconnected { .. }
        ))
        .await,
        "outage not reported"
    );
    assert!(
        reg.pools().await.is_err(),
        "a call with etcd down must fail, not hang"
    );

    server.restart(fresh_data);
    assert!(
        expect_event(&mut events, Duration::from_secs(20), |e| *e
            == RegistryEvent::Reconnected)
        .await,
        "no reconnection"
    );
    assert_eq!(pool_names(&reg).await, ["kept"]);
    let workers = reg.workers("kept").await.unwrap();
    assert_eq!(
        workers
            .iter()
            .map(|w| (w.id, w.tasks_served))
            .collect::<Vec<_>>(),
        [(WorkerId(3), 5)]
    );
    // The new lease holds: the entries outlive the old lease's TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pool_names(&reg).await, ["kept"]);
    reg.shutdown().await.unwrap();
    let pid = server.pid().unwrap();
    drop(server);
    assert!(!alive(pid), "etcd outlived its test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarting_with_its_data_is_survived() {
    restart_under_a_live_registry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarting_empty_gets_everything_written_again() {
    restart_under_a_live_registry(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_a_clear_error_not_a_hang() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let began = std::time::Instant::now();
    let err = EtcdRegistry::builder([format!("http://127.0.0.1:{port}")])
        .op_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("etcd at"), "{err}");
}
