//! Call a cenote pool on another node.
//!
//! A [`Node`] serves named pools over gRPC (tonic) and publishes, for each,
//! an endpoint in the registry: where it is and how busy it is (idle,
//! busy, waiting, live), updated when that changes and at most once per
//! interval. A [`Remote`] follows those endpoints and calls a pool by name
//! on the node that looks least loaded by power of two choices, never on
//! one whose endpoint is gone (with etcd, a dead node's endpoint expires
//! with its lease).
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cenote_core::{Call, CallCtx, CallOptions, Factory, Pool, Registry, Worker, WorkerCtx};
//! use cenote_node::{CallError, Node, Remote};
//! use cenote_registry::LocalRegistry;      // or EtcdRegistry, across machines
//! use cenote_strategies::{Fifo, Lifo};
//!
//! struct Upper;
//! impl Worker for Upper {
//!     type Error = Infallible;
//!     async fn shutdown(self, _grace: Duration) {}
//! }
//! impl Call<String> for Upper {
//!     type Response = String;
//!     async fn call(&mut self, s: String, _ctx: CallCtx) -> Result<String, Infallible> {
//!         Ok(s.to_uppercase())
//!     }
//! }
//! struct Make;
//! impl Factory for Make {
//!     type Worker = Upper;
//!     async fn create(&self, _: WorkerCtx) -> Result<Upper, Infallible> { Ok(Upper) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new("node-a"));
//! let pool: Pool<Make, Lifo, Fifo> = Pool::builder(Make).size(2).build().await?;
//!
//! // Serve it (a token keeps strangers out; without one the node warns).
//! let node = Node::builder(registry.clone())
//!     .token("s3cret")
//!     .pool::<String>("upper", pool)
//!     .serve("127.0.0.1:0".parse()?)
//!     .await?;
//!
//! // Call it by name from anywhere that sees the registry.
//! let remote = Remote::builder(registry).token("s3cret").connect().await?;
//! let upper = remote.pool::<String, String>("upper");
//! assert_eq!(upper.call("hi".to_string()).await?, "HI");
//!
//! // One deadline for the whole call: the node is told the time left.
//! let opts = CallOptions::default()
//!     .checkout_timeout(Duration::from_millis(100))
//!     .timeout(Duration::from_secs(1));
//! upper.call_with("again".to_string(), opts).await?;
//!
//! // Errors are typed, whichever side they come from.
//! let missing = remote.pool::<String, String>("nope");
//! assert!(matches!(missing.call("x".into()).await, Err(CallError::NoNode { .. })));
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! * **What crosses the wire**: the request and the response as JSON,
//!   with their byte strings (a `PyCall`'s bytes, `Bytes` fields) raw
//!   beside it; the pool's name, the checkout and call timeouts, the time
//!   left until the call's deadline (never a wall-clock instant: clocks
//!   differ between machines), the priority and the session as metadata.
//!   See [`wire`].
//! * **Streams**: [`NodeBuilder::streams`] serves a pool's streams
//!   ([`cenote_core::Streams`], which Python pools implement);
//!   [`RemotePool::stream`] reads them with back-pressure, one deadline,
//!   cancel on drop.
//! * **Sessions**: a call with a session goes to the node holding it,
//!   placed by rendezvous hashing and remembered by the caller; a strict
//!   session whose node is gone is [`CallError::AffinityLost`], never
//!   moved (see [`RemotePool::call_with`]).
//! * **Errors** come back as one typed [`CallError`]: the pool's own
//!   (checkout timeout, saturated, call timeout, crashed, the worker's
//!   error with its kind, closed), and the network's: [`CallError::NodeLost`]
//!   (the node died or hung mid-call: never a hang, see
//!   [`RemoteBuilder::keepalive`]), `NoNode`, `UnknownPool`,
//!   `Unauthorized`, `TooLarge`, `BadRequest`.
//! * **Failures**: a node lost mid-call is left out of the choice for a
//!   lease TTL; [`RemotePool::call_retry`] tries again on another node. A
//!   caller that loses the registry keeps calling the nodes it knows until
//!   their leases would have expired, and says so in a warning.
//! * **Security**: [`NodeBuilder::token`] (else a warning that the node is
//!   open), TLS with feature `tls` ([`NodeBuilder::tls`],
//!   [`RemoteBuilder::tls`]), a request size limit
//!   ([`NodeBuilder::max_request_bytes`]).
//! * **tower**: [`RemotePool`] is a `tower::Service<Req, Error = CallError>`;
//!   a local pool's `cenote_core::PoolService`, mapped with
//!   `map_err(CallError::from)`, has the same error, so middleware and axum
//!   handlers take either.

#![warn(missing_docs)]

mod body;
mod client;
mod error;
pub mod metrics;
mod servable;
mod server;
mod services;
pub mod wire;

pub use cenote_core::ErrorKind;
pub use client::{
    Answered, NodeInfo, Remote, RemoteBuilder, RemotePool, RemoteRetry, RemoteStream,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_SESSION_CAPACITY,
};
pub use error::CallError;
pub use servable::Servable;
pub use server::{Node, NodeBuilder, NodeError, DEFAULT_MAX_REQUEST_BYTES};

/// TLS material: a node's [`Identity`](tls::Identity) (certificate and
/// key), a caller's trusted [`Certificate`](tls::Certificate).
#[cfg(feature = "tls")]
pub mod tls {
    pub use tonic::transport::{Certificate, Identity};
}
