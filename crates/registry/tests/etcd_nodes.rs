//! etcd across nodes, on a real server: two registries see each other; a
//! dead node's entries expire with its lease; a registry survives etcd
//! restarting under it (with and without its data); bad values in etcd are
//! skipped, not fatal.
#![cfg(feature = "etcd")]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote_core::{
    EndpointEntry, Load, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId,
    WorkerState,
};
use cenote_registry::EtcdRegistry;
use cenote_testkit::procs::alive;
use cenote_testkit::{eventually_async, EtcdServer};
use futures::StreamExt;

const PREFIX: &str = "/nodes";

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

fn worker(pool: &str, id: u64, node: &str) -> WorkerEntry {
    WorkerEntry {
        pool: pool.into(),
        id: WorkerId(id),
        node: node.into(),
        pid: Some(4000 + id as u32),
        state: WorkerState::Ready,
        started_at_ms: 1_700_000_000_000,
        tasks_served: id,
    }
}

fn endpoint(service: &str, node: &str) -> EndpointEntry {
    EndpointEntry {
        service: service.into(),
        node: node.into(),
        addr: "http://127.0.0.1:1".into(),
        load: Load {
            idle: 1,
            busy: 0,
            waiting: 0,
            live: 1,
        },
    }
}

async fn endpoint_nodes(reg: &dyn Registry) -> Vec<String> {
    reg.endpoints()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.node)
        .collect()
}

async fn node(url: &str, name: &str, ttl: Duration) -> EtcdRegistry {
    EtcdRegistry::builder([url.to_string()])
        .node(name)
        .prefix(PREFIX)
        .lease_ttl(ttl)
        .op_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the test etcd")
}

async fn pool_names(reg: &dyn Registry) -> Vec<String> {
    reg.pools()
        .await
        .map(|ps| ps.into_iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

async fn worker_ids(reg: &dyn Registry, pool: &str) -> Vec<u64> {
    reg.workers(pool)
        .await
        .map(|ws| ws.into_iter().map(|w| w.id.0).collect())
        .unwrap_or_default()
}

/// Wait for the first event matching `want`; the events skipped on the way
/// are returned too, for failure messages.
async fn expect_event(
    events: &mut (impl futures::Stream<Item = RegistryEvent> + Unpin),
    limit: Duration,
    want: impl Fn(&RegistryEvent) -> bool,
) -> Result<RegistryEvent, Vec<RegistryEvent>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut skipped = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
        if want(&e) {
            return Ok(e);
        }
        skipped.push(e);
    }
    Err(skipped)
}

/// A plain etcd client, to look at and tamper with etcd behind the
/// registry's back.
async fn raw_client(server: &EtcdServer) -> etcd_client::Client {
    tokio::time::timeout(
        Duration::from_secs(5),
        etcd_client::Client::connect([server.url.as_str()], None),
    )
    .await
    .expect("raw etcd client: connect deadline")
    .expect("raw etcd client: connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_others_pools_and_workers() {
    let server = EtcdServer::start();
    let a = node(&server.url, "a", Duration::from_secs(10)).await;
    let b = node(&server.url, "b", Duration::from_secs(10)).await;
    let mut seen_by_a = a.watch();
    let mut seen_by_b = b.watch();

    a.register_pool(pool("embed", "a")).await.unwrap();
    a.put_worker(worker("embed", 1, "a")).await.unwrap();
    b.register_pool(pool("rank", "b")).await.unwrap();

    let up = expect_event(
        &mut seen_by_b,
        Duration::from_secs(5),
        |e| matches!(e, RegistryEvent::PoolUp(p) if p.name == "embed"),
    )
    .await
    .expect("b saw a's pool appear");
    assert_eq!(up, RegistryEvent::PoolUp(pool("embed", "a")));
    expect_event(&mut seen_by_b, Duration::from_secs(5), |e| {
        *e == RegistryEvent::WorkerUp(worker("embed", 1, "a"))
    })
    .await
    .expect("b saw a's worker appear");
    expect_event(
        &mut seen_by_a,
        Duration::from_secs(5),
        |e| matches!(e, RegistryEvent::PoolUp(p) if p.name == "rank" && p.node == "b"),
    )
    .await
    .expect("a saw b's pool appear");

    // Both see the same registry.
    assert_eq!(pool_names(&a).await, ["embed", "rank"]);
    assert_eq!(pool_names(&b).await, ["embed", "rank"]);
    assert_eq!(b.workers("embed").await.unwrap(), [worker("embed", 1, "a")]);
    // Names are global: b cannot take a's name.
    assert_eq!(
        b.register_pool(pool("embed", "b")).await,
        Err(RegistryError::Duplicate("embed".into()))
    );

    a.unregister_pool("embed").await.unwrap();
    expect_event(&mut seen_by_b, Duration::from_secs(5), |e| {
        *e == RegistryEvent::WorkerDown {
            pool: "embed".into(),
            id: WorkerId(1),
        }
    })
    .await
    .expect("b saw a's worker vanish");
    expect_event(
        &mut seen_by_b,
        Duration::from_secs(5),
        |e| matches!(e, RegistryEvent::PoolDown { name } if name == "embed"),
    )
    .await
    .expect("b saw a's pool vanish");
    assert_eq!(pool_names(&b).await, ["rank"]);
    assert!(b.workers("embed").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_get_exactly_one_winner() {
    let server = EtcdServer::start();
    let nodes: Vec<Arc<EtcdRegistry>> = vec![
        Arc::new(node(&server.url, "n0", Duration::from_secs(10)).await),
        Arc::new(node(&server.url, "n1", Duration::from_secs(10)).await),
        Arc::new(node(&server.url, "n2", Duration::from_secs(10)).await),
    ];
    for round in 0..5 {
        let name = format!("contested-{round}");
        let attempts = (0..24).map(|i| {
            let reg = Arc::clone(&nodes[i % nodes.len()]);
            let entry = pool(&name, reg.node());
            tokio::spawn(async move { reg.register_pool(entry).await.map(|()| i) })
        });
        let results: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.expect("registration task panicked"))
            .collect();
        let winners: Vec<usize> = results.iter().filter_map(|r| r.clone().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(RegistryError::Duplicate(_)))));
        let stored = nodes[0].pools().await.unwrap();
        let entry = stored.iter().find(|p| p.name == name).unwrap();
        assert_eq!(entry.node, format!("n{}", winners[0] % nodes.len()));
    }
}

/// Not a test of its own: the child process of
/// `a_killed_nodes_entries_expire_with_its_lease`, a node that registers
/// and then waits to be killed.
#[tokio::test]
#[ignore = "helper process for a_killed_nodes_entries_expire_with_its_lease"]
async fn doomed_node_process() {
    let Ok(url) = std::env::var("CENOTE_DOOMED_NODE_ETCD") else {
        return;
    };
    let reg = node(&url, "doomed", Duration::from_secs(2)).await;
    reg.register_pool(pool("doomed-pool", "doomed"))
        .await
        .unwrap();
    reg.put_worker(worker("doomed-pool", 1, "doomed"))
        .await
        .unwrap();
    reg.put_endpoint(endpoint("doomed-pool", "doomed"))
        .await
        .unwrap();
    println!("DOOMED-NODE-READY");
    // Killed long before this ends; the bound keeps a stray child finite.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Kills a child process by its pid on drop, should a test fail early.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_entries_expire_with_its_lease() {
    let server = EtcdServer::start();
    let survivor = node(&server.url, "survivor", Duration::from_secs(10)).await;
    let mut events = survivor.watch();

    // Another process registers, then dies by SIGKILL: no unregistering,
    // no revoking, no goodbye.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["doomed_node_process", "--exact", "--ignored", "--nocapture"])
        .env("CENOTE_DOOMED_NODE_ETCD", &server.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the doomed node process");
    let stdout = child.stdout.take().unwrap();
    let mut child = ChildGuard(child);
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("DOOMED-NODE-READY"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .expect("the doomed node did not register within 20 s")
        .unwrap();
    assert!(ready, "the doomed node exited before registering");
    assert_eq!(pool_names(&survivor).await, ["doomed-pool"]);
    assert_eq!(worker_ids(&survivor, "doomed-pool").await, [1]);
    assert_eq!(endpoint_nodes(&survivor).await, ["doomed"]);
    assert_eq!(survivor.lease_ttl(), Some(Duration::from_secs(10)));

    let pid = child.0.id();
    child.0.kill().unwrap(); // SIGKILL to its own pid
    child.0.wait().unwrap();
    assert!(!alive(pid), "the doomed node survived SIGKILL");
    let killed = Instant::now();

    // Within TTL (2 s) plus slack, etcd drops its entries by itself.
    assert!(
        eventually_async(Duration::from_secs(8), || async {
            pool_names(&survivor).await.is_empty()
        })
        .await,
        "a dead node's pool outlived its lease"
    );
    let gone_after = killed.elapsed();
    assert!(worker_ids(&survivor, "doomed-pool").await.is_empty());
    assert!(
        endpoint_nodes(&survivor).await.is_empty(),
        "a dead node's endpoint outlived its lease"
    );
    assert!(
        gone_after >= Duration::from_millis(500),
        "entries vanished after {gone_after:?}, before the lease could have expired"
    );
    // And the other node was told.
    expect_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, RegistryEvent::PoolDown { name } if name == "doomed-pool"),
    )
    .await
    .expect("the survivor was not told the dead node's pool went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_runtime_vanishes_expires_too() {
    let server = EtcdServer::start();
    let survivor = node(&server.url, "survivor", Duration::from_secs(10)).await;
    let url = server.url.clone();
    // The node runs on its own runtime, torn down without any chance to
    // unregister or revoke: its keep-alive just stops.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let reg = node(&url, "stalled", Duration::from_secs(2)).await;
            reg.register_pool(pool("stalled-pool", "stalled"))
                .await
                .unwrap();
            std::mem::forget(reg);
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    assert_eq!(pool_names(&survivor).await, ["stalled-pool"]);
    assert!(
        eventually_async(Duration::from_secs(8), || async {
            pool_names(&survivor).await.is_empty()
        })
        .await,
        "a stalled node's pool outlived its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_registry_removes_its_entries_and_stops_its_tasks() {
    let server = EtcdServer::start();
    let observer = node(&server.url, "observer", Duration::from_secs(10)).await;
    // A long TTL: the entries can only go this fast through revocation.
    let leaving = node(&server.url, "leaving", Duration::from_secs(60)).await;
    leaving
        .register_pool(pool("leaving-pool", "leaving"))
        .await
        .unwrap();
    leaving
        .put_worker(worker("leaving-pool", 1, "leaving"))
        .await
        .unwrap();
    let mut own_events = leaving.watch();
    drop(leaving);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            pool_names(&observer).await.is_empty()
                && worker_ids(&observer, "leaving-pool").await.is_empty()
        })
        .await,
        "a dropped registry's entries were not revoked"
    );
    // Its background tasks are gone: nothing feeds its watch stream any more.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while own_events.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "a dropped registry's background tasks still run"
    );

    // `shutdown` does the same, and says whether etcd confirmed.
    let closing = node(&server.url, "closing", Duration::from_secs(60)).await;
    closing
        .register_pool(pool("closing-pool", "closing"))
        .await
        .unwrap();
    closing.shutdown().await.unwrap();
    assert!(pool_names(&observer).await.is_empty());
}

/// Restart etcd under a live registry, and check it comes back whole.
async fn restart_under_a_live_registry(fresh_data: bool) {
    let mut server = EtcdServer::start();
    let reg = node(&server.url, "steady", Duration::from_secs(2)).await;
    let mut events = reg.watch();
    reg.register_pool(pool("kept", "steady")).await.unwrap();
    reg.put_worker(worker("kept", 3, "steady")).await.unwrap();
    reg.put_endpoint(endpoint("kept", "steady")).await.unwrap();
    let first_lease = reg.lease_id();
    assert!(reg.is_connected());

    let first_pid = server.pid().unwrap();
    server.stop();
    assert!(!alive(first_pid), "etcd did not stop");
    let disconnected = expect_event(&mut events, Duration::from_secs(15), |e| {
        matches!(e, RegistryEvent::Disconnected { .. })
    })
    .await
    .expect("outage not reported");
    let RegistryEvent::Disconnected { reason } = disconnected else {
        unreachable!()
    };
    assert!(!reason.is_empty());
    assert!(!reg.is_connected());

    // With etcd down, calls fail within the op timeout rather than hang...
    let began = Instant::now();
    assert!(matches!(
        reg.pools().await,
        Err(RegistryError::Unavailable(_))
    ));
    assert!(began.elapsed() < Duration::from_secs(5));
    // ...but writes are kept, to be made when etcd is back.
    assert!(reg.put_worker(worker("kept", 4, "steady")).await.is_err());
    assert!(reg.remove_worker("kept", WorkerId(3)).await.is_err());

    server.restart(fresh_data);
    expect_event(&mut events, Duration::from_secs(20), |e| {
        *e == RegistryEvent::Reconnected
    })
    .await
    .expect("no reconnection");
    assert!(reg.is_connected());
    assert_ne!(reg.lease_id(), first_lease, "no new lease");
    assert_eq!(pool_names(&reg).await, ["kept"]);
    assert_eq!(
        reg.workers("kept").await.unwrap(),
        [worker("kept", 4, "steady")],
        "the outage's writes were not made on reconnection"
    );
    assert_eq!(
        reg.endpoints().await.unwrap(),
        [endpoint("kept", "steady")],
        "the endpoint was not written again on the new lease"
    );
    // The new lease is kept alive: the entries outlive the old TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pool_names(&reg).await, ["kept"]);
    // And the registry is fully usable again, watch included.
    reg.register_pool(pool("after", "steady")).await.unwrap();
    expect_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, RegistryEvent::PoolUp(p) if p.name == "after"),
    )
    .await
    .expect("watch did not resume after the restart");

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
async fn another_nodes_watch_sees_a_restart_through() {
    let mut server = EtcdServer::start();
    let writer = node(&server.url, "writer", Duration::from_secs(2)).await;
    let reader = node(&server.url, "reader", Duration::from_secs(2)).await;
    let mut seen = reader.watch();
    writer.register_pool(pool("p", "writer")).await.unwrap();
    expect_event(
        &mut seen,
        Duration::from_secs(5),
        |e| matches!(e, RegistryEvent::PoolUp(p) if p.name == "p"),
    )
    .await
    .expect("reader saw the pool");

    // etcd loses everything; the writer puts its pool back; the reader's
    // watch is re-established and sees the pool (gone, then back).
    server.restart(true);
    expect_event(&mut seen, Duration::from_secs(20), |e| {
        *e == RegistryEvent::Reconnected
    })
    .await
    .expect("reader did not reconnect");
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            pool_names(&reader).await == ["p"]
        })
        .await,
        "the writer's pool did not come back"
    );
    writer.register_pool(pool("q", "writer")).await.unwrap();
    expect_event(
        &mut seen,
        Duration::from_secs(10),
        |e| matches!(e, RegistryEvent::PoolUp(p) if p.name == "q"),
    )
    .await
    .expect("reader's watch did not follow changes after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_while_away_is_not_stolen_back() {
    let server = EtcdServer::start();
    let a = node(&server.url, "a", Duration::from_secs(2)).await;
    let b = node(&server.url, "b", Duration::from_secs(10)).await;
    let mut a_events = a.watch();
    a.register_pool(pool("x", "a")).await.unwrap();
    a.register_pool(pool("only-a", "a")).await.unwrap();
    a.put_worker(worker("x", 1, "a")).await.unwrap();

    // a's lease vanishes (as if it had been cut off longer than its TTL),
    // and b takes the name meanwhile.
    let mut raw = raw_client(&server).await;
    raw.lease_revoke(a.lease_id()).await.unwrap();
    b.register_pool(pool("x", "b")).await.unwrap();

    expect_event(&mut a_events, Duration::from_secs(10), |e| {
        *e == RegistryEvent::Reconnected
    })
    .await
    .expect("a did not notice its lease was gone");
    let pools = b.pools().await.unwrap();
    assert_eq!(
        pools,
        [pool("only-a", "a"), pool("x", "b")],
        "a took b's name back, or lost its own"
    );
    assert!(
        worker_ids(&b, "x").await.is_empty(),
        "a's workers landed in b's pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_in_etcd_are_skipped_not_fatal() {
    let server = EtcdServer::start();
    let reg = node(&server.url, "n", Duration::from_secs(10)).await;
    let mut events = reg.watch();
    let mut raw = raw_client(&server).await;
    raw.put(format!("{PREFIX}/pools/garbage"), "not json", None)
        .await
        .unwrap();
    raw.put(format!("{PREFIX}/pools/wrong-shape"), r#"{"name":1}"#, None)
        .await
        .unwrap();
    raw.put(
        format!("{PREFIX}/workers/p/00000000000000000001"),
        "\u{0}\u{ff}",
        None,
    )
    .await
    .unwrap();
    raw.put(format!("{PREFIX}/workers/p/not-an-id"), "{}", None)
        .await
        .unwrap();
    raw.put(format!("{PREFIX}/something-else"), "x", None)
        .await
        .unwrap();
    raw.put(vec![b'/', b'n', 0xff, 0xfe], "x", None)
        .await
        .unwrap();
    reg.register_pool(pool("good", "n")).await.unwrap();
    reg.put_worker(worker("p", 2, "n")).await.unwrap();

    // The watch skips what it cannot decode and goes on.
    assert_eq!(
        expect_event(&mut events, Duration::from_secs(5), |_| true).await,
        Ok(RegistryEvent::PoolUp(pool("good", "n")))
    );
    assert_eq!(
        expect_event(&mut events, Duration::from_secs(5), |_| true).await,
        Ok(RegistryEvent::WorkerUp(worker("p", 2, "n")))
    );
    // Lists skip bad entries rather than fail because of one.
    assert_eq!(pool_names(&reg).await, ["good"]);
    assert_eq!(worker_ids(&reg, "p").await, [2]);
    // Deleting a bad key is still a well-formed event.
    raw.delete(format!("{PREFIX}/pools/garbage"), None)
        .await
        .unwrap();
    assert_eq!(
        expect_event(&mut events, Duration::from_secs(5), |_| true).await,
        Ok(RegistryEvent::PoolDown {
            name: "garbage".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_a_clear_error_not_a_hang() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let began = Instant::now();
    let err = EtcdRegistry::builder([format!("http://127.0.0.1:{port}")])
        .op_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, RegistryError::Unavailable(_)));
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let none: [&str; 0] = [];
    let err = EtcdRegistry::builder(none).connect().await.unwrap_err();
    assert!(err.to_string().contains("no etcd endpoints"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cut_off_midway_still_leave_etcd_matching_the_node() {
    let server = EtcdServer::start();
    let reg = node(&server.url, "n", Duration::from_secs(10)).await;
    reg.register_pool(pool("p", "n")).await.unwrap();
    // What the node has been told, in order; etcd must end up the same even
    // though many of the writes are cut off at their first await (their
    // request may or may not have reached etcd).
    let mut model = std::collections::BTreeMap::new();
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for round in 0..300_u64 {
        let id = next() % 8;
        let cut_off_after = Duration::from_micros(next() % 3000);
        if next() % 3 == 0 {
            model.remove(&id);
            let _ = tokio::time::timeout(cut_off_after, reg.remove_worker("p", WorkerId(id))).await;
        } else {
            let mut w = worker("p", id, "n");
            w.tasks_served = round;
            model.insert(id, w.clone());
            let _ = tokio::time::timeout(cut_off_after, reg.put_worker(w)).await;
        }
    }
    let want: Vec<WorkerEntry> = model.into_values().collect();
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            reg.workers("p").await.ok().as_ref() == Some(&want)
        })
        .await,
        "etcd holds {:?}, the node was told {:?}",
        reg.workers("p").await,
        want
    );
    assert_eq!(pool_names(&reg).await, ["p"]);
    assert!(reg.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_too_large_for_etcd_is_refused_up_front() {
    let server = EtcdServer::start();
    let reg = node(&server.url, "n", Duration::from_secs(10)).await;
    let huge = "x".repeat(600 * 1024);
    let err = reg.put_worker(worker(&huge, 1, "n")).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unavailable(m) if m.contains("bytes")),
        "{err}"
    );
    let err = reg.register_pool(pool(&huge, "n")).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unavailable(m) if m.contains("bytes")),
        "{err}"
    );
    // It did not count as this node's: the registry stays healthy.
    reg.register_pool(pool("fine", "n")).await.unwrap();
    reg.put_worker(worker("fine", 1, "n")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(reg.is_connected());
    assert_eq!(pool_names(&reg).await, ["fine"]);
}
