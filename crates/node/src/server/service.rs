//! The gRPC service a node runs: check the token, read the call's headers,
//! find the pool, decode, call, answer — every failure a typed status. A
//! stream is the same up to the call, then answers item by item.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cenote_core::CallOptions;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::server::{Grpc, UnaryService};

use crate::body;
use crate::error::CallError;
use crate::servable::{Served, ServedStream};
use crate::wire::{
    error_status, has_token, CallHeaders, RawCodec, CALL_PATH, HOLDS_PATH, STREAM_PATH,
};

/// One pool as the node serves it.
pub(crate) struct Slot {
    pub pool: Arc<dyn Served>,
    /// Its streams, if the node serves them.
    pub stream: Option<Arc<dyn ServedStream>>,
    /// Woken when a call starts or ends, so its load is published soon.
    pub changed: Arc<Notify>,
}

impl Slot {
    /// A call or stream of this pool starts: its load is published soon,
    /// and again when the guard drops, however the call ends (a caller that
    /// hangs up drops it).
    fn in_use(&self) -> NotifyOnDrop {
        self.changed.notify_one();
        NotifyOnDrop(Arc::clone(&self.changed))
    }
}

/// What every call on this node reads.
pub(crate) struct Shared {
    pub node: String,
    pub pools: HashMap<String, Slot>,
    pub token: Option<String>,
    pub max_request_bytes: usize,
}

/// A `tower::Service` over HTTP requests that tonic's server runs.
#[derive(Clone)]
pub(crate) struct NodeService {
    pub shared: Arc<Shared>,
}

impl tower::Service<http::Request<Body>> for NodeService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = match req.uri().path() {
            CALL_PATH => Method::Call,
            HOLDS_PATH => Method::Holds,
            STREAM_PATH => Method::Stream,
            path => {
                let status = tonic::Status::unimplemented(format!(
                    "a cenote node serves {CALL_PATH}, {STREAM_PATH} and {HOLDS_PATH}, not {path}"
                ));
                return futures::future::ready(Ok(status.into_http())).boxed();
            }
        };
        let shared = Arc::clone(&self.shared);
        async move {
            // Over the limit, tonic refuses the body itself (OutOfRange),
            // which callers see as `TooLarge`.
            let mut grpc = Grpc::new(RawCodec).max_decoding_message_size(shared.max_request_bytes);
            Ok(match method {
                Method::Stream => grpc.server_streaming(StreamHandler(shared), req).await,
                unary => grpc.unary(Handler(shared, unary), req).await,
            })
        }
        .boxed()
    }
}

/// What a request asks for, by its path.
#[derive(Clone, Copy)]
enum Method {
    Call,
    Holds,
    Stream,
}

/// Serves one decoded unary request: a call, or a question about a session.
struct Handler(Arc<Shared>, Method);

impl UnaryService<Bytes> for Handler {
    type Response = Vec<Bytes>;
    type Future = BoxFuture<'static, Result<tonic::Response<Vec<Bytes>>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (shared, method) = (Arc::clone(&self.0), self.1);
        async move {
            let answer = match method {
                Method::Holds => holds(&shared, &request),
                _ => serve(&shared, request).await,
            };
            answer
                .map(tonic::Response::new)
                .map_err(|e| error_status(&e))
        }
        .boxed()
    }
}

async fn serve(shared: &Shared, request: tonic::Request<Bytes>) -> Result<Vec<Bytes>, CallError> {
    let (slot, pool, opts) = admit(shared, &request)?;
    let _in_use = slot.in_use();
    let outcome = slot.pool.call(request.into_inner(), opts).await;
    if let Err(e) = &outcome {
        tracing::debug!(node = %shared.node, %pool, error = %e, "call failed");
    }
    outcome
}

/// Whether the pool holds the request's session: `true` or `false`.
fn holds(shared: &Shared, request: &tonic::Request<Bytes>) -> Result<Vec<Bytes>, CallError> {
    let (slot, _, opts) = admit(shared, request)?;
    let affinity = opts
        .checkout
        .affinity
        .ok_or_else(|| CallError::BadRequest {
            message: format!("{HOLDS_PATH} asks about a session: give its key"),
        })?;
    let holds = slot.pool.holds_session(&affinity.key);
    body::encode(&holds).map_err(|message| CallError::BadResponse { message })
}

/// Serves one stream.
struct StreamHandler(Arc<Shared>);

type StatusStream = BoxStream<'static, Result<Vec<Bytes>, tonic::Status>>;

impl tower::Service<tonic::Request<Bytes>> for StreamHandler {
    type Response = tonic::Response<StatusStream>;
    type Error = tonic::Status;
    type Future = BoxFuture<'static, Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = Arc::clone(&self.0);
        async move {
            let items = open_stream(&shared, request)
                .await
                .map_err(|e| error_status(&e))?;
            Ok(tonic::Response::new(items))
        }
        .boxed()
    }
}

/// Start a stream: its items as the transport sends them, one body each,
/// an error ending it as a status with the error as details. The pool's
/// load is published again when it starts and when it ends or is dropped
/// (the caller hung up), which also cancels it on the pool.
async fn open_stream(
    shared: &Shared,
    request: tonic::Request<Bytes>,
) -> Result<StatusStream, CallError> {
    let (slot, pool, opts) = admit(shared, &request)?;
    let stream = slot.stream.as_ref().ok_or_else(|| CallError::BadRequest {
        message: format!(
            "node {:?} serves pool {pool:?} but not its streams (NodeBuilder::streams)",
            shared.node
        ),
    })?;
    let in_use = slot.in_use();
    let items = stream.open(request.into_inner(), opts).await?;
    Ok(items
        .map(move |item| {
            let _held = &in_use;
            item.map_err(|e| error_status(&e))
        })
        .boxed())
}

/// Check the token, read the headers and find the pool: the slot, the
/// pool's name, and the options its call or stream runs under.
fn admit<'a>(
    shared: &'a Shared,
    request: &tonic::Request<Bytes>,
) -> Result<(&'a Slot, String, CallOptions), CallError> {
    let arrived = Instant::now();
    if let Some(token) = &shared.token {
        if !has_token(request.metadata(), token) {
            tracing::warn!(node = %shared.node, remote = ?request.remote_addr(),
                "call refused: missing or wrong token");
            return Err(CallError::Unauthorized {
                node: shared.node.clone(),
            });
        }
    }
    let headers = CallHeaders::read(request.metadata())?;
    let slot = shared
        .pools
        .get(&headers.pool)
        .ok_or_else(|| CallError::UnknownPool {
            pool: headers.pool.clone(),
            node: shared.node.clone(),
        })?;
    // The call's whole budget is the time the caller said was left, counted
    // from arrival: no clock is compared across machines.
    let mut opts = headers.opts;
    if let Some(left) = headers.remaining {
        let left = left.saturating_sub(arrived.elapsed());
        opts.budget = Some(opts.budget.map_or(left, |b| b.min(left)));
    }
    Ok((slot, headers.pool, opts))
}

struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}
