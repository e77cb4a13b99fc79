//! tower `Service`s over pools, local and remote, with one error type
//! ([`CallError`]): middleware (timeouts, concurrency limits, load
//! shedding) and frameworks built on tower (axum, tonic) take either.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use cenote_core::CallOptions;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::RemotePool;
use crate::error::CallError;
use crate::servable::Servable;

/// A local pool as a tower `Service<Req>`: each request is one
/// `call_with(req, opts)`. Always ready: the pool itself queues callers
/// (and turns them away past `max_waiters`).
pub struct PoolService<Req, P> {
    pool: P,
    opts: CallOptions,
    _req: PhantomData<fn(Req)>,
}

impl<Req, P: Servable<Req>> PoolService<Req, P> {
    /// Serve `Req`s with `pool`, under the pool's own timeouts.
    pub fn new(pool: P) -> Self {
        PoolService {
            pool,
            opts: CallOptions::default(),
            _req: PhantomData,
        }
    }

    /// Call with `opts` (deadline, checkout timeout, priority).
    pub fn with_options(mut self, opts: CallOptions) -> Self {
        self.opts = opts;
        self
    }
}

impl<Req, P: Clone> Clone for PoolService<Req, P> {
    fn clone(&self) -> Self {
        PoolService {
            pool: self.pool.clone(),
            opts: self.opts.clone(),
            _req: PhantomData,
        }
    }
}

impl<Req: Send + 'static, P: Servable<Req>> tower::Service<Req> for PoolService<Req, P> {
    type Response = P::Response;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<P::Response, CallError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (pool, opts) = (self.pool.clone(), self.opts.clone());
        async move { pool.serve(req, opts, None).await }.boxed()
    }
}

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
