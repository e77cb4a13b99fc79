//! [`PyStream`]: the items of a generator handler, as a `Stream`.
//!
//! A stream holds its worker (borrowed, or a pool checkout) until it ends.
//! Dropped early, it follows the abandoned-call rule: a pool's worker is
//! asked to cancel the generator (killed if it does not let go within the
//! pool's `cancel_grace`) before it serves anyone again; a borrowed worker
//! cancels it at its next call.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::future::Future;

use cenote_core::{Call, CallCtx, Checkout, Error};
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::PythonError;
use crate::reply::{PyReply, Reply};
use crate::request::PyCall;
use crate::worker::PythonWorker;

/// Streamed items of one call. Ends after the generator's last item, or
/// after the first error.
///
/// As a `Stream` it yields JSON values; an item holding bytes is then a
/// [`PythonError::Decode`]. [`typed`](Self::typed) decodes items into a
/// Rust type, bytes into its byte-string fields.
pub struct PyStream<'a> {
    function: String,
    inner: BoxStream<'a, Result<Reply, PythonError>>,
}

impl PyStream<'_> {
    /// The function being streamed.
    pub fn function(&self) -> &str {
        &self.function
    }
}

impl<'a> PyStream<'a> {
    /// Every item whole, its JSON and its bytes, as a [`PyReply`]: what a
    /// node sends on, to be decoded by its caller.
    pub fn replies(self) -> impl Stream<Item = Result<PyReply, PythonError>> + Send + 'a {
        let function = self.function;
        self.inner
            .map(move |item| item.map(|reply| PyReply::new(function.clone(), reply)))
    }

    /// Decode every item into `T`.
    pub fn typed<T: DeserializeOwned + 'a>(
        self,
    ) -> impl Stream<Item = Result<T, PythonError>> + Send + 'a {
        let function = self.function;
        self.inner
            .map(move |item| item.and_then(|reply| reply.decode::<T>(&function)))
    }
}

impl Stream for PyStream<'_> {
    type Item = Result<Value, PythonError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        me.inner
            .poll_next_unpin(cx)
            .map(|item| item.map(|item| item.and_then(|reply| reply.into_json(&me.function))))
    }
}

impl std::fmt::Debug for PyStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyStream")
            .field("function", &self.function)
            .finish()
    }
}

/// What a stream holds its worker through.
trait Lease: Send {
    /// Start the streamed call.
    fn begin(
        &mut self,
        call: PyCall,
        ctx: CallCtx,
    ) -> impl Future<Output = Result<(), PythonError>> + Send;
    /// The next item of a stream of `function`; `None` once it ended.
    fn next(
        &mut self,
        ctx: CallCtx,
        function: &str,
    ) -> impl Future<Output = Option<Result<Reply, PythonError>>> + Send;
    /// The stream was dropped before its end.
    fn abandon(&mut self);
}

/// A worker used without a pool: nothing bounds the stream but its
/// consumer, and the worker itself remembers what is outstanding (its
/// next call cancels it).
impl Lease for &mut PythonWorker {
    async fn begin(&mut self, call: PyCall, _ctx: CallCtx) -> Result<(), PythonError> {
        self.begin_stream(&call).await
    }
    async fn next(&mut self, _ctx: CallCtx, _function: &str) -> Option<Result<Reply, PythonError>> {
        self.next_chunk().await
    }
    fn abandon(&mut self) {}
}

/// A pool checkout: every step runs through the checkout's `call_in`, so
/// the pool's one timer bounds the whole stream by its call's deadline, and
/// a stream dropped early is cancelled as a dropped call is.
impl Lease for Checkout<PythonWorker> {
    async fn begin(&mut self, call: PyCall, ctx: CallCtx) -> Result<(), PythonError> {
        let function = call.function.clone();
        let step = self.call_in(StartStream(call), ctx).await;
        step.map_err(|e| step_error(e, &function, Checkout::pid(self)))
    }
    async fn next(&mut self, ctx: CallCtx, function: &str) -> Option<Result<Reply, PythonError>> {
        match self.call_in(NextChunk, ctx).await {
            Ok(item) => item.map(Ok),
            Err(e) => Some(Err(step_error(e, function, Checkout::pid(self)))),
        }
    }
    fn abandon(&mut self) {
        self.taint();
    }
}

/// A pool's error for one step of a stream, as the stream's items carry
/// it.
fn step_error(e: Error<PythonError>, function: &str, pid: Option<u32>) -> PythonError {
    let function = function.to_string();
    match e {
        Error::Worker(e) | Error::Crashed(e) => e,
        Error::CallTimeout(after) => PythonError::Timeout {
            function,
            after,
            pid: pid.unwrap_or_default(),
        },
        // `call_in` ends no other way but the pool's close.
        _ => PythonError::Closed { function },
    }
}

/// The step that starts a stream, as a call a checkout runs.
struct StartStream(PyCall);

/// The step that reads a stream's next item, as a call a checkout runs.
struct NextChunk;

impl Call<StartStream> for PythonWorker {
    type Response = ();

    async fn call(&mut self, req: StartStream, _ctx: CallCtx) -> Result<(), PythonError> {
        self.begin_stream(&req.0).await
    }
}

impl Call<NextChunk> for PythonWorker {
    type Response = Option<Reply>;

    async fn call(&mut self, _: NextChunk, _ctx: CallCtx) -> Result<Option<Reply>, PythonError> {
        self.next_chunk().await.transpose()
    }
}

struct State<L: Lease> {
    lease: L,
    function: String,
    call: Option<PyCall>,
    ctx: CallCtx,
    started: bool,
    done: bool,
}

impl<L: Lease> State<L> {
    /// The stream ended: nothing is left to cancel (a method, so the drop
    /// that reads it counts as reading it).
    fn finish(&mut self) {
        self.done = true;
    }
}

impl<L: Lease> Drop for State<L> {
    fn drop(&mut self) {
        if self.started && !self.done {
            self.lease.abandon();
        }
    }
}

fn make<'a, L: Lease + 'a>(lease: L, call: PyCall, ctx: CallCtx) -> PyStream<'a> {
    let function = call.function.clone();
    let state = State {
        lease,
        function: function.clone(),
        call: Some(call),
        ctx,
        started: false,
        done: false,
    };
    let inner = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(call) = st.call.take() {
            st.started = true;
            if let Err(e) = st.lease.begin(call, st.ctx).await {
                st.done = true;
                return Some((Err(e), st));
            }
        }
        match st.lease.next(st.ctx, &st.function).await {
            Some(Ok(v)) => Some((Ok(v), st)),
            Some(Err(e)) => {
                st.done = true;
                Some((Err(e), st))
            }
            None => {
                st.finish();
                None
            }
        }
    });
    PyStream {
        function,
        inner: inner.boxed(),
    }
}

impl PythonWorker {
    /// Stream the items of a generator handler (a plain handler streams its
    /// one result). Dropping the stream early leaves the rest outstanding:
    /// the next call cancels it first (see [`PythonWorker`]). Nothing bounds
    /// a stream on a worker used without a pool but its consumer; a pool's
    /// stream ([`PythonPool`](crate::PythonPool)) is bounded by its call's
    /// deadline.
    pub fn stream(&mut self, call: PyCall, ctx: CallCtx) -> PyStream<'_> {
        make(self, call, ctx)
    }
}

/// A stream that owns a pool checkout and gives it back when it ends or is
/// dropped (its call cancelled if dropped early). `ctx`'s deadline bounds
/// the whole stream.
pub(crate) fn stream_checkout(
    guard: Checkout<PythonWorker>,
    call: PyCall,
    ctx: CallCtx,
) -> PyStream<'static> {
    make(guard, call, ctx)
}
