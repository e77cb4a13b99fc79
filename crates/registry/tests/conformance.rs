//! One suite, two backends: every `Registry` behaves the same whether it is
//! the in-process `LocalRegistry` or an `EtcdRegistry` on a real etcd (run
//! with `--features etcd`; the etcd half needs the `etcd` binary).

use std::sync::Arc;
use std::time::Duration;

use cenote_core::{
    EndpointEntry, Load, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId,
    WorkerState,
};
use futures::StreamExt;

/// Every wait for an event has this deadline.
const EVENT_WAIT: Duration = Duration::from_secs(10);

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

fn endpoint(service: &str, node: &str, idle: usize) -> EndpointEntry {
    EndpointEntry {
        service: service.into(),
        node: node.into(),
        addr: format!("http://{node}.invalid:7400"),
        load: Load {
            idle,
            busy: 1,
            waiting: 2,
            live: idle + 1,
        },
    }
}

fn endpoint_keys(list: &[EndpointEntry]) -> Vec<(&str, &str)> {
    list.iter()
        .map(|e| (e.service.as_str(), e.node.as_str()))
        .collect()
}

async fn names(reg: &Arc<dyn Registry>) -> Vec<String> {
    reg.pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// The next `n` events, or as many as arrive before the deadline.
async fn next_events(
    events: &mut (impl futures::Stream<Item = RegistryEvent> + Unpin),
    n: usize,
) -> Vec<RegistryEvent> {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    let mut seen = Vec::new();
    while seen.len() < n {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(e)) => seen.push(e),
            _ => break,
        }
    }
    seen
}

async fn register_list_unregister(reg: Arc<dyn Registry>) {
    assert!(reg.pools().await.unwrap().is_empty());
    reg.register_pool(pool("b")).await.unwrap();
    reg.register_pool(pool("a")).await.unwrap();
    assert_eq!(names(&reg).await, ["a", "b"], "pools are listed by name");
    assert_eq!(
        reg.pools().await.unwrap()[0],
        pool("a"),
        "entry changed on the way"
    );
    reg.unregister_pool("a").await.unwrap();
    assert_eq!(names(&reg).await, ["b"]);
    // Unregistering what is not there is not an error.
    reg.unregister_pool("a").await.unwrap();
    reg.unregister_pool("never-was").await.unwrap();
    // Once gone, the name can be taken again.
    reg.register_pool(pool("a")).await.unwrap();
    assert_eq!(names(&reg).await, ["a", "b"]);
}

async fn a_name_is_registered_once(reg: Arc<dyn Registry>) {
    reg.register_pool(pool("x")).await.unwrap();
    let mut other = pool("x");
    other.size = 99;
    other.node = "n2".into();
    let err = reg.register_pool(other).await.unwrap_err();
    assert_eq!(err, RegistryError::Duplicate("x".into()));
    assert!(err.to_string().contains("already registered"), "{err}");
    assert_eq!(
        reg.pools().await.unwrap(),
        [pool("x")],
        "the first registration was overwritten"
    );
}

async fn concurrent_registration_has_one_winner(reg: Arc<dyn Registry>) {
    let attempts = (0..16).map(|i| {
        let reg = Arc::clone(&reg);
        tokio::spawn(async move {
            let mut p = pool("contested");
            p.size = i;
            reg.register_pool(p).await.map(|()| i)
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("registration task panicked"))
        .collect();
    let winners: Vec<usize> = results.iter().filter_map(|r| r.clone().ok()).collect();
    let dups = results
        .iter()
        .filter(|r| matches!(r, Err(RegistryError::Duplicate(n)) if n == "contested"))
        .count();
    assert_eq!((winners.len(), dups), (1, 15), "{results:?}");
    // The stored entry is the winner's.
    assert_eq!(reg.pools().await.unwrap()[0].size, winners[0]);
}

async fn workers_are_written_replaced_sorted_and_removed(reg: Arc<dyn Registry>) {
    reg.register_pool(pool("p")).await.unwrap();
    for id in [3, 1, 12, 2] {
        reg.put_worker(worker("p", id, WorkerState::Starting))
            .await
            .unwrap();
    }
    reg.put_worker(worker("p", 2, WorkerState::Ready))
        .await
        .unwrap();
    let ws = reg.workers("p").await.unwrap();
    assert_eq!(
        ws.iter().map(|w| w.id.0).collect::<Vec<_>>(),
        [1, 2, 3, 12],
        "workers are sorted by id (numerically)"
    );
    assert_eq!(ws[1], worker("p", 2, WorkerState::Ready), "a put replaces");
    assert_eq!(ws[0], worker("p", 1, WorkerState::Starting));
    reg.remove_worker("p", WorkerId(1)).await.unwrap();
    // Removing what is absent is not an error.
    reg.remove_worker("p", WorkerId(1)).await.unwrap();
    reg.remove_worker("nobody", WorkerId(1)).await.unwrap();
    assert_eq!(
        reg.workers("p")
            .await
            .unwrap()
            .iter()
            .map(|w| w.id.0)
            .collect::<Vec<_>>(),
        [2, 3, 12]
    );
    assert!(reg.workers("nobody").await.unwrap().is_empty());
}

async fn unregistering_a_pool_removes_its_workers(reg: Arc<dyn Registry>) {
    reg.register_pool(pool("p")).await.unwrap();
    reg.register_pool(pool("q")).await.unwrap();
    for id in 1..=3 {
        reg.put_worker(worker("p", id, WorkerState::Ready))
            .await
            .unwrap();
        reg.put_worker(worker("q", id, WorkerState::Ready))
            .await
            .unwrap();
    }
    reg.unregister_pool("p").await.unwrap();
    assert!(
        reg.workers("p").await.unwrap().is_empty(),
        "workers outlived their pool"
    );
    assert_eq!(
        reg.workers("q").await.unwrap().len(),
        3,
        "another pool's workers went too"
    );
    // A new pool of the same name starts with no workers.
    reg.register_pool(pool("p")).await.unwrap();
    assert!(reg.workers("p").await.unwrap().is_empty());
}

async fn names_that_look_like_paths_stay_apart(reg: Arc<dyn Registry>) {
    for name in ["team", "team/a", "team/a/b", "100%", "team%2Fa"] {
        reg.register_pool(pool(name)).await.unwrap();
        reg.put_worker(worker(name, 1, WorkerState::Ready))
            .await
            .unwrap();
    }
    assert_eq!(
        names(&reg).await,
        ["100%", "team", "team%2Fa", "team/a", "team/a/b"]
    );
    for name in ["team", "team/a", "team/a/b", "100%", "team%2Fa"] {
        let ws = reg.workers(name).await.unwrap();
        assert_eq!(ws.len(), 1, "{name:?} sees {ws:?}");
        assert_eq!(ws[0].pool, name);
    }
    reg.unregister_pool("team").await.unwrap();
    assert_eq!(reg.workers("team/a").await.unwrap().len(), 1);
    assert_eq!(
        names(&reg).await,
        ["100%", "team%2Fa", "team/a", "team/a/b"]
    );
}

async fn watch_sees_every_kind_of_change(reg: Arc<dyn Registry>) {
    let mut events = reg.watch();
    reg.register_pool(pool("w")).await.unwrap();
    reg.put_worker(worker("w", 7, WorkerState::Starting))
        .await
        .unwrap();
    reg.put_worker(worker("w", 7, WorkerState::Ready))
        .await
        .unwrap();
    reg.remove_worker("w", WorkerId(7)).await.unwrap();
    reg.put_worker(worker("w", 8, WorkerState::Ready))
        .await
        .unwrap();
    reg.put_worker(worker("w", 9, WorkerState::Ready))
        .await
        .unwrap();
    reg.unregister_pool("w").await.unwrap();
    let seen = next_events(&mut events, 9).await;
    assert_eq!(
        seen,
        vec![
            RegistryEvent::PoolUp(pool("w")),
            RegistryEvent::WorkerUp(worker("w", 7, WorkerState::Starting)),
            RegistryEvent::WorkerUp(worker("w", 7, WorkerState::Ready)),
            RegistryEvent::WorkerDown {
                pool: "w".into(),
                id: WorkerId(7)
            },
            RegistryEvent::WorkerUp(worker("w", 8, WorkerState::Ready)),
            RegistryEvent::WorkerUp(worker("w", 9, WorkerState::Ready)),
            RegistryEvent::WorkerDown {
                pool: "w".into(),
                id: WorkerId(8)
            },
            RegistryEvent::WorkerDown {
                pool: "w".into(),
                id: WorkerId(9)
            },
            RegistryEvent::PoolDown { name: "w".into() },
        ]
    );
    // A failed registration changes nothing, so it is not an event.
    reg.register_pool(pool("v")).await.unwrap();
    assert!(reg.register_pool(pool("v")).await.is_err());
    reg.unregister_pool("v").await.unwrap();
    assert_eq!(
        next_events(&mut events, 2).await,
        [
            RegistryEvent::PoolUp(pool("v")),
            RegistryEvent::PoolDown { name: "v".into() }
        ]
    );
}

async fn every_watcher_sees_every_change(reg: Arc<dyn Registry>) {
    let mut first = reg.watch();
    let mut second = reg.watch();
    reg.register_pool(pool("shared")).await.unwrap();
    let want = vec![RegistryEvent::PoolUp(pool("shared"))];
    assert_eq!(next_events(&mut first, 1).await, want);
    assert_eq!(next_events(&mut second, 1).await, want);
    // A watcher dropped early costs the others nothing.
    drop(first);
    reg.unregister_pool("shared").await.unwrap();
    assert_eq!(
        next_events(&mut second, 1).await,
        [RegistryEvent::PoolDown {
            name: "shared".into()
        }]
    );
}

async fn endpoints_are_keyed_by_service_and_node(reg: Arc<dyn Registry>) {
    assert!(reg.endpoints().await.unwrap().is_empty());
    // Many nodes may offer one service (unlike pool names), and one node
    // many services; names that look like paths stay apart.
    for (service, node) in [
        ("embed", "n2"),
        ("embed", "n1"),
        ("team/a", "n1"),
        ("team", "n/1"),
    ] {
        reg.put_endpoint(endpoint(service, node, 3)).await.unwrap();
    }
    let all = reg.endpoints().await.unwrap();
    assert_eq!(
        endpoint_keys(&all),
        [
            ("embed", "n1"),
            ("embed", "n2"),
            ("team", "n/1"),
            ("team/a", "n1")
        ],
        "endpoints are listed by service, then node"
    );
    assert_eq!(
        all[0],
        endpoint("embed", "n1", 3),
        "entry changed on the way"
    );

    // A put for the same (service, node) replaces: that is a load update.
    reg.put_endpoint(endpoint("embed", "n1", 0)).await.unwrap();
    let all = reg.endpoints().await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].load.idle, 0, "the load update was not kept");
    assert_eq!(
        all[1],
        endpoint("embed", "n2", 3),
        "another node's entry changed"
    );

    reg.remove_endpoint("embed", "n1").await.unwrap();
    // Withdrawing what is absent is not an error.
    reg.remove_endpoint("embed", "n1").await.unwrap();
    reg.remove_endpoint("never", "was").await.unwrap();
    assert_eq!(
        endpoint_keys(&reg.endpoints().await.unwrap()),
        [("embed", "n2"), ("team", "n/1"), ("team/a", "n1")]
    );
    // Endpoints and pools are separate: a pool of the same name is no conflict.
    reg.register_pool(pool("embed")).await.unwrap();
    reg.unregister_pool("embed").await.unwrap();
    assert_eq!(reg.endpoints().await.unwrap().len(), 3);
}

async fn watch_sees_endpoint_changes(reg: Arc<dyn Registry>) {
    let mut events = reg.watch();
    reg.put_endpoint(endpoint("e", "n1", 1)).await.unwrap();
    reg.put_endpoint(endpoint("e", "n1", 0)).await.unwrap();
    reg.put_endpoint(endpoint("e", "n2", 4)).await.unwrap();
    reg.remove_endpoint("e", "n1").await.unwrap();
    reg.remove_endpoint("e", "n1").await.unwrap(); // absent: no event
    reg.remove_endpoint("e", "n2").await.unwrap();
    assert_eq!(
        next_events(&mut events, 5).await,
        [
            RegistryEvent::EndpointUp(endpoint("e", "n1", 1)),
            RegistryEvent::EndpointUp(endpoint("e", "n1", 0)),
            RegistryEvent::EndpointUp(endpoint("e", "n2", 4)),
            RegistryEvent::EndpointDown {
                service: "e".into(),
                node: "n1".into()
            },
            RegistryEvent::EndpointDown {
                service: "e".into(),
                node: "n2".into()
            },
        ]
    );
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $make;
                register_list_unregister,
                a_name_is_registered_once,
                concurrent_registration_has_one_winner,
                workers_are_written_replaced_sorted_and_removed,
                unregistering_a_pool_removes_its_workers,
                names_that_look_like_paths_stay_apart,
                watch_sees_every_kind_of_change,
                every_watcher_sees_every_change,
                endpoints_are_keyed_by_service_and_node,
                watch_sees_endpoint_changes);
        }
    };
    (@tests $make:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                // The server (if any) lives until the test ends; the whole
                // test has a deadline so a hang is a failure, not a stall.
                let (reg, _server) = $make;
                tokio::time::timeout(Duration::from_secs(60), super::$test(reg))
                    .await
                    .expect("conformance test did not finish within 60 s");
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
    let server = cenote_testkit::EtcdServer::start();
    let reg = cenote_registry::EtcdRegistry::builder([server.url.clone()])
        .node("n1")
        .prefix("/conformance")
        .connect()
        .await
        .expect("connect to the test etcd");
    (Arc::new(reg) as Arc<dyn Registry>, server)
});

/// LocalRegistry only: a watcher that never reads cannot hold up writers,
/// and when it reads again it goes on with the newest buffered events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_local_watcher_skips_oldest_events_without_blocking_writers() {
    let reg = cenote_registry::LocalRegistry::new("n1");
    let mut idle_watcher = reg.watch();
    let total = cenote_registry::WATCH_BUFFER as u64 + 100;
    let writes = async {
        for id in 0..total {
            reg.put_worker(worker("busy", id, WorkerState::Ready))
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), writes)
        .await
        .expect("a watcher that does not read held up the writers");
    let first = next_events(&mut idle_watcher, 1).await;
    assert_eq!(
        first,
        [RegistryEvent::WorkerUp(worker(
            "busy",
            100,
            WorkerState::Ready
        ))],
        "a lagged watcher goes on with the oldest event still buffered"
    );
    let rest = next_events(&mut idle_watcher, cenote_registry::WATCH_BUFFER - 1).await;
    assert_eq!(rest.len(), cenote_registry::WATCH_BUFFER - 1);
    assert_eq!(
        rest.last(),
        Some(&RegistryEvent::WorkerUp(worker(
            "busy",
            total - 1,
            WorkerState::Ready
        )))
    );
    // And it has caught up: the next write is the next event.
    reg.remove_worker("busy", WorkerId(0)).await.unwrap();
    assert_eq!(
        next_events(&mut idle_watcher, 1).await,
        [RegistryEvent::WorkerDown {
            pool: "busy".into(),
            id: WorkerId(0)
        }]
    );
}
