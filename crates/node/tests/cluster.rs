//! Real processes, real etcd, loopback only: three node processes (this
//! binary re-executed, see `support/cluster.rs`) serve an in-process pool
//! and a Python pool; this test process is the fourth, and calls them.
//!
//! * calls reach all three, Python included;
//! * a saturated node gets no new calls;
//! * SIGKILL of a node mid-storm: its in-flight calls get `NodeLost`, fast;
//!   the rest succeed on the others; with retries all succeed; its endpoint
//!   expires with its lease;
//! * a node that stops answering (SIGSTOP) loses its lease and stops
//!   receiving calls within one lease TTL;
//! * a clean shutdown leaves no process and no etcd entry behind.

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cenote_node::{CallError, RemoteRetry};
use cenote_python::PyCall;
use cluster::*;
use common::{eventually_async, Job};

const TEST_LIMIT: Duration = Duration::from_secs(120);

cluster::node_process_test!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_a_fourth_process_reach_all_three_nodes() {
    let cluster = Cluster::start("reach", 2, true).await;
    tokio::time::timeout(TEST_LIMIT, async {
        let jobs = cluster.remote.pool::<Job, String>("jobs");
        let answers = futures::future::join_all((0..60).map(|_| jobs.call(Job::Sleep(10)))).await;
        let reached: HashSet<String> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(reached.len(), 3, "{reached:?}");

        // Python workers on every node, called by name.
        assert!(
            eventually_async(Duration::from_secs(10), || async {
                cluster.remote.nodes("py").len() == 3
            })
            .await
        );
        let py = cluster.remote.pool::<PyCall, serde_json::Value>("py");
        let mut py_nodes = HashSet::new();
        for i in 0..30 {
            let answered = py
                .call_answered(py_echo(i), deadline(20_000))
                .await
                .unwrap();
            assert_eq!(answered.value, serde_json::json!(i));
            py_nodes.insert(answered.node);
        }
        assert_eq!(py_nodes.len(), 3, "{py_nodes:?}");
        // A Python exception comes back typed, with its type as the kind.
        let err = py
            .call(PyCall::new("add", serde_json::json!([1, "x"])))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::Worker { kind, .. } if kind == "TypeError"),
            "{err:?}"
        );
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_node_gets_no_new_calls() {
    let cluster = Cluster::start("saturated", 1, false).await;
    tokio::time::timeout(TEST_LIMIT, async {
        let jobs = cluster.remote.pool::<Job, String>("jobs");
        // n1's one worker busy and four callers queued behind it.
        let n1 = jobs.on_node("n1");
        let hogs: Vec<_> = (0..5)
            .map(|_| {
                let n1 = n1.clone();
                tokio::spawn(async move { n1.call(Job::Sleep(1_500)).await })
            })
            .collect();
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                cluster
                    .remote
                    .nodes("jobs")
                    .iter()
                    .any(|n| n.node == "n1" && n.load.waiting >= 3)
            })
            .await,
            "{:?}",
            cluster.remote.nodes("jobs")
        );
        for _ in 0..20 {
            let node = jobs.call(Job::Sleep(5)).await.unwrap();
            assert_ne!(node, "n1", "a call went to the saturated node");
        }
        for h in hogs {
            assert_eq!(h.await.unwrap().unwrap(), "n1");
        }
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_storm_costs_only_the_calls_in_flight_on_that_node() {
    let mut cluster = Cluster::start("sigkill", 2, true).await;
    let jobs = cluster.remote.pool::<Job, String>("jobs");
    let storm_until = Instant::now() + Duration::from_millis(2_500);
    let storm: Vec<_> = (0..16)
        .map(|i| {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while Instant::now() < storm_until {
                    let began = Instant::now();
                    let r = jobs.call_with(Job::Sleep(80 + i), deadline(10_000)).await;
                    outcomes.push((began, began.elapsed(), r));
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_pid = cluster.node("n2").pid;
    cluster.node("n2").sigkill();
    let killed = Instant::now();
    assert!(
        !cenote_testkit::procs::alive(killed_pid),
        "n2 survived SIGKILL"
    );

    let (mut ok, mut lost) = (0, 0);
    for task in storm {
        for (began, took, r) in tokio::time::timeout(TEST_LIMIT, task)
            .await
            .unwrap()
            .unwrap()
        {
            match r {
                Ok(node) => {
                    ok += 1;
                    if began > killed + Duration::from_millis(100) {
                        assert_ne!(node, "n2", "answered by a dead node?");
                    }
                }
                Err(CallError::NodeLost { node, .. }) => {
                    assert_eq!(node, "n2");
                    assert!(took < Duration::from_secs(2), "NodeLost took {took:?}");
                    assert!(
                        began < killed + Duration::from_millis(300),
                        "a call begun {:?} after the kill went to the dead node",
                        began.saturating_duration_since(killed)
                    );
                    lost += 1;
                }
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
    }
    assert!(lost >= 1, "no call was in flight on n2 when it died");
    assert!(ok > 100, "only {ok} calls succeeded");

    // With retries, every call succeeds — Python ones too.
    let retry = RemoteRetry::new(3);
    let all = futures::future::join_all(
        (0..40).map(|_| jobs.call_retry(Job::Sleep(5), deadline(10_000), &retry)),
    )
    .await;
    assert!(
        all.iter().all(|r| r.as_ref().is_ok_and(|n| n != "n2")),
        "{all:?}"
    );
    let py = cluster.remote.pool::<PyCall, serde_json::Value>("py");
    for i in 0..10 {
        assert_eq!(
            py.call_retry(py_echo(i), deadline(20_000), &retry)
                .await
                .unwrap(),
            serde_json::json!(i)
        );
    }

    // Its entries expire with its lease; the caller hears of it.
    assert!(
        eventually_async(TTL + Duration::from_secs(3), || async {
            !endpoint_nodes(cluster.registry.as_ref(), "jobs")
                .await
                .contains(&"n2".to_string())
                && cluster.remote.nodes("jobs").iter().all(|n| n.node != "n2")
        })
        .await,
        "n2's endpoint outlived its lease"
    );
    assert!(killed.elapsed() >= Duration::from_millis(500));
    // Its Python worker went with it.
    cluster.nodes.retain(|n| n.name != "n2");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_expires_stops_receiving_calls_within_one_ttl() {
    let mut cluster = Cluster::start("stopped", 2, false).await;
    let jobs = cluster.remote.pool::<Job, String>("jobs");
    // n1 freezes: it neither answers nor keeps its lease alive.
    cluster.node("n1").signal(libc::SIGSTOP);
    let frozen = Instant::now();
    assert!(
        eventually_async(TTL + Duration::from_millis(1_500), || async {
            cluster.remote.nodes("jobs").iter().all(|n| n.node != "n1")
        })
        .await,
        "a frozen node is still listed {:?} after its lease",
        frozen.elapsed()
    );
    let gone_after = frozen.elapsed();
    assert!(
        gone_after >= Duration::from_millis(500),
        "gone after {gone_after:?}"
    );
    // From now on no call goes to it: every one is answered, fast.
    let answers =
        futures::future::join_all((0..40).map(|_| jobs.call_with(Job::Sleep(5), deadline(4_000))))
            .await;
    for a in answers {
        assert_ne!(a.unwrap(), "n1");
    }
    cluster.node("n1").signal(libc::SIGCONT);
    cluster.stop().await;
}

/// A node that hangs (SIGSTOP) with calls in flight that have no deadline
/// at all: each of its calls ends with `NodeLost` within the caller's
/// keepalive bound (a ping every 2 s, given up after 2 s more: 4 s, with
/// room for a loaded machine), the others' calls are answered, and none
/// hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_fails_calls_without_deadlines_within_the_keepalive_bound() {
    const BOUND: Duration = Duration::from_secs(4);
    let mut cluster = Cluster::start("hung", 4, false).await;
    let jobs = cluster.remote.pool::<Job, String>("jobs");
    let began = Instant::now();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                let outcome = jobs.call(Job::Sleep(3_000)).await;
                (outcome, began.elapsed())
            })
        })
        .collect();
    // Every call is on its node before n1 freezes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.node("n1").signal(libc::SIGSTOP);
    let frozen = began.elapsed();
    let mut lost = 0;
    for call in calls {
        let (outcome, ended) = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("a call with no deadline hung")
            .unwrap();
        match outcome {
            Ok(node) => assert_ne!(node, "n1", "a frozen node answered"),
            Err(CallError::NodeLost { node, .. }) => {
                assert_eq!(node, "n1");
                let after = ended - frozen;
                assert!(
                    after < BOUND + Duration::from_secs(2),
                    "NodeLost {after:?} after the node froze"
                );
                lost += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(lost > 0, "no call was on the frozen node");
    cluster.node("n1").signal(libc::SIGCONT);
    cluster.stop().await;
}
