//! A remote pool as a tower `Service`, with [`CallError`] as its error: a
//! local pool's service (`cenote_core::PoolService`) mapped to the same
//! error (`map_err(CallError::from)`) composes with it under middleware
//! (timeouts, concurrency limits, load shedding) and frameworks built on
//! tower (axum, tonic).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::RemotePool;
use crate::error::CallError;

/// A remote pool as a tower `Service<Req>`, calling with the handle's
/// options ([`RemotePool::with_options`]). Always ready: nodes queue
/// callers themselves.
impl<Req, Resp> tower::Service<Req> for RemotePool<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    type Response = Resp;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<Resp, CallError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let pool = self.clone();
        async move { pool.call(req).await }.boxed()
    }
}
