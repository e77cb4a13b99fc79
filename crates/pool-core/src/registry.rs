//! The [`Registry`] contract: where pools and their workers can be found.
//!
//! A pool writes to its registry through one ordered background writer (see
//! `pool::registry_writer`), so entries never go back in time: a worker's
//! removal cannot be overtaken by an older update. Writes happen when a pool
//! opens and closes and when a worker starts, becomes ready, recycles and
//! ends — never per checkout, so a remote registry costs nothing on the hot
//! path.
//!
//! Besides pools and workers, a registry holds *endpoints*: a service one
//! node offers to others (say, a pool served over the network), where to
//! reach it and how busy it is. Pool names are unique in a registry;
//! endpoints are keyed by service *and* node, so many nodes can offer the
//! same service and a caller can choose among them by load.

use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::worker::WorkerId;

/// A pool as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEntry {
    /// Unique name within a registry.
    pub name: String,
    /// The node (host or process) that runs the pool.
    pub node: String,
    /// Strategy ordering idle workers (its type name).
    pub idle_strategy: String,
    /// Strategy ordering waiting callers (its type name).
    pub wait_strategy: String,
    /// Warm size.
    pub size: usize,
    /// Extra workers allowed on demand.
    pub max_overflow: usize,
}

/// Where a worker is in its life, as far as the registry is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Its factory is running.
    Starting,
    /// Serving (idle or busy: that changes too often to publish).
    Ready,
    /// Being repaired after an abandoned operation, or health-checked.
    Recycling,
    /// Being shut down.
    Retiring,
}

/// A worker as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// The pool it belongs to.
    pub pool: String,
    /// Its id within that pool.
    pub id: WorkerId,
    /// The node that runs it.
    pub node: String,
    /// Its OS process id, where it has one.
    pub pid: Option<u32>,
    /// Its state.
    pub state: WorkerState,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Tasks it has served.
    pub tasks_served: u64,
}

/// How busy a served pool is, as its node last published it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Load {
    /// Workers free to take a call now.
    pub idle: usize,
    /// Workers serving a call (or being recycled).
    pub busy: usize,
    /// Callers waiting for a worker.
    pub waiting: usize,
    /// Live workers: idle, busy and starting.
    pub live: usize,
}

/// A service one node offers to the others: where to reach it and how busy
/// it is. Unlike pool names, which are unique, every node may publish an
/// endpoint of the same service: entries are keyed by `(service, node)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEntry {
    /// What is offered, e.g. the name a pool is served under.
    pub service: String,
    /// The node that offers it.
    pub node: String,
    /// Where to reach it, as a URL (e.g. `http://10.0.0.5:7400`).
    pub addr: String,
    /// Its load when it was last written.
    pub load: Load,
}

/// A change seen through [`Registry::watch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryEvent {
    /// A pool was registered (or its entry changed).
    PoolUp(PoolEntry),
    /// A pool's entry went away (unregistered, or its node's lease expired).
    PoolDown {
        /// The pool's name.
        name: String,
    },
    /// A worker entry was written.
    WorkerUp(WorkerEntry),
    /// A worker entry went away.
    WorkerDown {
        /// The worker's pool.
        pool: String,
        /// The worker's id.
        id: WorkerId,
    },
    /// An endpoint was published (or its entry, e.g. its load, changed).
    EndpointUp(EndpointEntry),
    /// An endpoint went away (withdrawn, or its node's lease expired).
    EndpointDown {
        /// The service it offered.
        service: String,
        /// The node that offered it.
        node: String,
    },
    /// The backend cannot be reached; the registry retries in the background.
    Disconnected {
        /// Why, as the backend said it.
        reason: String,
    },
    /// The backend is back and this node's entries were written again.
    Reconnected,
}

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A pool name was registered twice.
    #[error("a pool named {0:?} is already registered; pick another name or unregister the old pool first")]
    Duplicate(String),
    /// The name is not registered.
    #[error("no pool named {0:?} is registered")]
    NotFound(String),
    /// The backend could not be reached or refused the operation.
    #[error("registry backend unavailable: {0}")]
    Unavailable(String),
    /// An entry in the backend could not be decoded.
    #[error("registry entry at {key:?} is not valid: {reason}")]
    Corrupt {
        /// The key that holds the bad entry.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Maps names to pools and pools to workers. Pool code sees only this trait.
///
/// `dyn`-safe (a pool holds an `Arc<dyn Registry>`), hence `async_trait`.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
    /// The name this registry writes into entries' `node` field.
    fn node(&self) -> &str;

    /// Register a pool. A name already registered is [`RegistryError::Duplicate`].
    async fn register_pool(&self, entry: PoolEntry) -> Result<(), RegistryError>;

    /// Remove a pool and every worker entry under it.
    async fn unregister_pool(&self, name: &str) -> Result<(), RegistryError>;

    /// Write (insert or replace) a worker entry.
    async fn put_worker(&self, entry: WorkerEntry) -> Result<(), RegistryError>;

    /// Remove a worker entry; removing one that is absent is not an error.
    async fn remove_worker(&self, pool: &str, id: WorkerId) -> Result<(), RegistryError>;

    /// Every pool registered, on every node this registry can see.
    async fn pools(&self) -> Result<Vec<PoolEntry>, RegistryError>;

    /// One pool's workers, sorted by id.
    async fn workers(&self, pool: &str) -> Result<Vec<WorkerEntry>, RegistryError>;

    /// Publish (insert or replace) an endpoint. Entries are keyed by
    /// `(service, node)`: a second put for the same pair replaces the first
    /// (that is how load updates are written), and other nodes' endpoints of
    /// the same service are untouched.
    async fn put_endpoint(&self, entry: EndpointEntry) -> Result<(), RegistryError>;

    /// Withdraw an endpoint; withdrawing one that is absent is not an error.
    async fn remove_endpoint(&self, service: &str, node: &str) -> Result<(), RegistryError>;

    /// Every endpoint on every node this registry can see, sorted by
    /// service, then node.
    async fn endpoints(&self) -> Result<Vec<EndpointEntry>, RegistryError>;

    /// Changes from now on, from every node this registry can see.
    fn watch(&self) -> BoxStream<'static, RegistryEvent>;

    /// How long entries outlive a node that stopped keeping them alive (its
    /// lease), or `None` if they never expire by themselves. A reader that
    /// loses the registry can trust what it knew for this long at most.
    fn lease_ttl(&self) -> Option<Duration> {
        None
    }
}
