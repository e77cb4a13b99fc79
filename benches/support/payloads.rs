//! The payload section of `cargo bench --bench python`: round-trip echo of
//! 1 MiB and 64 MiB of bytes, in MB/s of payload (bytes sent one way per
//! second of round trip), through
//! - cenote's binary path (`Bytes` in through `kwarg_bytes`, which moves
//!   them without a copy; `Bytes` out; raw attachments);
//! - cenote with base64 in JSON, the way bytes travel without it (encode in
//!   Rust, decode and re-encode in the handler, decode in Rust);
//! - `ProcessPoolExecutor(1)` and `multiprocessing.Pool(1)`: pickle;
//! - a bare pipe to a Python process that reads the bytes into one buffer
//!   and writes them back, with no framing: the limit. `pipe` gives its
//!   pipes the 1 MiB capacity cenote gives its own while large frames move,
//!   so the limit is measured under the same conditions; `pipe 64K` keeps
//!   the kernel's default capacity, which is what a plain pipe gets.
//!
//! Each figure is the median of its repetitions, after one warm-up.

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

/// Sizes and repetitions: (label, bytes, reps).
const SIZES: [(&str, usize, usize); 2] = [("1m", MIB, 40), ("64m", 64 * MIB, 5)];

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

async fn cenote_lanes(size: usize, reps: usize) -> (Duration, Duration) {
    let config = PythonConfig::new(bench_py("payload.py")).max_frame_size(256 * MIB);
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
    (binary, base64)
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

/// Run every lane at both sizes, print the table, and return the JSON
/// object for `bytes_mb_s`.
pub async fn run(interpreter: &Path) -> Value {
    let mut out = serde_json::Map::new();
    println!("\npayloads: round-trip echo of bytes, MB/s of payload (median of the reps)");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}   cenote / mp.Pool, / pipe",
        "size", "cenote", "base64", "PPE", "mp.Pool", "pipe", "pipe 64K"
    );
    for (label, size, reps) in SIZES {
        let (binary, base64) = cenote_lanes(size, reps).await;
        let interp = interpreter.to_path_buf();
        let (pipe, pipe_default, (ppe, mp, method)) = tokio::task::spawn_blocking(move || {
            (
                pipe_lane(&interp, size, reps, true),
                pipe_lane(&interp, size, reps, false),
                pickle_lanes(&interp, size, reps),
            )
        })
        .await
        .expect("peers");
        let rates = [
            ("cenote", mb_s(size, binary)),
            ("base64", mb_s(size, base64)),
            ("ppe", mb_s(size, ppe)),
            ("mp_pool", mb_s(size, mp)),
            ("pipe", mb_s(size, pipe)),
            ("pipe_default", mb_s(size, pipe_default)),
        ];
        println!(
            "{:<10} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0}   {:.2}x, {:.2}x   (pickle peers on {method})",
            format!("{label} x{reps}"),
            rates[0].1,
            rates[1].1,
            rates[2].1,
            rates[3].1,
            rates[4].1,
            rates[5].1,
            rates[0].1 / rates[3].1,
            rates[0].1 / rates[4].1,
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
