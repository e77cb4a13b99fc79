//! A lane is one pool as the driver sees it: strategy types erased, so the
//! pools can be driven by one loop.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonFactory};
use cenote::strategy::{IdleStrategy, WaitStrategy};
use cenote::{Checkout, CheckoutOptions, Error, Pool, Registry, Status};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::args::Args;
use super::report;
use super::tally::{Run, Tally, Timeline};
use super::workload::{Job, CLASSES};

/// How long one call may take before it counts as failed.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Ok,
    /// No worker within the caller's checkout timeout.
    TimedOut,
    Failed,
}

/// One call's result: the wait for a worker, the time on it, how it ended.
pub struct Done {
    pub lane: usize,
    pub job: Job,
    pub waited: Duration,
    pub ran: Duration,
    pub end: End,
    /// When it ended, from the start of the run.
    pub finished: Duration,
}

pub trait Lane: Send + Sync {
    fn name(&self) -> &'static str;
    fn strategy(&self) -> &'static str;
    fn status(&self) -> Status;
    fn run(&self, job: Job) -> BoxFuture<'static, (Duration, Duration, End)>;
    fn close(&self) -> BoxFuture<'_, ()>;
}

struct PoolLane<I: IdleStrategy, W: WaitStrategy> {
    name: &'static str,
    pool: Pool<PythonFactory, I, W>,
}

impl<I: IdleStrategy, W: WaitStrategy> Lane for PoolLane<I, W> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn strategy(&self) -> &'static str {
        W::NAME
    }

    fn status(&self) -> Status {
        self.pool.status()
    }

    fn run(&self, job: Job) -> BoxFuture<'static, (Duration, Duration, End)> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let asked = Instant::now();
            let opts = CheckoutOptions::default()
                .priority(CLASSES[job.class].1)
                .timeout(job.patience);
            let mut worker = match pool.get_with(opts).await {
                Ok(w) => w,
                Err(Error::CheckoutTimeout { .. }) => {
                    return (asked.elapsed(), Duration::ZERO, End::TimedOut)
                }
                Err(_) => return (asked.elapsed(), Duration::ZERO, End::Failed),
            };
            let waited = Checkout::waited(&worker);
            let began = Instant::now();
            let req = PyCall::new(
                "sleep",
                serde_json::json!({ "seconds": job.work.as_secs_f64() }),
            );
            let end = match tokio::time::timeout(CALL_LIMIT, worker.call(req)).await {
                Ok(Ok(_)) => End::Ok,
                _ => End::Failed,
            };
            (waited, began.elapsed(), end)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}

/// Build and register one pool of Python workers running the handlers in
/// `examples/python/handlers.py`.
pub async fn start<I: IdleStrategy, W: WaitStrategy>(
    name: &'static str,
    args: &Args,
    registry: &Arc<dyn Registry>,
) -> Result<Arc<dyn Lane>, Box<dyn std::error::Error>> {
    let handlers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/handlers.py");
    let factory = PythonFactory::new(PythonConfig::new(handlers));
    let began = Instant::now();
    let pool: Pool<PythonFactory, I, W> = Pool::builder(factory)
        .name(name)
        .size(args.size)
        .max_waiters(100_000)
        .checkout_timeout(Duration::from_secs(30))
        .registry(Arc::clone(registry))
        .build()
        .await?;
    let start = pool.factory().start_mode();
    println!(
        "  {name:<9} {} workers ready in {:>6.1} ms, start mode {:?}{}",
        pool.status().idle,
        began.elapsed().as_secs_f64() * 1000.0,
        start.mode,
        start
            .fallback
            .map(|why| format!(" (fell back: {why})"))
            .unwrap_or_default()
    );
    Ok(Arc::new(PoolLane { name, pool }))
}

#[cfg(feature = "etcd")]
pub async fn etcd_registry(url: &str) -> Result<Arc<dyn Registry>, Box<dyn std::error::Error>> {
    let reg = cenote::registry::EtcdRegistry::builder(vec![url.to_string()])
        .node("side_by_side")
        .prefix("/cenote/side_by_side")
        .connect()
        .await?;
    Ok(Arc::new(reg))
}

#[cfg(not(feature = "etcd"))]
pub async fn etcd_registry(_url: &str) -> Result<Arc<dyn Registry>, Box<dyn std::error::Error>> {
    Err("--etcd needs the etcd feature: cargo run --release --features etcd --example side_by_side -- --etcd URL".into())
}

/// The per-call cost beyond the handler's work: the median of a few short
/// calls made one at a time, minus their work.
pub async fn calibrate(lane: &Arc<dyn Lane>, work: Duration) -> Duration {
    let mut ran = Vec::new();
    for _ in 0..25 {
        let (_, r, end) = lane
            .run(Job {
                at: Duration::ZERO,
                class: 0,
                work,
                hurried: false,
                patience: CALL_LIMIT,
            })
            .await;
        if end == End::Ok {
            ran.push(r);
        }
    }
    ran.sort();
    ran.get(ran.len() / 2)
        .map_or(Duration::ZERO, |m| m.saturating_sub(work))
}

/// Replay `jobs` into every lane at their instants, showing a live table,
/// until every call has resolved.
pub async fn drive(lanes: &[Arc<dyn Lane>], jobs: &[Job], refresh: Duration) -> Run {
    let span = jobs.last().map_or(Duration::ZERO, |j| j.at);
    let mut tallies: Vec<Tally> = lanes
        .iter()
        .map(|l| Tally::new(l.name(), l.strategy(), span))
        .collect();
    let mut offered = Timeline::for_run(span);
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let start = tokio::time::Instant::now();
    let tty = std::io::stdout().is_terminal();
    let every = if tty {
        refresh
    } else {
        refresh.max(Duration::from_secs(2))
    };
    let mut ticker = tokio::time::interval(every);
    let mut next = 0;
    let mut outstanding = 0usize;
    let mut drawn_lines = 0;
    while next < jobs.len() || outstanding > 0 {
        let due = jobs.get(next).map(|j| start + j.at);
        tokio::select! {
            () = async { tokio::time::sleep_until(due.unwrap_or(start)).await }, if due.is_some() => {
                let job = jobs[next];
                next += 1;
                offered.add(start.elapsed());
                for (i, lane) in lanes.iter().enumerate() {
                    let (tx, call) = (tx.clone(), lane.run(job));
                    outstanding += 1;
                    tokio::spawn(async move {
                        let (waited, ran, end) = call.await;
                        let finished = start.elapsed();
                        let _ = tx.send(Done { lane: i, job, waited, ran, end, finished });
                    });
                }
            }
            Some(done) = rx.recv() => {
                outstanding -= 1;
                tallies[done.lane].record(&done);
            }
            _ = ticker.tick() => {
                drawn_lines = draw(lanes, &tallies, start.elapsed(), tty, drawn_lines);
            }
        }
    }
    draw(lanes, &tallies, start.elapsed(), tty, drawn_lines);
    Run {
        lanes: tallies,
        offered,
        elapsed: start.elapsed(),
    }
}

fn draw(
    lanes: &[Arc<dyn Lane>],
    tallies: &[Tally],
    elapsed: Duration,
    tty: bool,
    drawn: usize,
) -> usize {
    let rows: Vec<(&Tally, Status)> = tallies
        .iter()
        .zip(lanes.iter().map(|l| l.status()))
        .collect();
    let table = report::live_table(&rows, elapsed);
    let mut out = std::io::stdout().lock();
    if tty && drawn > 0 {
        let _ = write!(out, "\x1b[{drawn}A");
    }
    let _ = write!(out, "{table}");
    let _ = out.flush();
    table.lines().count()
}

/// Python processes whose parent is this process.
pub fn python_children() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
            let comm_ok = stat.contains("(python");
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            comm_ok && ppid == Some(me.as_str())
        })
        .count()
}
