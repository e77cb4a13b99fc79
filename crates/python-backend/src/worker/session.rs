//! The frame protocol with one bridge process, as a state machine that the
//! worker owns rather than any call's future.
//!
//! Why: a call can be dropped at any await point (its caller gave up, or the
//! pool cut it off at its deadline). All protocol state (the outgoing frame
//! and how much of it was written, the read buffer, the one request in
//! flight) is kept in the [`Session`], so a dropped call leaves a session
//! that knows exactly what is outstanding; [`cancel`](Session::cancel)
//! finishes writing it, asks the bridge to abandon it (on the cancel pipe),
//! and drains its answer.
//!
//! The session sets no deadline on a call: the pool enforces a call's one
//! deadline. Its only timers are a cancel's grace (how long the bridge may
//! take to let go) and the heartbeat's.
//!
//! A fault (the process died, broke the protocol, or was killed) is
//! remembered: every later use reports the same error without touching the
//! pipes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::error::{Exit, PythonError, StderrTail};
use crate::frame::{encode_with, Decoder, Outbound};
use crate::process::Process;
use crate::protocol::{Incoming, Outgoing};
use crate::request::PyCall;
use crate::shm::Shm;

use super::cancels::CancelPipe;
use super::mux::Parts;
use super::pipes::Capacity;
use super::retire::Retirement;
use super::spin::FrameReader;
use super::wire::{encode_call, incoming, unwritten, Broken, Codec, EXIT_WAIT};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Call(String),
    Ping,
}

/// The one request in flight.
#[derive(Debug)]
struct Pending {
    id: u64,
    what: Waiting,
    /// Its cancel was sent.
    cancelled: bool,
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
    cancels: CancelPipe,
    decoder: Decoder,
    max_frame: usize,
    /// The process's shared-memory regions, if it has them.
    shm: Option<Arc<Shm>>,
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
        cancels: CancelPipe,
        codec: Codec,
    ) -> Self {
        let Codec { max_frame, shm } = codec;
        let max_frame = max_frame.min(crate::frame::MAX_BODY);
        Session {
            label,
            pid,
            proc,
            stdin: Some(stdin),
            stdin_capacity: Capacity::default(),
            stdout: FrameReader::new(stdout),
            cancels,
            decoder: Decoder::new(max_frame),
            max_frame,
            shm,
            outbox: Outbound::default(),
            written: 0,
            next_id: 1,
            pending: None,
            fault: None,
        }
    }

    /// Its process and pipes, for serving many calls at once through lanes
    /// (see `mux`) once the ready frame has been read.
    pub(super) fn into_parts(self, retirement: Retirement) -> Result<Parts, PythonError> {
        let Some(stdin) = self.stdin else {
            return Err(PythonError::Startup {
                pid: self.pid,
                message: "its stdin was closed before it served a call".into(),
                stderr_tail: self.proc.tail(),
            });
        };
        Ok(Parts {
            label: self.label,
            pid: self.pid,
            proc: self.proc,
            stdin,
            stdout: self.stdout,
            decoder: self.decoder,
            cancels: self.cancels,
            max_frame: self.max_frame,
            shm: self.shm,
            retirement,
        })
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

    /// The function of the call in flight, if there is one.
    pub(super) fn call_in_flight(&self) -> Option<&str> {
        match &self.pending {
            Some(Pending {
                what: Waiting::Call(function),
                ..
            }) => Some(function),
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

    /// Send `call`. Nothing may be outstanding: [`cancel`](Self::cancel)
    /// first.
    pub(super) async fn send_call(
        &mut self,
        call: &PyCall,
        stream: bool,
    ) -> Result<(), PythonError> {
        let frame = encode_call(
            self.max_frame,
            self.shm.as_deref(),
            self.next_id,
            call,
            stream,
        )?;
        self.pending = Some(Pending {
            id: self.take_id(),
            what: Waiting::Call(call.function.clone()),
            cancelled: false,
        });
        self.queue(frame);
        self.flush().await
    }

    /// The next frame of the call in flight. A frame that ends the call
    /// leaves nothing in flight.
    pub(super) async fn read_answer(&mut self) -> Result<Incoming, PythonError> {
        let msg = self.read_frame().await?;
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

    /// Ask the bridge to abandon what is outstanding, and wait until it has.
    /// The request's id goes down the cancel pipe first, so a bridge that
    /// has not started the call yet answers it without running it; then the
    /// rest of the request is written (a frame is never left half sent:
    /// the host's own time, not the handler's), and its answer is read
    /// (chunks skipped) up to the frame that ends it, within `grace`; past
    /// it the process is killed. A ping is waited out the same way. True
    /// when that was a call, which has now ended.
    pub(super) async fn cancel(&mut self, grace: Duration) -> Result<bool, PythonError> {
        self.usable()?;
        let Some(pending) = &mut self.pending else {
            return Ok(false);
        };
        let (id, is_call) = (pending.id, matches!(pending.what, Waiting::Call(_)));
        if is_call && !pending.cancelled {
            pending.cancelled = true;
            if let Err(e) = self.cancels.send(id) {
                return Err(self
                    .violation(format!("stopped reading its cancel pipe ({e})"))
                    .await);
            }
        }
        self.flush().await?;
        if tokio::time::timeout(grace, self.drain(id)).await.is_err() {
            return Err(self.kill(PythonError::Abandoned { pid: self.pid }));
        }
        if is_call {
            tracing::debug!(worker = %self.label, pid = self.pid, "abandoned call cancelled; worker free");
        }
        Ok(is_call)
    }

    /// Read the answer to request `id` up to the frame that ends it.
    async fn drain(&mut self, id: u64) -> Result<(), PythonError> {
        loop {
            let msg = self.read_frame().await?;
            if msg.id() != id {
                return Err(self
                    .violation(format!(
                        "sent a {} frame for request {} while request {id} was being drained",
                        msg.kind(),
                        msg.id()
                    ))
                    .await);
            }
            if msg.is_terminal() {
                self.pending = None;
                return Ok(());
            }
        }
    }

    /// Ping the bridge and wait for its pong within `timeout`. Nothing may
    /// be outstanding: [`cancel`](Self::cancel) first.
    pub(super) async fn ping(&mut self, timeout: Duration) -> Result<(), PythonError> {
        self.usable()?;
        let Ok(Ok(frame)) = self.encode(&Outgoing::Ping { id: self.next_id }, &[]) else {
            return Err(PythonError::BadRequest(format!(
                "a ping does not fit the max frame size of {} bytes",
                self.max_frame
            )));
        };
        let id = self.take_id();
        self.pending = Some(Pending {
            id,
            what: Waiting::Ping,
            cancelled: false,
        });
        self.queue(frame);
        let answered = async {
            self.flush().await?;
            self.drain(id).await
        };
        match tokio::time::timeout(timeout, answered).await {
            Ok(r) => r,
            Err(_) => Err(self.kill(PythonError::Heartbeat {
                pid: self.pid,
                after: timeout,
            })),
        }
    }

    /// Ask the bridge to exit and give it `grace` to do so (finishing what
    /// is outstanding first); then kill and reap what is left.
    pub(super) async fn shutdown(mut self, grace: Duration) {
        if !grace.is_zero() && self.fault.is_none() && self.proc.exited().is_none() {
            let deadline = Instant::now() + grace;
            let polite = async {
                self.cancel(grace).await?;
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
        match incoming(polled, self.shm.as_deref()) {
            Ok(msg) => Ok(msg),
            Err(Broken::Died) => Err(self.crash().await),
            Err(Broken::Protocol(message)) => Err(self.violation(message).await),
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
}
