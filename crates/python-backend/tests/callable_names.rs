//! What a call may name: the handler module's public callables other than
//! classes, exactly the ready frame's `functions`. Anything else, however
//! odd the name, is `UnknownFunction`, and the worker serves on.

mod common;

use std::time::Duration;

use cenote_core::Worker;
use cenote_python::{PyCall, PythonError, PythonWorker};
use common::*;
use serde_json::json;

async fn unknown(w: &mut PythonWorker, name: &str) -> String {
    let err = w
        .call_json(PyCall::new(name, json!(null)), ctx())
        .await
        .unwrap_err();
    match err {
        PythonError::UnknownFunction { function, message } => {
            assert_eq!(function, name);
            message
        }
        other => panic!("{name:?}: expected UnknownFunction, got {other:?}"),
    }
}

#[tokio::test]
async fn classes_are_neither_listed_nor_callable_other_callables_are_both() {
    let (tag, mut w) = chaos_worker("classes", "t/classes").await;
    let functions = w.ready_info().functions.clone();
    assert!(!functions.iter().any(|f| f == "Widget"), "{functions:?}");
    for module in ["os", "sys", "asyncio", "functools"] {
        assert!(!functions.iter().any(|f| f == module), "{functions:?}");
    }
    // A callable that is not a function (a functools.partial) is both.
    assert!(functions.iter().any(|f| f == "add_ten"), "{functions:?}");
    assert_eq!(
        w.call_json(PyCall::new("add_ten", json!([5])), ctx())
            .await
            .unwrap(),
        json!(15)
    );
    let message = unknown(&mut w, "Widget").await;
    assert!(message.contains("add_ten"), "lists what exists: {message}");
    assert!(!message.contains("Widget,"), "{message}");
    shut_clean(w, &tag).await;
}

#[tokio::test]
async fn malformed_names_are_unknown_functions_and_the_worker_serves_on() {
    let (tag, mut w) = chaos_worker("names", "t/names").await;
    let pid = w.pid();
    let long = "x".repeat(10_000);
    let names = [
        "",
        "__import__",
        "__class__",
        "__dict__",
        "_hoard",
        "os.path",
        "echo.__globals__",
        "a b",
        "1abc",
        "echo\0",
        "échec",
        "print",
        "class",
        &long,
    ];
    for name in names {
        let message = unknown(&mut w, name).await;
        assert!(message.contains("echo"), "{name:?}: {message}");
        assert!(!w.is_broken(), "{name:?} broke the worker");
        assert_eq!(
            w.call_json(PyCall::new("add", json!([2, 2])), ctx())
                .await
                .unwrap(),
            json!(4),
            "after {name:?}"
        );
    }
    // A name that is not an identifier is said to be one.
    let message = unknown(&mut w, "os.path").await;
    assert!(message.contains("not a function name"), "{message}");
    assert_eq!(w.pid(), pid);
    w.shutdown(Duration::from_secs(1)).await;
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}
