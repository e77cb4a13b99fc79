//! Python backend benchmark: round trip, throughput and startup, each
//! against a baseline, in one run on one machine.
//!
//! `cargo bench --bench python` prints tables; `-- --json` adds one JSON
//! object on the last line. `-- --roundtrip-only`, `-- --throughput-only`,
//! `-- --payloads-only`, `-- --late-only` and `-- --multiplexed-only` run
//! just that section (its table, and with `--json` its keys only), to
//! compare runs quickly; those sections are in `support/`. Needs `python3`
//! on PATH.
//!
//! * round trip: 1 worker, sequential echo of a small dict, through the pool
//!   vs the same bridge driven by a minimal blocking Rust client (no pool, no
//!   async runtime: the physical limit of this framing and bridge loop);
//! * throughput: 2 workers, 64 concurrent callers, echo, vs Python's
//!   `ProcessPoolExecutor(2)` and `multiprocessing.Pool(2)` submitting the
//!   same calls one by one;
//! * startup: time until 8 workers are ready, concurrently (a pool build) vs
//!   one after another, and a single worker;
//! * fork server, with `benches/py/heavy.py`, whose import costs 0.35 s of
//!   CPU: startup of 1, 8 and 16 spawned workers against 8 and 16 forked
//!   ones (the fork server's one import included) and against
//!   `ProcessPoolExecutor` on a `forkserver` context with the module
//!   preloaded; the time from a worker's SIGKILL to its replacement being
//!   ready; and the total PSS of 8 workers holding 100 MiB of read-only
//!   data (the fork server's own share included).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cenote::python::{PyCall, PythonConfig, PythonFactory, StartMode};
use cenote::Pool;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[path = "support/bare.rs"]
mod bare;
#[path = "support/late_calls.rs"]
mod late_calls;
#[path = "support/multiplexed.rs"]
mod multiplexed;
#[path = "support/payloads.rs"]
mod payloads;

const ROUNDTRIPS: usize = 5_000;
const WARMUP: usize = 500;
const CALLERS: usize = 64;
const THROUGHPUT_CALLS: usize = 30_000;
const PY_CALLS: usize = 10_000;
const THROUGHPUT_ROUNDS: usize = 3;
const STARTUP_RUNS: usize = 3;

fn handlers() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python/handlers.py")
}

fn small_dict() -> Value {
    json!({"id": 42, "name": "cenote", "tags": ["a", "b"], "score": 0.5})
}

fn config() -> PythonConfig {
    PythonConfig::new(handlers())
}

struct Stats {
    /// Median of the per-block means: robust to bursts of load from other
    /// processes on a shared machine, which hit one block, not all.
    block_us: f64,
    mean_us: f64,
    p50_us: u64,
    p99_us: u64,
}

fn block_stats(blocks: &[Vec<Duration>]) -> Stats {
    let mut means: Vec<f64> = blocks
        .iter()
        .map(|b| {
            b.iter().map(|d| d.as_nanos() as f64 / 1000.0).sum::<f64>() / b.len().max(1) as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let all: Vec<Duration> = blocks.iter().flatten().copied().collect();
    let mut s = stats(&all);
    s.block_us = means.get(means.len() / 2).copied().unwrap_or(0.0);
    s
}

fn stats(samples: &[Duration]) -> Stats {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut total = 0.0;
    for d in samples {
        let us = d.as_nanos() as f64 / 1000.0;
        total += us;
        let _ = h.record(us.round().max(1.0) as u64);
    }
    Stats {
        block_us: 0.0,
        mean_us: total / samples.len().max(1) as f64,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
    }
}

/// Round trips through the pool and through the bare client, interleaved in
/// blocks so that load from elsewhere on the machine hits both alike.
async fn roundtrips(interpreter: &Path) -> (Stats, Stats) {
    const BLOCKS: usize = 20;
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(config()))
        .name("bench-rt")
        .size(1)
        .build()
        .await
        .expect("pool");
    // The bare client runs on a thread of its own, with the runtime idle
    // while it does: no async machinery anywhere on its path.
    let (order, orders) = std::sync::mpsc::channel::<usize>();
    let (reply, mut replies) = tokio::sync::mpsc::unbounded_channel::<Vec<Duration>>();
    let interp = interpreter.to_path_buf();
    let bare_thread = std::thread::spawn(move || {
        let mut bare = bare::BareBridge::start(&interp, &handlers(), 1);
        let args = json!([small_dict()]);
        for n in orders {
            let mut took = Vec::with_capacity(n);
            for _ in 0..n {
                let began = Instant::now();
                let v = bare.echo(&args);
                took.push(began.elapsed());
                debug_assert_eq!(v, args[0]);
            }
            if reply.send(took).is_err() {
                return;
            }
        }
    });
    let args = json!([small_dict()]);
    let mut ours = Vec::with_capacity(BLOCKS);
    let mut base = Vec::with_capacity(BLOCKS);
    for block in 0..BLOCKS + 1 {
        let keep = block > 0; // the first block warms both up
        let per = if keep { ROUNDTRIPS / BLOCKS } else { WARMUP };
        order.send(per).expect("bare client");
        let took = replies.recv().await.expect("bare client");
        if keep {
            base.push(took);
        }
        let mut block = Vec::with_capacity(per);
        for _ in 0..per {
            let began = Instant::now();
            let v = pool
                .call(PyCall::new("echo", args.clone()))
                .await
                .expect("echo");
            block.push(began.elapsed());
            debug_assert_eq!(v, args[0]);
        }
        if keep {
            ours.push(block);
        }
    }
    drop(order);
    bare_thread.join().expect("bare client thread");
    pool.close().await;
    (block_stats(&ours), block_stats(&base))
}

async fn cenote_throughput() -> f64 {
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(config()))
        .name("bench-tp")
        .size(2)
        .build()
        .await
        .expect("pool");
    let args = json!([small_dict()]);
    let run = |calls: usize| {
        let per = calls / CALLERS;
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let pool = pool.clone();
                let args = args.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        pool.call(PyCall::new("echo", args.clone()))
                            .await
                            .expect("echo");
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.expect("caller");
            }
            per * CALLERS
        }
    };
    run(CALLERS * 20).await;
    let began = Instant::now();
    let done = run(THROUGHPUT_CALLS).await;
    let rate = done as f64 / began.elapsed().as_secs_f64();
    pool.close().await;
    rate
}

const PY_BENCH: &str = r#"
import concurrent.futures, json, multiprocessing, sys, time

def echo(value):
    return value

def main():
    n = int(sys.argv[1])
    payload = {"id": 42, "name": "cenote", "tags": ["a", "b"], "score": 0.5}
    out = {}
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        [f.result() for f in [ex.submit(echo, payload) for _ in range(200)]]
        t = time.perf_counter()
        futs = [ex.submit(echo, payload) for _ in range(n)]
        for f in futs:
            f.result()
        out["ppe"] = n / (time.perf_counter() - t)
    with multiprocessing.Pool(2) as pool:
        [r.get() for r in [pool.apply_async(echo, (payload,)) for _ in range(200)]]
        t = time.perf_counter()
        res = [pool.apply_async(echo, (payload,)) for _ in range(n)]
        for r in res:
            r.get()
        out["mp_pool"] = n / (time.perf_counter() - t)
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"#;

fn python_throughput(interpreter: &Path) -> (f64, f64) {
    let script = std::env::temp_dir().join(format!("cenote_py_bench_{}.py", std::process::id()));
    std::fs::write(&script, PY_BENCH).expect("write script");
    let out = Command::new(interpreter)
        .arg(&script)
        .arg(PY_CALLS.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run python bench");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).expect("python bench output");
    (
        v["ppe"].as_f64().unwrap_or(0.0),
        v["mp_pool"].as_f64().unwrap_or(0.0),
    )
}

async fn startup_concurrent(n: usize, factory: PythonFactory) -> Duration {
    let began = Instant::now();
    let pool: Pool<PythonFactory> = Pool::builder(factory)
        .name("bench-start")
        .size(n)
        .build()
        .await
        .expect("pool");
    let took = began.elapsed();
    assert_eq!(pool.status().idle, n, "all workers ready");
    pool.close().await;
    took
}

async fn startup_sequential(n: usize, factory: &PythonFactory) -> Duration {
    let began = Instant::now();
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        workers.push(factory.spawn(&format!("seq/{i}")).await.expect("spawn"));
    }
    let took = began.elapsed();
    for w in workers {
        cenote::Worker::shutdown(w, Duration::from_secs(1)).await;
    }
    took
}

/// A factory whose interpreter is already resolved, so startup numbers
/// measure starts, not the one-time resolution.
async fn warm_factory() -> PythonFactory {
    let f = PythonFactory::new(config());
    f.interpreter().await.expect("python3");
    f
}

// ---- fork server ----

const FORK_RUNS: usize = 3;

fn heavy(mode: StartMode) -> PythonConfig {
    PythonConfig::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/heavy.py"))
        .start_mode(mode)
}

/// Until `n` heavy workers are ready, from a fresh factory (so a fork
/// server's one import is counted).
async fn heavy_startup(n: usize, mode: StartMode) -> Duration {
    let f = PythonFactory::new(heavy(mode));
    f.interpreter().await.expect("python3");
    startup_concurrent(n, f).await
}

/// `ProcessPoolExecutor(n)` on a `forkserver` context with the heavy module
/// preloaded: until n tasks of 50 ms ran on n distinct workers, less 50 ms.
fn ppe_forkserver_startup(interpreter: &Path, n: usize) -> Duration {
    let script = format!(
        r#"
import concurrent.futures, multiprocessing, sys, time
sys.path.insert(0, {dir:?})
def task(_):
    import heavy, os
    time.sleep(0.05)
    return os.getpid()
if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["heavy"])
    began = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor({n}, mp_context=ctx) as ex:
        pids = set(ex.map(task, range({n})))
        took = time.perf_counter() - began - 0.05
    print(took if len(pids) == {n} else -1)
"#,
        dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py"),
    );
    let dir = std::env::temp_dir().join(format!("cenote-ppe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("ppe_forkserver.py");
    std::fs::write(&file, script).expect("write script");
    // PYTHONPATH, so the forkserver process (a fresh interpreter) finds the
    // module it is asked to preload.
    let out = Command::new(interpreter)
        .arg(&file)
        .env(
            "PYTHONPATH",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py"),
        )
        .output()
        .expect("run ppe forkserver");
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(-1.0);
    let _ = std::fs::remove_dir_all(&dir);
    Duration::from_secs_f64(secs.max(0.0))
}

/// SIGKILL an idle worker of a pool of 4 heavy workers; until the pool has
/// 4 idle workers again.
async fn replacement(mode: StartMode) -> Duration {
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(heavy(mode)))
        .name("bench-replace")
        .size(4)
        .build()
        .await
        .expect("pool");
    let victim = pool
        .call(PyCall::new("pid", json!(null)))
        .await
        .expect("pid");
    let victim = victim.as_i64().expect("a pid") as i32;
    // SAFETY: kill(2) on a worker process this pool started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let began = Instant::now();
    // The pool notices on its next look at the worker (a checkout or the
    // maintenance tick); poll the way a caller would.
    loop {
        let s = pool.status();
        if s.idle == 4 && s.totals.crashes + s.totals.restarts > 0 {
            break;
        }
        if let Ok(mut g) = pool.get().await {
            let _ = g.call(PyCall::new("pid", json!(null))).await;
        }
        if began.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let took = began.elapsed();
    pool.close().await;
    took
}

/// Total PSS (MiB) of 8 workers whose module holds 100 MiB of data, and of
/// the fork server if there is one.
async fn memory(mode: StartMode) -> f64 {
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(
        heavy(mode).env("CENOTE_BENCH_DATA_MB", "100"),
    ))
    .name("bench-memory")
    .size(8)
    .create_timeout(Duration::from_secs(120))
    .build()
    .await
    .expect("pool");
    let mut guards = Vec::new();
    for _ in 0..8 {
        guards.push(pool.get().await.expect("worker"));
    }
    let mut pids = Vec::new();
    for g in &mut guards {
        let v = g.call(PyCall::new("pid", json!(null))).await.expect("pid");
        pids.push(v.as_u64().expect("a pid") as u32);
    }
    drop(guards);
    pids.extend(pool.factory().start_mode().fork_server_pid);
    let kib: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    pool.close().await;
    kib as f64 / 1024.0
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    let roundtrip_only = std::env::args().any(|a| a == "--roundtrip-only");
    let throughput_only = std::env::args().any(|a| a == "--throughput-only");
    let interpreter = Arc::new(
        PythonFactory::new(config())
            .interpreter()
            .await
            .expect("python3 on PATH")
            .to_path_buf(),
    );
    println!("python: {}", interpreter.display());
    if std::env::args().any(|a| a == "--payloads-only") {
        let bytes_mb_s = payloads::run(&interpreter).await;
        if json_out {
            println!("{}", json!({ "bytes_mb_s": bytes_mb_s }));
        }
        return;
    }

    if std::env::args().any(|a| a == "--multiplexed-only") {
        let mux = multiplexed::run(&interpreter).await;
        if json_out {
            println!("{}", json!({ "multiplexed": mux }));
        }
        return;
    }

    if std::env::args().any(|a| a == "--late-only") {
        let late = late_calls::run(&interpreter).await;
        if json_out {
            println!("{}", json!({ "late_calls": late }));
        }
        return;
    }

    if throughput_only {
        let (tp, ppe, mp) = throughput(&interpreter).await;
        if json_out {
            println!("{}", json!({"calls_per_sec": calls_per_sec(tp, ppe, mp)}));
        }
        return;
    }

    // Run in a spawned task, as calls in a service do: a future driven by
    // `block_on` on the main thread pays an extra thread wake-up per await.
    let interp = Arc::clone(&interpreter);
    let (ours, base) = tokio::spawn(async move { roundtrips(&interp).await })
        .await
        .expect("round trips");
    println!("\nround trip, 1 worker, sequential echo of a small dict ({ROUNDTRIPS} calls each, interleaved)");
    println!(
        "{:<24} {:>14} {:>9} {:>8} {:>8}",
        "", "block med µs", "mean µs", "p50 µs", "p99 µs"
    );
    for (name, s) in [("cenote pool.call", &ours), ("bare bridge client", &base)] {
        println!(
            "{name:<24} {:>14.1} {:>9.1} {:>8} {:>8}",
            s.block_us, s.mean_us, s.p50_us, s.p99_us
        );
    }
    println!(
        "ratio cenote / bare: {:.2} (block medians), {:.2} (means), {:.2} (p50)",
        ours.block_us / base.block_us,
        ours.mean_us / base.mean_us,
        ours.p50_us as f64 / base.p50_us.max(1) as f64
    );
    let roundtrip_us = json!({
        "cenote": round1(ours.block_us),
        "baseline": round1(base.block_us),
        "cenote_p50": ours.p50_us,
        "baseline_p50": base.p50_us,
    });
    if roundtrip_only {
        if json_out {
            println!("{}", json!({ "roundtrip_us": roundtrip_us }));
        }
        return;
    }

    let (tp, ppe, mp) = throughput(&interpreter).await;

    let mut one = Vec::new();
    let mut conc = Vec::new();
    let mut seq = Vec::new();
    for _ in 0..STARTUP_RUNS {
        one.push(startup_concurrent(1, warm_factory().await).await);
        conc.push(startup_concurrent(8, warm_factory().await).await);
        seq.push(startup_sequential(8, &warm_factory().await).await);
    }
    let (one, conc, seq) = (median(one), median(conc), median(seq));
    println!(
        "\nstartup, until ready (median of {STARTUP_RUNS}; {} cores)",
        num_cpus()
    );
    println!("{:<28} {:>10}", "", "ms");
    println!("{:<28} {:>10.1}", "1 worker", ms(one));
    println!("{:<28} {:>10.1}", "8 workers, concurrent", ms(conc));
    println!("{:<28} {:>10.1}", "8 workers, sequential", ms(seq));

    let mut runs: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for _ in 0..FORK_RUNS {
        for (key, n, mode) in [
            ("spawn1", 1, StartMode::Spawn),
            ("spawn8", 8, StartMode::Spawn),
            ("forkserver8", 8, StartMode::ForkServer),
            ("spawn16", 16, StartMode::Spawn),
            ("forkserver16", 16, StartMode::ForkServer),
        ] {
            runs.entry(key)
                .or_default()
                .push(heavy_startup(n, mode).await);
        }
        let interp = Arc::clone(&interpreter);
        let ppe = tokio::task::spawn_blocking(move || ppe_forkserver_startup(&interp, 8))
            .await
            .expect("ppe");
        runs.entry("ppe_forkserver8").or_default().push(ppe);
    }
    let heavy_ms: std::collections::BTreeMap<&str, f64> = runs
        .into_iter()
        .map(|(k, v)| (k, round1(ms(median(v)))))
        .collect();
    println!(
        "
startup with a handler whose import costs 0.35 s of CPU, until ready (median of {FORK_RUNS})"
    );
    println!("{:<36} {:>10}", "", "ms");
    for key in [
        "spawn1",
        "spawn8",
        "spawn16",
        "forkserver8",
        "forkserver16",
        "ppe_forkserver8",
    ] {
        println!("{key:<36} {:>10.1}", heavy_ms[key]);
    }
    println!(
        "forkserver8 / spawn1: {:.2}   forkserver16 / spawn1: {:.2}   forkserver8 / ppe_forkserver8: {:.2}",
        heavy_ms["forkserver8"] / heavy_ms["spawn1"],
        heavy_ms["forkserver16"] / heavy_ms["spawn1"],
        heavy_ms["forkserver8"] / heavy_ms["ppe_forkserver8"]
    );
    let (mut rs, mut rf) = (Vec::new(), Vec::new());
    for _ in 0..FORK_RUNS {
        rs.push(replacement(StartMode::Spawn).await);
        rf.push(replacement(StartMode::ForkServer).await);
    }
    let (rs, rf) = (round1(ms(median(rs))), round1(ms(median(rf))));
    println!(
        "
replacement after SIGKILL, until the pool is full again (median of {FORK_RUNS})"
    );
    println!(
        "{:<36} {:>10.1}\n{:<36} {:>10.1}",
        "spawn (ms)", rs, "fork server (ms)", rf
    );
    let (ms8, mf8) = (
        memory(StartMode::Spawn).await,
        memory(StartMode::ForkServer).await,
    );
    println!(
        "
memory: total PSS of 8 workers holding 100 MiB of read-only data"
    );
    println!(
        "{:<36} {:>10.1}\n{:<36} {:>10.1}\nfork server / spawn: {:.2}",
        "spawn (MiB)",
        ms8,
        "fork server, server included (MiB)",
        mf8,
        mf8 / ms8
    );

    let bytes_mb_s = payloads::run(&interpreter).await;
    let late = late_calls::run(&interpreter).await;
    let mux = multiplexed::run(&interpreter).await;

    if json_out {
        let out = json!({
            "multiplexed": mux,
            "late_calls": late,
            "bytes_mb_s": bytes_mb_s,
            "roundtrip_us": roundtrip_us,
            "calls_per_sec": calls_per_sec(tp, ppe, mp),
            "startup_ms": {"one": round1(ms(one)), "concurrent8": round1(ms(conc)), "sequential8": round1(ms(seq))},
            "startup_heavy_ms": heavy_ms,
            "replace_ms": {"spawn": rs, "forkserver": rf},
            "memory_mib": {"spawn8": round1(ms8), "forkserver8": round1(mf8)},
        });
        println!("{out}");
    }
}

/// The throughput section: cenote, `ProcessPoolExecutor` and
/// `multiprocessing.Pool`, printed as a table; returns their calls/s.
async fn throughput(interpreter: &Arc<PathBuf>) -> (f64, f64, f64) {
    // Alternate rounds and keep each contender's median, so that load from
    // elsewhere on the machine does not favour whoever ran at a quiet moment.
    let (mut tps, mut ppes, mut mps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..THROUGHPUT_ROUNDS {
        tps.push(cenote_throughput().await);
        let interp = Arc::clone(interpreter);
        let (ppe, mp) = tokio::task::spawn_blocking(move || python_throughput(&interp))
            .await
            .expect("python bench");
        ppes.push(ppe);
        mps.push(mp);
    }
    let (tp, ppe, mp) = (median_f(tps), median_f(ppes), median_f(mps));
    println!(
        "\nthroughput, 2 workers, {CALLERS} concurrent callers, echo (median of {THROUGHPUT_ROUNDS} alternating rounds)"
    );
    println!("{:<36} {:>12}", "", "calls/s");
    println!("{:<36} {:>12.0}", "cenote", tp);
    println!("{:<36} {:>12.0}", "ProcessPoolExecutor(2), submit", ppe);
    println!(
        "{:<36} {:>12.0}",
        "multiprocessing.Pool(2), apply_async", mp
    );
    println!(
        "cenote / PPE: {:.1}x   cenote / mp.Pool: {:.1}x",
        tp / ppe,
        tp / mp
    );
    (tp, ppe, mp)
}

fn calls_per_sec(tp: f64, ppe: f64, mp: f64) -> Value {
    json!({"cenote": tp.round(), "ppe": ppe.round(), "mp_pool": mp.round()})
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
