//! [`PythonConfig`]: what a Python pool's workers run and the limits they
//! run under. Every option has a default a long-lived process pool wants.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the handler functions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// A `.py` file, loaded by path; its directory is put on `sys.path` so it
    /// can import its neighbours.
    File(PathBuf),
    /// An importable module name, e.g. `mypkg.handlers`.
    Module(String),
}

impl Handler {
    /// A path ending in `.py` or containing a `/` is a file; anything else a
    /// module name.
    pub fn parse(spec: impl AsRef<str>) -> Self {
        let spec = spec.as_ref();
        if spec.ends_with(".py") || spec.contains('/') {
            Handler::File(PathBuf::from(spec))
        } else {
            Handler::Module(spec.to_string())
        }
    }

    /// The argument handed to the bridge. A relative file is made absolute
    /// here: the worker may run in another directory.
    pub(crate) fn arg(&self) -> OsString {
        match self {
            Handler::File(p) => std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .into_os_string(),
            Handler::Module(m) => OsString::from(m),
        }
    }

    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            Handler::File(p) => p.display().to_string(),
            Handler::Module(m) => m.clone(),
        }
    }
}

impl From<&str> for Handler {
    fn from(s: &str) -> Self {
        Handler::parse(s)
    }
}

impl From<String> for Handler {
    fn from(s: String) -> Self {
        Handler::parse(s)
    }
}

impl From<&Path> for Handler {
    fn from(p: &Path) -> Self {
        Handler::File(p.to_path_buf())
    }
}

impl From<PathBuf> for Handler {
    fn from(p: PathBuf) -> Self {
        Handler::File(p)
    }
}

/// The env variables that make BLAS/OpenMP libraries start one thread per
/// core in every worker; set to the thread limit unless overridden.
pub(crate) const THREAD_ENV: [&str; 5] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

/// How Python workers are launched and when they are replaced.
///
/// Built with chained setters from [`PythonConfig::new`]:
/// ```
/// use std::time::Duration;
/// use cenote_python::PythonConfig;
/// let config = PythonConfig::new("examples/python/handlers.py")
///     .startup_timeout(Duration::from_secs(60))
///     .recycle_after_tasks(10_000)
///     .max_rss_growth(512 << 20)
///     .env("MODEL", "small");
/// assert_eq!(config.startup_timeout, Duration::from_secs(60));
/// ```
///
/// A call's deadline is not set here: it is the pool's (`call_timeout`, or
/// [`CallOptions::timeout`](cenote_core::CallOptions::timeout) per call),
/// and the worker learns it with each call.
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// The interpreter (default `python3`, looked up on `PATH`).
    pub interpreter: PathBuf,
    /// Ask the interpreter once for `sys.executable` and launch that: shims
    /// such as pyenv's cost ~60 ms per start (default true).
    pub resolve_interpreter: bool,
    /// The handler module.
    pub handler: Handler,
    /// The workers' working directory (default: the host's).
    pub working_dir: Option<PathBuf>,
    /// Variables set (`Some`) or removed (`None`) in the workers' env,
    /// applied after the thread limits, so they can override them.
    pub env: Vec<(OsString, Option<OsString>)>,
    /// How long a worker may take to import the handler and say ready.
    pub startup_timeout: Duration,
    /// How long an idle worker may take to answer a heartbeat ping.
    pub heartbeat_timeout: Duration,
    /// Replace a worker after about this many tasks.
    pub recycle_after_tasks: Option<u64>,
    /// Spread of the task quota, as a fraction: each worker's quota is drawn
    /// from `n ..= n * (1 + jitter)`, so workers do not all restart together.
    pub recycle_jitter: f64,
    /// Replace a worker whose own memory grew by more than this many bytes
    /// over its baseline (measured once it was ready). "Own" is USS: the
    /// pages only this process maps (`Private_Clean + Private_Dirty` in
    /// `/proc/PID/smaps_rollup`), so pages a forked worker still shares with
    /// the fork server do not count, and pages it copies on write do.
    pub max_rss_growth: Option<u64>,
    /// How often, at most, a worker's memory is read (after a call).
    pub rss_check_interval: Duration,
    /// Replace a worker after this long.
    pub max_lifetime: Option<Duration>,
    /// The largest frame either side sends or accepts, in bytes: its JSON
    /// and its raw bytes together. Default 256 MiB, so that payloads of
    /// 64 MiB and more (an image batch, a tensor) pass as they come; memory
    /// is spent only as bytes arrive, and a shared-memory region grows only
    /// to the payloads it carries. At most 2 GiB − 1 (the frame word's
    /// 31 bits); a larger value acts as that.
    pub max_frame_size: usize,
    /// Raw bytes of this size or more (a call's attachments, a result's
    /// bytes) cross through shared memory, the worker's own region, rather
    /// than the pipe (see the README's "Raw bytes"); `None` sends all bytes
    /// through the pipe. Default 64 KiB: from there a region beats the pipe
    /// (`cargo bench --bench python -- --payloads-only`).
    pub shm_threshold: Option<usize>,
    /// Value for `OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`,
    /// `MKL_NUM_THREADS`, `NUMEXPR_NUM_THREADS` and
    /// `VECLIB_MAXIMUM_THREADS` in each worker, unless its env sets them
    /// (`None`: leave them alone).
    pub thread_limit: Option<u32>,
    /// How many stderr lines to keep for crash reports.
    pub stderr_tail_lines: usize,
    /// How workers are started: forked from a fork server that imported the
    /// handler once, or each spawned as a fresh interpreter.
    pub start_mode: StartMode,
    /// Modules the fork server imports beside the handler module, so that
    /// every forked worker shares them.
    pub preload: Vec<String>,
    /// How long a worker may poll its pipe for a frame before it parks in
    /// the runtime's reactor (default 50 µs; zero: always park). A reader
    /// that does not park is not woken by the reply, which spares a
    /// sequential caller's round trip the wake-up of an idle CPU (tens of
    /// µs on a VM). Only a read that began while no other was in progress
    /// in the process spins, so at most one thread spins at a time; a
    /// handler slower than this makes its worker back off (one spin in up
    /// to 64 calls). Zero suits hosts where CPU time is scarcer than
    /// latency (a tight cgroup CPU quota, say).
    pub read_spin: Duration,
    /// How many calls each process serves at once (default 1; 0 acts as 1;
    /// see [`concurrency`](Self::concurrency)).
    pub concurrency: usize,
}

/// How a pool's Python workers are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// The fork server where it is safe (Linux, and a handler module that
    /// leaves one thread, no CUDA and no event loop behind after import);
    /// spawn otherwise, with a warning and the reason
    /// ([`PythonFactory::start_mode`](crate::PythonFactory::start_mode)).
    #[default]
    Auto,
    /// One process imports the handler module (and `preload`) once, then
    /// forks each worker: N workers start in about the time of one import
    /// and share its memory copy-on-write. Falls back to spawn, with a
    /// warning and the reason, where forking is not safe.
    ForkServer,
    /// Each worker is a fresh interpreter that imports the handler itself.
    Spawn,
}

/// Builder methods that set one field each: `name: Type;` sets the
/// field to the value, `name: Type => Some;` to `Some(value)`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty $(=> $wrap:ident)?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = $($wrap)?(value);
                self
            }
        )*
    };
}

impl PythonConfig {
    /// Defaults for a handler module (a `.py` path or a module name).
    pub fn new(handler: impl Into<Handler>) -> Self {
        PythonConfig {
            interpreter: PathBuf::from("python3"),
            resolve_interpreter: true,
            handler: handler.into(),
            working_dir: None,
            env: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(5),
            recycle_after_tasks: None,
            recycle_jitter: 0.1,
            max_rss_growth: None,
            rss_check_interval: Duration::from_secs(1),
            max_lifetime: None,
            max_frame_size: 256 << 20,
            shm_threshold: Some(64 << 10),
            thread_limit: Some(1),
            stderr_tail_lines: 20,
            start_mode: StartMode::Auto,
            preload: Vec::new(),
            read_spin: Duration::from_micros(50),
            concurrency: 1,
        }
    }

    setters! {
        /// Let each process serve up to `k` calls at once (default 1: one at a
        /// time, the process all to its caller).
        ///
        /// * `async def` handlers run as tasks on the process's one event loop:
        ///   `k` calls that wait (on a model, the network) cost one process.
        /// * Sync handlers run on up to `k` threads. That pays where they wait
        ///   on I/O, which releases the GIL; on a GIL-bound CPython, CPU work
        ///   does not run in parallel (it does on a free-threaded 3.13+).
        /// * Generators stream concurrently, their items interleaved on the
        ///   wire.
        ///
        /// The pool's `size`, `max_overflow` and hard cap still count
        /// processes; a caller waits only when every process has `k` calls in
        /// flight. A late call is cancelled alone (an async task at its await,
        /// a sync handler at its next bytecode); a sync handler blocked in C
        /// (`time.sleep`, a socket with no timeout) cannot be reached on a
        /// thread, so its process is killed when the grace runs out, and every
        /// call in flight on it fails with `PythonError::Killed` naming the
        /// call that caused it. Handlers share the process's memory, so module
        /// state they change must be safe to change from several calls at
        /// once.
        concurrency: usize;
        /// Stderr lines kept for crash reports.
        stderr_tail_lines: usize;
        /// Choose how workers start (default [`StartMode::Auto`]).
        start_mode: StartMode;
        /// Whether to resolve the interpreter to its `sys.executable` once.
        resolve_interpreter: bool;
        /// Deadline for import + ready.
        startup_timeout: Duration;
        /// Deadline for a heartbeat pong.
        heartbeat_timeout: Duration;
        /// Recycle after about `n` tasks (see [`recycle_jitter`](Self::recycle_jitter)).
        recycle_after_tasks: u64 => Some;
        /// Spread of the task quota (0.0 = exactly `n`).
        recycle_jitter: f64;
        /// Recycle when RSS grows by more than `bytes` over the worker's baseline.
        max_rss_growth: u64 => Some;
        /// Read RSS at most this often.
        rss_check_interval: Duration;
        /// Recycle after this long.
        max_lifetime: Duration => Some;
        /// Largest frame, both directions.
        max_frame_size: usize;
        /// Bytes from this size on go through shared memory (`None`: the
        /// pipe carries all).
        shm_threshold: Option<usize>;
        /// Thread-limit env value (`None` leaves the host's env as is).
        thread_limit: Option<u32>;
        /// Poll for a reply up to this long before parking (zero: never); see
        /// [`read_spin`](Self#structfield.read_spin).
        read_spin: Duration;
    }

    /// Import these modules in the fork server too, so every forked worker
    /// shares them (e.g. `["numpy", "torch"]`). Ignored in spawn mode.
    pub fn preload<S: Into<String>>(mut self, modules: impl IntoIterator<Item = S>) -> Self {
        self.preload = modules.into_iter().map(Into::into).collect();
        self
    }

    /// Use this interpreter (still resolved through `sys.executable` unless
    /// [`resolve_interpreter(false)`](Self::resolve_interpreter)).
    pub fn interpreter(mut self, path: impl Into<PathBuf>) -> Self {
        self.interpreter = path.into();
        self
    }

    /// Run workers in this directory.
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Set an env variable in every worker.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Remove an env variable from every worker's env.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// How many calls each process serves at once, as the bridge is told.
    pub(crate) fn calls_at_once(&self) -> usize {
        self.concurrency.max(1)
    }

    /// The task quota for one new worker, jitter drawn.
    pub(crate) fn draw_quota(&self) -> Option<u64> {
        use rand::Rng;
        let n = self.recycle_after_tasks?;
        let spread = (n as f64 * self.recycle_jitter.clamp(0.0, 10.0)) as u64;
        Some(
            n.saturating_add(rand::thread_rng().gen_range(0..=spread))
                .max(1),
        )
    }
}
