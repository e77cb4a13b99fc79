//! [`PythonWorker`]: one long-lived Python process speaking the frame
//! protocol, as a pool [`Worker`].
//!
//! Cancellation: all protocol state (the outgoing frame and how much of it
//! was written, the read buffer, the request in flight and its deadline)
//! lives in the worker, not in a call's future. A call dropped at any await
//! point therefore leaves a worker that knows exactly what is outstanding;
//! [`recycle`](Worker::recycle) (or the next call) finishes writing it,
//! drains the late answer, or kills the process once its deadline passes.

use std::sync::Arc;
use std::time::Duration;

use cenote_core::{Call, CallCtx, Retire, Worker};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, ChildStdout};
use tokio::time::Instant;

use crate::config::PythonConfig;
use crate::error::{Exit, PythonError};
use crate::frame::{encode_with, Decoder, FrameError};
use crate::process::Process;
use crate::protocol::{Incoming, Outgoing};
use crate::request::{decode, PyCall, TypedCall};
use crate::stream::PyStream;

/// The worker enforces a call's deadline (the pool's, from [`CallCtx`])
/// itself this long after it passes: with a pool, the pool's `CallTimeout`
/// is what a caller sees; used directly, the worker still never waits
/// forever.
const DEADLINE_SLACK: Duration = Duration::from_millis(25);

/// How long to wait for a dying process to finish exiting before killing it
/// and reporting.
const EXIT_WAIT: Duration = Duration::from_millis(250);

/// What the bridge said when it became ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The bridge's pid (also its process group id).
    pub pid: u32,
    /// The Python version, e.g. `3.11.7`.
    pub version: String,
    /// The handler module's public functions.
    pub functions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Call(String),
    Ping,
}

/// The one request in flight.
#[derive(Debug)]
struct Pending {
    id: u64,
    deadline: Instant,
    /// The deadline as the caller gave it, for messages.
    limit: Duration,
    what: Waiting,
}

/// A pooled Python process. Made by [`PythonFactory`](crate::PythonFactory);
/// serves [`PyCall`]s, [`TypedCall`]s and streams.
pub struct PythonWorker {
    label: Arc<str>,
    proc: Process,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    decoder: Decoder,
    outbox: Vec<u8>,
    written: usize,
    next_id: u64,
    pending: Option<Pending>,
    /// Set once the worker is beyond use: the error every later use reports.
    fault: Option<PythonError>,
    config: Arc<PythonConfig>,
    ready: ReadyInfo,
    tasks: u64,
    quota: Option<u64>,
    born: std::time::Instant,
    baseline_rss: Option<u64>,
    rss_growth: u64,
    rss_checked: std::time::Instant,
}

impl std::fmt::Debug for PythonWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonWorker")
            .field("label", &self.label)
            .field("pid", &self.ready.pid)
            .field("tasks", &self.tasks)
            .field("pending", &self.pending)
            .field("fault", &self.fault)
            .finish()
    }
}

impl PythonWorker {
    /// Launch one worker and wait for its ready frame. Used by the factory;
    /// `interpreter` is already resolved.
    pub(crate) async fn start(
        config: Arc<PythonConfig>,
        interpreter: &std::path::Path,
        label: Arc<str>,
    ) -> Result<Self, PythonError> {
        let mut cmd = tokio::process::Command::new(interpreter);
        let handler = match &config.handler {
            crate::Handler::File(p) if p.is_relative() => std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .into_os_string(),
            h => h.arg(),
        };
        cmd.arg("-u")
            .arg("-c")
            .arg(crate::bridge::SCRIPT)
            .arg(handler)
            .arg(config.max_frame_size.to_string())
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        crate::factory::apply_env(&mut cmd, &config);
        let mut child = cmd.spawn().map_err(|e| PythonError::Spawn {
            interpreter: interpreter.to_path_buf(),
            source: Arc::new(e),
        })?;
        let (Some(pid), Some(stdin), Some(stdout)) =
            (child.id(), child.stdin.take(), child.stdout.take())
        else {
            return Err(PythonError::BadRequest(
                "spawned python process has no pid or pipes".into(),
            ));
        };
        let proc = Process::adopt(child, pid, Arc::clone(&label), config.stderr_tail_lines);
        let mut worker = PythonWorker {
            label,
            proc,
            stdin: Some(stdin),
            stdout,
            decoder: Decoder::new(config.max_frame_size),
            outbox: Vec::new(),
            written: 0,
            next_id: 1,
            pending: None,
            fault: None,
            quota: config.draw_quota(),
            config,
            ready: ReadyInfo {
                pid,
                version: String::new(),
                functions: Vec::new(),
            },
            tasks: 0,
            born: std::time::Instant::now(),
            baseline_rss: None,
            rss_growth: 0,
            rss_checked: std::time::Instant::now(),
        };
        let limit = worker.config.startup_timeout;
        let first = tokio::time::timeout(limit, worker.read_msg()).await;
        match first {
            Ok(Ok(Incoming::Ready {
                pid: reported,
                version,
                protocol,
                functions,
            })) => {
                if protocol != crate::protocol::PROTOCOL {
                    return Err(worker
                        .violation(format!(
                            "bridge speaks protocol {protocol}, this crate {}",
                            crate::protocol::PROTOCOL
                        ))
                        .await);
                }
                if reported != pid {
                    tracing::warn!(worker = %worker.label, pid, reported, "bridge reports another pid than the one spawned");
                }
                worker.ready.version = version;
                worker.ready.functions = functions;
                worker.baseline_rss = rss_bytes(pid);
                tracing::debug!(worker = %worker.label, pid, version = %worker.ready.version, "python worker ready");
                Ok(worker)
            }
            Ok(Ok(Incoming::Error {
                kind,
                type_name,
                message,
                ..
            })) if kind == "import" => {
                worker.proc.wait_exit(EXIT_WAIT).await;
                worker.proc.kill_and_reap().await;
                Err(PythonError::Startup {
                    pid,
                    message: format!(
                        "handler module {} failed to import ({type_name}): {message}",
                        worker.config.handler.describe()
                    ),
                    stderr_tail: worker.proc.tail(),
                })
            }
            Ok(Ok(other)) => Err(worker
                .violation(format!("expected a ready frame, got {}", other.kind()))
                .await),
            Ok(Err(PythonError::Crashed {
                status,
                stderr_tail,
                ..
            })) => Err(PythonError::Startup {
                pid,
                message: format!("python exited ({status}) before it was ready"),
                stderr_tail,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                worker.proc.kill_and_reap().await;
                Err(PythonError::StartupTimeout {
                    pid,
                    after: limit,
                    stderr_tail: worker.proc.tail(),
                })
            }
        }
    }

    /// What the bridge reported when it became ready.
    pub fn ready_info(&self) -> &ReadyInfo {
        &self.ready
    }

    /// The worker's label (`pool/worker`), as used in tracing.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Calls (and streams) finished on this worker.
    pub fn tasks_served(&self) -> u64 {
        self.tasks
    }

    /// The last stderr lines of the process.
    pub fn stderr_tail(&self) -> crate::StderrTail {
        self.proc.tail()
    }

    /// Whether a request is still outstanding (its caller gave up on it).
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Send a signal to the worker's process (not its group). Meant for
    /// tests and operators, e.g. SIGSTOP to simulate a hung worker.
    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Call a handler function and return its JSON result, by `ctx`'s
    /// deadline (past it the process group is killed).
    pub async fn call_json(&mut self, call: PyCall, ctx: CallCtx) -> Result<Value, PythonError> {
        let deadline = self.begin(&call, false, ctx).await?;
        match self.read_until(deadline, &call.function).await? {
            Incoming::Result { value, .. } => {
                self.finished();
                Ok(value)
            }
            Incoming::Error {
                kind,
                type_name,
                message,
                traceback,
                ..
            } => {
                self.finished();
                Err(call_error(
                    &call.function,
                    &kind,
                    type_name,
                    message,
                    traceback,
                ))
            }
            other => Err(self
                .violation(format!("answered a call with a {} frame", other.kind()))
                .await),
        }
    }

    /// Call a handler function and decode its result into `R`.
    pub async fn call_as<R: DeserializeOwned>(
        &mut self,
        call: PyCall,
        ctx: CallCtx,
    ) -> Result<R, PythonError> {
        let function = call.function.clone();
        let value = self.call_json(call, ctx).await?;
        decode(&function, value)
    }

    /// Stream the items of a generator handler (a plain handler streams its
    /// one result). Dropping the stream early leaves the rest outstanding:
    /// the worker drains it (or kills the process at the deadline) before
    /// its next call. `ctx`'s deadline bounds the whole stream.
    pub fn stream(&mut self, call: PyCall, ctx: CallCtx) -> PyStream<'_> {
        crate::stream::over(self, call, ctx)
    }

    /// Start a streamed call; chunks follow through [`next_chunk`](Self::next_chunk).
    pub(crate) async fn begin_stream(
        &mut self,
        call: &PyCall,
        ctx: CallCtx,
    ) -> Result<(), PythonError> {
        self.begin(call, true, ctx).await.map(|_| ())
    }

    /// The next item of the stream in flight; `None` once it ended.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Value, PythonError>> {
        let (deadline, function) = match &self.pending {
            Some(Pending {
                deadline,
                what: Waiting::Call(f),
                ..
            }) => (*deadline, f.clone()),
            _ => return None,
        };
        let msg = match self.read_until(deadline, &function).await {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        match msg {
            Incoming::Chunk { data, .. } => Some(Ok(data)),
            Incoming::End { .. } => {
                self.finished();
                None
            }
            Incoming::Error {
                kind,
                type_name,
                message,
                traceback,
                ..
            } => {
                self.finished();
                Some(Err(call_error(
                    &function, &kind, type_name, message, traceback,
                )))
            }
            other => Some(Err(self
                .violation(format!("answered a stream with a {} frame", other.kind()))
                .await)),
        }
    }

    /// Settle anything outstanding, encode and send `call`; returns the
    /// call's deadline.
    async fn begin(
        &mut self,
        call: &PyCall,
        stream: bool,
        ctx: CallCtx,
    ) -> Result<Instant, PythonError> {
        self.usable()?;
        self.settle().await?;
        let id = self.next_id;
        let encoded = encode_with(self.config.max_frame_size, |buf| {
            serde_json::to_writer(
                buf,
                &Outgoing::Call {
                    id,
                    function: &call.function,
                    args: &call.args,
                    kwargs: call.kwargs.as_ref(),
                    stream,
                },
            )
        });
        let frame = match encoded {
            Ok(Ok(frame)) => frame,
            Ok(Err(size)) => {
                return Err(PythonError::RequestTooLarge {
                    function: call.function.clone(),
                    size,
                    max: self.config.max_frame_size,
                })
            }
            Err(e) => {
                return Err(PythonError::BadRequest(format!(
                    "arguments for {} cannot be encoded: {e}",
                    call.function
                )))
            }
        };
        self.next_id += 1;
        let deadline = ctx.deadline();
        let limit = ctx.remaining();
        self.outbox = frame;
        self.written = 0;
        self.pending = Some(Pending {
            id,
            deadline,
            limit,
            what: Waiting::Call(call.function.clone()),
        });
        match tokio::time::timeout_at(deadline + DEADLINE_SLACK, self.flush()).await {
            Ok(r) => r?,
            Err(_) => return Err(self.kill_for_deadline(&call.function, limit)),
        }
        Ok(deadline)
    }

    /// Read the next frame of the request in flight, under its deadline.
    async fn read_until(
        &mut self,
        deadline: Instant,
        function: &str,
    ) -> Result<Incoming, PythonError> {
        let msg = match tokio::time::timeout_at(deadline + DEADLINE_SLACK, self.read_msg()).await {
            Ok(r) => r?,
            Err(_) => {
                let limit = self.pending.as_ref().map_or(Duration::ZERO, |p| p.limit);
                return Err(self.kill_for_deadline(function, limit));
            }
        };
        let expected = self.pending.as_ref().map(|p| p.id);
        if Some(msg.id()) != expected {
            return Err(self
                .violation(format!(
                    "sent a {} frame for request {} while request {:?} was in flight",
                    msg.kind(),
                    msg.id(),
                    expected
                ))
                .await);
        }
        Ok(msg)
    }

    /// A request finished: no longer pending; count it and sample memory.
    fn finished(&mut self) {
        self.pending = None;
        self.tasks += 1;
        if self.config.max_rss_growth.is_some()
            && self.rss_checked.elapsed() >= self.config.rss_check_interval
        {
            self.rss_checked = std::time::Instant::now();
            if let (Some(base), Some(now)) = (self.baseline_rss, rss_bytes(self.ready.pid)) {
                self.rss_growth = now.saturating_sub(base);
            }
        }
    }

    /// Write what is left of the outbox. Cancel-safe: progress is kept.
    async fn flush(&mut self) -> Result<(), PythonError> {
        while self.written < self.outbox.len() {
            let Some(stdin) = self.stdin.as_mut() else {
                return Err(self.crash().await);
            };
            match stdin.write(&self.outbox[self.written..]).await {
                Ok(0) | Err(_) => return Err(self.crash().await),
                Ok(n) => self.written += n,
            }
        }
        if self.outbox.capacity() > 1 << 20 {
            // Sent: do not keep a large request's buffer for the worker's life.
            self.outbox = Vec::new();
            self.written = 0;
        }
        Ok(())
    }

    /// Read and parse one frame. End of stream or an I/O error means the
    /// process died; bytes that are not a frame break the protocol.
    async fn read_msg(&mut self) -> Result<Incoming, PythonError> {
        let polled = std::future::poll_fn(|cx| self.decoder.poll_frame(&mut self.stdout, cx)).await;
        let bytes = match polled {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) | Err(_) => return Err(self.crash().await),
            Ok(Err(FrameError::TooLarge { size, max })) => {
                return Err(self
                    .violation(format!(
                        "announced a frame of {size} bytes, over the max frame size of {max}"
                    ))
                    .await)
            }
            Ok(Err(FrameError::Truncated { .. })) => {
                // The process died mid-frame.
                return Err(self.crash().await);
            }
        };
        match Incoming::parse(&bytes) {
            Ok(msg) => Ok(msg),
            Err(e) => {
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
                Err(self
                    .violation(format!(
                        "sent a frame that is not a protocol message ({e}): {shown:?}"
                    ))
                    .await)
            }
        }
    }

    /// Finish whatever a dropped caller left: the rest of its frame, then
    /// its answer (chunks skipped), until its deadline; past it, kill.
    async fn settle(&mut self) -> Result<(), PythonError> {
        let Some(pending) = &self.pending else {
            return Ok(());
        };
        let (id, deadline, what) = (pending.id, pending.deadline, pending.what.clone());
        let pid = self.ready.pid;
        let timed_out = |me: &mut Self| {
            let err = match &what {
                Waiting::Ping => PythonError::Heartbeat {
                    pid,
                    after: me.config.heartbeat_timeout,
                },
                Waiting::Call(_) => PythonError::Abandoned { pid },
            };
            me.kill(err)
        };
        match tokio::time::timeout_at(deadline, self.flush()).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out(self)),
        }
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.read_msg()).await {
                Ok(r) => r?,
                Err(_) => return Err(timed_out(self)),
            };
            if msg.id() != id {
                return Err(self
                    .violation(format!(
                        "sent a {} frame for request {} while draining request {id}",
                        msg.kind(),
                        msg.id()
                    ))
                    .await);
            }
            if msg.is_terminal() {
                if what == Waiting::Ping {
                    self.pending = None;
                } else {
                    tracing::debug!(worker = %self.label, pid, "abandoned call finished; worker free");
                    self.finished();
                }
                return Ok(());
            }
        }
    }

    /// Ping the bridge and wait for its pong within `heartbeat_timeout`.
    pub async fn heartbeat(&mut self) -> Result<(), PythonError> {
        self.usable()?;
        self.settle().await?;
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_with(self.config.max_frame_size, |buf| {
            serde_json::to_writer(buf, &Outgoing::Ping { id })
        });
        let Ok(Ok(frame)) = frame else {
            return Err(PythonError::BadRequest(
                "ping frame cannot be encoded".into(),
            ));
        };
        self.outbox = frame;
        self.written = 0;
        self.pending = Some(Pending {
            id,
            deadline: Instant::now() + self.config.heartbeat_timeout,
            limit: self.config.heartbeat_timeout,
            what: Waiting::Ping,
        });
        self.settle().await
    }

    /// Err if the worker broke before. A process that died since is found
    /// by the I/O of the next request (and by `is_broken`, which the pool
    /// asks on every checkout), so no syscall is spent here.
    fn usable(&self) -> Result<(), PythonError> {
        match &self.fault {
            Some(fault) => Err(fault.clone()),
            None => Ok(()),
        }
    }

    /// The process died: collect its status and stderr tail, kill what is
    /// left of its group, and remember the crash.
    async fn crash(&mut self) -> PythonError {
        if let Some(fault) = &self.fault {
            return fault.clone();
        }
        let seen = self.proc.wait_exit(EXIT_WAIT).await;
        let reaped = self.proc.kill_and_reap().await;
        let status = match seen {
            Some(Exit::Unknown) | None => reaped,
            Some(s) => s,
        };
        let err = PythonError::Crashed {
            pid: self.ready.pid,
            status,
            stderr_tail: self.proc.tail(),
        };
        tracing::warn!(worker = %self.label, pid = self.ready.pid, %status, "python worker died");
        self.fault = Some(err.clone());
        err
    }

    /// The bridge broke the protocol: kill it and report what it sent.
    async fn violation(&mut self, message: String) -> PythonError {
        tracing::error!(worker = %self.label, pid = self.ready.pid, %message, "protocol violation; killing worker");
        self.proc.kill_and_reap().await;
        let err = PythonError::Protocol {
            pid: self.ready.pid,
            message,
            stderr_tail: self.proc.tail(),
        };
        self.fault = Some(err.clone());
        err
    }

    /// Kill the process group now (reaped later by shutdown or drop) and
    /// remember why.
    fn kill(&mut self, err: PythonError) -> PythonError {
        tracing::warn!(worker = %self.label, pid = self.ready.pid, error = %err, "killing python worker");
        self.proc.kill_group();
        self.fault = Some(err.clone());
        err
    }

    fn kill_for_deadline(&mut self, function: &str, after: Duration) -> PythonError {
        let err = PythonError::Timeout {
            function: function.to_string(),
            after,
            pid: self.ready.pid,
        };
        self.kill(err)
    }
}

/// Map a bridge error frame to the error a caller sees.
fn call_error(
    function: &str,
    kind: &str,
    type_name: String,
    message: String,
    traceback: String,
) -> PythonError {
    let function = function.to_string();
    match kind {
        "unknown_function" => PythonError::UnknownFunction { function, message },
        "bad_args" => PythonError::BadArguments { function, message },
        "unserializable" => PythonError::Unserializable { function, message },
        "too_large" => PythonError::ResultTooLarge { function, message },
        "bad_request" => PythonError::BadRequest(message),
        _ => PythonError::Raised {
            function,
            type_name,
            message,
            traceback,
        },
    }
}

/// Resident set size of `pid`, from `/proc/<pid>/statm`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).unwrap_or(4096)))
}

impl Worker for PythonWorker {
    type Error = PythonError;

    fn is_broken(&mut self) -> bool {
        self.fault.is_some() || self.proc.exited().is_some()
    }

    async fn recycle(&mut self) -> Result<(), PythonError> {
        if self.pending.is_some() {
            self.usable()?;
            self.settle().await
        } else {
            self.heartbeat().await
        }
    }

    fn retire_reason(&self) -> Option<Retire> {
        if let Some(quota) = self.quota {
            if self.tasks >= quota {
                return Some(Retire::Tasks(self.tasks));
            }
        }
        if let Some(limit) = self.config.max_rss_growth {
            if self.rss_growth > limit {
                return Some(Retire::Memory(self.rss_growth));
            }
        }
        if let Some(life) = self.config.max_lifetime {
            if self.born.elapsed() >= life {
                return Some(Retire::Lifetime(life));
            }
        }
        None
    }

    async fn shutdown(mut self, grace: Duration) {
        if !grace.is_zero() && self.fault.is_none() && self.proc.exited().is_none() {
            let deadline = Instant::now() + grace;
            let polite = async {
                self.settle().await?;
                let frame = encode_with(64, |buf| {
                    serde_json::to_writer(buf, &Outgoing::Shutdown { id: 0 })
                });
                if let Ok(Ok(frame)) = frame {
                    self.outbox = frame;
                    self.written = 0;
                    self.flush().await?;
                }
                Ok::<(), PythonError>(())
            };
            let _ = tokio::time::timeout_at(deadline, polite).await;
            // Closing stdin also ends a bridge that missed the frame.
            drop(self.stdin.take());
            let left = deadline.saturating_duration_since(Instant::now());
            self.proc.wait_exit(left).await;
        }
        let exit = self.proc.kill_and_reap().await;
        tracing::debug!(worker = %self.label, pid = self.ready.pid, %exit, "python worker shut down");
    }

    fn pid(&self) -> Option<u32> {
        Some(self.ready.pid)
    }
}

impl Call<PyCall> for PythonWorker {
    type Response = Value;

    fn call(
        &mut self,
        req: PyCall,
        ctx: CallCtx,
    ) -> impl std::future::Future<Output = Result<Value, PythonError>> + Send {
        self.call_json(req, ctx)
    }
}

impl<R: DeserializeOwned + Send + 'static> Call<TypedCall<R>> for PythonWorker {
    type Response = R;

    fn call(
        &mut self,
        req: TypedCall<R>,
        ctx: CallCtx,
    ) -> impl std::future::Future<Output = Result<R, PythonError>> + Send {
        self.call_as(req.call, ctx)
    }
}

impl<S: Into<String> + Send> Call<(S, Value)> for PythonWorker {
    type Response = Value;

    fn call(
        &mut self,
        (function, args): (S, Value),
        ctx: CallCtx,
    ) -> impl std::future::Future<Output = Result<Value, PythonError>> + Send {
        self.call_json(PyCall::new(function, args), ctx)
    }
}
