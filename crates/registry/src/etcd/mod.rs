//! `EtcdRegistry`: pools and workers shared across machines through etcd.
//!
//! Every entry this node writes is attached to one lease, which a background
//! task keeps alive. If the node dies, the lease runs out and etcd deletes
//! its entries by itself — no other node has to clean up after it.
//!
//! When etcd cannot be reached, the registry says so (a
//! [`Disconnected`](RegistryEvent::Disconnected) event and a warning) and
//! retries with capped backoff. It keeps its own copy of what this node
//! owns, so when etcd is back it takes a new lease, writes everything again
//! and says [`Reconnected`](RegistryEvent::Reconnected). Writes made while
//! disconnected fail with `Unavailable` but are kept and written on
//! reconnection.

mod keys;
mod upkeep;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cenote_core::{PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use keys::{decode, encode, Keys};

/// How many unread events a watcher may fall behind before it misses some.
const WATCH_BUFFER: usize = 4096;

/// Settings for [`EtcdRegistry`]; start with [`EtcdRegistry::builder`].
#[derive(Debug, Clone)]
pub struct EtcdRegistryBuilder {
    endpoints: Vec<String>,
    prefix: String,
    node: String,
    lease_ttl: Duration,
    op_timeout: Duration,
}

impl EtcdRegistryBuilder {
    /// Key prefix for every entry (default `/cenote`): registries with
    /// different prefixes do not see each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The name written into entries' `node` field (default: the host name).
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// How long this node's entries outlive it (default 10 s; at least 1 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Deadline for each etcd operation (default 3 s).
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Connect, take a lease, and start keeping it alive.
    pub async fn connect(self) -> Result<EtcdRegistry, RegistryError> {
        let unavailable =
            |e: String| RegistryError::Unavailable(format!("etcd at {:?}: {e}", self.endpoints));
        let opts = ConnectOptions::new()
            .with_connect_timeout(self.op_timeout)
            .with_timeout(self.op_timeout);
        let client = within(
            self.op_timeout,
            Client::connect(&self.endpoints, Some(opts)),
        )
        .await
        .map_err(unavailable)?;
        let ttl = self.lease_ttl.as_secs() as i64;
        let lease = within(self.op_timeout, client.clone().lease_grant(ttl, None))
            .await
            .map_err(unavailable)?
            .id();
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            node: self.node,
            keys: Keys::new(&self.prefix),
            ttl,
            op_timeout: self.op_timeout,
            client,
            lease: AtomicI64::new(lease),
            owned: Mutex::new(Owned::default()),
            events,
        });
        tokio::spawn(upkeep::keep_lease(Arc::clone(&inner), stopped.clone()));
        tokio::spawn(upkeep::forward_changes(Arc::clone(&inner), stopped));
        tracing::info!(node = %inner.node, lease, "etcd registry connected");
        Ok(EtcdRegistry { inner, stop })
    }
}

/// A registry in etcd, shared by every node that uses the same prefix.
pub struct EtcdRegistry {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
}

pub(crate) struct Inner {
    pub node: String,
    pub keys: Keys,
    pub ttl: i64,
    pub op_timeout: Duration,
    pub client: Client,
    pub lease: AtomicI64,
    pub owned: Mutex<Owned>,
    pub events: broadcast::Sender<RegistryEvent>,
}

/// What this node wrote, to write again after etcd comes back.
#[derive(Default, Clone)]
pub(crate) struct Owned {
    pub pools: BTreeMap<String, PoolEntry>,
    pub workers: BTreeMap<String, WorkerEntry>,
}

impl EtcdRegistry {
    /// Settings for a registry on `endpoints` (e.g. `["http://127.0.0.1:2379"]`).
    pub fn builder<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdRegistryBuilder {
        EtcdRegistryBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/cenote".into(),
            node: std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into()),
            lease_ttl: Duration::from_secs(10),
            op_timeout: Duration::from_secs(3),
        }
    }

    /// The lease this node's entries hang on (changes after a reconnection).
    pub fn lease_id(&self) -> i64 {
        self.inner.lease.load(Ordering::SeqCst)
    }

    /// Revoke the lease now: every entry of this node disappears at once,
    /// rather than when the lease would have run out.
    pub async fn shutdown(self) -> Result<(), RegistryError> {
        let _ = self.stop.send(true);
        let lease = self.lease_id();
        self.inner
            .run(self.inner.client.clone().lease_revoke(lease))
            .await
            .map(|_| ())
    }
}

impl Drop for EtcdRegistry {
    /// Stops the background tasks; the entries stay until the lease runs out
    /// (or use [`shutdown`](EtcdRegistry::shutdown) to remove them now).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("node", &self.inner.node)
            .field("lease", &self.lease_id())
            .finish()
    }
}

/// Run `fut` under `limit`, flattening both failures into a message.
pub(crate) async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

impl Inner {
    /// One etcd operation under the op deadline.
    pub async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        within(self.op_timeout, fut)
            .await
            .map_err(RegistryError::Unavailable)
    }

    fn with_lease(&self) -> PutOptions {
        PutOptions::new().with_lease(self.lease.load(Ordering::SeqCst))
    }

    pub async fn put<T: serde::Serialize>(
        &self,
        key: String,
        entry: &T,
    ) -> Result<(), RegistryError> {
        let value = encode(entry)?;
        self.run(self.client.clone().put(key, value, Some(self.with_lease())))
            .await
            .map(|_| ())
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        prefix: String,
    ) -> Result<Vec<T>, RegistryError> {
        let resp = self
            .run(
                self.client
                    .clone()
                    .get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| decode(kv.key_str().unwrap_or_default(), kv.value()).ok())
            .collect())
    }
}

#[async_trait::async_trait]
impl Registry for EtcdRegistry {
    fn node(&self) -> &str {
        &self.inner.node
    }

    async fn register_pool(&self, entry: PoolEntry) -> Result<(), RegistryError> {
        let key = self.inner.keys.pool(&entry.name);
        // Atomic: the put happens only if the key has never been created
        // (or was deleted) — no check-then-act race between nodes.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                encode(&entry)?,
                Some(self.inner.with_lease()),
            )]);
        let resp = self.inner.run(self.inner.client.clone().txn(txn)).await?;
        if !resp.succeeded() {
            return Err(RegistryError::Duplicate(entry.name));
        }
        lock(&self.inner.owned)
            .pools
            .insert(entry.name.clone(), entry);
        Ok(())
    }

    async fn unregister_pool(&self, name: &str) -> Result<(), RegistryError> {
        {
            let mut owned = lock(&self.inner.owned);
            owned.pools.remove(name);
            owned.workers.retain(|_, w| w.pool != name);
        }
        let keys = &self.inner.keys;
        let mut client = self.inner.client.clone();
        self.inner
            .run(client.delete(keys.workers(name), Some(DeleteOptions::new().with_prefix())))
            .await?;
        self.inner
            .run(client.delete(keys.pool(name), None))
            .await
            .map(|_| ())
    }

    async fn put_worker(&self, entry: WorkerEntry) -> Result<(), RegistryError> {
        let key = self.inner.keys.worker(&entry.pool, entry.id);
        // Kept even if the write fails: it is written again on reconnection.
        lock(&self.inner.owned)
            .workers
            .insert(key.clone(), entry.clone());
        self.inner.put(key, &entry).await
    }

    async fn remove_worker(&self, pool: &str, id: WorkerId) -> Result<(), RegistryError> {
        let key = self.inner.keys.worker(pool, id);
        lock(&self.inner.owned).workers.remove(&key);
        self.inner
            .run(self.inner.client.clone().delete(key, None))
            .await
            .map(|_| ())
    }

    async fn pools(&self) -> Result<Vec<PoolEntry>, RegistryError> {
        let mut pools: Vec<PoolEntry> = self.inner.list(self.inner.keys.pools()).await?;
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    async fn workers(&self, pool: &str) -> Result<Vec<WorkerEntry>, RegistryError> {
        let mut workers: Vec<WorkerEntry> = self.inner.list(self.inner.keys.workers(pool)).await?;
        workers.sort_by_key(|w| w.id);
        Ok(workers)
    }

    fn watch(&self) -> BoxStream<'static, RegistryEvent> {
        crate::broadcast_stream(self.inner.events.subscribe()).boxed()
    }
}

/// The owned-entries lock; a panic elsewhere while holding it cannot make
/// the registry unusable.
pub(crate) fn lock(m: &Mutex<Owned>) -> std::sync::MutexGuard<'_, Owned> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
