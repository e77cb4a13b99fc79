//! Shared helpers for the Python backend tests: handler paths, tagged
//! configs, and process accounting through /proc (by env tag, never by name).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cenote_core::Pool;
use cenote_python::{PythonConfig, PythonFactory};
use cenote_strategies::{Fifo, Lifo};

pub type PyPool = Pool<PythonFactory, Lifo, Fifo>;

/// The env variable that marks every process a test starts.
pub const TAG_VAR: &str = "CENOTE_TEST_TAG";

pub fn py_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

pub fn chaos_path() -> PathBuf {
    py_dir().join("chaos.py")
}

pub fn examples_handlers() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/handlers.py")
}

/// A tag unique to this test process and call.
pub fn new_tag(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for the chaos handlers whose processes carry `tag`.
pub fn chaos(tag: &str) -> PythonConfig {
    PythonConfig::new(chaos_path())
        .env(TAG_VAR, tag)
        .startup_timeout(Duration::from_secs(20))
        .start_mode(test_start_mode())
}

/// The start mode the suite runs in: `Auto` (the fork server here), or
/// `CENOTE_TEST_START_MODE=spawn` / `fork_server` to run it in either.
pub fn test_start_mode() -> cenote_python::StartMode {
    match std::env::var("CENOTE_TEST_START_MODE").as_deref() {
        Ok("spawn") => cenote_python::StartMode::Spawn,
        Ok("fork_server") => cenote_python::StartMode::ForkServer,
        _ => cenote_python::StartMode::Auto,
    }
}

/// Pids of live (non-zombie) processes carrying `tag` in their env.
pub fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG_VAR}={tag}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && !is_zombie(pid)
            && !is_fork_server(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Is `pid` a fork server? Its workers share its command line (a fork
/// keeps argv), but their parent is the fork server, whose parent is not.
pub fn is_fork_server(pid: u32) -> bool {
    runs_zygote(pid) && !parent_of(pid).is_some_and(runs_zygote)
}

fn runs_zygote(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|b| *b == 0).any(|arg| arg == b"--zygote")
}

/// The parent pid of `pid`, from /proc.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The fork servers carrying `tag` (not zombies).
pub fn fork_servers(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG_VAR}={tag}");
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| {
                    is_fork_server(pid)
                        && !is_zombie(pid)
                        && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                            env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
                        })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Children of this test process that are zombies carrying no env (i.e.
/// unreaped) — only meaningful per pid.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rfind(')')?;
            s[after + 1..].split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// Is `pid` running (present and not a zombie)?
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// Wait until no process carries `tag`; returns those still left at `limit`.
pub async fn wait_gone(tag: &str, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = tagged(tag);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use cenote_core::CallCtx;

/// The deadline of a call a test makes directly on a worker (no pool).
pub fn ctx() -> CallCtx {
    CallCtx::within(Duration::from_secs(20))
}

/// Wait until `cond` holds, polling; false if it did not within `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A builder for a pool of `size` chaos workers with test-friendly timeouts.
pub fn chaos_builder(
    config: PythonConfig,
    size: usize,
) -> cenote_core::PoolBuilder<PythonFactory, Lifo, Fifo> {
    Pool::builder(PythonFactory::new(config))
        .name("test")
        .size(size)
        .checkout_timeout(Duration::from_secs(20))
        .create_timeout(Duration::from_secs(20))
        .call_timeout(Duration::from_secs(20))
        .shutdown_grace(Duration::from_secs(2))
}

/// A pool of `size` chaos workers with test-friendly timeouts.
pub async fn chaos_pool(config: PythonConfig, size: usize) -> PyPool {
    chaos_builder(config, size)
        .build()
        .await
        .expect("pool builds")
}

/// [`chaos_pool`] whose calls have `call_timeout` as their deadline.
pub async fn chaos_pool_with_deadline(
    config: PythonConfig,
    size: usize,
    call_timeout: Duration,
) -> PyPool {
    chaos_builder(config, size)
        .call_timeout(call_timeout)
        .build()
        .await
        .expect("pool builds")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
