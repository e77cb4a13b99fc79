//! The main job: four pools of Python workers side by side in one registry,
//! the same workload through each (callers with priorities and a mix of
//! checkout deadlines), and a table showing how their waiter strategies
//! differ: waits per priority class, and callers timed out per pool. It also
//! writes an HTML report with the shapes behind the table (`--report PATH`).
//!
//! ```sh
//! cargo run --release --example side_by_side
//! cargo run --release --example side_by_side -- --size 4 --secs 20 --long-share 0.2 --etcd http://127.0.0.1:2379
//! cargo run --release --example side_by_side --features metrics -- --metrics 127.0.0.1:9464
//! ```

mod args;
mod html;
mod lane;
mod report;
mod svg;
mod tally;
mod workload;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cenote::registry::LocalRegistry;
use cenote::{Deadline, Fifo, Lifo, Priority, Registry};

use lane::Lane;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("side_by_side: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = args::Args::parse(std::env::args().skip(1))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // Opened now, so a path that cannot be written fails before the run, not after.
    let mut report = create_report(&args.report).map_err(|e| cannot_write(&args.report, e))?;
    // Before the pools are built: each registers its metrics at build.
    if let Some(addr) = args.metrics {
        serve_metrics(addr)?;
        println!("metrics: http://{addr}/metrics");
    }

    let registry: Arc<dyn Registry> = match &args.etcd {
        Some(url) => lane::etcd_registry(url).await?,
        None => Arc::new(LocalRegistry::new("side_by_side")),
    };
    println!(
        "starting 4 pools x {} Python workers (registry: {}) ...",
        args.size,
        if args.etcd.is_some() { "etcd" } else { "local" }
    );
    let started = Instant::now();
    let lanes: Vec<Arc<dyn Lane>> = vec![
        lane::start::<Lifo, Fifo>("fifo", &args, &registry).await?,
        lane::start::<Lifo, Lifo>("lifo", &args, &registry).await?,
        lane::start::<Lifo, Priority>("priority", &args, &registry).await?,
        lane::start::<Lifo, Deadline>("deadline", &args, &registry).await?,
    ];
    println!(
        "ready in {:.2}s; registry lists: {:?}",
        started.elapsed().as_secs_f64(),
        pool_names(&registry).await
    );

    let overhead = lane::calibrate(&lanes[0], args.mix.short).await;
    let jobs = workload::schedule(&args.mix, args.size, overhead, args.length, args.seed);
    let workload = format!(
        "workload: {} calls over {:?}; {:.0}% of capacity, bursts to {:.0}% (measured per-call cost {:.2} ms);\n\
         {:.0}% of callers wait at most {:?} for a worker, the rest {:?}",
        jobs.len(),
        args.length,
        args.mix.load * 100.0,
        args.mix.burst_load * 100.0,
        overhead.as_secs_f64() * 1000.0,
        args.mix.tight_share * 100.0,
        args.mix.tight,
        args.mix.loose,
    );
    println!("{workload}\n");
    let run = lane::drive(&lanes, &jobs, args.refresh).await;
    println!("{}", report::final_table(&run, args.size));

    for lane in &lanes {
        lane.close().await;
    }
    registry_cleanup(&registry).await;
    html::page(&run, args.size, &workload)
        .map_err(std::io::Error::from)
        .and_then(|page| report.write_all(page.as_bytes()))
        .map_err(|e| cannot_write(&args.report, e))?;
    let left = lane::python_children();
    println!("python processes left: {left}");
    let errors: u64 = run.lanes.iter().map(|t| t.errors).sum();
    if errors > 0 {
        println!("({errors} calls failed; see the table)");
    }
    println!("report: {}", args.report.display());
    if left > 0 {
        return Err(format!("{left} Python processes outlived their pools").into());
    }
    Ok(())
}

/// Install a Prometheus exporter serving `/metrics` at `addr`.
#[cfg(feature = "metrics")]
fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    Ok(())
}

/// Without feature `metrics` the pools record nothing to serve.
#[cfg(not(feature = "metrics"))]
fn serve_metrics(_: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    Err("--metrics needs the pools' metrics: build with `--features metrics`".into())
}

fn create_report(path: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    File::create(path)
}

fn cannot_write(path: &Path, e: std::io::Error) -> String {
    format!(
        "cannot write the report to {}: {e}; choose another path with --report PATH",
        path.display()
    )
}

async fn pool_names(registry: &Arc<dyn Registry>) -> Vec<String> {
    let mut names: Vec<_> = registry
        .pools()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    names
}

/// After close, each pool must have taken itself out of the registry.
async fn registry_cleanup(registry: &Arc<dyn Registry>) {
    let left = pool_names(registry).await;
    if !left.is_empty() {
        eprintln!("registry still lists {left:?} after close");
    }
}
