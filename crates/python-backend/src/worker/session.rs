//! The frame protocol with one bridge process, as a state machine that the
//! worker owns rather than any call's future.
//!
//! Why: a call can be dropped at any await point (its caller gave up or hit
//! a deadline). All protocol state (the outgoing frame and how much of it
//! was written, the read buffer, the one request in flight and its deadline)
//! is kept in the [`Session`], so a dropped call leaves a session that knows
//! exactly what is outstanding; [`settle`](Session::settle) finishes writing
//! it, drains the late answer, or kills the process once its deadline
//! passes.
//!
//! A fault (the process died, broke the protocol, or was killed at a
//! deadline) is remembered: every later use reports the same error without
//! touching the pipes.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use cenote_core::CallCtx;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::error::{Exit, PythonError, StderrTail};
use crate::frame::{encode_with, Decoder, Frame, FrameError, Outbound};
use crate::process::Process;
use crate::protocol::{Incoming, Outgoing};
use crate::request::PyCall;

use super::pipes::Capacity;
use super::spin::FrameReader;

/// The session enforces a call's deadline (the pool's, from [`CallCtx`])
/// itself this long after it passes: with a pool, the pool's `CallTimeout`
/// is what a caller sees; used directly, the worker still never waits
/// forever.
const DEADLINE_SLACK: Duration = Duration::from_millis(25);

/// How long to wait for a dying process to finish exiting before killing it
/// and reporting.
const EXIT_WAIT: Duration = Duration::from_millis(250);

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

/// The pipes to one bridge and the state of the conversation on them.
pub(super) struct Session {
    label: Arc<str>,
    pid: u32,
    proc: Process,
    stdin: Option<pipe::Sender>,
    /// The capacity of the pipe to the bridge (the reader keeps its own).
    stdin_capacity: Capacity,
    stdout: FrameReader,
    decoder: Decoder,
    max_frame: usize,
    /// The frame being written and how much of it is out.
    outbox: Outbound,
    written: usize,
    next_id: u64,
    pending: Option<Pending>,
    /// Set once the process is beyond use: the error every later use reports.
    fault: Option<PythonError>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("label", &self.label)
            .field("pid", &self.pid)
            .field("pending", &self.pending)
            .field("fault", &self.fault)
            .finish()
    }
}

impl Session {
    /// A session on a freshly started bridge (`proc`, leader `pid`) and its
    /// frame pipes.
    pub(super) fn new(
        label: Arc<str>,
        pid: u32,
        proc: Process,
        stdin: pipe::Sender,
        stdout: pipe::Receiver,
        max_frame: usize,
    ) -> Self {
        let max_frame = max_frame.min(crate::frame::MAX_BODY);
        Session {
            label,
            pid,
            proc,
            stdin: Some(stdin),
            stdin_capacity: Capacity::default(),
            stdout: FrameReader::new(stdout),
            decoder: Decoder::new(max_frame),
            max_frame,
            outbox: Outbound::default(),
            written: 0,
            next_id: 1,
            pending: None,
            fault: None,
        }
    }

    /// How long a read may poll for a frame before it parks (see `spin`).
    pub(super) fn set_read_spin(&mut self, budget: Duration) {
        self.stdout.set_budget(budget);
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    pub(super) fn tail(&self) -> StderrTail {
        self.proc.tail()
    }

    pub(super) fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    pub(super) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Faulted before, or the process has exited since (one syscall).
    pub(super) fn is_broken(&self) -> bool {
        self.fault.is_some() || self.proc.exited().is_some()
    }

    /// Err if the session faulted before. A process that died since is found
    /// by the I/O of the next request (and by `is_broken`, which the pool
    /// asks on every checkout), so no syscall is spent here.
    fn usable(&self) -> Result<(), PythonError> {
        match &self.fault {
            Some(fault) => Err(fault.clone()),
            None => Ok(()),
        }
    }

    /// The deadline and function of the call in flight, if there is one.
    pub(super) fn call_in_flight(&self) -> Option<(Instant, String)> {
        match &self.pending {
            Some(Pending {
                deadline,
                what: Waiting::Call(function),
                ..
            }) => Some((*deadline, function.clone())),
            _ => None,
        }
    }

    fn encode(
        &self,
        msg: &Outgoing<'_>,
        attachments: &[bytes::Bytes],
    ) -> Result<Result<Outbound, usize>, serde_json::Error> {
        encode_with(self.max_frame, attachments, |buf| {
            serde_json::to_writer(buf, msg)
        })
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Make `frame` the next to write.
    fn queue(&mut self, frame: Outbound) {
        if let Some(stdin) = &self.stdin {
            self.stdin_capacity.fit(stdin, frame.len());
        }
        self.outbox = frame;
        self.written = 0;
    }

    /// Send `call` by `ctx`'s deadline, which it returns. Nothing may be
    /// outstanding: [`settle`](Self::settle) first.
    pub(super) async fn send_call(
        &mut self,
        call: &PyCall,
        stream: bool,
        ctx: CallCtx,
    ) -> Result<Instant, PythonError> {
        let encoded = self.encode(
            &Outgoing::Call {
                id: self.next_id,
                function: &call.function,
                args: &call.args,
                kwargs: call.kwargs.as_ref(),
                stream,
            },
            call.attachments(),
        );
        let frame = match encoded {
            Ok(Ok(frame)) => frame,
            Ok(Err(size)) => {
                return Err(PythonError::RequestTooLarge {
                    function: call.function.clone(),
                    size,
                    max: self.max_frame,
                })
            }
            Err(e) => {
                return Err(PythonError::BadRequest(format!(
                    "arguments for {} cannot be encoded: {e}",
                    call.function
                )))
            }
        };
        let (deadline, limit) = (ctx.deadline(), ctx.timeout());
        self.pending = Some(Pending {
            id: self.take_id(),
            deadline,
            limit,
            what: Waiting::Call(call.function.clone()),
        });
        self.queue(frame);
        match tokio::time::timeout_at(deadline + DEADLINE_SLACK, self.flush()).await {
            Ok(r) => r?,
            Err(_) => return Err(self.kill_for_deadline(&call.function, limit)),
        }
        Ok(deadline)
    }

    /// The next frame of the call in flight, under its deadline. A frame
    /// that ends the call leaves nothing in flight.
    pub(super) async fn read_until(
        &mut self,
        deadline: Instant,
        function: &str,
    ) -> Result<Incoming, PythonError> {
        let msg = match tokio::time::timeout_at(deadline + DEADLINE_SLACK, self.read_frame()).await
        {
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
        if msg.is_terminal() {
            self.pending = None;
        }
        Ok(msg)
    }

    /// Finish whatever a dropped caller left: the rest of its frame, then
    /// its answer (chunks skipped), until its deadline; past it, kill.
    /// True when that was a call, which has now been served.
    pub(super) async fn settle(&mut self) -> Result<bool, PythonError> {
        self.usable()?;
        let Some(pending) = &self.pending else {
            return Ok(false);
        };
        let (id, deadline, limit, what) = (
            pending.id,
            pending.deadline,
            pending.limit,
            pending.what.clone(),
        );
        let pid = self.pid;
        let timed_out = |me: &mut Self| {
            me.kill(match &what {
                Waiting::Ping => PythonError::Heartbeat { pid, after: limit },
                Waiting::Call(_) => PythonError::Abandoned { pid },
            })
        };
        match tokio::time::timeout_at(deadline, self.flush()).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out(self)),
        }
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.read_frame()).await {
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
                self.pending = None;
                let served = what != Waiting::Ping;
                if served {
                    tracing::debug!(worker = %self.label, pid, "abandoned call finished; worker free");
                }
                return Ok(served);
            }
        }
    }

    /// Ping the bridge and wait for its pong within `timeout`. Nothing may
    /// be outstanding: [`settle`](Self::settle) first.
    pub(super) async fn ping(&mut self, timeout: Duration) -> Result<(), PythonError> {
        let Ok(Ok(frame)) = self.encode(&Outgoing::Ping { id: self.next_id }, &[]) else {
            return Err(PythonError::BadRequest(format!(
                "a ping does not fit the max frame size of {} bytes",
                self.max_frame
            )));
        };
        self.pending = Some(Pending {
            id: self.take_id(),
            deadline: Instant::now() + timeout,
            limit: timeout,
            what: Waiting::Ping,
        });
        self.queue(frame);
        self.settle().await.map(|_| ())
    }

    /// Ask the bridge to exit and give it `grace` to do so (finishing what
    /// is outstanding first); then kill and reap what is left.
    pub(super) async fn shutdown(mut self, grace: Duration) {
        if !grace.is_zero() && self.fault.is_none() && self.proc.exited().is_none() {
            let deadline = Instant::now() + grace;
            let polite = async {
                self.settle().await?;
                if let Ok(Ok(frame)) = self.encode(&Outgoing::Shutdown { id: 0 }, &[]) {
                    self.queue(frame);
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
        tracing::debug!(worker = %self.label, pid = self.pid, %exit, "python worker shut down");
    }

    /// Write what is left of the outbox, the JSON and every attachment in
    /// one vectored write where the pipe takes it. Cancel-safe: progress is
    /// kept.
    async fn flush(&mut self) -> Result<(), PythonError> {
        let total = self.outbox.len();
        while self.written < total {
            let Some(stdin) = self.stdin.as_mut() else {
                return Err(self.crash().await);
            };
            let wrote = if self.outbox.attachments.is_empty() {
                stdin.write(&self.outbox.head[self.written..]).await
            } else {
                let slices = unwritten(&self.outbox, self.written);
                stdin.write_vectored(&slices).await
            };
            match wrote {
                Ok(0) | Err(_) => return Err(self.crash().await),
                Ok(n) => self.written += n,
            }
        }
        // Sent: do not keep a request's buffers (or its caller's bytes)
        // for the worker's life. Not through `queue`: the pipe may still
        // hold the frame, so its capacity is left until the answer.
        if self.outbox.head.capacity() > 1 << 20 || !self.outbox.attachments.is_empty() {
            self.outbox = Outbound::default();
            self.written = 0;
        }
        Ok(())
    }

    /// Read and parse one frame, with no deadline of its own. End of stream
    /// or an I/O error means the process died; bytes that are not a frame
    /// break the protocol.
    pub(super) async fn read_frame(&mut self) -> Result<Incoming, PythonError> {
        let polled = self.stdout.read_frame(&mut self.decoder).await;
        if let Some(stdin) = &self.stdin {
            // The bridge answers only once it has read the request whole.
            self.stdin_capacity.fit(stdin, 0);
        }
        let frame = match polled {
            Ok(Ok(Some(frame))) => frame,
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
            Ok(Err(e @ FrameError::BadTable { .. })) => {
                return Err(self.violation(e.to_string()).await)
            }
        };
        let Frame { json, attachments } = frame;
        match Incoming::parse(&json, attachments) {
            Ok(msg) => Ok(msg),
            Err(e) => {
                let shown = String::from_utf8_lossy(&json[..json.len().min(80)]).into_owned();
                Err(self
                    .violation(format!(
                        "sent a frame that is not a protocol message ({e}): {shown:?}"
                    ))
                    .await)
            }
        }
    }

    /// A process that is ending by itself: give it a moment to finish, kill
    /// what is left of its group, reap it, and say how it ended.
    pub(super) async fn collect_exit(&mut self) -> Exit {
        self.proc.wait_exit(EXIT_WAIT).await;
        self.proc.kill_and_reap().await
    }

    /// Kill the process group now and reap it.
    pub(super) async fn kill_and_reap(&mut self) -> Exit {
        self.proc.kill_and_reap().await
    }

    /// The process died: collect its status and stderr tail, kill what is
    /// left of its group, and remember the crash.
    async fn crash(&mut self) -> PythonError {
        if let Some(fault) = &self.fault {
            return fault.clone();
        }
        let status = self.collect_exit().await;
        let err = PythonError::Crashed {
            pid: self.pid,
            status,
            stderr_tail: self.proc.tail(),
        };
        tracing::warn!(worker = %self.label, pid = self.pid, %status, "python worker died");
        self.fault = Some(err.clone());
        err
    }

    /// The bridge broke the protocol: kill it and report what it sent.
    pub(super) async fn violation(&mut self, message: String) -> PythonError {
        tracing::error!(worker = %self.label, pid = self.pid, %message, "protocol violation; killing worker");
        self.proc.kill_and_reap().await;
        let err = PythonError::Protocol {
            pid: self.pid,
            message,
            stderr_tail: self.proc.tail(),
        };
        self.fault = Some(err.clone());
        err
    }

    /// Kill the process group now (reaped later by shutdown or drop) and
    /// remember why.
    fn kill(&mut self, err: PythonError) -> PythonError {
        tracing::warn!(worker = %self.label, pid = self.pid, error = %err, "killing python worker");
        self.proc.kill_group();
        self.fault = Some(err.clone());
        err
    }

    fn kill_for_deadline(&mut self, function: &str, after: Duration) -> PythonError {
        self.kill(PythonError::Timeout {
            function: function.to_string(),
            after,
            pid: self.pid,
        })
    }
}

/// The most slices one vectored write is given (the OS takes at most
/// `IOV_MAX`, 1024 on Linux; the rest follow in the next write).
const MAX_SLICES: usize = 256;

/// The parts of `frame` from byte `from` on, for a vectored write.
fn unwritten(frame: &Outbound, mut from: usize) -> Vec<IoSlice<'_>> {
    let parts = std::iter::once(&frame.head[..]).chain(frame.attachments.iter().map(|a| &a[..]));
    let mut slices = Vec::with_capacity(MAX_SLICES.min(1 + frame.attachments.len()));
    for part in parts {
        if from >= part.len() {
            from -= part.len();
            continue;
        }
        slices.push(IoSlice::new(&part[from..]));
        from = 0;
        if slices.len() == MAX_SLICES {
            break;
        }
    }
    slices
}
