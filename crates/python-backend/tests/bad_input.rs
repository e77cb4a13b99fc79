//! Bad input of every kind gives a clear error naming the cause; call-level
//! errors leave the worker serving, protocol breaches kill it, and start
//! failures say why.

mod common;

use std::time::Duration;

use cenote_core::Worker;
use cenote_python::{PyCall, PythonConfig, PythonError, PythonFactory, PythonWorker};
use common::*;
use serde_json::json;

async fn still_serves(w: &mut PythonWorker) {
    assert!(!w.is_broken());
    assert_eq!(
        w.call_json(PyCall::new("add", json!([2, 2])), ctx())
            .await
            .unwrap(),
        json!(4)
    );
}

#[tokio::test]
async fn raised_exception_has_type_message_traceback_and_worker_stays() {
    let (tag, mut w) = chaos_worker("raise", "t/raise").await;
    let pid = w.pid();
    let err = w
        .call_json(PyCall::new("raise_value", json!(["nope"])), ctx())
        .await
        .unwrap_err();
    match &err {
        PythonError::Raised {
            function,
            type_name,
            message,
            traceback,
        } => {
            assert_eq!(function, "raise_value");
            assert_eq!(type_name, "ValueError");
            assert_eq!(message, "nope");
            assert!(traceback.contains("chaos.py"), "{traceback}");
            assert!(
                traceback.contains("raise ValueError(message)"),
                "{traceback}"
            );
            assert!(!traceback.contains("cenote bridge"), "{traceback}");
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    assert!(!err.is_fatal());
    assert_eq!(err.python_type(), Some("ValueError"));
    // A TypeError raised inside the handler is the handler's, not bad args.
    let err = w
        .call_json(PyCall::new("raise_inside_typeerror", json!(null)), ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PythonError::Raised { type_name, .. } if type_name == "TypeError"),
        "{err:?}"
    );
    still_serves(&mut w).await;
    assert_eq!(w.pid(), pid);
    shut_clean(w, &tag).await;
}

#[tokio::test]
async fn unknown_function_and_wrong_arguments() {
    let (tag, mut w) = chaos_worker("args", "t/args").await;
    let err = w
        .call_json(PyCall::new("no_such_thing", json!(null)), ctx())
        .await
        .unwrap_err();
    match &err {
        PythonError::UnknownFunction { function, message } => {
            assert_eq!(function, "no_such_thing");
            assert!(message.contains("echo"), "lists what exists: {message}");
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    // Private names and module attributes are not callable from outside.
    for name in ["_hoard", "os", "__import__"] {
        let err = w
            .call_json(PyCall::new(name, json!(null)), ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err, PythonError::UnknownFunction { .. }),
            "{name}: {err:?}"
        );
    }
    for args in [json!([1, 2, 3]), json!([1]), json!({"a": 1, "c": 2})] {
        let err = w
            .call_json(PyCall::new("add", args.clone()), ctx())
            .await
            .unwrap_err();
        match &err {
            PythonError::BadArguments { function, message } => {
                assert_eq!(function, "add");
                assert!(message.contains("(a, b)"), "shows the signature: {message}");
            }
            other => panic!("{args}: expected BadArguments, got {other:?}"),
        }
    }
    let err = w
        .call_as::<String>(PyCall::new("add", json!([1, 2])), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PythonError::Decode { .. }), "{err:?}");
    still_serves(&mut w).await;
    shut_clean(w, &tag).await;
}

#[tokio::test]
async fn results_that_cannot_be_sent_back() {
    let tag = test_tag("unser");
    let mut w = PythonFactory::new(chaos(&tag).max_frame_size(64 * 1024))
        .spawn("t/unser")
        .await
        .unwrap();
    for f in ["unserializable", "not_a_number"] {
        let err = w
            .call_json(PyCall::new(f, json!(null)), ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PythonError::Unserializable { function, .. } if function == f),
            "{f}: {err:?}"
        );
        assert!(err.to_string().contains("cannot be sent back"));
    }
    let err = w
        .call_json(PyCall::new("big", json!([100_000])), ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, PythonError::ResultTooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("65536"), "{err}");
    // Just under the limit is fine.
    let v = w
        .call_json(PyCall::new("big", json!([60_000])), ctx())
        .await
        .unwrap();
    assert_eq!(v.as_str().map(str::len), Some(60_000));
    still_serves(&mut w).await;
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn oversized_request_is_refused_before_sending() {
    let tag = test_tag("bigreq");
    let mut w = PythonFactory::new(chaos(&tag).max_frame_size(1024))
        .spawn("t/bigreq")
        .await
        .unwrap();
    let err = w
        .call_json(PyCall::new("echo", json!(["y".repeat(5000)])), ctx())
        .await
        .unwrap_err();
    match &err {
        PythonError::RequestTooLarge { size, max, .. } => {
            assert!(*size > 5000);
            assert_eq!(*max, 1024);
        }
        other => panic!("expected RequestTooLarge, got {other:?}"),
    }
    still_serves(&mut w).await;
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn garbage_on_the_wire_kills_the_worker_with_a_protocol_error() {
    init_tracing();
    for (f, expect) in [
        ("garbage", "not a protocol message"),
        ("huge_header", "max frame size"),
    ] {
        let tag = new_tag(f);
        let mut w = PythonFactory::new(chaos(&tag))
            .spawn("t/garbage")
            .await
            .unwrap();
        let err = w
            .call_json(PyCall::new(f, json!(null)), ctx())
            .await
            .unwrap_err();
        match &err {
            PythonError::Protocol { message, .. } => {
                assert!(message.contains(expect), "{f}: {message}")
            }
            other => panic!("{f}: expected Protocol, got {other:?}"),
        }
        assert!(err.is_fatal());
        assert!(w.is_broken());
        // The next use reports the same fault instead of touching the pipe.
        let again = w
            .call_json(PyCall::new("add", json!([1, 1])), ctx())
            .await
            .unwrap_err();
        assert!(matches!(again, PythonError::Protocol { .. }));
        assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
        w.shutdown(Duration::ZERO).await;
    }
}

async fn start_error(config: PythonConfig) -> PythonError {
    PythonFactory::new(config)
        .spawn("t/start")
        .await
        .unwrap_err()
}

#[tokio::test]
async fn start_failures_name_their_cause() {
    let tag = test_tag("start");
    let err =
        start_error(PythonConfig::new(py_dir().join("syntax_error.py")).env(TAG_VAR, &tag)).await;
    let text = err.to_string();
    assert!(matches!(err, PythonError::Startup { .. }), "{err:?}");
    assert!(text.contains("SyntaxError"), "{text}");
    assert!(text.contains("syntax_error.py"), "{text}");

    let err =
        start_error(PythonConfig::new(py_dir().join("import_error.py")).env(TAG_VAR, &tag)).await;
    let text = err.to_string();
    assert!(text.contains("ModuleNotFoundError"), "{text}");
    assert!(text.contains("this_module_does_not_exist_cenote"), "{text}");
    // The stderr tail carries the full traceback.
    assert!(text.contains("Traceback"), "{text}");

    let err = start_error(PythonConfig::new("no_such_module_cenote").env(TAG_VAR, &tag)).await;
    let text = err.to_string();
    assert!(
        text.contains("No module named 'no_such_module_cenote'"),
        "{text}"
    );

    let err =
        start_error(PythonConfig::new(py_dir().join("missing_file.py")).env(TAG_VAR, &tag)).await;
    let text = err.to_string();
    assert!(text.contains("missing_file.py"), "{text}");

    let err = start_error(
        PythonConfig::new(chaos_path())
            .interpreter("/nonexistent/python3.99")
            .env(TAG_VAR, &tag),
    )
    .await;
    assert!(matches!(err, PythonError::Spawn { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/python3.99"), "{text}");
    assert!(text.contains("No such file"), "{text}");

    // Unresolved launch of a missing interpreter fails the same way.
    let err = start_error(
        PythonConfig::new(chaos_path())
            .interpreter("/nonexistent/python3.99")
            .resolve_interpreter(false)
            .env(TAG_VAR, &tag),
    )
    .await;
    assert!(matches!(err, PythonError::Spawn { .. }), "{err:?}");
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn slow_import_hits_the_startup_timeout_and_is_killed() {
    let tag = test_tag("slowstart");
    let err = start_error(
        PythonConfig::new(py_dir().join("slow_import.py"))
            .env(TAG_VAR, &tag)
            .startup_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(matches!(err, PythonError::StartupTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("importing slowly"), "{err}");
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}
