//! Registries for cenote pools: where pools and their workers can be found.
//!
//! [`LocalRegistry`] keeps everything in this process (DashMap) and needs no
//! server; `EtcdRegistry` (feature `etcd`) shares entries across machines
//! through etcd. A pool sees only the [`Registry`](cenote_core::Registry)
//! trait.
//!
//! ```
//! use cenote_core::{PoolEntry, Registry};
//! use cenote_registry::LocalRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = LocalRegistry::new("node-a");
//! let entry = PoolEntry {
//!     name: "embed".into(),
//!     node: "node-a".into(),
//!     idle_strategy: "lifo".into(),
//!     wait_strategy: "fifo".into(),
//!     size: 4,
//!     max_overflow: 0,
//! };
//! registry.register_pool(entry.clone()).await.unwrap();
//! assert!(registry.register_pool(entry).await.is_err(), "a name is registered once");
//!
//! // Typed handles: find an application's pools by name.
//! registry.attach("embed", 42_u32).unwrap();
//! assert_eq!(registry.pool::<u32>("embed"), Some(42));
//! assert_eq!(registry.pool::<String>("embed"), None);
//! # }
//! ```

#[cfg(feature = "etcd")]
mod etcd;
mod local;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdRegistry, EtcdRegistryBuilder};
pub use local::LocalRegistry;

use cenote_core::RegistryEvent;
use tokio::sync::broadcast;

/// A watcher's view of a broadcast channel: a writer never waits for a slow
/// watcher; a watcher more than the channel's capacity behind skips the
/// oldest events (and can re-read `pools()` to catch up).
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
                        "registry watcher fell behind; oldest events skipped"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
