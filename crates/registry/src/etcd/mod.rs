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
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cenote_core::{
    EndpointEntry, PoolEntry, Registry, RegistryError, RegistryEvent, WorkerEntry, WorkerId,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{broadcast, watch, Notify, RwLock};

use keys::{decode, encode, Keys};

// A watcher may fall as far behind as on the local registry.
use crate::WATCH_BUFFER;

/// The shortest deadline an operation may be given: below it nothing could
/// ever succeed.
const MIN_OP_TIMEOUT: Duration = Duration::from_millis(10);

/// Settings for [`EtcdRegistry`]; start with [`EtcdRegistry::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), cenote_core::RegistryError> {
/// use std::time::Duration;
/// use cenote_registry::EtcdRegistry;
///
/// let registry = EtcdRegistry::builder(["http://127.0.0.1:2379"])
///     .prefix("/myapp/cenote")
///     .node("host-a")
///     .lease_ttl(Duration::from_secs(10))
///     .op_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
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
    /// different prefixes do not see each other, so several applications
    /// (or test runs) can share one etcd.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The name written into entries' `node` field and log lines (default:
    /// `{hostname}-{pid}`), so an operator can tell whose entries they see.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// How long this node's entries outlive it if it dies (default 10 s;
    /// whole seconds, rounded up, at least 1 s). Shorter means a dead node
    /// vanishes sooner; longer tolerates longer stalls and outages.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Deadline for each etcd operation (default 3 s; at least 10 ms): no
    /// registry call waits longer than this for etcd.
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d.max(MIN_OP_TIMEOUT);
        self
    }

    /// Connect, take a lease, start keeping it alive, and start following
    /// changes under the prefix (so a [`watch`](Registry::watch) opened
    /// after this returns sees every later change).
    ///
    /// Fails with [`RegistryError::Unavailable`] (naming the endpoints) if
    /// etcd does not answer within the op timeout.
    pub async fn connect(self) -> Result<EtcdRegistry, RegistryError> {
        if self.endpoints.is_empty() {
            return Err(RegistryError::Unavailable(
                "no etcd endpoints given; pass at least one URL such as http://127.0.0.1:2379"
                    .into(),
            ));
        }
        let endpoints = self.endpoints.clone();
        let unavailable =
            move |e: String| RegistryError::Unavailable(format!("etcd at {endpoints:?}: {e}"));
        let opts = ConnectOptions::new()
            .with_connect_timeout(self.op_timeout)
            .with_timeout(self.op_timeout)
            // HTTP/2 pings notice a connection that died silently, so a
            // watch cannot hang on it forever.
            .with_keep_alive(self.op_timeout.max(Duration::from_secs(1)), self.op_timeout)
            .with_keep_alive_while_idle(true);
        let client = upkeep::within(
            self.op_timeout,
            Client::connect(&self.endpoints, Some(opts)),
        )
        .await
        .map_err(&unavailable)?;
        let ttl = i64::try_from(self.lease_ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let lease = upkeep::within(self.op_timeout, client.clone().lease_grant(ttl, None))
            .await
            .map_err(&unavailable)?
            .id();
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            node: self.node,
            keys: Keys::new(&self.prefix),
            ttl,
            op_timeout: self.op_timeout,
            client,
            gate: RwLock::new(()),
            lease: AtomicI64::new(lease),
            connected: AtomicBool::new(true),
            owned: Mutex::new(Owned::default()),
            events,
            resync: Notify::new(),
            repair: Notify::new(),
        });
        // Follow changes from the revision of a first full read, so nothing
        // written after `connect` returns can be missed.
        let follower = match upkeep::Follower::start(Arc::clone(&inner)).await {
            Ok(f) => f,
            Err(e) => {
                let _ = upkeep::within(inner.op_timeout, inner.client.clone().lease_revoke(lease))
                    .await;
                return Err(unavailable(e));
            }
        };
        tokio::spawn(upkeep::keep_lease(Arc::clone(&inner), stopped.clone()));
        tokio::spawn(follower.run(stopped));
        tracing::info!(node = %inner.node, lease, prefix = %self.prefix, "etcd registry connected");
        Ok(EtcdRegistry {
            inner,
            stop,
            revoked: AtomicBool::new(false),
        })
    }
}

/// A registry in etcd, shared by every node that uses the same prefix.
///
/// Pool names are global across those nodes: registration is one atomic etcd
/// transaction, so of two nodes racing for a name exactly one wins.
///
/// Dropping it stops its background tasks and, if a tokio runtime is still
/// running, revokes its lease so its entries vanish at once; if the process
/// dies instead, they vanish when the lease runs out.
/// [`shutdown`](EtcdRegistry::shutdown) does the same and waits for the
/// revocation.
pub struct EtcdRegistry {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    revoked: AtomicBool,
}

/// State shared with the background tasks.
pub(crate) struct Inner {
    pub node: String,
    pub keys: Keys,
    /// Lease TTL in seconds.
    pub ttl: i64,
    pub op_timeout: Duration,
    pub client: Client,
    /// Writers hold it shared; re-establishing the lease holds it
    /// exclusively, so no write can land on a lease being replaced (it
    /// would be lost when the old lease is revoked).
    pub gate: RwLock<()>,
    /// The lease this node's entries hang on.
    pub lease: AtomicI64,
    /// False from a lost keep-alive until the entries are written again.
    pub connected: AtomicBool,
    pub owned: Mutex<Owned>,
    pub events: broadcast::Sender<RegistryEvent>,
    /// Tells the change follower to re-read everything (after a reconnection).
    pub resync: Notify,
    /// Tells the lease task a write failed or was cut off, so etcd may no
    /// longer match what this node owns: it moves everything to a new lease
    /// (dropping whatever the failed write left on the old one).
    pub repair: Notify,
}

/// What this node wrote, to write again after etcd comes back.
#[derive(Default, Clone)]
pub(crate) struct Owned {
    pub pools: BTreeMap<String, PoolEntry>,
    pub workers: BTreeMap<(String, WorkerId), WorkerEntry>,
    /// Keyed by `(service, node)`.
    pub endpoints: BTreeMap<(String, String), EndpointEntry>,
}

impl EtcdRegistry {
    /// Settings for a registry on `endpoints` (e.g. `["http://127.0.0.1:2379"]`),
    /// with defaults: prefix `/cenote`, node `{hostname}-{pid}`, lease TTL
    /// 10 s, op timeout 3 s.
    pub fn builder<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdRegistryBuilder {
        EtcdRegistryBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/cenote".into(),
            node: default_node(),
            lease_ttl: Duration::from_secs(10),
            op_timeout: Duration::from_secs(3),
        }
    }

    /// The lease this node's entries hang on (it changes after a
    /// reconnection); useful to inspect them with `etcdctl`.
    pub fn lease_id(&self) -> i64 {
        self.inner.lease.load(Ordering::SeqCst)
    }

    /// False while etcd is unreachable (between a `Disconnected` and the
    /// next `Reconnected` event), so a caller can tell without watching.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    /// Stop the background tasks and revoke the lease now: every entry of
    /// this node disappears at once, rather than when the lease would have
    /// run out. Fails with `Unavailable` if etcd does not confirm in time
    /// (the entries then go when the lease runs out).
    pub async fn shutdown(self) -> Result<(), RegistryError> {
        let _ = self.stop.send(true);
        self.revoked.store(true, Ordering::SeqCst);
        // Let writes under way finish (bounded: each has the op timeout).
        let _gate = tokio::time::timeout(self.inner.op_timeout, self.inner.gate.write()).await;
        let lease = self.lease_id();
        {
            let mut owned = lock(&self.inner.owned);
            *owned = Owned::default();
        }
        self.inner
            .run(self.inner.client.clone().lease_revoke(lease))
            .await
            .map(|_| ())
    }
}

impl Drop for EtcdRegistry {
    /// Stops the background tasks and revokes the lease best-effort (only
    /// if a tokio runtime is running here; otherwise the entries go when
    /// the lease runs out).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if self.revoked.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut client = self.inner.client.clone();
        let lease = self.lease_id();
        let limit = self.inner.op_timeout;
        runtime.spawn(async move {
            if let Err(e) = upkeep::within(limit, client.lease_revoke(lease)).await {
                tracing::debug!(lease, error = %e, "lease not revoked on drop; it will run out");
            }
        });
    }
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("node", &self.inner.node)
            .field("lease", &self.lease_id())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// `{hostname}-{pid}`: unique per process on a host, readable in `etcdctl`.
fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

/// Armed around a write: if the write fails or its future is dropped
/// midway, etcd may hold something this node no longer owns (or miss
/// something it does), so the lease task is asked to repair.
struct Pending<'a> {
    inner: &'a Inner,
    settled: bool,
}

impl<'a> Pending<'a> {
    fn new(inner: &'a Inner) -> Self {
        Pending {
            inner,
            settled: false,
        }
    }

    /// The write has a definite outcome; nothing to repair.
    fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.inner.repair.notify_one();
        }
    }
}

impl Inner {
    /// Wait (at most the op timeout) until no lease change is under way,
    /// and keep it from starting until the guard drops.
    async fn shared_gate(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, RegistryError> {
        tokio::time::timeout(self.op_timeout, self.gate.read())
            .await
            .map_err(|_| {
                RegistryError::Unavailable(format!(
                    "etcd registry is re-establishing its lease; no write possible within {:?}",
                    self.op_timeout
                ))
            })
    }

    /// One etcd operation under the op deadline.
    pub async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        upkeep::within(self.op_timeout, fut)
            .await
            .map_err(|e| RegistryError::Unavailable(format!("etcd: {e}")))
    }

    /// Put options attaching a key to the current lease. Call with the gate
    /// held.
    fn with_lease(&self) -> PutOptions {
        PutOptions::new().with_lease(self.lease.load(Ordering::SeqCst))
    }

    /// Write `entry` at `key` on the current lease. Call with the gate held.
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

    /// Write one entry this node owns (already recorded in `owned`): should
    /// the write fail or be cut off, the lease task repairs, so etcd ends up
    /// holding exactly what is owned.
    async fn put_owned(&self, key: String, value: Vec<u8>) -> Result<(), RegistryError> {
        let pending = Pending::new(self);
        let _gate = self.shared_gate().await?;
        self.run(self.client.clone().put(key, value, Some(self.with_lease())))
            .await?;
        pending.settled();
        Ok(())
    }

    /// Delete one entry this node no longer owns (already dropped from
    /// `owned`), repaired like [`put_owned`](Self::put_owned) on failure.
    async fn delete_owned(&self, key: String) -> Result<(), RegistryError> {
        let pending = Pending::new(self);
        let _gate = self.shared_gate().await?;
        self.run(self.client.clone().delete(key, None)).await?;
        pending.settled();
        Ok(())
    }

    /// Every entry under `prefix` that decodes (bad ones are logged and
    /// skipped, so one corrupt key cannot hide all the others).
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
            .filter_map(|kv| decode(&String::from_utf8_lossy(kv.key()), kv.value()).ok())
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
        let value = encode(&entry)?;
        let _gate = self.inner.shared_gate().await?;
        // Should the answer be lost, the put may still have happened: the
        // repair then takes the key away again, as the error says.
        let pending = Pending::new(&self.inner);
        // Atomic: the put happens only if the key does not exist (never
        // created, or deleted) — no check-then-act race between nodes.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, Some(self.inner.with_lease()))]);
        let resp = self.inner.run(self.inner.client.clone().txn(txn)).await?;
        pending.settled();
        if !resp.succeeded() {
            return Err(RegistryError::Duplicate(entry.name));
        }
        lock(&self.inner.owned)
            .pools
            .insert(entry.name.clone(), entry);
        Ok(())
    }

    async fn unregister_pool(&self, name: &str) -> Result<(), RegistryError> {
        // Forgotten at once: should the delete fail, the repair (or the
        // lease running out) takes the keys away.
        {
            let mut owned = lock(&self.inner.owned);
            owned.pools.remove(name);
            owned.workers.retain(|(pool, _), _| pool != name);
        }
        let pending = Pending::new(&self.inner);
        let _gate = self.inner.shared_gate().await?;
        let keys = &self.inner.keys;
        // One transaction: the workers and the pool go together (watchers
        // see the workers' deletions first, then the pool's).
        let txn = Txn::new().and_then([
            TxnOp::delete(keys.workers(name), Some(DeleteOptions::new().with_prefix())),
            TxnOp::delete(keys.pool(name), None),
        ]);
        self.inner.run(self.inner.client.clone().txn(txn)).await?;
        pending.settled();
        Ok(())
    }

    async fn put_worker(&self, entry: WorkerEntry) -> Result<(), RegistryError> {
        let key = self.inner.keys.worker(&entry.pool, entry.id);
        // An entry etcd would refuse is refused before it counts as owned.
        let value = encode(&entry)?;
        // Kept even if the write fails: the repair (or the reconnection)
        // writes it.
        lock(&self.inner.owned)
            .workers
            .insert((entry.pool.clone(), entry.id), entry);
        self.inner.put_owned(key, value).await
    }

    async fn remove_worker(&self, pool: &str, id: WorkerId) -> Result<(), RegistryError> {
        lock(&self.inner.owned)
            .workers
            .remove(&(pool.to_string(), id));
        self.inner
            .delete_owned(self.inner.keys.worker(pool, id))
            .await
    }

    async fn put_endpoint(&self, entry: EndpointEntry) -> Result<(), RegistryError> {
        let key = self.inner.keys.endpoint(&entry.service, &entry.node);
        let value = encode(&entry)?;
        lock(&self.inner.owned)
            .endpoints
            .insert((entry.service.clone(), entry.node.clone()), entry);
        self.inner.put_owned(key, value).await
    }

    async fn remove_endpoint(&self, service: &str, node: &str) -> Result<(), RegistryError> {
        lock(&self.inner.owned)
            .endpoints
            .remove(&(service.to_string(), node.to_string()));
        self.inner
            .delete_owned(self.inner.keys.endpoint(service, node))
            .await
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

    async fn endpoints(&self) -> Result<Vec<EndpointEntry>, RegistryError> {
        let mut endpoints: Vec<EndpointEntry> =
            self.inner.list(self.inner.keys.endpoints()).await?;
        endpoints.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
        Ok(endpoints)
    }

    /// The lease TTL (whole seconds): how long this registry's entries
    /// outlive it if it stops keeping them alive.
    fn lease_ttl(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.inner.ttl.unsigned_abs()))
    }

    /// Changes under the prefix from every node, decoded (undecodable
    /// values are logged and skipped), plus this registry's own
    /// `Disconnected`/`Reconnected`. After an outage the registry re-reads
    /// everything and reports what changed meanwhile as Up/Down events; a
    /// node that writes its entries again (after an outage, or to repair a
    /// failed write) shows them as Up events even if they did not change. A
    /// watcher more than 4096 events behind skips the oldest ones.
    fn watch(&self) -> BoxStream<'static, RegistryEvent> {
        crate::broadcast_stream(self.inner.events.subscribe()).boxed()
    }
}

/// The owned-entries lock; a panic elsewhere while holding it cannot make
/// the registry unusable.
pub(crate) fn lock(m: &Mutex<Owned>) -> std::sync::MutexGuard<'_, Owned> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
