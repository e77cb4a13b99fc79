//! Adaptive batching: a pool of Python workers serving a batched "model"
//! (`embed_batch` in `examples/python/handlers.py`: 2 ms per call, however
//! many texts it gets), under rising load. Each step prints calls/s,
//! latency and the batch sizes the batcher chose by itself: one item per
//! batch when one caller calls, bigger batches as callers queue up while
//! every worker is busy. Then an item whose handler result is an exception
//! fails alone.
//!
//! ```sh
//! cargo run --release --example batching            # 1 s per step
//! cargo run --release --example batching -- --secs 0.3
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cenote::python::{PyItem, PythonConfig, PythonError, PythonFactory};
use cenote::{BatchConfig, BatchError, Pool};
use serde_json::json;

const WORKERS: usize = 2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let handlers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python/handlers.py");
    let pool = Pool::<PythonFactory>::builder(PythonFactory::new(PythonConfig::new(handlers)))
        .name("embedder")
        .size(WORKERS)
        .wait_strategy::<cenote::strategy::Priority>()
        .build()
        .await?;
    let embed = pool.batched(BatchConfig::new(64))?;

    println!("{WORKERS} workers; embed_batch costs 2 ms per call; {secs} s per step");
    println!("| callers | calls/s | p50 ms | p99 ms | batches | mean batch |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for callers in [1, 4, 16, 64, 256] {
        let before = embed.status();
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let stop = Instant::now() + Duration::from_secs_f64(secs);
        let began = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (embed, latencies) = (embed.clone(), Arc::clone(&latencies));
                tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < stop {
                        let t = Instant::now();
                        let text = format!("caller {c} text {i}");
                        let v = embed.call(PyItem::new("embed_batch", json!(text))).await;
                        assert_eq!(v.expect("embedded").as_array().map(Vec::len), Some(8));
                        latencies.lock().unwrap().push(t.elapsed());
                        i += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let took = began.elapsed().as_secs_f64();
        let mut lat = latencies.lock().unwrap().clone();
        lat.sort_unstable();
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        let after = embed.status();
        let batches = after.batches - before.batches;
        let mean = (after.items - before.items) as f64 / batches.max(1) as f64;
        println!(
            "| {callers} | {:.0} | {:.2} | {:.2} | {batches} | {mean:.1} |",
            lat.len() as f64 / took,
            at(0.5),
            at(0.99),
        );
    }

    // One item's error is its own: the empty text fails, its batch-mates do not.
    let items = ["kept", "", "also kept"].map(|t| embed.call(PyItem::new("embed_batch", json!(t))));
    let [a, b, c] = futures::future::join_all(items)
        .await
        .try_into()
        .expect("three");
    match b {
        Err(BatchError::Item(PythonError::Raised {
            type_name, message, ..
        })) => {
            println!("the empty text failed alone: {type_name}: {message}")
        }
        other => {
            return Err(format!("expected the empty text to fail alone, got {other:?}").into())
        }
    }
    assert!(a.is_ok() && c.is_ok());

    let s = embed.status();
    println!(
        "total: {} items in {} batches (mean {:.1}, p99 {}, largest {}); {} left before dispatch",
        s.items, s.batches, s.mean_size, s.p99_size, s.max_size, s.left_before_dispatch
    );
    drop(embed);
    pool.close().await;
    Ok(())
}
