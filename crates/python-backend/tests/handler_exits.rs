//! What a handler's exits do, through a pool. `sys.exit()` (any
//! `SystemExit`) fails the call with `PythonError::SystemExit` and the
//! worker stays up; any other `BaseException` (here `KeyboardInterrupt`)
//! ends the bridge with its `INTERNAL` exit code, reported by name, and the
//! pool replaces it. (`os._exit(n)` is a crash with code n: `crashes.rs`.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cenote_core::Error;
use cenote_python::{BridgeExit, Exit, PyCall, PythonError, PythonPool};
use common::*;
use futures::StreamExt;
use serde_json::json;

async fn full_size(pool: &PyPool, size: usize) -> bool {
    eventually(Duration::from_secs(10), || {
        let s = pool.status();
        s.idle == size && s.live == size
    })
    .await
}

#[tokio::test]
async fn sys_exit_in_a_handler_fails_the_call_and_the_worker_stays() {
    let tag = test_tag("sysexit");
    let pool = chaos_pool(chaos(&tag), 2).await;
    let pids: BTreeSet<u32> = tagged(&tag).into_iter().collect();
    assert_eq!(pids.len(), 2);
    for (f, args, code) in [
        ("sys_exit", json!([3]), "3"),
        ("sys_exit", json!(null), "None"),
        ("sys_exit", json!(["bye"]), "'bye'"),
        ("async_sys_exit", json!([4]), "4"),
    ] {
        let err = pool.call(PyCall::new(f, args.clone())).await.unwrap_err();
        match &err {
            Error::Worker(
                e @ PythonError::SystemExit {
                    function,
                    code: got,
                    traceback,
                },
            ) => {
                assert_eq!(function, f);
                assert_eq!(got, code, "{f}({args})");
                assert!(traceback.contains("sys.exit(code)"), "{traceback}");
                assert!(!e.is_fatal());
                assert!(e.to_string().contains("the worker stays up"), "{e}");
            }
            other => panic!("{f}({args}): expected a SystemExit call error, got {other:?}"),
        }
    }
    // In a streamed generator: the items before it, then the error.
    let mut items = pool
        .stream(PyCall::new("gen_sys_exit", json!([2])))
        .await
        .unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), json!(0));
    assert_eq!(items.next().await.unwrap().unwrap(), json!(1));
    let err = items.next().await.unwrap().unwrap_err();
    assert!(
        matches!(&err, PythonError::SystemExit { code, .. } if code == "2"),
        "{err:?}"
    );
    assert!(items.next().await.is_none());
    drop(items);
    // The same two processes still serve: nothing crashed or was replaced.
    assert!(full_size(&pool, 2).await, "{:?}", pool.status());
    assert_eq!(tagged(&tag).into_iter().collect::<BTreeSet<_>>(), pids);
    for _ in 0..4 {
        let pid = pool.call(PyCall::new("pid", json!(null))).await.unwrap();
        assert!(pids.contains(&(pid.as_u64().unwrap() as u32)), "{pid}");
    }
    let st = pool.status();
    assert_eq!(st.totals.crashes, 0, "{st:?}");
    assert_eq!(st.totals.restarts, 0, "{st:?}");
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn keyboard_interrupt_ends_the_bridge_with_its_internal_code() {
    let tag = test_tag("interrupt");
    let pool = chaos_pool(chaos(&tag), 2).await;
    let err = pool
        .call(PyCall::new("interrupt", json!(null)))
        .await
        .unwrap_err();
    match &err {
        Error::Crashed(
            e @ PythonError::Crashed {
                status,
                stderr_tail,
                ..
            },
        ) => {
            assert_eq!(*status, Exit::Code(BridgeExit::Internal.code()));
            assert!(e.to_string().contains("INTERNAL"), "{e}");
            assert!(
                stderr_tail
                    .0
                    .iter()
                    .any(|l| l.contains("KeyboardInterrupt")),
                "{e}"
            );
        }
        other => panic!("expected Error::Crashed, got {other:?}"),
    }
    assert!(full_size(&pool, 2).await, "{:?}", pool.status());
    assert!(eventually(Duration::from_secs(2), || tagged(&tag).len() == 2).await);
    assert_eq!(
        pool.call(PyCall::new("add", json!([1, 2]))).await.unwrap(),
        json!(3)
    );
    close_none_left(pool, &tag).await;
}
