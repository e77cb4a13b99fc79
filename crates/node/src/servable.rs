//! [`Servable`]: a local pool seen as "answers `Req`, fails with
//! [`CallError`], has a load" — what a node serves: decode, `call_with`,
//! encode (bodies as `body.rs` lays them out).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use cenote_core::{
    AffinityKey, Call, CallOptions, Factory, IdleStrategy, Load, Pool, Streams, WaitStrategy,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::body;
use crate::error::CallError;
use cenote_core::ErrorKind;

use cenote_core::{ErrorOf as WkError, WorkerOf as Wk};

/// A pool that answers requests of type `Req`. Implemented for every
/// [`Pool`] whose workers implement [`Call<Req>`] and whose worker error
/// implements [`ErrorKind`].
pub trait Servable<Req>: Clone + Send + Sync + 'static {
    /// What a successful call returns.
    type Response: Send + 'static;

    /// Serve `req` under `opts` (a remote caller's time left is its
    /// [`budget`](CallOptions::budget)).
    fn serve(
        &self,
        req: Req,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Self::Response, CallError>> + Send;

    /// Its counts now, as a node publishes them.
    fn load(&self) -> Load;

    /// Whether it holds session `key` (see [`Pool::holds_session`]): how a
    /// caller that has not called the session yet finds its node. No, by
    /// default.
    fn holds_session(&self, _key: &AffinityKey) -> bool {
        false
    }
}

impl<Req, F, I, W> Servable<Req> for Pool<F, I, W>
where
    Req: Send + 'static,
    F: Factory,
    I: IdleStrategy,
    W: WaitStrategy,
    Wk<F>: Call<Req>,
    WkError<F>: ErrorKind,
{
    type Response = <Wk<F> as Call<Req>>::Response;

    async fn serve(&self, req: Req, opts: CallOptions) -> Result<Self::Response, CallError> {
        Ok(self.call_with(req, opts).await?)
    }

    fn load(&self) -> Load {
        Pool::load(self)
    }

    fn holds_session(&self, key: &AffinityKey) -> bool {
        Pool::holds_session(self, key.clone())
    }
}

/// A served pool with its types erased: a body in, a body (in parts) out.
pub(crate) trait Served: Send + Sync + 'static {
    fn call(
        &self,
        body: Bytes,
        opts: CallOptions,
    ) -> BoxFuture<'static, Result<Vec<Bytes>, CallError>>;

    fn load(&self) -> Load;

    fn holds_session(&self, key: &AffinityKey) -> bool;
}

/// A pool seen through JSON bodies of requests of type `Req`: its
/// [`Served`] view if it is `Servable<Req>`, its [`ServedStream`] view if
/// it `Streams<Req>`.
pub(crate) struct Json<Req, P> {
    pool: P,
    _req: PhantomData<fn(Req)>,
}

impl<Req, P> Json<Req, P> {
    pub fn new(pool: P) -> Arc<Self> {
        Arc::new(Json {
            pool,
            _req: PhantomData,
        })
    }
}

impl<Req, P> Served for Json<Req, P>
where
    Req: DeserializeOwned + Send + 'static,
    P: Servable<Req>,
    P::Response: Serialize,
{
    fn call(
        &self,
        body: Bytes,
        opts: CallOptions,
    ) -> BoxFuture<'static, Result<Vec<Bytes>, CallError>> {
        let pool = self.pool.clone();
        async move {
            let req: Req = decode_request(body)?;
            let resp = pool.serve(req, opts).await?;
            body::encode(&resp).map_err(|e| CallError::BadResponse {
                message: format!("the response does not encode as JSON: {e}"),
            })
        }
        .boxed()
    }

    fn load(&self) -> Load {
        self.pool.load()
    }

    fn holds_session(&self, key: &AffinityKey) -> bool {
        self.pool.holds_session(key)
    }
}

/// Items of one served stream, each a body (in parts) or the error that
/// ended it.
pub(crate) type BodyStream = BoxStream<'static, Result<Vec<Bytes>, CallError>>;

/// A pool's streams with their types erased: a body in, item bodies out.
pub(crate) trait ServedStream: Send + Sync + 'static {
    fn open(
        &self,
        body: Bytes,
        opts: CallOptions,
    ) -> BoxFuture<'static, Result<BodyStream, CallError>>;
}

impl<Req, P> ServedStream for Json<Req, P>
where
    Req: DeserializeOwned + Send + 'static,
    P: Streams<Req>,
    P::Item: Serialize,
{
    fn open(
        &self,
        body: Bytes,
        opts: CallOptions,
    ) -> BoxFuture<'static, Result<BodyStream, CallError>> {
        let pool = self.pool.clone();
        async move {
            let req: Req = decode_request(body)?;
            let items = pool.open_stream(req, opts).await?;
            let bodies = items.map(|item| {
                let item = item?;
                body::encode(&item).map_err(|e| CallError::BadResponse {
                    message: format!("a stream item does not encode as JSON: {e}"),
                })
            });
            Ok(bodies.boxed())
        }
        .boxed()
    }
}

/// A request body decoded, or a `BadRequest` naming the type it missed.
fn decode_request<Req: DeserializeOwned>(body: Bytes) -> Result<Req, CallError> {
    body::decode(body).map_err(|e| CallError::BadRequest {
        message: format!(
            "the body does not decode into {}: {e}",
            std::any::type_name::<Req>()
        ),
    })
}
