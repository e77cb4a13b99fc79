//! A process that dies mid-call (exit, SIGKILL, segfault): the caller gets a
//! crash error with the exit status and the last stderr lines, and a pool is
//! back at full size.

mod common;

use std::time::Duration;

use cenote_core::{Error, Worker};
use cenote_python::{Exit, PyCall, PythonError, PythonFactory};
use common::*;
use serde_json::json;

fn expect_crash(err: &PythonError, status: Exit, tail_has: &str) {
    match err {
        PythonError::Crashed {
            status: s,
            stderr_tail,
            ..
        } => {
            assert_eq!(*s, status, "{err}");
            assert!(
                tail_has.is_empty() || stderr_tail.0.iter().any(|l| l.contains(tail_has)),
                "tail lacks {tail_has:?}: {err}"
            );
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
}

#[tokio::test]
async fn worker_reports_exit_code_signal_and_segfault() {
    init_tracing();
    let cases = [
        ("exit_now", Exit::Code(3), "about to exit with 3"),
        (
            "kill_self",
            Exit::Signal(libc::SIGKILL),
            "about to SIGKILL myself",
        ),
        (
            "segfault",
            Exit::Signal(libc::SIGSEGV),
            "Segmentation fault",
        ),
    ];
    for (f, status, tail) in cases {
        let tag = new_tag(f);
        let mut w = PythonFactory::new(chaos(&tag))
            .spawn("t/crash")
            .await
            .unwrap();
        let err = w
            .call_json(PyCall::new(f, json!(null)), ctx())
            .await
            .unwrap_err();
        expect_crash(&err, status, tail);
        assert!(err.is_fatal());
        assert!(w.is_broken());
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        w.shutdown(Duration::ZERO).await;
        assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
    }
}

#[tokio::test]
async fn killed_from_outside_while_idle_is_seen_as_broken() {
    let (tag, mut w) = chaos_worker("outside", "t/outside").await;
    assert!(!w.is_broken());
    w.signal(libc::SIGKILL);
    assert!(eventually(Duration::from_secs(2), || w.is_broken()).await);
    let err = w
        .call_json(PyCall::new("add", json!([1, 2])), ctx())
        .await
        .unwrap_err();
    expect_crash(&err, Exit::Signal(libc::SIGKILL), "");
    w.shutdown(Duration::ZERO).await;
    assert!(wait_gone(&tag, Duration::from_secs(5)).await.is_empty());
}

#[tokio::test]
async fn pool_replaces_crashed_workers_and_other_calls_go_on() {
    let tag = test_tag("poolcrash");
    let pool = chaos_pool(chaos(&tag), 2).await;
    assert_eq!(tagged(&tag).len(), 2);
    for (f, status) in [
        ("exit_now", Exit::Code(3)),
        ("kill_self", Exit::Signal(libc::SIGKILL)),
        ("segfault", Exit::Signal(libc::SIGSEGV)),
    ] {
        // A slow call on the other worker is not disturbed by the crash.
        let p2 = pool.clone();
        let other = tokio::spawn(async move { p2.call(PyCall::new("sleep", json!([0.3]))).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = pool.call(PyCall::new(f, json!(null))).await.unwrap_err();
        match &err {
            Error::Crashed(e) => expect_crash(e, status, "about to"),
            other => panic!("{f}: expected Error::Crashed, got {other:?}"),
        }
        assert_eq!(other.await.unwrap().unwrap(), json!(0.3));
        let full = eventually(Duration::from_secs(10), || {
            let s = pool.status();
            s.idle == 2 && s.live == 2
        })
        .await;
        assert!(full, "pool back at full size: {:?}", pool.status());
        assert!(eventually(Duration::from_secs(2), || tagged(&tag).len() == 2).await);
    }
    let st = pool.status();
    assert_eq!(st.totals.crashes, 3, "{st:?}");
    assert!(st.totals.restarts >= 3, "{st:?}");
    assert_eq!(
        pool.call(PyCall::new("add", json!([1, 2]))).await.unwrap(),
        json!(3)
    );
    close_none_left(pool, &tag).await;
}
