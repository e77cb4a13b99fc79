//! The payload section of `cargo bench --bench python`: round-trip echo of
//! 64 KiB (the default shared-memory threshold), 1 MiB, 64 MiB and
//! 512 MiB of bytes, in MB/s of payload (bytes sent one
//! way per second of round trip), through
//! - cenote's shared memory (`shm`: the default, `Bytes` in through
//!   `kwarg_bytes`, a memoryview in Python, `Bytes` out);
//! - cenote's binary path through the pipe (`cenote`: shared memory off,
//!   raw attachments in frames);
//! - cenote with base64 in JSON, the way bytes travel without it (encode in
//!   Rust, decode and re-encode in the handler, decode in Rust);
//! - `ProcessPoolExecutor(1)` and `multiprocessing.Pool(1)`: pickle;
//! - a bare pipe to a Python process that reads the bytes into one buffer
//!   and writes them back, with no framing: the limit. `pipe` gives its
//!   pipes the 1 MiB capacity cenote gives its own while large frames move,
//!   so the limit is measured under the same conditions; `pipe 64K` keeps
//!   the kernel's default capacity, which is what a plain pipe gets;
//! - `memcpy`: one copy of the payload between two touched buffers in this
//!   process, the limit for any road between two processes.
//!
//! 512 MiB runs the shared-memory lane and memcpy only (the peers would
//! take minutes). Each figure is the median of its repetitions, after one
//! warm-up.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cenote::python::{Bytes, PyCall, PythonConfig, PythonFactory};
use cenote::Pool;
use serde_json::{json, Value};

const MIB: usize = 1 << 20;

/// Sizes and repetitions: (label, bytes, reps, whether the peers run).
const SIZES: [(&str, usize, usize, bool); 4] = [
    ("64k", 64 << 10, 200, true),
    ("1m", MIB, 40, true),
    ("64m", 64 * MIB, 5, true),
    ("512m", 512 * MIB, 3, false),
];

fn bench_py(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/py")
        .join(file)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mb_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// Time `reps` round trips of `f` after one warm-up; the median.
async fn timed<F, Fut>(reps: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let mut took = Vec::with_capacity(reps);
    for _ in 0..reps {
        let began = Instant::now();
        f().await;
        took.push(began.elapsed());
    }
    median(took)
}

/// cenote's echo of `size` bytes (shared memory from `shm_threshold`, or
/// none), and with `base64` also its base64-in-JSON echo.
async fn cenote_lanes(
    size: usize,
    reps: usize,
    shm_threshold: Option<usize>,
    base64: bool,
) -> (Duration, Option<Duration>) {
    let config = PythonConfig::new(bench_py("payload.py"))
        .max_frame_size(600 * MIB)
        .shm_threshold(shm_threshold);
    let pool: Pool<PythonFactory> = Pool::builder(PythonFactory::new(config))
        .name("bench-payload")
        .size(1)
        .call_timeout(Duration::from_secs(60))
        .build()
        .await
        .expect("pool");
    let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let binary = timed(reps, || async {
        let call = PyCall::new("echo", Value::Null).kwarg_bytes("data", data.clone());
        let back: Bytes = pool.call(call.returning()).await.expect("echo");
        assert_eq!(back.len(), size);
    })
    .await;
    if !base64 {
        pool.close().await;
        return (binary, None);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let base64 = timed(reps, || async {
        let text = engine.encode(&data);
        let back: String = pool
            .call(PyCall::new("echo_base64", json!([text])).returning())
            .await
            .expect("echo_base64");
        let back = engine.decode(back).expect("base64");
        assert_eq!(back.len(), size);
    })
    .await;
    pool.close().await;
    (binary, Some(base64))
}

/// One memcpy of `size` bytes between two buffers already touched.
fn memcpy_lane(size: usize, reps: usize) -> Duration {
    let from: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut to = vec![1u8; size];
    let mut once = || {
        let began = Instant::now();
        to.copy_from_slice(std::hint::black_box(&from));
        std::hint::black_box(&to);
        began.elapsed()
    };
    once();
    median((0..reps.max(5)).map(|_| once()).collect())
}

/// The bare pipe: write the bytes, read them back; nothing else.
fn pipe_lane(interpreter: &Path, size: usize, reps: usize, grown: bool) -> Duration {
    let mut child = Command::new(interpreter)
        .arg(bench_py("payload_peers.py"))
        .arg("--pipe")
        .arg(size.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the pipe peer");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
        if grown {
            // SAFETY: F_SETPIPE_SZ takes an int; `fd` is an open pipe end.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
        }
    }
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; size];
    let mut once = || {
        let began = Instant::now();
        stdin.write_all(&data).expect("write");
        stdout.read_exact(&mut back).expect("read");
        began.elapsed()
    };
    once();
    let took = median((0..reps).map(|_| once()).collect());
    assert!(back == data);
    drop(stdin);
    let _ = child.wait();
    took
}

/// `(ProcessPoolExecutor, multiprocessing.Pool)` seconds per round trip.
fn pickle_lanes(interpreter: &Path, size: usize, reps: usize) -> (Duration, Duration, String) {
    let out = Command::new(interpreter)
        .arg(bench_py("payload_peers.py"))
        .arg(size.to_string())
        .arg(reps.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the pickle peers");
    let v: Value = serde_json::from_slice(&out.stdout).expect("peer output");
    let secs = |k: &str| Duration::from_secs_f64(v[k].as_f64().expect("seconds"));
    (
        secs("ppe"),
        secs("mp_pool"),
        v["start_method"].as_str().unwrap_or("?").to_string(),
    )
}

/// Run every lane at every size, print the table, and return the JSON
/// object for `bytes_mb_s`.
pub async fn run(interpreter: &Path) -> Value {
    let mut out = serde_json::Map::new();
    println!("\npayloads: round-trip echo of bytes, MB/s of payload (median of the reps)");
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   shm / pipe, / mp.Pool, / memcpy",
        "size", "shm", "cenote", "base64", "PPE", "mp.Pool", "pipe", "pipe 64K", "memcpy"
    );
    for (label, size, reps, peers) in SIZES {
        let (shm, _) = cenote_lanes(size, reps, Some(64 << 10), false).await;
        let memcpy = memcpy_lane(size, reps);
        let mut rates = vec![("shm", mb_s(size, shm)), ("memcpy", mb_s(size, memcpy))];
        let mut method = String::new();
        if peers {
            let (binary, base64) = cenote_lanes(size, reps, None, true).await;
            let interp = interpreter.to_path_buf();
            let (pipe, pipe_default, (ppe, mp, how)) = tokio::task::spawn_blocking(move || {
                (
                    pipe_lane(&interp, size, reps, true),
                    pipe_lane(&interp, size, reps, false),
                    pickle_lanes(&interp, size, reps),
                )
            })
            .await
            .expect("peers");
            method = format!("(pickle peers on {how})");
            rates.extend([
                ("cenote", mb_s(size, binary)),
                ("base64", mb_s(size, base64.expect("timed"))),
                ("ppe", mb_s(size, ppe)),
                ("mp_pool", mb_s(size, mp)),
                ("pipe", mb_s(size, pipe)),
                ("pipe_default", mb_s(size, pipe_default)),
            ]);
        }
        let rate = |name: &str| rates.iter().find(|r| r.0 == name).map(|r| r.1);
        let cell = |name: &str| rate(name).map_or("-".to_string(), |r| format!("{r:.0}"));
        let ratio = |name: &str| {
            rate(name).map_or("-".to_string(), |r| {
                format!("{:.2}x", rate("shm").unwrap() / r)
            })
        };
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   {}, {}, {}   {method}",
            format!("{label} x{reps}"),
            cell("shm"),
            cell("cenote"),
            cell("base64"),
            cell("ppe"),
            cell("mp_pool"),
            cell("pipe"),
            cell("pipe_default"),
            cell("memcpy"),
            ratio("pipe"),
            ratio("mp_pool"),
            ratio("memcpy"),
        );
        for (name, rate) in rates {
            out.insert(
                format!("{name}_{label}"),
                json!((rate * 10.0).round() / 10.0),
            );
        }
    }
    Value::Object(out)
}
