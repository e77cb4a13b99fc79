//! A call past its deadline: the caller gets a timeout at once, the call is
//! cancelled (or, with no grace, its worker's whole process group killed and
//! replaced), and other calls are unaffected.

mod common;

use std::time::{Duration, Instant};

use cenote_core::Error;
use cenote_python::PyCall;
use common::*;
use serde_json::json;

/// A late call is cancelled where it runs; its worker and the others serve
/// on. What the handler started and left behind (here a `sleep` child) is
/// the handler's to clean up: it lives until its worker ends.
#[tokio::test]
async fn a_late_call_is_cancelled_and_spares_its_worker_and_other_calls() {
    let tag = test_tag("pdeadline");
    let pool = chaos_pool(chaos(&tag), 2).await;
    let p2 = pool.clone();
    let steady = tokio::spawn(async move {
        let mut n = 0;
        let until = Instant::now() + Duration::from_millis(900);
        while Instant::now() < until {
            let v = p2.call(PyCall::new("add", json!([n, 1]))).await.unwrap();
            assert_eq!(v, json!(n + 1));
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let began = Instant::now();
    let err = pool
        .call_with(
            PyCall::new("spawn_and_hang", json!([30])),
            cenote_core::CallOptions::default().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CallTimeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(2));
    let served = steady.await.unwrap();
    assert!(served > 5, "other calls kept going: {served}");
    let settled = eventually(Duration::from_secs(5), || {
        let s = pool.status();
        s.idle == 2 && s.totals.cancelled == 1
    })
    .await;
    assert!(settled, "{:?}", pool.status());
    // Two bridges and the handler's own child.
    assert_eq!(tagged(&tag).len(), 3, "{:?}", tagged(&tag));
    let st = pool.status();
    assert_eq!(
        (
            st.totals.call_timeouts,
            st.totals.killed,
            st.totals.restarts
        ),
        (1, 0, 0),
        "{st:?}"
    );
    close_clean(pool, &tag).await;
}

/// With no grace, a late call's worker is killed at once, with its whole
/// process group, and replaced.
#[tokio::test]
async fn with_no_grace_a_late_call_kills_its_whole_process_group() {
    let tag = test_tag("nograce");
    let pool: PyPool = chaos_builder(chaos(&tag), 2)
        .cancel_grace(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let err = pool
        .call_with(
            PyCall::new("spawn_and_hang", json!([30])),
            cenote_core::CallOptions::default().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CallTimeout(_)), "{err:?}");
    let full = eventually(Duration::from_secs(10), || {
        let s = pool.status();
        s.idle == 2 && s.live == 2
    })
    .await;
    assert!(full, "{:?}", pool.status());
    // Two bridges, no leftover grandchild.
    assert!(
        eventually(Duration::from_secs(2), || tagged(&tag).len() == 2).await,
        "{:?}",
        tagged(&tag)
    );
    let t = pool.status().totals;
    assert_eq!(
        (t.call_timeouts, t.killed, t.restarts, t.crashes),
        (1, 1, 1, 0),
        "{t:?}"
    );
    close_none_left(pool, &tag).await;
}

/// A call has one deadline, the pool's: whichever way it is made (plain,
/// typed, per-call options, through a checkout), a late call is
/// `CallTimeout`, never a crash, and its worker is replaced.
#[tokio::test]
async fn a_late_call_is_call_timeout_whichever_way_it_was_made() {
    let tag = test_tag("onedeadline");
    let limit = Duration::from_millis(300);
    let pool = chaos_pool_with_deadline(chaos(&tag), 1, limit).await;
    let late = || PyCall::new("sleep", json!([30]));
    let plain = pool.call(late()).await.unwrap_err();
    let typed = pool.call(late().returning::<f64>()).await.unwrap_err();
    let tuple = pool.call(("sleep", json!([30]))).await.unwrap_err();
    let mut guard = pool.get().await.unwrap();
    let checkout = guard.call(late()).await.unwrap_err();
    drop(guard);
    for err in [plain, typed, tuple, checkout] {
        assert!(
            matches!(err, Error::CallTimeout(d) if d == limit),
            "expected CallTimeout({limit:?}), got {err:?}"
        );
    }
    assert_eq!(
        pool.call(PyCall::new("add", json!([1, 2]))).await.unwrap(),
        json!(3)
    );
    let st = pool.status();
    assert_eq!(st.totals.call_timeouts, 4, "{st:?}");
    assert_eq!(st.totals.crashes, 0, "{st:?}");
    close_none_left(pool, &tag).await;
}
