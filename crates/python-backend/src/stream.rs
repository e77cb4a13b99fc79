//! [`PyStream`]: the items of a generator handler, as a `Stream`.
//!
//! A stream holds its worker (borrowed, or a pool checkout) until it ends.
//! Dropped early, it follows the abandoned-call rule: a pool checkout is
//! marked for recycling, and the worker drains the rest of the stream (or
//! is killed at the call's deadline) before it serves anyone again.

use std::pin::Pin;
use std::task::{Context, Poll};

use cenote_core::{CallCtx, Checkout};
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::PythonError;
use crate::reply::Reply;
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
    fn worker(&mut self) -> &mut PythonWorker;
    /// The stream was dropped before its end.
    fn abandon(&mut self);
}

impl Lease for &mut PythonWorker {
    fn worker(&mut self) -> &mut PythonWorker {
        self
    }
    fn abandon(&mut self) {
        // The worker itself remembers the outstanding request.
    }
}

impl Lease for Checkout<PythonWorker> {
    fn worker(&mut self) -> &mut PythonWorker {
        self
    }
    fn abandon(&mut self) {
        self.taint();
    }
}

struct State<L: Lease> {
    lease: L,
    call: Option<PyCall>,
    ctx: CallCtx,
    started: bool,
    done: bool,
}

impl<L: Lease> State<L> {
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
            if let Err(e) = st.lease.worker().begin_stream(&call, st.ctx).await {
                st.done = true;
                return Some((Err(e), st));
            }
        }
        match st.lease.worker().next_chunk().await {
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

/// A stream over a borrowed worker.
pub(crate) fn over(worker: &mut PythonWorker, call: PyCall, ctx: CallCtx) -> PyStream<'_> {
    make(worker, call, ctx)
}

/// A stream that owns a pool checkout and gives it back when it ends or is
/// dropped (marked for recycling if dropped early). `ctx`'s deadline bounds
/// the whole stream; [`Checkout::call_ctx`] gives the pool's.
pub fn stream_checkout(
    guard: Checkout<PythonWorker>,
    call: PyCall,
    ctx: CallCtx,
) -> PyStream<'static> {
    make(guard, call, ctx)
}
