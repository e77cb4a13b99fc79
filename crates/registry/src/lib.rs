//! Registries for cenote pools: where pools and their workers can be found.
//!
//! ```
//! use cenote_core::{PoolEntry, Registry, RegistryError};
//! use cenote_registry::LocalRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = LocalRegistry::new("node-a");
//! let entry = PoolEntry {
//!     name: "embed".into(),
//!     node: "node-a".into(),
//!     idle_strategy: "lifo".into(),
//!     wait_strategy: "fifo".into(),
//!     size: 4,
//!     max_overflow: 0,
//! };
//! registry.register_pool(entry.clone()).await?;
//! // A name is registered once: a second registration is an error.
//! assert_eq!(
//!     registry.register_pool(entry).await,
//!     Err(RegistryError::Duplicate("embed".into()))
//! );
//! assert_eq!(registry.pools().await?.len(), 1);
//!
//! // Typed handles: an application finds its pools again by name.
//! #[derive(Clone)]
//! struct EmbedPool; // stands for a cloneable pool handle
//! registry.attach("embed", EmbedPool)?;
//! assert!(registry.pool::<EmbedPool>("embed").is_some());
//! assert!(registry.pool::<String>("embed").is_none(), "wrong type: None, not a panic");
//! # Ok(())
//! # }
//! ```
//!
//! [`LocalRegistry`] keeps everything in this process (DashMap) and needs no
//! server: it is the default. `EtcdRegistry` (feature `etcd`) shares
//! entries across machines through etcd, on a lease so a dead node's
//! entries expire by themselves. A pool sees only the
//! [`Registry`](cenote_core::Registry) trait, so either one (or your own)
//! can be plugged in.
//!
//! Both give the same answers to the same calls (one conformance test suite
//! runs against both). Their watch streams never make a writer wait: a
//! watcher that falls too far behind skips the oldest events (with a
//! warning) and can re-read `pools()` / `workers()` to catch up.

#![warn(missing_docs)]

#[cfg(feature = "etcd")]
mod etcd;
mod local;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdRegistry, EtcdRegistryBuilder};
pub use local::{HandleError, LocalRegistry, WATCH_BUFFER};

use cenote_core::RegistryEvent;
use tokio::sync::broadcast;

/// A watcher's view of a broadcast channel: a writer never waits for a slow
/// watcher; a watcher more than the channel's capacity behind skips the
/// oldest events (logged with how many) and goes on with the oldest one
/// still buffered.
fn broadcast_stream(
    rx: broadcast::Receiver<RegistryEvent>,
) -> impl futures::Stream<Item = RegistryEvent> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((event, rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "registry watcher fell behind; its oldest events were skipped \
                         (re-read pools() to catch up)"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
