//! [`PoolService`]: a pool as a tower `Service`, so tower middleware
//! (timeouts, concurrency limits, load shedding) and frameworks built on
//! tower (axum, tonic) take it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::shared::{Wk, WkError};
use super::{CallOptions, Pool};
use crate::error::Error;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::worker::{Call, Factory};

/// A pool as a tower `Service<Req>`: each request is one
/// [`call_with`](Pool::call_with) under the service's options. Always
/// ready: the pool itself queues callers (and turns them away past
/// `max_waiters`). To mix it with remote pools under one error type, map
/// its error (`ServiceExt::map_err(cenote::node::CallError::from)`).
pub struct PoolService<Req, F: Factory, I: IdleStrategy, W: WaitStrategy> {
    pool: Pool<F, I, W>,
    opts: CallOptions,
    _req: PhantomData<fn(Req)>,
}

impl<Req, F: Factory, I: IdleStrategy, W: WaitStrategy> PoolService<Req, F, I, W> {
    /// Serve `Req`s with `pool`, under the pool's own timeouts.
    pub fn new(pool: Pool<F, I, W>) -> Self {
        PoolService {
            pool,
            opts: CallOptions::default(),
            _req: PhantomData,
        }
    }

    /// Call with `opts` (deadline, checkout timeout, priority, session).
    pub fn with_options(mut self, opts: CallOptions) -> Self {
        self.opts = opts;
        self
    }
}

impl<Req, F: Factory, I: IdleStrategy, W: WaitStrategy> Clone for PoolService<Req, F, I, W> {
    fn clone(&self) -> Self {
        PoolService {
            pool: self.pool.clone(),
            opts: self.opts.clone(),
            _req: PhantomData,
        }
    }
}

type Answer<F, Req> = Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>;

impl<Req, F, I, W> tower_service::Service<Req> for PoolService<Req, F, I, W>
where
    Req: Send + 'static,
    F: Factory,
    I: IdleStrategy,
    W: WaitStrategy,
    Wk<F>: Call<Req>,
{
    type Response = <Wk<F> as Call<Req>>::Response;
    type Error = Error<WkError<F>>;
    type Future = Pin<Box<dyn Future<Output = Answer<F, Req>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (pool, opts) = (self.pool.clone(), self.opts.clone());
        Box::pin(async move { pool.call_with(req, opts).await })
    }
}
