//! [`Streams`]: a pool that answers a request with a stream of items (a
//! generator's values, an LLM's tokens).
//!
//! Calls need nothing but [`Call`](crate::Call): one request, one answer.
//! A stream holds its worker until it ends, and how it does so is the
//! backend's own (the Python backend's `PythonPool::stream`). This trait
//! names that ability without naming the backend, so that whatever serves
//! pools to others (a node, `cenote-node`) can serve streams of any
//! backend that has them.

use std::future::Future;

use futures::stream::BoxStream;

use crate::error::{Error, ErrorKind};
use crate::pool::CallOptions;

/// Items of one stream, each an answer or the error that ended it.
pub type ItemStream<T, E> = BoxStream<'static, Result<T, Error<E>>>;

/// A stream started, or the pool's error for why it could not be.
pub type Opened<T, E> = Result<ItemStream<T, E>, Error<E>>;

/// A pool that streams answers to requests of type `Req`.
pub trait Streams<Req>: Clone + Send + Sync + 'static {
    /// One item of a stream.
    type Item: Send + 'static;
    /// The worker's error.
    type Error: std::error::Error + ErrorKind + Send + Sync + 'static;

    /// Start a stream for `req` under `opts` (its deadline covers the
    /// whole stream). The stream ends after its last item or its first
    /// error; dropped early, it is cancelled as a dropped call is.
    fn open_stream(
        &self,
        req: Req,
        opts: CallOptions,
    ) -> impl Future<Output = Opened<Self::Item, Self::Error>> + Send;
}
