//! Sessions across nodes (real etcd, real node processes on loopback, a
//! stateful Python handler): a session's calls all reach its node and its
//! worker there; a strict session whose node dies fails loudly
//! (`AffinityLost`) while the others go on untouched; a hinted one moves;
//! a scale-up moves no session, for the caller that holds them or for
//! another that never called them (it asks the nodes), and the hash alone
//! moves only the new node's share.

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cenote_core::{AffinityLoss, AffinityMode, CallOptions};
use cenote_node::{CallError, Remote, RemotePool};
use cenote_python::PyCall;
use cluster::*;
use serde_json::{json, Value};

const TEST_LIMIT: Duration = Duration::from_secs(180);

cluster::node_process_test!();

fn session(key: &str, mode: AffinityMode) -> CallOptions {
    deadline(30_000).affinity(key, mode)
}

/// One call of session `key`: its count, the node and the worker's pid.
async fn tally(
    py: &RemotePool<PyCall, Value>,
    key: &str,
    mode: AffinityMode,
) -> Result<(u64, String, u64), CallError> {
    let call = PyCall::new("tally", json!({ "session": key }));
    let answered = py.call_answered(call, session(key, mode)).await?;
    let count = answered.value["count"].as_u64().unwrap();
    let pid = answered.value["pid"].as_u64().unwrap();
    Ok((count, answered.node, pid))
}

/// `calls` calls of each session in `keys`, sessions side by side, each
/// session's calls one after another. Every answer must continue its
/// session's count from `from`, on one node and one worker: returns each
/// session's node.
async fn run_sessions(
    py: &RemotePool<PyCall, Value>,
    keys: &[String],
    from: u64,
    calls: u64,
) -> HashMap<String, String> {
    let runs = keys.iter().map(|key| {
        let py = py.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut home = None;
            for i in 1..=calls {
                let (count, node, pid) = tally(&py, &key, AffinityMode::Strict)
                    .await
                    .unwrap_or_else(|e| panic!("session {key}, call {i}: {e}"));
                assert_eq!(count, from + i, "session {key} got another's state");
                let here = (node, pid);
                assert_eq!(
                    home.get_or_insert_with(|| here.clone()),
                    &here,
                    "session {key} moved"
                );
            }
            (key, home.unwrap().0)
        })
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sessions_stay_put_and_fail_loudly_with_their_node() {
    let mut cluster = Cluster::start("sessions", 1, true).await;
    let py = cluster.remote.pool::<PyCall, Value>("py");
    let strict = keys("strict", 50);
    let homes = tokio::time::timeout(TEST_LIMIT, run_sessions(&py, &strict, 0, 100))
        .await
        .expect("50 sessions x 100 calls timed out");
    let used: HashSet<&String> = homes.values().collect();
    assert_eq!(used.len(), 3, "sessions did not spread: {homes:?}");
    for (key, node) in &homes {
        assert_eq!(py.session_node(key.as_str()).as_ref(), Some(node));
    }
    // Hinted sessions, placed the same way.
    let hints = keys("hint", 20);
    let mut hint_homes = HashMap::new();
    for key in &hints {
        let (count, node, _) = tally(&py, key, AffinityMode::Hint).await.unwrap();
        assert_eq!(count, 1);
        hint_homes.insert(key.clone(), node);
    }

    // The node holding the most strict sessions dies.
    let victim = ["n1", "n2", "n3"]
        .into_iter()
        .max_by_key(|n| homes.values().filter(|h| h == n).count())
        .unwrap();
    cluster.node(victim).sigkill();
    tokio::time::timeout(TEST_LIMIT, async {
        for key in &strict {
            let first = tally(&py, key, AffinityMode::Strict).await;
            if homes[key] != victim {
                let (count, node, _) = first.unwrap();
                assert_eq!((count, node.as_str()), (101, homes[key].as_str()));
                continue;
            }
            // At most one call finds out the node is gone (`NodeLost`);
            // from then on the session fails loudly, and never moves.
            let outcome = match first {
                Err(CallError::NodeLost { node, .. }) => {
                    assert_eq!(node, victim);
                    tally(&py, key, AffinityMode::Strict).await
                }
                other => other,
            };
            match outcome {
                Err(CallError::AffinityLost { key: lost, reason }) => {
                    assert_eq!(&lost, key);
                    assert_eq!(reason, AffinityLoss::NodeLost);
                }
                other => panic!("session {key} on the dead node: {other:?}"),
            }
            assert!(matches!(
                tally(&py, key, AffinityMode::Strict).await,
                Err(CallError::AffinityLost { .. })
            ));
        }
        // A hinted session moves off the dead node and starts over.
        for key in &hints {
            let mut outcome = tally(&py, key, AffinityMode::Hint).await;
            if matches!(outcome, Err(CallError::NodeLost { .. })) {
                outcome = tally(&py, key, AffinityMode::Hint).await;
            }
            let (count, node, _) = outcome.unwrap();
            if hint_homes[key] == victim {
                assert_ne!(node, victim);
                assert_eq!(count, 1, "a moved hint starts over on its new node");
            } else {
                assert_eq!((count, &node), (2, &hint_homes[key]));
            }
        }
        // A lost strict session, forgotten, starts over on a live node.
        let lost = strict.iter().find(|k| homes[*k] == victim).unwrap();
        py.forget_session(lost.as_str());
        let (count, node, _) = tally(&py, lost, AffinityMode::Strict).await.unwrap();
        assert_eq!(count, 1);
        assert_ne!(node, victim);
    })
    .await
    .expect("test timed out");
    cluster.bury(victim).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_moves_no_session_of_a_caller() {
    let mut cluster = Cluster::start("scaleup", 1, true).await;
    let py = cluster.remote.pool::<PyCall, Value>("py");
    let strict = keys("s", 50);
    let probes = keys("probe", 1000);
    tokio::time::timeout(TEST_LIMIT, async {
        let homes = run_sessions(&py, &strict, 0, 5).await;
        // Another caller, which never called them, finds the same nodes by
        // the hash alone.
        let other = Remote::builder(cluster.registry.clone())
            .token(TOKEN)
            .connect()
            .await
            .unwrap();
        let other_py = other.pool::<PyCall, Value>("py");
        wait_for_nodes(&other, "py", 3).await;
        for (key, node) in &homes {
            assert_eq!(other_py.session_node(key.as_str()).as_ref(), Some(node));
        }
        let before: Vec<String> = probes
            .iter()
            .map(|k| other_py.session_node(k.as_str()).unwrap())
            .collect();

        cluster.add("n4");
        cluster.wait_for("py", 4).await;
        wait_for_nodes(&other, "py", 4).await;

        // This caller's sessions stay where they are: their counts go on.
        let after = run_sessions(&py, &strict, 5, 5).await;
        assert_eq!(after, homes, "a session moved on the scale-up");
        // A caller that never called them finds them where they are (it
        // asks the nodes), not where the hash now points.
        let found = run_sessions(&other_py, &strict, 10, 2).await;
        assert_eq!(found, homes, "another caller moved a session");
        // By the hash alone, only the new node's share moves, all of it to
        // the new node.
        let moved: Vec<String> = probes
            .iter()
            .zip(&before)
            .filter_map(|(k, was)| {
                let now = other_py.session_node(k.as_str()).unwrap();
                (&now != was).then_some(now)
            })
            .collect();
        eprintln!(
            "3 -> 4 nodes: 0 of {} sessions moved, for the caller holding them and \
             for another; {} of {} new keys ({:.1}%) hash to another node",
            strict.len(),
            moved.len(),
            probes.len(),
            100.0 * moved.len() as f64 / probes.len() as f64
        );
        assert!(moved.iter().all(|n| n == "n4"), "{moved:?}");
        assert!(
            (150..350).contains(&moved.len()),
            "{} of 1000 moved",
            moved.len()
        );
        // New sessions reach the new node too.
        let fresh = run_sessions(&py, &keys("new", 40), 0, 2).await;
        assert!(fresh.values().any(|n| n == "n4"), "{fresh:?}");
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// A node that hangs (SIGSTOP) cannot say whether it holds a session: a
/// new strict session's first call fails with `NodeLost` within the ask
/// bound (2 s), not a hang, and the node is left out, so the next call
/// starts the session on a live node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_fails_a_new_sessions_first_call_fast_and_is_left_out() {
    let mut cluster = Cluster::start("sessionhang", 1, true).await;
    let py = cluster.remote.pool::<PyCall, Value>("py");
    cluster.node("n2").signal(libc::SIGSTOP);
    tokio::time::timeout(TEST_LIMIT, async {
        let began = std::time::Instant::now();
        let first = tally(&py, "fresh", AffinityMode::Strict).await;
        let took = began.elapsed();
        assert!(took < Duration::from_secs(4), "{took:?}");
        // On a loaded machine n2's lease may already have expired, and
        // then it is not asked at all; either way the session starts on a
        // live node, and never waits for the hung one.
        let started = match first {
            Err(CallError::NodeLost { node, .. }) => {
                assert_eq!(node, "n2");
                0
            }
            Ok((count, node, _)) => {
                assert_ne!(node, "n2");
                count
            }
            Err(e) => panic!("{e:?}"),
        };
        let (count, node, _) = tally(&py, "fresh", AffinityMode::Strict).await.unwrap();
        assert_eq!(count, started + 1);
        assert_ne!(node, "n2");
    })
    .await
    .expect("test timed out");
    cluster.node("n2").signal(libc::SIGCONT);
    cluster.stop().await;
}
