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

mod local;

pub use local::LocalRegistry;
