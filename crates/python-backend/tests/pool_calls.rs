//! Calls through a pool: the request forms, typed results, and many
//! concurrent callers each getting their own answer.

mod common;

use std::time::Duration;

use cenote_core::Error;
use cenote_python::{PyCall, PythonError};
use common::*;
use serde_json::json;

#[tokio::test]
async fn request_forms_and_typed_results() {
    let tag = test_tag("forms");
    let pool = chaos_pool(chaos(&tag), 2).await;
    assert_eq!(pool.call(("add", json!([1, 2]))).await.unwrap(), json!(3));
    assert_eq!(
        pool.call(PyCall::new("add", json!({"a": 1, "b": 2})))
            .await
            .unwrap(),
        json!(3)
    );
    let n: i64 = pool
        .call(PyCall::new("add", json!([20, 22])).returning::<i64>())
        .await
        .unwrap();
    assert_eq!(n, 42);
    let v: Vec<i64> = pool
        .call(
            PyCall::with_args("positional", &(1, 2))
                .unwrap()
                .returning::<Vec<i64>>(),
        )
        .await
        .unwrap();
    assert_eq!(v, vec![1, 2, 3]);
    #[derive(serde::Serialize)]
    struct Args {
        a: i32,
        b: i32,
    }
    let v = pool
        .call(PyCall::with_args("add", &Args { a: 5, b: 6 }).unwrap())
        .await
        .unwrap();
    assert_eq!(v, json!(11));
    let err = pool
        .call(PyCall::new("raise_value", json!(["boom"])))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Worker(PythonError::Raised { message, .. }) if message == "boom"),
        "{err:?}"
    );
    assert_eq!(pool.status().totals.crashes, 0);
    close_none_left(pool, &tag).await;
}

#[tokio::test]
async fn concurrent_callers_each_get_their_own_answer() {
    let tag = test_tag("concurrent");
    let pool = chaos_pool(chaos(&tag), 3).await;
    let calls = (0..300).map(|i| {
        let pool = pool.clone();
        async move {
            let v = pool
                .call(PyCall::new(
                    "echo",
                    json!([{"i": i, "pad": "x".repeat(i % 50)}]),
                ))
                .await
                .unwrap();
            assert_eq!(v["i"], json!(i));
        }
    });
    futures::future::join_all(calls).await;
    let st = pool.status();
    assert_eq!(st.totals.served, 300);
    assert_eq!(st.live, 3);
    pool.close().await;
    assert!(wait_gone(&tag, Duration::from_secs(1)).await.is_empty());
}
