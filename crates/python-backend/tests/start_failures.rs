//! Start failures: a pool stays up degraded, tells callers why, retries with
//! backoff without spinning, and recovers once the cause is fixed.

mod common;

use std::time::{Duration, Instant};

use cenote_core::{Backoff, Error, Pool, StartError};
use cenote_python::{PyCall, PythonConfig, PythonError, PythonFactory};
use common::*;
use serde_json::json;

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
}

#[tokio::test]
async fn broken_module_is_reported_to_callers_and_retried_with_bounded_rate() {
    let tag = test_tag("syntax");
    let pool: PyPool = Pool::builder(PythonFactory::new(
        PythonConfig::new(py_dir().join("syntax_error.py")).env(TAG_VAR, &tag),
    ))
    .name("broken")
    .size(2)
    .start_backoff(backoff())
    .checkout_timeout(Duration::from_secs(5))
    .build()
    .await
    .expect("a failing start does not fail build");
    let began = Instant::now();
    let err = pool
        .call(PyCall::new("add", json!([1, 2])))
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "told at once, not after a timeout"
    );
    match &err {
        Error::Start(e) => match &**e {
            StartError::Failed(PythonError::Startup { message, .. }) => {
                assert!(message.contains("SyntaxError"), "{message}")
            }
            other => panic!("expected a Startup failure, got {other:?}"),
        },
        other => panic!("expected Error::Start, got {other:?}"),
    }
    assert!(err.to_string().contains("syntax_error.py"), "{err}");

    // Retries continue, but with backoff: count attempts over a window.
    let mut max_alive = 0;
    let t0 = pool.status().totals.start_failures;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        max_alive = max_alive.max(tagged(&tag).len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attempts = pool.status().totals.start_failures - t0;
    assert!(attempts >= 2, "still retrying: {attempts}");
    // Two slots at most every ~400 ms (+20% jitter) plus the ramp-up.
    assert!(
        attempts <= 20,
        "start retries must not spin: {attempts} in 2 s"
    );
    assert!(
        max_alive <= 2,
        "never more processes than slots: {max_alive}"
    );
    pool.close().await;
    assert!(wait_gone(&tag, Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn pool_recovers_once_the_start_failure_is_fixed() {
    let tag = test_tag("flaky");
    let flag = std::env::temp_dir().join(format!("cenote-flag-{tag}"));
    let _ = std::fs::remove_file(&flag);
    let pool: PyPool = Pool::builder(PythonFactory::new(
        PythonConfig::new(py_dir().join("flaky_import.py"))
            .env(TAG_VAR, &tag)
            .env("CENOTE_FLAG_FILE", &flag),
    ))
    .name("flaky")
    .size(2)
    .start_backoff(backoff())
    .build()
    .await
    .unwrap();
    assert_eq!(pool.status().idle, 0);
    let err = pool
        .call(PyCall::new("add", json!([1, 2])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("flag file missing"), "{err}");
    std::fs::write(&flag, b"ok").unwrap();
    let up = eventually(Duration::from_secs(5), || pool.status().idle == 2).await;
    assert!(up, "{:?}", pool.status());
    assert_eq!(
        pool.call(PyCall::new("add", json!([1, 2]))).await.unwrap(),
        json!(3)
    );
    let _ = std::fs::remove_file(&flag);
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn missing_interpreter_fails_starts_with_the_path_named() {
    init_tracing();
    let pool: PyPool = Pool::builder(PythonFactory::new(
        PythonConfig::new(chaos_path()).interpreter("/nonexistent/bin/python3"),
    ))
    .name("nointerp")
    .size(1)
    .start_backoff(backoff())
    .build()
    .await
    .unwrap();
    let err = pool
        .call(PyCall::new("add", json!([1, 2])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Start(_)), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/bin/python3"),
        "{err}"
    );
    pool.close().await;
}
