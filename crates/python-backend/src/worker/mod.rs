//! [`PythonWorker`]: one long-lived Python process speaking the frame
//! protocol, as a pool [`Worker`].
//!
//! The worker is split by job:
//! - `launch`: spawning the bridge, its handshake, and the start errors;
//! - `pipes`: the pipes' capacity, grown while large frames move;
//! - `cancels`: the pipe the host asks the bridge to cancel a request on;
//! - `session`: the protocol state machine of a process serving one call at
//!   a time (the request in flight, the outbox, cancelling what a dropped
//!   or late caller left, faults), which is what makes every call
//!   cancel-safe;
//! - `mux`: a process serving many calls at once, through lanes that share
//!   it (`PythonConfig::concurrency` above 1);
//! - `wire`: what the two do alike with frames;
//! - `retire`: when a worker that still works should be replaced;
//! - `spin`: reading the bridge's frames, with a short spin before parking
//!   that keeps a sequential caller's round trip off idle CPUs.
//!
//! This module puts them together behind the public API and the pool's
//! traits, and turns the bridge's answers into what a caller sees.

mod cancels;
mod launch;
mod mux;
mod pipes;
mod retire;
mod session;
mod spin;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use cenote_core::{Call, CallCtx, Cancel, PoolConfig, Retire, Worker};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::PythonConfig;
use crate::error::PythonError;
use crate::protocol::{ErrorFrame, ErrorKind, Incoming};
use crate::reply::{PyReply, Reply};
use crate::request::{PyCall, RawCall, TypedCall};

pub use self::launch::ReadyInfo;
use self::mux::Lane;
use self::retire::Retirement;
use self::session::Session;

/// A pooled Python process. Made by [`PythonFactory`](crate::PythonFactory);
/// serves [`PyCall`]s, [`TypedCall`]s and streams.
///
/// In a pool, a call's deadline is the pool's to enforce, and a call that
/// runs past it, or whose caller drops it, is cancelled (see
/// [`Worker::cancel`]). Used without a pool, nothing bounds a call but its
/// caller: wrap it in `tokio::time::timeout`. A call whose future was
/// dropped is then cancelled by the next one, which gives the bridge the
/// default `cancel_grace` (250 ms) to let go before it kills the process
/// ([`PythonError::Abandoned`]).
///
/// With `PythonConfig::concurrency` above 1 the process serves that many
/// calls at once: the pool holds one `PythonWorker` per process and lends
/// each caller a lane of it ([`Worker::lane`]), itself a `PythonWorker`
/// with at most one call of its own in flight.
#[derive(Debug)]
pub struct PythonWorker {
    conn: Conn,
    ready: Arc<ReadyInfo>,
    heartbeat_timeout: Duration,
}

/// How a worker talks to its process.
///
/// `One` is much the larger, and stays inline: it is the default and the
/// hot path, and the pool keeps every worker boxed already.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Conn {
    /// The process serves one call at a time, read on the caller's task.
    One {
        session: Session,
        retirement: Retirement,
    },
    /// A lane of a process that serves many calls at once.
    Lane(Lane),
}

/// Run `$e` with `$l` bound to the worker's session or lane: the two offer
/// the same protocol methods.
macro_rules! link {
    ($conn:expr, $l:ident => $e:expr) => {
        match $conn {
            Conn::One { session: $l, .. } => $e,
            Conn::Lane($l) => $e,
        }
    };
}

impl PythonWorker {
    /// A worker on a session whose bridge just said `ready`: alone on it,
    /// or its first lane when it serves `concurrency` calls at once.
    fn new(session: Session, ready: ReadyInfo, config: &PythonConfig) -> Result<Self, PythonError> {
        let retirement = Retirement::new(config, ready.pid);
        let conn = if config.calls_at_once() > 1 {
            Conn::Lane(Lane::start(session.into_parts(retirement)?))
        } else {
            Conn::One {
                session,
                retirement,
            }
        };
        Ok(PythonWorker {
            conn,
            ready: Arc::new(ready),
            heartbeat_timeout: config.heartbeat_timeout,
        })
    }

    /// What the bridge reported when it became ready.
    pub fn ready_info(&self) -> &ReadyInfo {
        &self.ready
    }

    /// The worker's label (`pool/worker`), as used in tracing.
    pub fn label(&self) -> &str {
        link!(&self.conn, l => l.label())
    }

    /// Calls (and streams) finished on this worker's process.
    pub fn tasks_served(&self) -> u64 {
        match &self.conn {
            Conn::One { retirement, .. } => retirement.tasks(),
            Conn::Lane(lane) => lane.retirement().tasks(),
        }
    }

    /// Report this worker's memory to its pool's gauges.
    #[cfg(feature = "metrics")]
    pub(crate) fn report_memory(&mut self, memory: crate::metrics::WorkerMemory) {
        match &mut self.conn {
            Conn::One { retirement, .. } => retirement.report_memory(memory),
            Conn::Lane(lane) => lane.retirement().report_memory(memory),
        }
    }

    /// The last stderr lines of the process.
    pub fn stderr_tail(&self) -> crate::StderrTail {
        link!(&self.conn, l => l.tail())
    }

    /// Whether a request is still outstanding (its caller gave up on it).
    pub fn has_pending(&self) -> bool {
        link!(&self.conn, l => l.has_pending())
    }

    /// Send a signal to the worker's process (not its group). Meant for
    /// tests and operators, e.g. SIGSTOP to simulate a hung worker.
    pub fn signal(&self, sig: i32) {
        link!(&self.conn, l => l.signal(sig))
    }

    /// A task of the process ended: count it for retirement.
    fn task_done(&mut self) {
        match &mut self.conn {
            Conn::One { retirement, .. } => retirement.task_done(),
            Conn::Lane(lane) => lane.retirement().task_done(),
        }
    }

    /// The bridge broke the protocol: kill it and say what it sent.
    async fn violation(&mut self, message: String) -> PythonError {
        link!(&mut self.conn, l => l.violation(message).await)
    }

    /// Call a handler function and return its JSON result. `ctx` tells the
    /// call's deadline; the pool enforces it (see [`PythonWorker`]). A
    /// result holding bytes is a [`PythonError::Decode`]: ask for them with
    /// [`call_as`](Self::call_as).
    pub async fn call_json(&mut self, call: PyCall, ctx: CallCtx) -> Result<Value, PythonError> {
        let reply = self.reply(&call, ctx).await?;
        reply.into_json(&call.function)
    }

    /// Call a handler function and decode its result into `R`, bytes the
    /// handler returned into `R`'s byte-string fields.
    pub async fn call_as<R: DeserializeOwned>(
        &mut self,
        call: PyCall,
        ctx: CallCtx,
    ) -> Result<R, PythonError> {
        let reply = self.reply(&call, ctx).await?;
        reply.decode(&call.function)
    }

    /// Send `call` and wait for its result frame.
    pub(crate) async fn reply(
        &mut self,
        call: &PyCall,
        _ctx: CallCtx,
    ) -> Result<Reply, PythonError> {
        self.begin(call, false).await?;
        match self.answer(&call.function).await? {
            Incoming::Result { value, .. } => Ok(value),
            other => Err(self
                .violation(format!("answered a call with a {} frame", other.kind()))
                .await),
        }
    }

    /// Start a streamed call; chunks follow through [`next_chunk`](Self::next_chunk).
    pub(crate) async fn begin_stream(&mut self, call: &PyCall) -> Result<(), PythonError> {
        self.begin(call, true).await
    }

    /// The next item of the stream in flight; `None` once it ended.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Reply, PythonError>> {
        let function = link!(&self.conn, l => l.call_in_flight())?.to_string();
        match self.answer(&function).await {
            Ok(Incoming::Chunk { data, .. }) => Some(Ok(data)),
            Ok(Incoming::End { .. }) => None,
            Ok(other) => Some(Err(self
                .violation(format!("answered a stream with a {} frame", other.kind()))
                .await)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Ping the bridge and wait for its pong within `heartbeat_timeout`.
    pub async fn heartbeat(&mut self) -> Result<(), PythonError> {
        self.settle().await?;
        let timeout = self.heartbeat_timeout;
        link!(&mut self.conn, l => l.ping(timeout).await)
    }

    /// Settle anything outstanding, then send `call`.
    async fn begin(&mut self, call: &PyCall, stream: bool) -> Result<(), PythonError> {
        self.settle().await?;
        link!(&mut self.conn, l => l.send_call(call, stream).await)
    }

    /// Cancel what a dropped caller left (a worker used without a pool:
    /// a pool cancels before it hands the worker out again); a call it
    /// ends counts as a task.
    async fn settle(&mut self) -> Result<(), PythonError> {
        let grace = PoolConfig::DEFAULT_CANCEL_GRACE;
        if link!(&mut self.conn, l => l.cancel(grace).await)? {
            self.task_done();
        }
        Ok(())
    }

    /// The next frame of the call in flight; an error frame comes back as
    /// the caller's error. A frame that ends the call counts as a task.
    async fn answer(&mut self, function: &str) -> Result<Incoming, PythonError> {
        let frame = link!(&mut self.conn, l => l.read_answer().await)?;
        if frame.is_terminal() {
            self.task_done();
        }
        match frame {
            Incoming::Error(error) => Err(match call_error(function, error) {
                Some(err) => err,
                None => {
                    self.violation(
                        "answered a call with an import error, or a cancel it was not sent".into(),
                    )
                    .await
                }
            }),
            other => Ok(other),
        }
    }
}

/// The error a caller of `function` sees for an error frame; `None` for the
/// kinds that never answer a call.
fn call_error(function: &str, error: ErrorFrame) -> Option<PythonError> {
    let function = function.to_string();
    let ErrorFrame {
        kind,
        type_name,
        message,
        traceback,
        ..
    } = error;
    Some(match kind {
        ErrorKind::UnknownFunction => PythonError::UnknownFunction { function, message },
        ErrorKind::BadArgs => PythonError::BadArguments { function, message },
        ErrorKind::Unserializable => PythonError::Unserializable { function, message },
        ErrorKind::TooLarge => PythonError::ResultTooLarge { function, message },
        ErrorKind::BadRequest => PythonError::BadRequest(message),
        ErrorKind::SystemExit => PythonError::SystemExit {
            function,
            code: message,
            traceback,
        },
        ErrorKind::Raised => PythonError::Raised {
            function,
            type_name,
            message,
            traceback,
        },
        // Neither answers a call: an import error is sent at start, and a
        // call is answered `cancelled` only after a cancel, which is read
        // by `Session::cancel`, not here.
        ErrorKind::Import | ErrorKind::Cancelled => return None,
    })
}

impl Worker for PythonWorker {
    type Error = PythonError;

    fn is_broken(&mut self) -> bool {
        link!(&self.conn, l => l.is_broken())
    }

    async fn recycle(&mut self) -> Result<(), PythonError> {
        self.heartbeat().await
    }

    async fn cancel(&mut self, grace: Duration) -> Cancel {
        match link!(&mut self.conn, l => l.cancel(grace).await) {
            Ok(ended_a_call) => {
                if ended_a_call {
                    self.task_done();
                }
                Cancel::Freed
            }
            Err(_) => Cancel::Failed,
        }
    }

    fn retire_reason(&self) -> Option<Retire> {
        match &self.conn {
            Conn::One { retirement, .. } => retirement.reason(),
            Conn::Lane(lane) => lane.retirement().reason(),
        }
    }

    async fn shutdown(self, grace: Duration) {
        link!(self.conn, l => l.shutdown(grace).await)
    }

    fn pid(&self) -> Option<u32> {
        Some(self.ready.pid)
    }

    fn capacity(&self) -> usize {
        self.ready.concurrency
    }

    fn lane(&self) -> Option<Self> {
        let Conn::Lane(lane) = &self.conn else {
            return None;
        };
        Some(PythonWorker {
            conn: Conn::Lane(lane.lane()),
            ready: Arc::clone(&self.ready),
            heartbeat_timeout: self.heartbeat_timeout,
        })
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

impl Call<RawCall> for PythonWorker {
    type Response = PyReply;

    async fn call(&mut self, req: RawCall, ctx: CallCtx) -> Result<PyReply, PythonError> {
        let reply = self.reply(&req.0, ctx).await?;
        Ok(PyReply::new(req.0.function, reply))
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
