//! Adaptive batching through the core (`Pool::batched`), on in-process
//! workers that record every batch they serve: sizes, membership, results
//! routed to the right caller, each item's own deadline and cancellation,
//! and the batch's failures (an item's error, a wrong-length answer, a
//! crash, a deadline inside a batch). The Python side is tested in
//! `crates/python-backend/tests/batching.rs`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cenote::{BatchConfig, BatchError, Error, ItemOptions};
use common::*;
use futures::future::join_all;

const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_caller_is_sent_alone_and_at_once() {
    let (f, pool) = pool_of(2).await;
    let batched = pool.batched(BatchConfig::new(32)).unwrap();
    for v in 0..200 {
        assert_eq!(batched.call(Item::Echo(v)).await.unwrap(), v);
    }
    // Nothing waited for company: every batch held one item.
    assert_eq!(f.book.batch_sizes(), vec![1; 200]);
    let s = batched.status();
    assert_eq!(
        (s.batches, s.items, s.max_size, s.p99_size),
        (200, 200, 1, 1)
    );
    assert_eq!(s.waiting, 0);
    drop(batched);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_batches_grow_and_never_pass_max_size() {
    let f = TestFactory::default();
    f.book.batch_ms.store(5, Ordering::SeqCst);
    let pool = builder(f.clone(), 2).build().await.unwrap();
    let batched = pool.batched(BatchConfig::new(32)).unwrap();
    let callers = (0..64u64).map(|c| {
        let b = batched.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let v = c * 1000 + i;
                assert_eq!(b.call(Item::Echo(v)).await.unwrap(), v);
            }
        })
    });
    for r in join_all(callers).await {
        r.unwrap();
    }
    let sizes = f.book.batch_sizes();
    assert_eq!(sizes.iter().sum::<usize>(), 64 * 20);
    assert!(sizes.iter().all(|&n| (1..=32).contains(&n)), "{sizes:?}");
    let s = batched.status();
    assert!(s.mean_size > 8.0, "mean batch {} ({s:?})", s.mean_size);
    assert_eq!(s.items, 64 * 20);
    assert!(!f.book.double_use.load(Ordering::SeqCst));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_goes_to_its_own_caller() {
    let (_, pool) = pool_of(4).await;
    let batched = pool.batched(BatchConfig::new(64)).unwrap();
    let callers = (0..250u64).map(|c| {
        let b = batched.clone();
        tokio::spawn(async move {
            let mut wrong = 0;
            for i in 0..400 {
                let v = c * 400 + i;
                if b.call(Item::Echo(v)).await.unwrap() != v {
                    wrong += 1;
                }
            }
            wrong
        })
    });
    let wrong: u64 = join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert_eq!(wrong, 0);
    let s = batched.status();
    assert_eq!(s.items, 100_000);
    assert!(s.mean_size > 1.0, "{s:?}");
    pool.close().await;
}

/// Occupy the pool's one worker with a batch of item `v` that takes `ms`
/// (as every later batch will), and wait until it is inside it.
async fn occupy<W: cenote::strategy::WaitStrategy>(
    f: &TestFactory,
    batched: &cenote::Batched<TestFactory, cenote::Lifo, W, Item>,
    ms: u64,
    v: u64,
) -> tokio::task::JoinHandle<Result<u64, BatchError<TestError>>> {
    f.book.batch_ms.store(ms, Ordering::SeqCst);
    let b = batched.clone();
    let busy = tokio::spawn(async move { b.call(Item::Echo(v)).await });
    assert!(eventually(SETTLE, || f.book.batch_sizes().len() == 1).await);
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_whose_caller_leaves_before_dispatch_is_left_out() {
    let (f, pool) = pool_of(1).await;
    let batched = pool.batched(BatchConfig::new(64)).unwrap();
    let busy = occupy(&f, &batched, 200, 0).await;
    // Ten items in line; the odd ones' callers give up (dropped futures).
    let items: Vec<_> = (1..=10u64)
        .map(|v| {
            let b = batched.clone();
            tokio::spawn(async move { b.call(Item::Echo(v)).await })
        })
        .collect();
    assert!(eventually(SETTLE, || batched.status().waiting == 10).await);
    let mut kept = Vec::new();
    for (i, h) in items.into_iter().enumerate() {
        if i % 2 == 0 {
            h.abort();
        } else {
            kept.push(h);
        }
    }
    assert!(eventually(SETTLE, || batched.status().waiting == 5).await);
    assert_eq!(busy.await.unwrap().unwrap(), 0);
    for h in kept {
        h.await.unwrap().unwrap();
    }
    let mut batches = f.book.batches.lock().unwrap().clone();
    // The tasks joined the line in whatever order they ran.
    batches[1].sort_unstable();
    assert_eq!(batches, vec![vec![0], vec![2, 4, 6, 8, 10]]);
    let s = batched.status();
    assert_eq!(
        (s.left_before_dispatch, s.dropped_after_dispatch, s.waiting),
        (5, 0, 0)
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_past_its_checkout_timeout_leaves_the_line() {
    let (f, pool) = pool_of(1).await;
    let batched = pool.batched(BatchConfig::new(8)).unwrap();
    let busy = occupy(&f, &batched, 300, 0).await;
    let late = batched
        .call_with(
            Item::Echo(1),
            ItemOptions::default().checkout_timeout(Duration::from_millis(50)),
        )
        .await;
    match late {
        Err(e @ BatchError::Pool(_)) => {
            assert!(e.is_timeout(), "{e}");
            assert!(
                matches!(e.pool_error(), Some(Error::CheckoutTimeout { .. })),
                "{e}"
            );
        }
        other => panic!("expected a checkout timeout, got {other:?}"),
    }
    busy.await.unwrap().unwrap();
    assert_eq!(batched.status().left_before_dispatch, 1);
    assert_eq!(f.book.batches.lock().unwrap().concat(), vec![0]);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_after_dispatch_has_its_result_dropped() {
    let (f, pool) = pool_of(1).await;
    let batched = pool.batched(BatchConfig::new(8)).unwrap();
    let busy = occupy(&f, &batched, 150, 0).await;
    let [stays, leaves] = [1, 2].map(|v| {
        let b = batched.clone();
        tokio::spawn(async move { b.call(Item::Echo(v)).await })
    });
    assert!(eventually(SETTLE, || batched.status().waiting == 2).await);
    busy.await.unwrap().unwrap();
    // Both sent in one batch; then one caller gives up.
    assert!(eventually(SETTLE, || f.book.batch_sizes() == vec![1, 2]).await);
    leaves.abort();
    assert_eq!(stays.await.unwrap().unwrap(), 1);
    assert!(eventually(SETTLE, || batched.status().dropped_after_dispatch == 1).await);
    assert_eq!(batched.status().left_before_dispatch, 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_callers_all_leave_is_cancelled_on_its_worker() {
    let (f, pool) = pool_of(1).await;
    let batched = pool.batched(BatchConfig::new(8)).unwrap();
    let b = batched.clone();
    let gone = tokio::spawn(async move { b.call(Item::Hang(1)).await });
    assert!(eventually(SETTLE, || f.book.batch_sizes() == vec![1]).await);
    gone.abort();
    // The hanging batch was cut off and its worker recycled (the test
    // worker cannot cancel): the pool serves again.
    assert_eq!(batched.call(Item::Echo(7)).await.unwrap(), 7);
    assert!(f.book.recycles.load(Ordering::SeqCst) >= 1);
    assert_eq!(batched.status().dropped_after_dispatch, 1);
    pool.close().await;
}

type Batch = cenote::Batched<TestFactory, cenote::Lifo, cenote::Fifo, Item>;

/// `items` sent together, in one batch, on a pool of one worker (busy
/// with another batch while they line up): the pool, its batcher and each
/// item's result.
async fn one_batch(
    items: [Item; 3],
) -> (
    TestFactory,
    TestPool,
    Batch,
    Vec<Result<u64, BatchError<TestError>>>,
) {
    let (f, pool) = pool_of(1).await;
    let batched = pool.batched(BatchConfig::new(8)).unwrap();
    let busy = occupy(&f, &batched, 100, 0).await;
    let calls = items.map(|i| {
        let b = batched.clone();
        tokio::spawn(async move { b.call(i).await })
    });
    assert!(eventually(SETTLE, || batched.status().waiting == 3).await);
    busy.await.unwrap().unwrap();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    assert_eq!(f.book.batch_sizes(), vec![1, 3]);
    (f, pool, batched, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_error_fails_that_item_alone() {
    let items = [Item::Echo(1), Item::Fail(2), Item::Echo(3)];
    let (f, pool, _, results) = one_batch(items).await;
    assert_eq!(*results[0].as_ref().unwrap(), 1);
    assert!(matches!(
        results[1],
        Err(BatchError::Item(TestError::Failed))
    ));
    assert_eq!(*results[2].as_ref().unwrap(), 3);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_length_answer_fails_every_item_naming_both_lengths() {
    let items = [Item::Echo(1), Item::Short(2), Item::Echo(3)];
    let (f, pool, batched, results) = one_batch(items).await;
    for result in results {
        match result {
            Err(
                e @ BatchError::WrongLength {
                    sent: 3,
                    answered: 2,
                },
            ) => {
                let said = e.to_string();
                assert!(
                    said.contains("answered 2 results for a batch of 3"),
                    "{said}"
                )
            }
            other => panic!("expected WrongLength, got {other:?}"),
        }
    }
    // The worker itself is fine and serves on.
    assert_eq!(batched.call(Item::Echo(9)).await.unwrap(), 9);
    drop(batched);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_fails_its_items_and_the_worker_is_replaced() {
    let items = [Item::Echo(1), Item::Crash(2), Item::Echo(3)];
    let (f, pool, batched, results) = one_batch(items).await;
    for result in results {
        let e = result.unwrap_err();
        let crashed = matches!(e.pool_error(), Some(Error::Crashed(TestError::Crashed)));
        assert!(crashed, "{e}");
    }
    f.book.batch_ms.store(0, Ordering::SeqCst);
    assert_eq!(batched.call(Item::Echo(9)).await.unwrap(), 9);
    assert_eq!(f.book.created.load(Ordering::SeqCst), 2);
    assert_eq!(pool.status().totals.crashes, 1);
    drop(batched);
    close_clean(pool, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_by_its_earliest_items_deadline() {
    let (f, pool) = pool_of(1).await;
    let batched = pool.batched(BatchConfig::new(8)).unwrap();
    let busy = occupy(&f, &batched, 100, 0).await;
    let hang = {
        let b = batched.clone();
        tokio::spawn(async move { b.call(Item::Hang(1)).await })
    };
    let short = {
        let b = batched.clone();
        tokio::spawn(async move {
            let opts = ItemOptions::default().timeout(Duration::from_millis(150));
            b.call_with(Item::Echo(2), opts).await
        })
    };
    assert!(eventually(SETTLE, || batched.status().waiting == 2).await);
    busy.await.unwrap().unwrap();
    let began = std::time::Instant::now();
    for call in [hang, short] {
        let e = call.await.unwrap().unwrap_err();
        assert!(
            matches!(e.pool_error(), Some(Error::CallTimeout(d)) if *d == Duration::from_millis(150)),
            "{e}"
        );
    }
    // Cut off at the 150 ms item's deadline, not the pool's 5 s.
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert!(pool.status().totals.call_timeouts >= 1);
    pool.close().await;
}

/// With the one worker busy, `older` plain items in line, then one more
/// (99) with `opts`: the batches the worker served, once all are done.
async fn line_up<W: cenote::strategy::WaitStrategy>(
    max_size: usize,
    older: u64,
    opts: ItemOptions,
) -> Vec<Vec<u64>> {
    let f = TestFactory::default();
    let pool = builder(f.clone(), 1)
        .wait_strategy::<W>()
        .build()
        .await
        .unwrap();
    let batched = pool.batched(BatchConfig::new(max_size)).unwrap();
    let busy = occupy(&f, &batched, 150, 0).await;
    let mut calls = Vec::new();
    for v in 1..=older {
        let b = batched.clone();
        calls.push(tokio::spawn(async move { b.call(Item::Echo(v)).await }));
        assert!(eventually(SETTLE, || batched.status().waiting == v as usize).await);
    }
    let b = batched.clone();
    calls.push(tokio::spawn(async move {
        b.call_with(Item::Echo(99), opts).await
    }));
    assert!(eventually(SETTLE, || batched.status().waiting == older as usize + 1).await);
    busy.await.unwrap().unwrap();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let batches = f.book.batches.lock().unwrap().clone();
    close_clean(pool, &f).await;
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_puts_an_urgent_item_into_the_next_batch() {
    let urgent = ItemOptions::default().priority(10);
    let batches = line_up::<cenote::Priority>(4, 8, urgent).await;
    assert_eq!(batches[1][0], 99, "{batches:?}");
    assert_eq!(batches[1].len(), 4, "{batches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_puts_the_nearest_deadline_into_the_next_batch() {
    // Last in, but its wait ends first (2 s against the pool's 5 s).
    let nearest = ItemOptions::default().checkout_timeout(Duration::from_secs(2));
    let batches = line_up::<cenote::Deadline>(2, 4, nearest).await;
    assert_eq!(batches[1], vec![99, 1], "{batches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_gathers_a_batch_even_with_a_worker_free() {
    let (f, pool) = pool_of(2).await;
    let config = BatchConfig::new(4).max_wait(Duration::from_millis(300));
    let batched = pool.batched(config).unwrap();
    let calls: Vec<_> = (1..=4u64)
        .map(|v| {
            let b = batched.clone();
            tokio::spawn(async move { b.call(Item::Echo(v)).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(f.book.batch_sizes(), vec![4]);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_and_a_closed_pool_are_clear_errors() {
    let (f, pool) = pool_of(1).await;
    let e = pool.batched::<Item>(BatchConfig::new(0)).err().unwrap();
    assert!(e.to_string().contains("max_size is 0"), "{e}");
    let batched = pool.batched(BatchConfig::new(4)).unwrap();
    let busy = occupy(&f, &batched, 200, 0).await;
    let waiting = {
        let b = batched.clone();
        tokio::spawn(async move { b.call(Item::Echo(1)).await })
    };
    assert!(eventually(SETTLE, || batched.status().waiting == 1).await);
    pool.close().await;
    // The item in line is told the pool closed; so is a new one.
    let e = waiting.await.unwrap().unwrap_err();
    assert!(matches!(e.pool_error(), Some(Error::Closed)), "{e}");
    let _ = busy.await.unwrap();
    let e = batched.call(Item::Echo(2)).await.unwrap_err();
    assert!(matches!(e.pool_error(), Some(Error::Closed)), "{e}");
    assert_eq!(f.book.alive(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_is_a_tower_service() {
    use tower::{Service, ServiceExt};
    let (_, pool) = pool_of(1).await;
    let mut svc = pool.batched(BatchConfig::new(4)).unwrap();
    let out = svc
        .ready()
        .await
        .unwrap()
        .call(Item::Echo(5))
        .await
        .unwrap();
    assert_eq!(out, 5);
    pool.close().await;
}
