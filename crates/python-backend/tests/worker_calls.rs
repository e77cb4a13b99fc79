//! A single worker, without a pool: every kind of handler, arguments, and
//! output that must not corrupt the protocol.

mod common;

use std::time::Duration;

use cenote_core::Worker;
use cenote_python::{PyCall, PythonConfig, PythonError, PythonFactory};
use common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn ready_reports_pid_and_version_and_functions() {
    let tag = test_tag("ready");
    let factory = PythonFactory::new(chaos(&tag));
    let w = factory.spawn("t/ready").await.unwrap();
    let info = w.ready_info().clone();
    assert_eq!(w.pid(), Some(info.pid));
    assert!(info.version.starts_with('3'), "{info:?}");
    assert!(info.functions.iter().any(|f| f == "echo"));
    assert!(!info.functions.iter().any(|f| f.starts_with('_')));
    assert_eq!(tagged(&tag), vec![info.pid]);
    w.shutdown(Duration::from_secs(2)).await;
    assert!(tagged(&tag).is_empty());
}

#[tokio::test]
async fn plain_async_and_generator_handlers() {
    let tag = test_tag("kinds");
    let factory = PythonFactory::new(chaos(&tag));
    let mut w = factory.spawn("t/kinds").await.unwrap();

    let v = w
        .call_json(PyCall::new("echo", json!([{"a": [1, 2, "é"]}])), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!({"a": [1, 2, "é"]}));
    let v = w
        .call_json(PyCall::new("add", json!({"a": 2, "b": 3})), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!(5));
    let v: i64 = w
        .call_as(PyCall::new("add", json!([40, 2])), ctx())
        .await
        .unwrap();
    assert_eq!(v, 42);
    let v = w
        .call_json(PyCall::new("positional", json!([1])).kwarg("b", 5), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!([1, 5, 3]));
    let v = w
        .call_json(PyCall::new("echo", json!("scalar")), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!("scalar"));
    let v = w
        .call_json(PyCall::new("echo", json!(null)), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!(null));
    let v = w
        .call_json(
            PyCall::new("async_add", json!({"a": 1, "b": 2, "delay": 0.01})),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(v, json!(3));
    // A generator called plainly is collected into a list.
    let v = w
        .call_json(PyCall::new("count", json!([4])), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!([0, 1, 2, 3]));
    let v = w
        .call_json(PyCall::new("async_count", json!([3])), ctx())
        .await
        .unwrap();
    assert_eq!(v, json!([0, 1, 2]));

    let items: Vec<_> = w
        .stream(PyCall::new("count", json!([5])), ctx())
        .collect()
        .await;
    let items: Vec<i64> = items
        .into_iter()
        .map(|r| r.unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    let items: Vec<_> = w
        .stream(PyCall::new("async_count", json!([3])), ctx())
        .typed::<i64>()
        .collect()
        .await;
    assert_eq!(
        items.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // A plain handler streams its one result.
    let items: Vec<_> = w
        .stream(PyCall::new("add", json!([1, 1])), ctx())
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    // A generator that raises midway: items, then the error, then the end.
    let items: Vec<_> = w
        .stream(PyCall::new("gen_fails", json!([2])), ctx())
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    match &items[2] {
        Err(PythonError::Raised {
            type_name, message, ..
        }) => {
            assert_eq!(type_name, "RuntimeError");
            assert!(message.contains("after 2"));
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    assert!(!w.is_broken());
    assert_eq!(
        w.call_json(PyCall::new("add", json!([1, 2])), ctx())
            .await
            .unwrap(),
        json!(3)
    );
    w.shutdown(Duration::from_secs(2)).await;
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn handler_output_on_fd1_does_not_corrupt_frames_and_reaches_stderr_tail() {
    let tag = test_tag("noise");
    let factory = PythonFactory::new(chaos(&tag));
    let mut w = factory.spawn("t/noise").await.unwrap();
    for i in 0..3 {
        let v = w
            .call_json(PyCall::new("noise", json!([i])), ctx())
            .await
            .unwrap();
        assert_eq!(v, json!(i));
    }
    let ok = eventually(Duration::from_secs(2), || {
        let tail = w.stderr_tail().0.join("\n");
        tail.contains("print() from a handler")
            && tail.contains("os.write(1) from a handler")
            && tail.contains("printf from C")
            && tail.contains("child process output")
    })
    .await;
    assert!(ok, "tail: {:?}", w.stderr_tail());
    w.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn stderr_tail_keeps_the_last_lines() {
    let tag = test_tag("tail");
    let factory = PythonFactory::new(chaos(&tag).stderr_tail_lines(5));
    let mut w = factory.spawn("t/tail").await.unwrap();
    w.call_json(PyCall::new("stderr_lines", json!([50])), ctx())
        .await
        .unwrap();
    let ok = eventually(Duration::from_secs(2), || {
        w.stderr_tail().0.last().map(String::as_str) == Some("line 49")
    })
    .await;
    assert!(ok);
    assert_eq!(w.stderr_tail().0.len(), 5);
    assert_eq!(w.stderr_tail().0[0], "line 45");
    w.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn thread_limits_default_to_one_and_can_be_overridden() {
    let tag = test_tag("env");
    let handlers = py_dir().join("envcheck.py");
    let factory = PythonFactory::new(
        PythonConfig::new(handlers.clone())
            .env(TAG_VAR, &tag)
            .env("MKL_NUM_THREADS", "4")
            .env("CENOTE_X", "y"),
    );
    let mut w = factory.spawn("t/env").await.unwrap();
    let get = |k: &str| PyCall::new("get", json!([k]));
    assert_eq!(
        w.call_json(get("OMP_NUM_THREADS"), ctx()).await.unwrap(),
        json!("1")
    );
    assert_eq!(
        w.call_json(get("OPENBLAS_NUM_THREADS"), ctx())
            .await
            .unwrap(),
        json!("1")
    );
    assert_eq!(
        w.call_json(get("MKL_NUM_THREADS"), ctx()).await.unwrap(),
        json!("4")
    );
    assert_eq!(
        w.call_json(get("CENOTE_X"), ctx()).await.unwrap(),
        json!("y")
    );
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn module_name_handlers_and_working_dir() {
    let tag = test_tag("modname");
    let factory = PythonFactory::new(
        PythonConfig::new("chaos")
            .working_dir(py_dir())
            .env(TAG_VAR, &tag),
    );
    let mut w = factory.spawn("t/modname").await.unwrap();
    assert_eq!(
        w.call_json(PyCall::new("add", json!([1, 2])), ctx())
            .await
            .unwrap(),
        json!(3)
    );
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn interpreter_is_resolved_once_to_the_real_executable() {
    let factory = PythonFactory::new(chaos(&new_tag("interp")));
    let first = factory.interpreter().await.unwrap().to_path_buf();
    assert!(first.is_absolute(), "{first:?}");
    assert!(!first.to_string_lossy().contains("shims"), "{first:?}");
    let again = factory.interpreter().await.unwrap();
    assert_eq!(first, again);
}

#[tokio::test]
async fn large_frames_round_trip_in_both_directions() {
    let (tag, mut w) = chaos_worker("large", "t/large").await;
    let big = "é".repeat(3_000_000);
    let v = w
        .call_json(PyCall::new("echo", json!([big.clone()])), ctx())
        .await
        .unwrap();
    assert_eq!(v.as_str(), Some(big.as_str()));
    let v = w
        .call_json(PyCall::new("big", json!([8_000_000])), ctx())
        .await
        .unwrap();
    assert_eq!(v.as_str().map(str::len), Some(8_000_000));
    assert_eq!(
        w.call_json(PyCall::new("add", json!([1, 2])), ctx())
            .await
            .unwrap(),
        json!(3)
    );
    shut_clean(w, &tag).await;
}
