//! One bridge process serving many calls at once (`PythonConfig::concurrency`
//! above 1), through lanes: each caller of the process holds a [`Lane`],
//! with at most one request of its own in flight, and every lane of a
//! process shares its [`Mux`].
//!
//! Frames of many requests interleave on the pipes, so the pipes belong to
//! two tasks rather than to any call's future:
//! - the writer takes whole frames from a queue and writes them in order. A
//!   lane hands its frame over in one step (under the routes lock, which
//!   also numbers it, so ids reach the bridge in increasing order), and a
//!   lane dropped at any point never leaves half a frame;
//! - the reader reads frames and routes each to the lane whose request it
//!   answers, through a bounded channel: a stream whose consumer stops
//!   reading holds the reader up once it has buffered `ROUTE_BUFFER`
//!   items, which bounds memory at the cost of the process's other calls
//!   waiting too.
//!
//! A fault (the process died, broke the protocol, or was killed) is
//! recorded once, then every route is closed: every lane in flight fails
//! with that fault, and every later use reports it. A lane that kills the
//! process (its call would not let go when cancelled) records why first,
//! so the other calls that fail with it ([`PythonError::Killed`]) say which
//! call's deadline caused it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::{Exit, PythonError, StderrTail};
use crate::frame::{encode_with, Decoder, Outbound};
use crate::process::Process;
use crate::protocol::{Incoming, Outgoing};
use crate::request::PyCall;
use crate::shm::Shm;

use super::cancels::CancelPipe;
use super::pipes::Capacity;
use super::retire::Retirement;
use super::spin::FrameReader;
use super::wire::{encode_call, incoming, write_whole, Broken, EXIT_WAIT};

/// Messages a route buffers before the reader waits for its lane: what
/// bounds the memory a slow stream consumer costs.
const ROUTE_BUFFER: usize = 64;

/// What a process's lanes and its two tasks share.
struct Core {
    label: Arc<str>,
    pid: u32,
    max_frame: usize,
    shm: Option<Arc<Shm>>,
    routes: Mutex<Routes>,
    /// Why the process is beyond use, once it is.
    fault: OnceLock<PythonError>,
    /// Why this host killed the process, recorded before the kill.
    killed_because: Mutex<Option<String>>,
    proc: tokio::sync::Mutex<Process>,
    /// Whole frames for the writer task.
    out: mpsc::UnboundedSender<Outbound>,
    cancels: CancelPipe,
    retirement: Mutex<Retirement>,
}

/// The requests in flight, by id.
struct Routes {
    next_id: u64,
    open: HashMap<u64, mpsc::Sender<Incoming>>,
}

/// A process shared by lanes. Dropped with its last lane: its tasks end
/// and its process group is killed.
pub(super) struct Mux {
    core: Arc<Core>,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        if let Ok(proc) = self.core.proc.try_lock() {
            proc.kill_group();
        }
    }
}

/// What a lane has in flight.
struct Pending {
    id: u64,
    /// The function called (`None`: a ping).
    function: Option<String>,
    rx: mpsc::Receiver<Incoming>,
    /// Its cancel was sent.
    cancelled: bool,
}

/// One caller's way into a shared process: at most one request in flight.
pub(super) struct Lane {
    mux: Arc<Mux>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("label", &self.mux.core.label)
            .field("pid", &self.mux.core.pid)
            .field("pending", &self.pending.as_ref().map(|p| p.id))
            .field("fault", &self.mux.core.fault.get())
            .finish()
    }
}

/// The pieces of a process whose ready frame was read, for [`Lane::start`].
pub(super) struct Parts {
    pub label: Arc<str>,
    pub pid: u32,
    pub proc: Process,
    pub stdin: pipe::Sender,
    pub stdout: FrameReader,
    pub decoder: Decoder,
    pub cancels: CancelPipe,
    pub max_frame: usize,
    pub shm: Option<Arc<Shm>>,
    pub retirement: Retirement,
}

impl Lane {
    /// Start serving a ready process through lanes: its reader and writer
    /// tasks start, and this is its first lane.
    pub(super) fn start(parts: Parts) -> Lane {
        let Parts {
            label,
            pid,
            proc,
            stdin,
            mut stdout,
            decoder,
            cancels,
            max_frame,
            shm,
            retirement,
        } = parts;
        // The reader parks while calls run: nothing to spin for.
        stdout.set_budget(Duration::ZERO);
        let (out, queued) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            label,
            pid,
            max_frame,
            shm,
            routes: Mutex::new(Routes {
                next_id: 1,
                open: HashMap::new(),
            }),
            fault: OnceLock::new(),
            killed_because: Mutex::new(None),
            proc: tokio::sync::Mutex::new(proc),
            out,
            cancels,
            retirement: Mutex::new(retirement),
        });
        let reader = tokio::spawn(read_frames(Arc::clone(&core), stdout, decoder));
        let writer = tokio::spawn(write_frames(stdin, queued));
        Lane {
            mux: Arc::new(Mux {
                core,
                reader: reader.abort_handle(),
                writer: writer.abort_handle(),
            }),
            pending: None,
        }
    }

    /// Another lane on the same process.
    pub(super) fn lane(&self) -> Lane {
        Lane {
            mux: Arc::clone(&self.mux),
            pending: None,
        }
    }

    fn core(&self) -> &Core {
        &self.mux.core
    }

    pub(super) fn label(&self) -> &str {
        &self.core().label
    }

    pub(super) fn pid(&self) -> u32 {
        self.core().pid
    }

    pub(super) fn tail(&self) -> StderrTail {
        self.core()
            .proc
            .try_lock()
            .map(|p| p.tail())
            .unwrap_or_default()
    }

    pub(super) fn signal(&self, sig: i32) {
        if let Ok(proc) = self.core().proc.try_lock() {
            proc.signal(sig);
        }
    }

    pub(super) fn retirement(&self) -> parking_lot::MutexGuard<'_, Retirement> {
        self.core().retirement.lock()
    }

    pub(super) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Faulted, or the process has exited (one syscall, unless the reader
    /// holds the process while it collects the exit).
    pub(super) fn is_broken(&self) -> bool {
        let core = self.core();
        core.fault.get().is_some() || core.proc.try_lock().is_ok_and(|p| p.exited().is_some())
    }

    fn usable(&self) -> Result<(), PythonError> {
        match self.core().fault.get() {
            Some(fault) => Err(fault.clone()),
            None => Ok(()),
        }
    }

    /// The function of the call in flight, if there is one.
    pub(super) fn call_in_flight(&self) -> Option<&str> {
        self.pending.as_ref()?.function.as_deref()
    }

    /// Number the request, open its route and queue its frame, in one step.
    fn send(
        &mut self,
        function: Option<&str>,
        encode: impl FnOnce(u64) -> Result<Outbound, PythonError>,
    ) -> Result<u64, PythonError> {
        self.usable()?;
        let core = Arc::clone(&self.mux.core);
        let (tx, rx) = mpsc::channel(ROUTE_BUFFER);
        let id = {
            let mut routes = core.routes.lock();
            let id = routes.next_id;
            let frame = encode(id)?;
            routes.next_id += 1;
            routes.open.insert(id, tx);
            if core.out.send(frame).is_err() {
                routes.open.remove(&id);
                drop(routes);
                return Err(self.fault_or_gone());
            }
            id
        };
        self.pending = Some(Pending {
            id,
            function: function.map(str::to_string),
            rx,
            cancelled: false,
        });
        Ok(id)
    }

    /// Send `call`. Nothing may be outstanding: [`cancel`](Self::cancel)
    /// first.
    pub(super) async fn send_call(
        &mut self,
        call: &PyCall,
        stream: bool,
    ) -> Result<(), PythonError> {
        let core = Arc::clone(&self.mux.core);
        self.send(Some(&call.function), |id| {
            encode_call(core.max_frame, core.shm.as_deref(), id, call, stream)
        })
        .map(|_| ())
    }

    /// The next message of the request in flight. One that ends it leaves
    /// nothing in flight.
    pub(super) async fn read_answer(&mut self) -> Result<Incoming, PythonError> {
        let Some(pending) = &mut self.pending else {
            return Err(PythonError::BadRequest(
                "no request is in flight on this lane".into(),
            ));
        };
        match pending.rx.recv().await {
            Some(msg) => {
                if msg.is_terminal() {
                    self.pending = None;
                }
                Ok(msg)
            }
            None => Err(self.fault_or_gone()),
        }
    }

    /// Ask the bridge to abandon this lane's request and wait until it has
    /// (its answer read, chunks skipped, up to the message that ends it),
    /// within `grace`; past it the process is killed, and every call in
    /// flight on it fails saying why. True when that was a call, which has
    /// now ended.
    pub(super) async fn cancel(&mut self, grace: Duration) -> Result<bool, PythonError> {
        self.usable()?;
        let Some(pending) = &mut self.pending else {
            return Ok(false);
        };
        let is_call = pending.function.is_some();
        if is_call && !pending.cancelled {
            pending.cancelled = true;
            if let Err(e) = self.mux.core.cancels.send(pending.id) {
                let cause = format!("it stopped reading its cancel pipe ({e})");
                return Err(self.kill(cause));
            }
        }
        let drained = tokio::time::timeout(grace, drain(&mut pending.rx)).await;
        match drained {
            Ok(true) => {
                self.pending = None;
                Ok(is_call)
            }
            Ok(false) => Err(self.fault_or_gone()),
            Err(_) => {
                let (id, function) = (pending.id, pending.function.clone());
                let cause = match function {
                    Some(f) => format!(
                        "call {f} (request {id}) was cancelled, past its deadline or by its \
                         caller, and did not let go within {grace:?}"
                    ),
                    None => format!("a ping (request {id}) went unanswered"),
                };
                self.kill(cause);
                Err(PythonError::Abandoned { pid: self.pid() })
            }
        }
    }

    /// Ping the bridge and wait for its pong within `timeout`. Nothing may
    /// be outstanding: [`cancel`](Self::cancel) first.
    pub(super) async fn ping(&mut self, timeout: Duration) -> Result<(), PythonError> {
        let max = self.core().max_frame;
        self.send(None, |id| {
            encode_with(max, &[], |buf| {
                serde_json::to_writer(buf, &Outgoing::Ping { id })
            })
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                PythonError::BadRequest(format!(
                    "a ping does not fit the max frame size of {max} bytes"
                ))
            })
        })?;
        let Some(pending) = &mut self.pending else {
            return Ok(());
        };
        match tokio::time::timeout(timeout, drain(&mut pending.rx)).await {
            Ok(true) => {
                self.pending = None;
                Ok(())
            }
            Ok(false) => Err(self.fault_or_gone()),
            Err(_) => {
                self.kill(format!("it did not answer a heartbeat within {timeout:?}"));
                Err(PythonError::Heartbeat {
                    pid: self.pid(),
                    after: timeout,
                })
            }
        }
    }

    /// The bridge broke the protocol in an answer: kill it and say so.
    pub(super) async fn violation(&mut self, message: String) -> PythonError {
        let core = Arc::clone(&self.mux.core);
        core.violation(message).await;
        self.fault_or_gone()
    }

    /// Kill the process now, recording `cause` for every call in flight on
    /// it; the reader then reports the death to them.
    fn kill(&self, cause: String) -> PythonError {
        let core = self.core();
        tracing::warn!(worker = %core.label, pid = core.pid, %cause, "killing python worker");
        core.killed_because.lock().get_or_insert(cause);
        if let Ok(proc) = core.proc.try_lock() {
            proc.kill_group();
        }
        PythonError::Abandoned { pid: core.pid }
    }

    /// The fault, or (the reader has not recorded it yet) that the process
    /// is gone.
    fn fault_or_gone(&self) -> PythonError {
        let core = self.core();
        core.fault.get().cloned().unwrap_or(PythonError::Crashed {
            pid: core.pid,
            status: Exit::Unknown,
            stderr_tail: StderrTail::default(),
        })
    }

    /// Ask the bridge to exit and give it `grace` to do so; then kill and
    /// reap what is left. Calls still in flight on other lanes fail.
    pub(super) async fn shutdown(self, grace: Duration) {
        let core = Arc::clone(&self.mux.core);
        if !grace.is_zero() && core.fault.get().is_none() {
            if let Ok(Ok(frame)) = encode_with(core.max_frame, &[], |buf| {
                serde_json::to_writer(buf, &Outgoing::Shutdown { id: 0 })
            }) {
                let _ = core.out.send(frame);
            }
            core.proc.lock().await.wait_exit(grace).await;
        }
        let exit = core.proc.lock().await.kill_and_reap().await;
        tracing::debug!(worker = %core.label, pid = core.pid, %exit, "python worker shut down");
    }
}

/// Read a route up to the message that ends its request: true, or false if
/// the route closed first (the process is gone).
async fn drain(rx: &mut mpsc::Receiver<Incoming>) -> bool {
    while let Some(msg) = rx.recv().await {
        if msg.is_terminal() {
            return true;
        }
    }
    false
}

impl Core {
    /// Record the process's fault and close every route.
    fn fail(&self, err: PythonError) {
        let _ = self.fault.set(err);
        self.routes.lock().open.clear();
    }

    /// The process died (or was killed): collect how, and fail every call.
    async fn died(&self) {
        let (status, stderr_tail) = {
            let mut proc = self.proc.lock().await;
            proc.wait_exit(EXIT_WAIT).await;
            (proc.kill_and_reap().await, proc.tail())
        };
        let err = match self.killed_because.lock().take() {
            Some(cause) => PythonError::Killed {
                pid: self.pid,
                cause,
            },
            None => {
                tracing::warn!(worker = %self.label, pid = self.pid, %status, "python worker died");
                PythonError::Crashed {
                    pid: self.pid,
                    status,
                    stderr_tail,
                }
            }
        };
        self.fail(err);
    }

    /// The bridge broke the protocol: kill it and fail every call.
    async fn violation(&self, message: String) {
        tracing::error!(worker = %self.label, pid = self.pid, %message, "protocol violation; killing worker");
        let stderr_tail = {
            let mut proc = self.proc.lock().await;
            proc.kill_and_reap().await;
            proc.tail()
        };
        self.fail(PythonError::Protocol {
            pid: self.pid,
            message,
            stderr_tail,
        });
    }
}

/// The reader task: route every message to its request's lane, until the
/// process dies or breaks the protocol.
async fn read_frames(core: Arc<Core>, mut stdout: FrameReader, mut decoder: Decoder) {
    loop {
        let msg = match incoming(stdout.read_frame(&mut decoder).await, core.shm.as_deref()) {
            Ok(msg) => msg,
            Err(Broken::Died) => return core.died().await,
            Err(Broken::Protocol(message)) => return core.violation(message).await,
        };
        let id = msg.id();
        let route = {
            let mut routes = core.routes.lock();
            if msg.is_terminal() {
                routes.open.remove(&id)
            } else {
                routes.open.get(&id).cloned()
            }
        };
        match route {
            // A lane that gave up on its request has dropped its receiver:
            // the message is not wanted.
            Some(tx) => drop(tx.send(msg).await),
            None => {
                let message = format!(
                    "sent a {} frame for request {id}, which is not in flight",
                    msg.kind()
                );
                return core.violation(message).await;
            }
        }
    }
}

/// The writer task: write whole frames in the order they were queued.
/// Ends when the pipe breaks (the process died: the reader reports it) or
/// every sender is gone.
async fn write_frames(mut stdin: pipe::Sender, mut queued: mpsc::UnboundedReceiver<Outbound>) {
    let mut capacity = Capacity::default();
    while let Some(frame) = queued.recv().await {
        capacity.fit(&stdin, frame.len());
        if write_whole(&mut stdin, &frame).await.is_err() {
            return;
        }
    }
}
