//! `LocalRegistry`: pools and workers of this process, in DashMaps.

use std::any::Any;
use std::sync::Arc;

use cenote_core::{PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;

/// How many unread events a watcher may fall behind before it misses some.
const WATCH_BUFFER: usize = 4096;

/// A registry in this process's memory: the default, with no server.
///
/// Besides the [`Registry`] entries it can hold a typed handle per pool name
/// ([`attach`](Self::attach), [`pool`](Self::pool)), so an application that
/// runs several pools side by side finds them by name.
///
/// Watchers are fed through a broadcast channel: a writer never waits for a
/// slow watcher. A watcher that falls more than 4096 events behind skips the
/// oldest ones (it can re-read [`pools`](Registry::pools) to catch up).
#[derive(Clone)]
pub struct LocalRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    pools: DashMap<String, PoolEntry>,
    workers: DashMap<String, DashMap<WorkerId, WorkerEntry>>,
    handles: DashMap<String, Arc<dyn Any + Send + Sync>>,
    events: broadcast::Sender<RegistryEvent>,
}

impl LocalRegistry {
    /// An empty registry whose entries name `node`.
    pub fn new(node: impl Into<String>) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        LocalRegistry {
            inner: Arc::new(Inner {
                node: node.into(),
                pools: DashMap::new(),
                workers: DashMap::new(),
                handles: DashMap::new(),
                events,
            }),
        }
    }

    /// Keep `handle` (e.g. a `Pool`) under `name`. A name holds one handle;
    /// a second attach is [`RegistryError::Duplicate`].
    pub fn attach<T: Clone + Send + Sync + 'static>(
        &self,
        name: &str,
        handle: T,
    ) -> Result<(), RegistryError> {
        match self.inner.handles.entry(name.to_string()) {
            Entry::Occupied(_) => Err(RegistryError::Duplicate(name.to_string())),
            Entry::Vacant(v) => {
                v.insert(Arc::new(handle));
                Ok(())
            }
        }
    }

    /// The handle attached under `name`, if there is one of type `T`.
    pub fn pool<T: Clone + Send + Sync + 'static>(&self, name: &str) -> Option<T> {
        let handle = self.inner.handles.get(name)?;
        handle.value().downcast_ref::<T>().cloned()
    }

    /// Drop the handle attached under `name`; true if there was one.
    pub fn detach(&self, name: &str) -> bool {
        self.inner.handles.remove(name).is_some()
    }

    fn emit(&self, event: RegistryEvent) {
        // No receivers is fine: nobody watches.
        let _ = self.inner.events.send(event);
    }
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("node", &self.inner.node)
            .field("pools", &self.inner.pools.len())
            .finish()
    }
}

#[async_trait::async_trait]
impl Registry for LocalRegistry {
    fn node(&self) -> &str {
        &self.inner.node
    }

    async fn register_pool(&self, entry: PoolEntry) -> Result<(), RegistryError> {
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
        self.inner
            .workers
            .entry(entry.pool.clone())
            .or_default()
            .insert(entry.id, entry.clone());
        self.emit(RegistryEvent::WorkerUp(entry));
        Ok(())
    }

    async fn remove_worker(&self, pool: &str, id: WorkerId) -> Result<(), RegistryError> {
        let removed = self
            .inner
            .workers
            .get(pool)
            .and_then(|ws| ws.remove(&id))
            .is_some();
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

    fn watch(&self) -> BoxStream<'static, RegistryEvent> {
        crate::broadcast_stream(self.inner.events.subscribe()).boxed()
    }
}
