//! The user-written `LeastTasks` idle strategy of
//! `examples/custom_strategy.rs`: it passes the conformance checks, orders
//! by tasks served, spreads a pool's checkouts over its workers, and keeps
//! sessions on their workers.

mod common;
#[path = "../examples/custom_strategy.rs"]
#[allow(dead_code)] // its `main` is the example's
mod example;

use std::time::Duration;

use cenote::strategy::{Caller, Queue, Stamp};
use cenote::{AffinityMode, CallOptions};
use cenote_core::conformance::{self, idle_worker};
use common::*;
use example::{LeastTasks, LeastTasksQueue};

#[test]
fn least_tasks_passes_the_conformance_checks() {
    conformance::check_idle_strategy::<LeastTasks>().unwrap();
}

#[test]
fn least_tasks_serves_the_least_worn_worker_unless_a_session_claims_one() {
    let mut q = LeastTasksQueue::default();
    for (id, tasks, keys) in [
        (1, 5, vec!["s"]),
        (2, 1, vec![]),
        (3, 3, vec![]),
        (4, 1, vec![]),
    ] {
        q.push(idle_worker(id, tasks, &keys));
    }
    let anyone = Caller::new(Stamp::now(), Duration::from_secs(1));
    let session = cenote::Affinity {
        key: "s".into(),
        mode: AffinityMode::Strict,
    };
    assert_eq!(
        q.pop(anyone.with_affinity(Some(&session))).unwrap().id().0,
        1
    );
    let order: Vec<u64> = std::iter::from_fn(|| q.pop(anyone))
        .map(|w| w.id().0)
        .collect();
    assert_eq!(
        order,
        vec![2, 4, 3],
        "fewest tasks first, ties in arrival order"
    );
}

#[tokio::test]
async fn a_pool_with_least_tasks_spreads_checkouts_evenly() {
    let f = TestFactory::default();
    let pool = builder(f.clone(), 3)
        .idle_strategy::<LeastTasks>()
        .build()
        .await
        .unwrap();
    let mut per_worker = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let id = pool.call(Op::Ok).await.unwrap();
        *per_worker.entry(id).or_insert(0) += 1;
    }
    assert_eq!(
        per_worker.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    // Sessions still go to their own worker, whatever its wear.
    for round in 1..=5 {
        for s in 0..4u64 {
            let opts = CallOptions::default().affinity(s, AffinityMode::Strict);
            assert_eq!(pool.call_with(Op::Bump(s), opts).await.unwrap(), round);
        }
    }
    close_clean(pool, &f).await;
}
