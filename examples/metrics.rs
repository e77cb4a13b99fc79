//! A pool of Python workers under load, its metrics served to Prometheus on
//! loopback by `metrics-exporter-prometheus`: steady calls, then a burst of
//! callers past the pool's capacity (they wait), then a worker that crashes
//! (it is replaced), then steady calls until `--secs` pass or stdin closes.
//!
//! ```sh
//! cargo run --example metrics --features metrics -- --listen 127.0.0.1:9464
//! curl -s http://127.0.0.1:9464/metrics | grep cenote_
//! ```
//!
//! The exporter must be installed before the pool is built: a pool
//! registers its metrics once, with the recorder installed at the time.
//! Each phase prints one line when it is under way, for a reader (or
//! `tests/metrics.rs`) to scrape at that moment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonFactory};
use cenote::{CallOptions, Error, Pool};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use tokio::io::AsyncReadExt;

const SIZE: usize = 2;
/// Callers in the burst: each holds a worker for `BURST_HOLD`, so most wait.
const BURST: usize = 16;
const BURST_HOLD: f64 = 0.3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (listen, secs) = args()?;

    // First the exporter, then the pool (see the header).
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()?;
    let handlers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python/handlers.py");
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(PythonConfig::new(handlers)))
        .name("demo")
        .size(SIZE)
        // Also how often the gauges are sampled: every checkout_timeout / 16.
        .checkout_timeout(Duration::from_secs(8))
        .call_timeout(Duration::from_secs(5))
        .build()
        .await?;
    println!("metrics: http://{listen}/metrics");

    let echo = || PyCall::new("echo", json!({"value": 1}));
    for _ in 0..50 {
        pool.call(echo()).await?;
    }
    println!("steady: {} calls served", pool.status().totals.served);

    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call(PyCall::new("sleep", json!([BURST_HOLD]))).await })
        })
        .collect();
    let waiting = until(Duration::from_secs(5), || {
        let w = pool.status().waiting;
        (w > 0).then_some(w)
    })
    .await
    .ok_or("the burst never queued a caller")?;
    println!("burst: {waiting} callers waiting for {SIZE} workers");
    for caller in burst {
        caller.await??;
    }
    println!("burst: done");

    // A worker dies mid-call (SIGKILL, as the OOM killer would): its caller
    // gets `Crashed`, and the pool starts a replacement.
    let mut worker = pool.get().await?;
    worker.signal(libc::SIGKILL);
    let died = worker.call(PyCall::new("sleep", json!([1]))).await;
    drop(worker);
    if !matches!(died, Err(Error::Crashed(_))) {
        return Err(format!("the killed worker's call ended {died:?}, not Crashed").into());
    }
    until(Duration::from_secs(10), || {
        let s = pool.status();
        (s.idle == SIZE).then_some(())
    })
    .await
    .ok_or("the crashed worker was not replaced")?;
    println!(
        "crash: {} crashed, {} restarted",
        pool.status().totals.crashes,
        pool.status().totals.restarts
    );

    // Steady calls until the time is up or stdin closes.
    let mut stdin_closed = tokio::spawn(async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    });
    let end = Instant::now() + secs;
    while Instant::now() < end {
        tokio::select! {
            _ = &mut stdin_closed => break,
            r = pool.call_with(echo(), CallOptions::default()) => { r?; }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
    println!("done: {:?}", pool.status().totals);
    Ok(())
}

/// Poll `get` every 10 ms until it gives a value, for at most `limit`.
async fn until<T>(limit: Duration, mut get: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = get() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `--listen ADDR` (default 127.0.0.1:9464) and `--secs S` (default 60).
fn args() -> Result<(SocketAddr, Duration), String> {
    let (mut listen, mut secs) = ("127.0.0.1:9464".to_string(), 60.0);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--secs" => secs = value.parse().map_err(|_| format!("--secs {value:?}"))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: metrics [--listen ADDR] [--secs S]"
                ))
            }
        }
    }
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen {listen:?} is not an address"))?;
    Ok((listen, Duration::from_secs_f64(secs)))
}
