//! [`PythonWorker`]: one long-lived Python process speaking the frame
//! protocol, as a pool [`Worker`].
//!
//! The worker is split by job:
//! - `launch`: spawning the bridge, its handshake, and the start errors;
//! - `pipes`: the pipes' capacity, grown while large frames move;
//! - `cancels`: the pipe the host asks the bridge to cancel a request on;
//! - `session`: the protocol state machine (the request in flight, the
//!   outbox, cancelling what a dropped or late caller left, faults), which
//!   is what makes every call cancel-safe;
//! - `retire`: when a worker that still works should be replaced;
//! - `spin`: reading the bridge's frames, with a short spin before parking
//!   that keeps a sequential caller's round trip off idle CPUs.
//!
//! This module puts them together behind the public API and the pool's
//! traits, and turns the bridge's answers into what a caller sees.

mod cancels;
mod launch;
mod pipes;
mod retire;
mod session;
mod spin;

use std::time::Duration;

use cenote_core::{Call, CallCtx, Cancel, PoolConfig, Retire, Worker};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::PythonConfig;
use crate::error::PythonError;
use crate::protocol::{ErrorFrame, ErrorKind, Incoming};
use crate::reply::Reply;
use crate::request::{PyCall, TypedCall};
use crate::stream::PyStream;

pub use self::launch::ReadyInfo;
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
#[derive(Debug)]
pub struct PythonWorker {
    session: Session,
    ready: ReadyInfo,
    retirement: Retirement,
    heartbeat_timeout: Duration,
}

impl PythonWorker {
    /// A worker on a session whose bridge just said `ready`.
    fn new(session: Session, ready: ReadyInfo, config: &PythonConfig) -> Self {
        PythonWorker {
            retirement: Retirement::new(config, ready.pid),
            session,
            ready,
            heartbeat_timeout: config.heartbeat_timeout,
        }
    }

    /// What the bridge reported when it became ready.
    pub fn ready_info(&self) -> &ReadyInfo {
        &self.ready
    }

    /// The worker's label (`pool/worker`), as used in tracing.
    pub fn label(&self) -> &str {
        self.session.label()
    }

    /// Calls (and streams) finished on this worker.
    pub fn tasks_served(&self) -> u64 {
        self.retirement.tasks()
    }

    /// Report this worker's memory to its pool's gauges.
    #[cfg(feature = "metrics")]
    pub(crate) fn report_memory(&mut self, memory: crate::metrics::WorkerMemory) {
        self.retirement.report_memory(memory);
    }

    /// The last stderr lines of the process.
    pub fn stderr_tail(&self) -> crate::StderrTail {
        self.session.tail()
    }

    /// Whether a request is still outstanding (its caller gave up on it).
    pub fn has_pending(&self) -> bool {
        self.session.has_pending()
    }

    /// Send a signal to the worker's process (not its group). Meant for
    /// tests and operators, e.g. SIGSTOP to simulate a hung worker.
    pub fn signal(&self, sig: i32) {
        self.session.signal(sig);
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
    async fn reply(&mut self, call: &PyCall, _ctx: CallCtx) -> Result<Reply, PythonError> {
        self.begin(call, false).await?;
        match self.answer(&call.function).await? {
            Incoming::Result { value, .. } => Ok(value),
            other => Err(self
                .session
                .violation(format!("answered a call with a {} frame", other.kind()))
                .await),
        }
    }

    /// Stream the items of a generator handler (a plain handler streams its
    /// one result). Dropping the stream early leaves the rest outstanding:
    /// the next call cancels it first (see [`PythonWorker`]). Nothing bounds
    /// a stream on a worker used without a pool but its consumer; a pool's
    /// stream ([`PythonPool`](crate::PythonPool)) is bounded by its call's
    /// deadline.
    pub fn stream(&mut self, call: PyCall, ctx: CallCtx) -> PyStream<'_> {
        crate::stream::over(self, call, ctx)
    }

    /// Start a streamed call; chunks follow through [`next_chunk`](Self::next_chunk).
    pub(crate) async fn begin_stream(&mut self, call: &PyCall) -> Result<(), PythonError> {
        self.begin(call, true).await
    }

    /// The next item of the stream in flight; `None` once it ended.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Reply, PythonError>> {
        let function = self.session.call_in_flight()?.to_string();
        match self.answer(&function).await {
            Ok(Incoming::Chunk { data, .. }) => Some(Ok(data)),
            Ok(Incoming::End { .. }) => None,
            Ok(other) => Some(Err(self
                .session
                .violation(format!("answered a stream with a {} frame", other.kind()))
                .await)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Ping the bridge and wait for its pong within `heartbeat_timeout`.
    pub async fn heartbeat(&mut self) -> Result<(), PythonError> {
        self.settle().await?;
        self.session.ping(self.heartbeat_timeout).await
    }

    /// Settle anything outstanding, then send `call`.
    async fn begin(&mut self, call: &PyCall, stream: bool) -> Result<(), PythonError> {
        self.settle().await?;
        self.session.send_call(call, stream).await
    }

    /// Cancel what a dropped caller left (a worker used without a pool:
    /// a pool cancels before it hands the worker out again); a call it
    /// ends counts as a task.
    async fn settle(&mut self) -> Result<(), PythonError> {
        let grace = PoolConfig::default().cancel_grace;
        if self.session.cancel(grace).await? {
            self.retirement.task_done();
        }
        Ok(())
    }

    /// The next frame of the call in flight; an error frame comes back as
    /// the caller's error. A frame that ends the call counts as a task.
    async fn answer(&mut self, function: &str) -> Result<Incoming, PythonError> {
        let frame = self.session.read_answer().await?;
        if frame.is_terminal() {
            self.retirement.task_done();
        }
        match frame {
            Incoming::Error(error) => Err(match call_error(function, error) {
                Some(err) => err,
                None => {
                    self.session
                        .violation(
                            "answered a call with an import error, or a cancel it was not sent"
                                .into(),
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
        self.session.is_broken()
    }

    async fn recycle(&mut self) -> Result<(), PythonError> {
        self.heartbeat().await
    }

    async fn cancel(&mut self, grace: Duration) -> Cancel {
        match self.session.cancel(grace).await {
            Ok(ended_a_call) => {
                if ended_a_call {
                    self.retirement.task_done();
                }
                Cancel::Freed
            }
            Err(_) => Cancel::Failed,
        }
    }

    fn retire_reason(&self) -> Option<Retire> {
        self.retirement.reason()
    }

    async fn shutdown(self, grace: Duration) {
        self.session.shutdown(grace).await;
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
