//! [`PythonPool`]: Python conveniences on a `cenote_core::Pool` of
//! [`PythonFactory`] workers.

use std::future::Future;

use cenote_core::{CallOptions, Error, Pool, Strategy};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::PythonError;
use crate::factory::PythonFactory;
use crate::request::PyCall;
use crate::stream::{stream_checkout, PyStream};

/// Calls and streams on a pool of Python workers.
///
/// `pool.call(PyCall)` works as for any pool; these add what is Python
/// specific: the request's own timeout becomes the pool's deadline for it, so
/// a late call ends as `Error::CallTimeout`, and generator handlers stream.
pub trait PythonPool {
    /// Call `function` with `args`, under the request's timeout if it has one.
    fn py(&self, call: PyCall) -> impl Future<Output = Result<Value, Error<PythonError>>> + Send;

    /// [`py`](Self::py), with the result decoded into `R`.
    fn py_as<R: DeserializeOwned + Send + 'static>(
        &self,
        call: PyCall,
    ) -> impl Future<Output = Result<R, Error<PythonError>>> + Send;

    /// Check out a worker and stream a generator handler's items. The worker
    /// returns to the pool when the stream ends or is dropped; dropped early,
    /// it is recycled (rest of the stream drained, or killed at the deadline)
    /// before serving again.
    fn stream(
        &self,
        call: PyCall,
    ) -> impl Future<Output = Result<PyStream<'static>, Error<PythonError>>> + Send;
}

impl<I: Strategy, W: Strategy> PythonPool for Pool<PythonFactory, I, W> {
    async fn py(&self, call: PyCall) -> Result<Value, Error<PythonError>> {
        let mut opts = CallOptions::default();
        if let Some(t) = call.timeout {
            opts = opts.timeout(t);
        }
        self.call_with(call, opts).await
    }

    async fn py_as<R: DeserializeOwned + Send + 'static>(
        &self,
        call: PyCall,
    ) -> Result<R, Error<PythonError>> {
        let mut opts = CallOptions::default();
        if let Some(t) = call.timeout {
            opts = opts.timeout(t);
        }
        self.call_with(call.returning::<R>(), opts).await
    }

    async fn stream(&self, call: PyCall) -> Result<PyStream<'static>, Error<PythonError>> {
        let guard = self.get().await?;
        Ok(stream_checkout(guard, call))
    }
}
