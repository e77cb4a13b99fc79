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

/// What reading one stream keeps.
struct Reading {
    messages: tonic::Streaming<Bytes>,
    /// Counts the stream in flight to its node until it ends.
    pick: Pick,
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
    remote: Remote,
    pool: Arc<str>,
}

impl<T: DeserializeOwned + Send + 'static> RemoteStream<T> {
    pub(crate) fn new(
        messages: tonic::Streaming<Bytes>,
        pick: Pick,
        deadline: Option<(Instant, Duration)>,
        remote: Remote,
        pool: Arc<str>,
    ) -> Self {
        let node = pick.node.clone();
        let reading = Reading {
            messages,
            pick,
            deadline: deadline.map(|(at, after)| (Box::pin(tokio::time::sleep_until(at)), after)),
            remote,
            pool,
        };
        let items = futures::stream::unfold(Some(reading), |reading| async move {
            let mut r = reading?;
            let next = match &mut r.deadline {
                Some((timer, after)) => tokio::select! {
                    m = r.messages.message() => m,
                    () = timer.as_mut() => {
                        return Some((Err(CallError::CallTimeout { after: *after }), None));
                    }
                },
                None => r.messages.message().await,
            };
            match next {
                Ok(Some(body)) => match decode::<T>(body) {
                    Ok(item) => Some((Ok(item), Some(r))),
                    Err(e) => Some((Err(e), None)),
                },
                Ok(None) => None,
                Err(status) => {
                    let e = status_error(&status, &r.pick.node);
                    r.remote.note_lost(&r.pool, &r.pick.node, &e);
                    Some((Err(e), None))
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
