//! Shared helpers for the Python backend tests: handler paths, tagged
//! configs, and process accounting through /proc (by env tag, never by name).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use cenote_core::Pool;
use cenote_python::{PythonConfig, PythonFactory};
use cenote_strategies::{Fifo, Lifo};

#[allow(unused_imports)]
pub use cenote_testkit::eventually;
#[allow(unused_imports)]
pub use cenote_testkit::procs::{
    alive, fork_servers, is_fork_server, is_zombie, new_tag, parent_of, TAG_VAR,
};

pub type PyPool = Pool<PythonFactory, Lifo, Fifo>;

pub fn py_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

pub fn chaos_path() -> PathBuf {
    py_dir().join("chaos.py")
}

pub fn examples_handlers() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/handlers.py")
}

/// Both start modes, for tests that run each case in either.
pub const MODES: [cenote_python::StartMode; 2] = [
    cenote_python::StartMode::Spawn,
    cenote_python::StartMode::ForkServer,
];

/// Each start mode with a fresh tag for its run (named `name`), tracing
/// set up: `for (mode, tag) in modes("x") { .. }`.
pub fn modes(name: &str) -> impl Iterator<Item = (cenote_python::StartMode, String)> + '_ {
    init_tracing();
    MODES.into_iter().map(move |mode| (mode, new_tag(name)))
}

/// A config for handler file `file` of `tests/py`, started in `mode`, its
/// processes tagged `tag`.
pub fn py_config(file: &str, tag: &str, mode: cenote_python::StartMode) -> PythonConfig {
    PythonConfig::new(py_dir().join(file))
        .env(TAG_VAR, tag)
        .startup_timeout(Duration::from_secs(20))
        .start_mode(mode)
}

/// A config for the chaos handlers whose processes carry `tag`.
pub fn chaos(tag: &str) -> PythonConfig {
    py_config("chaos.py", tag, test_start_mode())
}

/// The start mode the suite runs in: `Auto` (the fork server here), or
/// `CENOTE_TEST_START_MODE=spawn` / `fork_server` to run it in either.
pub fn test_start_mode() -> cenote_python::StartMode {
    cenote_testkit::start_mode()
}

/// Pids of live (non-zombie) processes carrying `tag`, fork servers left
/// out: a pool's workers.
pub fn tagged(tag: &str) -> Vec<u32> {
    cenote_testkit::procs::tagged(tag)
        .into_iter()
        .filter(|&pid| !is_fork_server(pid))
        .collect()
}

/// Wait until no worker carries `tag`; returns those still left at `limit`.
pub async fn wait_gone(tag: &str, limit: Duration) -> Vec<u32> {
    cenote_testkit::procs::wait_gone(limit, || tagged(tag)).await
}

pub use cenote_core::CallCtx;

/// The deadline of a call a test makes directly on a worker (no pool).
pub fn ctx() -> CallCtx {
    CallCtx::within(Duration::from_secs(20))
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

/// A chaos worker spawned directly (no pool) as `id`, its processes
/// tagged: the tag and the worker.
pub async fn chaos_worker(name: &str, id: &str) -> (String, cenote_python::PythonWorker) {
    init_tracing();
    let tag = new_tag(name);
    let w = PythonFactory::new(chaos(&tag)).spawn(id).await.unwrap();
    (tag, w)
}

/// Close `pool` and check that none of the processes tagged `tag` is left.
pub async fn close_clean<I: cenote_core::IdleStrategy, W: cenote_core::WaitStrategy>(
    pool: Pool<PythonFactory, I, W>,
    tag: &str,
) {
    pool.close().await;
    assert!(wait_gone(tag, Duration::from_secs(5)).await.is_empty());
}

/// Shut `w` down and check that none of the processes tagged `tag` is left.
pub async fn shut_clean(w: cenote_python::PythonWorker, tag: &str) {
    use cenote_core::Worker;
    w.shutdown(Duration::from_secs(1)).await;
    assert!(wait_gone(tag, Duration::from_secs(5)).await.is_empty());
}

/// Set up tracing and give the test a fresh tag for its processes.
pub fn test_tag(name: &str) -> String {
    init_tracing();
    new_tag(name)
}

/// Close `pool`; once closed, no process tagged `tag` may be left, at once.
pub async fn close_none_left(pool: PyPool, tag: &str) {
    pool.close().await;
    assert!(
        tagged(tag).is_empty(),
        "left after close: {:?}",
        tagged(tag)
    );
}
