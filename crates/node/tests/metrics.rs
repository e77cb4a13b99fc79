//! A remote caller records its calls per node (`cenote.node.*`): counts by
//! outcome and latency, as a recorder installed by the application sees
//! them, and the body bytes sent and received. A whole budget crosses to
//! the node.

mod common;

use std::time::Duration;

use cenote_core::{AffinityMode, CallOptions};
use cenote_node::{CallError, Remote};
use cenote_registry::LocalRegistry;
use common::*;
use metrics_util::debugging::DebugValue;

#[test]
fn calls_are_counted_per_node_and_outcome() {
    let (recorder, snap, rt) = cenote_testkit::recorder::local_recorder();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let registry = LocalRegistry::new("-");
            let pool = job_pool("n1", 1).await;
            let node = serve_jobs(as_node(&registry, "n1"), pool).await;
            let remote = Remote::builder(as_node(&registry, "caller"))
                .token("test-token")
                .connect()
                .await
                .unwrap();
            let jobs = remote.pool::<Job, String>("jobs");
            for i in 0..5 {
                let echo = jobs.call(Job::Echo(format!("x{i}"))).await.unwrap();
                assert_eq!(echo, format!("x{i}"));
            }
            assert!(jobs.call(Job::Fail("no".into())).await.is_err());
            // A whole budget crosses as the time left: the node cuts the
            // call off, and says so.
            let short = CallOptions::default().budget(Duration::from_millis(100));
            let late = jobs.call_with(Job::Sleep(2_000), short).await;
            assert!(
                matches!(late, Err(CallError::CallTimeout { .. })),
                "{late:?}"
            );
            // A session goes to the node that holds it, and is counted.
            let session = CallOptions::default().affinity("s1", AffinityMode::Strict);
            assert_eq!(jobs.call_with(Job::Whoami, session).await.unwrap(), "n1");
            node.shutdown().await;
        })
    });
    let mut calls = std::collections::HashMap::new();
    let mut samples = 0;
    let mut bytes = std::collections::HashMap::new();
    for (key, _, _, value) in snap.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        if !key.name().starts_with("cenote.node.") {
            continue; // the served pool's own
        }
        let label = |k: &str| {
            key.labels()
                .find(|l| l.key() == k)
                .map(|l| l.value().to_string())
        };
        assert_eq!(label("pool").as_deref(), Some("jobs"), "{key:?}");
        assert_eq!(label("node").as_deref(), Some("n1"), "{key:?}");
        match (key.name(), value) {
            ("cenote.node.calls", DebugValue::Counter(n)) => {
                calls.insert(label("outcome").unwrap(), n);
            }
            ("cenote.node.call_time", DebugValue::Histogram(v)) => samples += v.len(),
            ("cenote.node.bytes", DebugValue::Counter(n)) => {
                bytes.insert(label("direction").unwrap(), n);
            }
            other => panic!("unexpected metric {other:?}"),
        }
    }
    assert_eq!(calls.get("ok"), Some(&6), "{calls:?}");
    assert_eq!(calls.get("error"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("node_lost"), None, "{calls:?}");
    assert_eq!(samples, 8);
    // Every call's request: `{"Echo":"x0"}` is 13 bytes, and there were
    // eight calls of at least 9 (`"Whoami"`); answers only from the six
    // that succeeded.
    let (sent, received) = (bytes["sent"], bytes["received"]);
    assert!((8 * 8..8 * 40).contains(&sent), "{bytes:?}");
    assert!((6 * 3..6 * 40).contains(&received), "{bytes:?}");
}
