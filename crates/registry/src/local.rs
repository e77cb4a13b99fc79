//! `LocalRegistry`: pools and workers of this process, in DashMaps.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

use cenote_core::{
    EndpointEntry, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId,
};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;

/// How many unread events a watcher may fall behind before it misses some.
pub const WATCH_BUFFER: usize = 4096;

/// Why a typed handle could not be attached or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Nothing is attached under the name.
    #[error("no handle is attached under {0:?}; attach one with LocalRegistry::attach first")]
    NotFound(String),
    /// Something is attached under the name, but not of the type asked for.
    #[error("the handle attached under {name:?} is a `{found}`, not the `{wanted}` asked for")]
    WrongType {
        /// The name looked up.
        name: String,
        /// The type asked for.
        wanted: &'static str,
        /// The type attached.
        found: &'static str,
    },
    /// A handle is already attached under the name.
    #[error("a handle is already attached under {0:?}; detach it first or pick another name")]
    Duplicate(String),
}

/// A registry in this process's memory: the default, with no server.
///
/// Cloning is cheap and every clone sees the same entries. So does
/// [`as_node`](Self::as_node), which writes under another node's name: several
/// nodes in one process (a test, a single-machine cluster) share one registry.
///
/// Besides the [`Registry`] entries it can hold a typed handle per name
/// ([`attach`](Self::attach), [`pool`](Self::pool), [`handle`](Self::handle)),
/// so an application that runs several pools side by side finds them by
/// name. Handles and entries are separate: the pool writes its entries
/// itself, the application attaches the handle it wants to find later.
///
/// Watchers are fed through a broadcast channel, so a writer never waits
/// for a slow watcher. A watcher that falls more than [`WATCH_BUFFER`]
/// events behind skips the oldest ones: its stream goes on with the
/// oldest events still buffered, and a warning says how many were missed.
/// Such a watcher can re-read [`pools`](Registry::pools) and
/// [`workers`](Registry::workers) to catch up.
#[derive(Clone)]
pub struct LocalRegistry {
    inner: Arc<Inner>,
    node: Arc<str>,
}

struct Inner {
    pools: DashMap<String, PoolEntry>,
    workers: DashMap<String, DashMap<WorkerId, WorkerEntry>>,
    /// Keyed by `(service, node)`.
    endpoints: DashMap<(String, String), EndpointEntry>,
    handles: DashMap<String, Handle>,
    events: broadcast::Sender<RegistryEvent>,
    /// Held by every write across its change and its event, so watchers see
    /// events in the order the changes were made. Reads do not take it.
    writes: Mutex<()>,
}

/// A handle, with the name of its type for error messages.
struct Handle {
    value: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl LocalRegistry {
    /// An empty registry whose entries name `node`.
    pub fn new(node: impl Into<String>) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        LocalRegistry {
            node: node.into().into(),
            inner: Arc::new(Inner {
                pools: DashMap::new(),
                workers: DashMap::new(),
                endpoints: DashMap::new(),
                handles: DashMap::new(),
                events,
                writes: Mutex::new(()),
            }),
        }
    }

    /// The same registry, as node `node` sees it: every entry and handle is
    /// shared, and [`Registry::node`] names `node`.
    pub fn as_node(&self, node: impl Into<String>) -> Self {
        LocalRegistry {
            inner: Arc::clone(&self.inner),
            node: node.into().into(),
        }
    }

    /// Keep `handle` (e.g. a `Pool` or an `Arc` of one) under `name`, to be
    /// found again with [`pool`](Self::pool). A name holds one handle: a
    /// second attach is [`HandleError::Duplicate`], never a silent swap.
    pub fn attach<T: Clone + Send + Sync + 'static>(
        &self,
        name: &str,
        handle: T,
    ) -> Result<(), HandleError> {
        match self.inner.handles.entry(name.to_string()) {
            Entry::Occupied(_) => Err(HandleError::Duplicate(name.to_string())),
            Entry::Vacant(v) => {
                v.insert(Handle {
                    value: Arc::new(handle),
                    type_name: std::any::type_name::<T>(),
                });
                Ok(())
            }
        }
    }

    /// A clone of the handle attached under `name`, if there is one of type
    /// `T` (`None` for a missing name or another type; use
    /// [`handle`](Self::handle) to learn which).
    pub fn pool<T: Clone + Send + Sync + 'static>(&self, name: &str) -> Option<T> {
        self.handle(name).ok()
    }

    /// A clone of the handle attached under `name`, or why there is none:
    /// [`HandleError::NotFound`] or [`HandleError::WrongType`] (naming both
    /// types).
    pub fn handle<T: Clone + Send + Sync + 'static>(&self, name: &str) -> Result<T, HandleError> {
        let handle = self
            .inner
            .handles
            .get(name)
            .ok_or_else(|| HandleError::NotFound(name.to_string()))?;
        handle
            .value
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| HandleError::WrongType {
                name: name.to_string(),
                wanted: std::any::type_name::<T>(),
                found: handle.type_name,
            })
    }

    /// Drop the handle attached under `name` (the pool itself lives on
    /// while other clones of it do); true if there was one.
    pub fn detach(&self, name: &str) -> bool {
        self.inner.handles.remove(name).is_some()
    }

    /// The names that have a handle attached, sorted.
    pub fn handles(&self) -> Vec<String> {
        let mut names: Vec<_> = self.inner.handles.iter().map(|h| h.key().clone()).collect();
        names.sort();
        names
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it broken.
        self.inner
            .writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, event: RegistryEvent) {
        // No receivers is fine: nobody watches.
        let _ = self.inner.events.send(event);
    }
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("node", &self.node)
            .field("pools", &self.inner.pools.len())
            .field("handles", &self.inner.handles.len())
            .finish()
    }
}

#[async_trait::async_trait]
impl Registry for LocalRegistry {
    fn node(&self) -> &str {
        &self.node
    }

    async fn register_pool(&self, entry: PoolEntry) -> Result<(), RegistryError> {
        let _writes = self.write_lock();
        match self.inner.pools.entry(entry.name.clone()) {
            Entry::Occupied(_) => return Err(RegistryError::Duplicate(entry.name)),
            Entry::Vacant(v) => {
                v.insert(entry.clone());
            }
        }
        self.emit(RegistryEvent::PoolUp(entry));
        Ok(())
    }

    async fn unregister_pool(&self, name: &str) -> Result<(), RegistryError> {
        let _writes = self.write_lock();
        if let Some((_, workers)) = self.inner.workers.remove(name) {
            let mut ids: Vec<_> = workers.iter().map(|w| *w.key()).collect();
            ids.sort();
            for id in ids {
                self.emit(RegistryEvent::WorkerDown {
                    pool: name.to_string(),
                    id,
                });
            }
        }
        if self.inner.pools.remove(name).is_some() {
            self.emit(RegistryEvent::PoolDown {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    async fn put_worker(&self, entry: WorkerEntry) -> Result<(), RegistryError> {
        let _writes = self.write_lock();
        self.inner
            .workers
            .entry(entry.pool.clone())
            .or_default()
            .insert(entry.id, entry.clone());
        self.emit(RegistryEvent::WorkerUp(entry));
        Ok(())
    }

    async fn remove_worker(&self, pool: &str, id: WorkerId) -> Result<(), RegistryError> {
        let _writes = self.write_lock();
        let removed = match self.inner.workers.get(pool) {
            Some(workers) => workers.remove(&id).is_some(),
            None => false,
        };
        // A pool whose last worker went leaves no empty map behind.
        self.inner
            .workers
            .remove_if(pool, |_, workers| workers.is_empty());
        if removed {
            self.emit(RegistryEvent::WorkerDown {
                pool: pool.to_string(),
                id,
            });
        }
        Ok(())
    }

    async fn pools(&self) -> Result<Vec<PoolEntry>, RegistryError> {
        let mut pools: Vec<_> = self.inner.pools.iter().map(|p| p.value().clone()).collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    async fn workers(&self, pool: &str) -> Result<Vec<WorkerEntry>, RegistryError> {
        let mut workers: Vec<_> = match self.inner.workers.get(pool) {
            Some(ws) => ws.iter().map(|w| w.value().clone()).collect(),
            None => Vec::new(),
        };
        workers.sort_by_key(|w| w.id);
        Ok(workers)
    }

    async fn put_endpoint(&self, entry: EndpointEntry) -> Result<(), RegistryError> {
        let _writes = self.write_lock();
        self.inner
            .endpoints
            .insert((entry.service.clone(), entry.node.clone()), entry.clone());
        self.emit(RegistryEvent::EndpointUp(entry));
        Ok(())
    }

    async fn remove_endpoint(&self, service: &str, node: &str) -> Result<(), RegistryError> {
        let _writes = self.write_lock();
        let key = (service.to_string(), node.to_string());
        if self.inner.endpoints.remove(&key).is_some() {
            let (service, node) = key;
            self.emit(RegistryEvent::EndpointDown { service, node });
        }
        Ok(())
    }

    async fn endpoints(&self) -> Result<Vec<EndpointEntry>, RegistryError> {
        let mut endpoints: Vec<_> = self
            .inner
            .endpoints
            .iter()
            .map(|e| e.value().clone())
            .collect();
        endpoints.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
        Ok(endpoints)
    }

    /// Changes from now on, in the order they were made. A watcher more
    /// than [`WATCH_BUFFER`] events behind skips the oldest ones (see the
    /// type's docs).
    fn watch(&self) -> BoxStream<'static, RegistryEvent> {
        crate::broadcast_stream(self.inner.events.subscribe()).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct FakePool(&'static str);

    #[test]
    fn handles_are_found_by_name_and_type() {
        let reg = LocalRegistry::new("n");
        reg.attach("fifo", FakePool("a")).unwrap();
        reg.attach("lifo", Arc::new(7_u64)).unwrap();
        assert_eq!(reg.pool::<FakePool>("fifo"), Some(FakePool("a")));
        assert_eq!(reg.pool::<Arc<u64>>("lifo").as_deref(), Some(&7));
        assert_eq!(reg.handles(), ["fifo", "lifo"]);

        // A wrong type or name is an answer, never a panic.
        assert_eq!(reg.pool::<u64>("fifo"), None);
        assert_eq!(reg.pool::<FakePool>("nope"), None);
        let err = reg.handle::<u64>("fifo").unwrap_err();
        assert!(matches!(err, HandleError::WrongType { .. }));
        let msg = err.to_string();
        assert!(msg.contains("FakePool") && msg.contains("u64"), "{msg}");
        assert_eq!(
            reg.handle::<FakePool>("nope"),
            Err(HandleError::NotFound("nope".into()))
        );

        // One handle per name, until detached.
        assert_eq!(
            reg.attach("fifo", FakePool("b")),
            Err(HandleError::Duplicate("fifo".into()))
        );
        assert_eq!(reg.pool::<FakePool>("fifo"), Some(FakePool("a")));
        assert!(reg.detach("fifo"));
        assert!(!reg.detach("fifo"));
        reg.attach("fifo", FakePool("b")).unwrap();
        assert_eq!(reg.pool::<FakePool>("fifo"), Some(FakePool("b")));
    }

    #[test]
    fn clones_share_everything() {
        let reg = LocalRegistry::new("n");
        let other = reg.clone();
        reg.attach("x", 1_i32).unwrap();
        assert_eq!(other.pool::<i32>("x"), Some(1));
    }

    #[tokio::test]
    async fn another_nodes_view_shares_entries_under_its_own_name() {
        let a = LocalRegistry::new("a");
        let b = a.as_node("b");
        assert_eq!((a.node(), b.node()), ("a", "b"));
        let mut events = a.watch();
        let entry = cenote_core::EndpointEntry {
            service: "s".into(),
            node: b.node().into(),
            addr: "http://127.0.0.1:1".into(),
            load: Default::default(),
        };
        b.put_endpoint(entry.clone()).await.unwrap();
        assert_eq!(a.endpoints().await.unwrap(), std::slice::from_ref(&entry));
        assert_eq!(
            futures::StreamExt::next(&mut events).await,
            Some(RegistryEvent::EndpointUp(entry))
        );
        b.attach("h", 2_u8).unwrap();
        assert_eq!(a.pool::<u8>("h"), Some(2));
    }
}
