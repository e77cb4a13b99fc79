//! Fairness of the two queues: FIFO waiters are served in arrival order,
//! Priority waiters highest first (ties in arrival order), Deadline waiters
//! nearest checkout deadline first; LIFO idle workers
//! reuse the one most recently returned, FIFO idle workers rotate through all.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cenote::{Checkout, PriorityLevel};
use common::*;

const SETTLE: Duration = Duration::from_secs(5);

/// Hold the only worker of `pool`, queue one waiter per entry of
/// `priorities` (each queued before the next is made, so arrival order is
/// known), release, and return the arrival indices in the order served.
async fn served_order<I, W>(
    pool: &cenote::Pool<TestFactory, I, W>,
    priorities: &[PriorityLevel],
) -> Vec<usize>
where
    I: cenote::IdleStrategy,
    W: cenote::WaitStrategy,
{
    let opts = priorities
        .iter()
        .map(|&p| cenote::CheckoutOptions::default().priority(p))
        .collect();
    served_order_with(pool, opts).await
}

/// [`served_order`] with each waiter's own checkout options.
async fn served_order_with<I, W>(
    pool: &cenote::Pool<TestFactory, I, W>,
    options: Vec<cenote::CheckoutOptions>,
) -> Vec<usize>
where
    I: cenote::IdleStrategy,
    W: cenote::WaitStrategy,
{
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, opts) in options.into_iter().enumerate() {
        let p = pool.clone();
        let order = Arc::clone(&order);
        waiters.push(tokio::spawn(async move {
            let co = p.get_with(opts).await.unwrap();
            // Only one worker exists: whoever holds it is the one served now.
            order.lock().unwrap().push(i);
            tokio::task::yield_now().await;
            drop(co);
        }));
        assert!(
            eventually(SETTLE, || pool.status().waiting == i + 1).await,
            "waiter {i} never queued: {:?}",
            pool.status()
        );
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "served while the worker was held"
    );
    drop(held);
    let joined = tokio::time::timeout(SETTLE, futures::future::join_all(waiters))
        .await
        .expect("waiters were not all served");
    for j in joined {
        j.unwrap();
    }
    assert_eq!(pool.status().waiting, 0);
    pool.check_invariants().unwrap();
    let order = order.lock().unwrap().clone();
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_waiters_are_served_in_arrival_order() {
    let (f, pool) = pool_of(1).await;
    let n = 32;
    // The FIFO strategy ignores priorities: give them in a scrambled order
    // to show arrival alone decides.
    let prios: Vec<PriorityLevel> = (0..n).map(|i| ((i * 7) % 5) as PriorityLevel).collect();
    let order = served_order(&pool, &prios).await;
    assert_eq!(order, (0..n).collect::<Vec<_>>());
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_waiters_are_served_highest_first_ties_in_arrival_order() {
    let f = TestFactory::default();
    let pool: cenote::Pool<TestFactory, cenote::Lifo, cenote::Priority> = builder(f.clone(), 1)
        .wait_strategy::<cenote::Priority>()
        .build()
        .await
        .unwrap();
    let prios: Vec<PriorityLevel> = vec![0, 5, 0, 3, 5, -1, 3, 0, 10, 5, -7, 3, 10, 0];
    let order = served_order(&pool, &prios).await;
    // The specification: by priority, highest first; a stable sort keeps
    // arrival order among equals.
    let mut expected: Vec<usize> = (0..prios.len()).collect();
    expected.sort_by_key(|&i| std::cmp::Reverse(prios[i]));
    assert_eq!(order, expected, "priorities {prios:?}");
    let served: Vec<PriorityLevel> = order.iter().map(|&i| prios[i]).collect();
    assert!(served.windows(2).all(|w| w[0] >= w[1]), "{served:?}");

    // `call_with` with a priority queues through the same strategy: every call is
    // served by the one worker once it is released.
    let held = pool.get().await.unwrap();
    let held_id = Checkout::id(&held).0;
    let mut calls = Vec::new();
    for (i, prio) in [1, 2, 2, 1, 3].into_iter().enumerate() {
        let p = pool.clone();
        calls.push(tokio::spawn(async move {
            p.call_with(Op::Ok, cenote::CallOptions::default().priority(prio))
                .await
                .unwrap()
        }));
        assert!(eventually(SETTLE, || pool.status().waiting == i + 1).await);
    }
    drop(held);
    for c in calls {
        assert_eq!(c.await.unwrap(), held_id);
    }
    assert_eq!(pool.status().waiting, 0);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_waiters_are_served_nearest_deadline_first() {
    let f = TestFactory::default();
    let pool: cenote::Pool<TestFactory, cenote::Lifo, cenote::Deadline> = builder(f.clone(), 1)
        .wait_strategy::<cenote::Deadline>()
        .build()
        .await
        .unwrap();
    // Checkout timeouts in seconds, arriving in this order; priorities are
    // ignored. Queued a few ms apart, so later arrivals with the same
    // timeout have later deadlines.
    let timeouts = [9u64, 3, 7, 3, 5, 1, 9, 2];
    let opts = timeouts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            cenote::CheckoutOptions::default()
                .timeout(Duration::from_secs(s))
                .priority(i as PriorityLevel)
        })
        .collect();
    let order = served_order_with(&pool, opts).await;
    let mut expected: Vec<usize> = (0..timeouts.len()).collect();
    expected.sort_by_key(|&i| timeouts[i]);
    assert_eq!(order, expected, "timeouts {timeouts:?}");
    close_clean(pool, &f).await;
}

/// Check out every worker, give them back in a known order, and return the
/// ids in that order.
async fn return_in_order<I, W>(pool: &cenote::Pool<TestFactory, I, W>, n: usize) -> Vec<u64>
where
    I: cenote::IdleStrategy,
    W: cenote::WaitStrategy,
{
    assert!(eventually(SETTLE, || pool.status().idle == n).await);
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    let s = pool.status();
    assert_eq!((s.busy, s.idle, s.live), (n, 0, n), "{s:?}");
    // Shuffle the return order away from the checkout order.
    held.rotate_left(1);
    held.swap(0, n - 1);
    let ids: Vec<u64> = held.iter().map(|c| Checkout::id(c).0).collect();
    for co in held {
        drop(co);
    }
    assert_eq!(pool.status().idle, n);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifo_idle_reuses_the_most_recently_returned_worker() {
    let (f, pool) = pool_of(4).await;
    let returned = return_in_order(&pool, 4).await;
    // Take them all again: newest first.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    let taken: Vec<u64> = held.iter().map(|c| Checkout::id(c).0).collect();
    let mut newest_first = returned.clone();
    newest_first.reverse();
    assert_eq!(taken, newest_first, "returned in order {returned:?}");
    drop(held);
    // One caller at a time: always the same, hot worker.
    let hot = Checkout::id(&pool.get().await.unwrap()).0;
    for _ in 0..20 {
        let mut co = pool.get().await.unwrap();
        assert_eq!(Checkout::id(&co).0, hot);
        assert_eq!(co.call(Op::Ok).await.unwrap(), hot);
    }
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_idle_rotates_through_every_worker() {
    let f = TestFactory::default();
    let pool: cenote::Pool<TestFactory, cenote::Fifo, cenote::Fifo> = builder(f.clone(), 4)
        .idle_strategy::<cenote::Fifo>()
        .build()
        .await
        .unwrap();
    let returned = return_in_order(&pool, 4).await;
    // One caller at a time: the least recently returned each time, so the
    // workers take turns in the order they came back.
    let mut seen = Vec::new();
    for _ in 0..12 {
        let mut co = pool.get().await.unwrap();
        assert_eq!(co.call(Op::Ok).await.unwrap(), Checkout::id(&co).0);
        seen.push(Checkout::id(&co).0);
    }
    let expected: Vec<u64> = returned.iter().cycle().take(12).copied().collect();
    assert_eq!(seen, expected);
    close_clean(pool, &f).await;
}
