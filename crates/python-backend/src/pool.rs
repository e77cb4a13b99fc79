//! [`PythonPool`]: streams on a `cenote_core::Pool` of [`PythonFactory`]
//! workers.
//!
//! Calls need nothing Python specific: `pool.call(PyCall)` returns JSON,
//! `pool.call(call.returning::<R>())` a decoded `R`, and
//! `pool.call_with(call, CallOptions::default().timeout(d))` gives one call
//! its own deadline, which is then the call's only one.

use std::future::Future;
use std::time::Duration;

use cenote_core::{CallOptions, Error, IdleStrategy, ItemStream, Pool, Streams, WaitStrategy};
use futures::StreamExt;

use crate::error::PythonError;
use crate::factory::PythonFactory;
use crate::reply::PyReply;
use crate::request::PyCall;
use crate::stream::{stream_checkout, PyStream};

/// Streams on a pool of Python workers.
pub trait PythonPool {
    /// Check out a worker and stream a generator handler's items, under the
    /// pool's `call_timeout` for the whole stream. The worker returns to the
    /// pool when the stream ends or is dropped; past the deadline, or
    /// dropped early, the generator is cancelled (closed at its current
    /// step, or its worker killed if it does not let go within
    /// `cancel_grace`) before the worker serves again.
    fn stream(
        &self,
        call: PyCall,
    ) -> impl Future<Output = Result<PyStream<'static>, Error<PythonError>>> + Send;

    /// [`stream`](Self::stream) with this stream's own deadline, checkout
    /// timeout, whole budget, priority and session, resolved as a call's
    /// are ([`Pool::budget`]).
    fn stream_with(
        &self,
        call: PyCall,
        opts: CallOptions,
    ) -> impl Future<Output = Result<PyStream<'static>, Error<PythonError>>> + Send;
}

impl<I: IdleStrategy, W: WaitStrategy> PythonPool for Pool<PythonFactory, I, W> {
    async fn stream(&self, call: PyCall) -> Result<PyStream<'static>, Error<PythonError>> {
        self.stream_with(call, CallOptions::default()).await
    }

    async fn stream_with(
        &self,
        call: PyCall,
        opts: CallOptions,
    ) -> Result<PyStream<'static>, Error<PythonError>> {
        let budget = self.budget(&opts);
        let guard = self.get_for(&opts, &budget).await?;
        match budget.start() {
            Some(ctx) => Ok(stream_checkout(guard, call, ctx)),
            // Spent waiting: the worker goes back unused.
            None => Err(Error::CallTimeout(Duration::ZERO)),
        }
    }
}

/// Streams as any backend's are served (`cenote_core::Streams`, what a
/// node serves): each item whole, as a [`PyReply`]. An item's error is the
/// pool's: past the deadline `CallTimeout`, a worker lost mid-stream
/// `Crashed`, an exception the generator raised `Worker`.
impl<I: IdleStrategy, W: WaitStrategy> Streams<PyCall> for Pool<PythonFactory, I, W> {
    type Item = PyReply;
    type Error = PythonError;

    async fn open_stream(
        &self,
        call: PyCall,
        opts: CallOptions,
    ) -> Result<ItemStream<PyReply, PythonError>, Error<PythonError>> {
        let stream = self.stream_with(call, opts).await?;
        Ok(stream
            .replies()
            .map(|item| item.map_err(pool_error))
            .boxed())
    }
}

/// A stream item's error as the pool's error.
fn pool_error(e: PythonError) -> Error<PythonError> {
    match e {
        PythonError::Timeout { after, .. } => Error::CallTimeout(after),
        e if e.is_fatal() => Error::Crashed(e),
        e => Error::Worker(e),
    }
}
