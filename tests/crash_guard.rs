//! The crash guard counts what is broken, not what the pool chose: real
//! crashes and failed starts hold starts back and are reported as a crash
//! loop; kills of late calls, retirements and shrinking are not charged;
//! and however many broken workers a caller meets, its wait keeps the
//! deadline it started with.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cenote::{CheckoutOptions, CrashBudget, Error};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_held_to_its_budget_and_reported() {
    let f = TestFactory::default();
    let window = Duration::from_millis(800);
    let pool = builder(f.clone(), 1)
        .crash_budget(CrashBudget {
            max_restarts: 6,
            window,
        })
        .build()
        .await
        .unwrap();
    // Let the worker serve once, so each crash below counts once.
    pool.call(Op::Ok).await.unwrap();
    let began = Instant::now();
    let mut looping_seen = false;
    for _ in 0..8 {
        let _ = pool.call(Op::Crash).await;
        looping_seen |= pool.status().crash_looping;
    }
    // Eight crashes in a row: a budget of six per window, and a worker that
    // crashes on its first call counts twice, so the last ones had to wait
    // for the window to slide.
    assert!(
        began.elapsed() >= window,
        "restarts were not held back: {:?}",
        began.elapsed()
    );
    assert!(
        looping_seen || pool.status().crash_looping,
        "crash loop not reported"
    );
    assert_eq!(pool.status().totals.crashes, 8);
    close_clean(pool, &f).await;
}

/// Kills of calls past their deadline are the pool's choice: a storm of
/// them, far over the budget, is never reported as a crash loop and never
/// holds a replacement back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_of_late_calls_are_not_charged() {
    let f = TestFactory::default();
    let pool = builder(f.clone(), 2)
        .crash_budget(CrashBudget {
            max_restarts: 3,
            window: Duration::from_secs(30),
        })
        .build()
        .await
        .unwrap();
    let began = Instant::now();
    for _ in 0..20 {
        let r = pool
            .call_with(
                Op::Hang,
                cenote::CallOptions::default().timeout(Duration::from_millis(5)),
            )
            .await;
        assert!(matches!(r, Err(Error::CallTimeout(_))), "{r:?}");
        assert!(!pool.status().crash_looping, "{:?}", pool.status());
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "replacements were held back: {:?}",
        began.elapsed()
    );
    // The last kill happens after its caller was answered.
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = pool.status();
            s.idle == 2 && s.totals.killed == 20
        })
        .await,
        "{:?}",
        pool.status()
    );
    let t = pool.status().totals;
    assert_eq!((t.killed, t.crashes, t.call_timeouts), (20, 0, 20), "{t:?}");
    close_clean(pool, &f).await;
}

/// A factory whose workers are always broken (bb8's `test_drop_on_broken`):
/// a caller's wait keeps the deadline it started with, however many broken
/// workers it meets, and the crash budget holds the spawning back. On a
/// lazy pool (`size(0)`) and an eager one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_broken_factory_keeps_the_callers_deadline_and_its_budget() {
    for (size, overflow) in [(0, 4), (2, 0)] {
        let f = TestFactory::default();
        f.book.born_broken.store(true, Ordering::SeqCst);
        let pool = builder(f.clone(), size)
            .max_overflow(overflow)
            .wait_for_warm(false)
            .build()
            .await
            .unwrap();
        for wait in [Duration::from_millis(300), Duration::from_secs(1)] {
            let began = Instant::now();
            let got = pool
                .get_with(CheckoutOptions::default().timeout(wait))
                .await;
            let took = began.elapsed();
            assert!(
                matches!(got, Err(Error::CheckoutTimeout { .. })),
                "size {size}: {:?}",
                got.map(|_| ())
            );
            // The bound: a 1 s wait returns within 1.1 s (the short
            // one gets more room: its churn shares two runtime threads).
            let slack = if wait >= Duration::from_secs(1) {
                100
            } else {
                250
            };
            assert!(
                took >= wait && took < wait + Duration::from_millis(slack),
                "size {size}: a {wait:?} wait took {took:?}"
            );
        }
        // The default budget (20 charges per 10 s; a worker broken before
        // its first call counts twice) holds the starts back: about ten
        // workers, not thousands.
        let made = f.book.created.load(Ordering::SeqCst);
        assert!((5..=14).contains(&made), "size {size}: {made} workers made");
        let st = pool.status();
        assert!(st.crash_looping, "size {size}: {st:?}");
        assert!(st.totals.crashes + 2 >= made, "size {size}: {st:?}");
        pool.close().await;
        assert_eq!(f.book.alive(), 0, "size {size}");
    }
}
