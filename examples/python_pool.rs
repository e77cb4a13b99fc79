//! A pool of Python workers running `examples/python/handlers.py`: plain,
//! async and generator handlers, raw bytes in and out, a Python exception,
//! a deadline, and the pool's status.
//!
//! Run with `cargo run --example python_pool` (needs `python3` on PATH).
//! `RUST_LOG=cenote_python=debug` shows each worker's lifecycle, and
//! `RUST_LOG=cenote_python::stderr=info` what the workers print.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cenote::python::{Bytes, PyCall, PythonConfig, PythonError, PythonFactory, PythonPool};
use cenote::{CallOptions, Error, Pool};
use futures::StreamExt;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let handlers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python/handlers.py");
    let config = PythonConfig::new(handlers)
        .recycle_after_tasks(5_000)
        .max_rss_growth(256 << 20);
    let began = Instant::now();
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(config))
        .name("py")
        .size(4)
        .call_timeout(Duration::from_secs(10)) // each call's deadline, unless it gives its own
        .build()
        .await?;
    println!("4 workers ready in {:?}", began.elapsed());

    // JSON in and out: an object is passed as keyword arguments.
    let echoed = pool
        .call(PyCall::new(
            "echo",
            json!({"value": {"id": 7, "tags": ["a", "b"]}}),
        ))
        .await?;
    println!("echo      -> {echoed}");

    // Typed: positional arguments, the result decoded into an i64.
    let sum: i64 = pool
        .call(PyCall::new("add", json!([40, 2])).returning::<i64>())
        .await?;
    println!("add       -> {sum}");

    // CPU work on all four processes at once.
    let began = Instant::now();
    let counts = futures::future::try_join_all(
        (0..8).map(|_| pool.call(PyCall::new("primes", json!({"limit": 200_000})))),
    )
    .await?;
    println!("primes x8 -> {} each, in {:?}", counts[0], began.elapsed());

    let vector: Vec<f64> = pool
        .call(PyCall::new("embed", json!({"text": "hello", "dims": 4})).returning::<Vec<f64>>())
        .await?;
    println!("embed     -> {vector:?}");

    // An async def handler.
    let fetched = pool
        .call(PyCall::new("fetch", json!({"key": "k1"})))
        .await?;
    println!("fetch     -> {fetched}");

    // Raw bytes in and out, beside the JSON: no base64, no copy on the way in.
    let image = Bytes::from((0..=255u8).cycle().take(1 << 20).collect::<Vec<u8>>());
    let inverted: Bytes = pool
        .call(
            PyCall::new("invert", json!(null))
                .kwarg_bytes("data", image.clone())
                .returning(),
        )
        .await?;
    assert!(image.iter().zip(&inverted).all(|(a, b)| a ^ b == 0xff));
    #[derive(serde::Deserialize)]
    struct Digest {
        length: usize,
        crc32: u32,
    }
    let digest: Digest = pool
        .call(PyCall::with_args("digest", &(image,))?.returning())
        .await?;
    println!(
        "invert    -> {} bytes back; digest -> {} bytes, crc32 {:08x}",
        inverted.len(),
        digest.length,
        digest.crc32
    );

    // Generators stream item by item.
    let mut squares = pool.stream(PyCall::new("count", json!({"n": 4}))).await?;
    while let Some(item) = squares.next().await {
        println!("count     -> {}", item?);
    }
    let words: Vec<String> = pool
        .stream(PyCall::new(
            "tokens",
            json!({"text": "streamed from an async generator"}),
        ))
        .await?
        .typed::<String>()
        .map(|w| w.unwrap_or_default())
        .collect()
        .await;
    println!("tokens    -> {words:?}");

    // A Python exception arrives typed, with its traceback; the worker stays.
    match pool
        .call(PyCall::new("fail", json!({"message": "bad input"})))
        .await
    {
        Err(Error::Worker(PythonError::Raised {
            type_name, message, ..
        })) => println!("fail      -> {type_name}: {message}"),
        other => println!("fail      -> unexpected {other:?}"),
    }

    // A call past its own deadline: its worker is killed and replaced.
    let late = pool
        .call_with(
            PyCall::new("sleep", json!([5])),
            CallOptions::default().timeout(Duration::from_millis(200)),
        )
        .await;
    println!(
        "sleep     -> {}",
        late.err().map(|e| e.to_string()).unwrap_or_default()
    );

    // print() in a handler goes to the worker's stderr log, not the protocol.
    let noisy = pool
        .call(PyCall::new("noisy", json!({"value": "still fine"})))
        .await?;
    println!("noisy     -> {noisy}");

    let status = pool.status();
    println!(
        "status    -> live {} idle {} served {} call_timeouts {} restarts {}",
        status.live,
        status.idle,
        status.totals.served,
        status.totals.call_timeouts,
        status.totals.restarts
    );
    pool.close().await;
    Ok(())
}
