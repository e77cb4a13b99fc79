//! [`RemoteStream`]: a stream's items from a node, as they come.
//!
//! A thin reader over gRPC's server streaming: each message is one item's
//! body, decoded when it is read (never earlier, so the transport's flow
//! control is the only buffer, and a slow reader slows the node's
//! producer). The stream's one deadline is a timer beside the reads; an
//! error from the node, or the connection's loss, is the last item.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::directory::Pick;
use super::{decode, Remote};
use crate::error::CallError;
use crate::wire::status_error;

/// The items of a stream a node serves, each decoded into `T`; see
/// [`RemotePool::stream_with`](super::RemotePool::stream_with). Ends after
/// the last item, or with the error that ended it. Dropping it cancels
/// the stream on the node.
pub struct RemoteStream<T> {
    node: String,
    items: BoxStream<'static, Result<T, CallError>>,
}

/// Where a stream came from: its caller, its pool, the request's size,
/// when it was sent and the deadline it has.
pub(crate) struct Origin {
    pub remote: Remote,
    pub pool: Arc<str>,
    pub sent: usize,
    pub started: Instant,
    pub deadline: Option<Duration>,
}

/// What reading one stream keeps.
struct Reading {
    messages: tonic::Streaming<Bytes>,
    /// Counts the stream in flight to its node until it ends.
    pick: Pick,
    timer: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
    origin: Origin,
    /// Body bytes received so far.
    received: usize,
    /// The error that ended the stream, if one did.
    failed: Option<CallError>,
}

/// The stream is counted as one call when its reading ends, however it
/// ends (a caller that drops it early ends it too); a node lost with it is
/// left out for a while.
impl Drop for Reading {
    fn drop(&mut self) {
        let o = &self.origin;
        let bytes = (o.sent, self.received);
        let took = o.started.elapsed();
        (o.remote).ended(&o.pool, &self.pick.node, bytes, self.failed.as_ref(), took);
    }
}

impl Reading {
    /// End the stream with `e`, its last item.
    fn fail<T>(mut self, e: CallError) -> Option<(Result<T, CallError>, Option<Reading>)> {
        self.failed = Some(e.clone());
        Some((Err(e), None))
    }
}

impl<T: DeserializeOwned + Send + 'static> RemoteStream<T> {
    pub(crate) fn new(messages: tonic::Streaming<Bytes>, pick: Pick, origin: Origin) -> Self {
        let node = pick.node.clone();
        let timer = origin.deadline.map(|after| {
            let at = origin.started + after;
            (Box::pin(tokio::time::sleep_until(at)), after)
        });
        let reading = Reading {
            messages,
            pick,
            timer,
            origin,
            received: 0,
            failed: None,
        };
        let items = futures::stream::unfold(Some(reading), |reading| async move {
            let mut r = reading?;
            let next = match &mut r.timer {
                Some((timer, after)) => {
                    let after = *after;
                    tokio::select! {
                        m = r.messages.message() => m,
                        () = timer.as_mut() => return r.fail(CallError::CallTimeout { after }),
                    }
                }
                None => r.messages.message().await,
            };
            match next {
                Ok(Some(body)) => {
                    r.received += body.len();
                    match decode::<T>(body) {
                        Ok(item) => Some((Ok(item), Some(r))),
                        Err(e) => r.fail(e),
                    }
                }
                Ok(None) => None,
                Err(status) => {
                    let e = status_error(&status, &r.pick.node);
                    r.fail(e)
                }
            }
        });
        RemoteStream {
            node,
            items: items.boxed(),
        }
    }
}

impl<T> RemoteStream<T> {
    /// The node serving the stream.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl<T> Stream for RemoteStream<T> {
    type Item = Result<T, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_next_unpin(cx)
    }
}

impl<T> std::fmt::Debug for RemoteStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStream")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}
