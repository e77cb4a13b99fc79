//! Serving: [`Node::builder`] names the pools, [`NodeBuilder::serve`]
//! listens, publishes an endpoint per pool in the registry and keeps its
//! load current; [`Node::shutdown`] withdraws the endpoints, then drains.

mod publish;
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cenote_core::{EndpointEntry, Load, Registry, RegistryError, Streams};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::servable::{Json, Servable, Served, ServedStream};
use publish::Publisher;
use service::{NodeService, Shared, Slot};

/// The default limit on a request's size: 256 MiB, the same as a Python
/// worker's frame limit (`PythonConfig::max_frame_size`), so a payload a
/// local pool takes also crosses a node. A node reads a request whole
/// before calling, so this also bounds the memory one caller can hold on
/// it: lower it on a node open to callers you do not trust.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 << 20;

/// Why a node could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The registry refused the node's endpoints.
    #[error("cannot publish the node's endpoints: {0}")]
    Registry(#[from] RegistryError),
    /// Two pools were given the same name.
    #[error("pool {0:?} is served twice; give each pool its own name")]
    DuplicatePool(String),
    /// Nothing would be served.
    #[error("a node needs at least one pool to serve (NodeBuilder::pool)")]
    NoPools,
    /// Streams were given for a name no pool is served under.
    #[error(
        "streams are served for {0:?}, but no pool is: serve it with \
         NodeBuilder::pool under the same name (a node publishes a pool's load, \
         which its calls and streams share)"
    )]
    StreamsWithoutPool(String),
    /// Callers could not be told where to reach the node.
    #[error("{0}")]
    Address(String),
    /// The TLS identity was refused.
    #[cfg(feature = "tls")]
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Settings for a [`Node`]; start with [`Node::builder`].
pub struct NodeBuilder {
    registry: Arc<dyn Registry>,
    pools: Vec<(String, Arc<dyn Served>)>,
    streams: HashMap<String, Arc<dyn ServedStream>>,
    token: Option<String>,
    #[cfg(feature = "tls")]
    identity: Option<tonic::transport::Identity>,
    advertise: Option<String>,
    max_request_bytes: usize,
    load_interval: Duration,
    idle_check: Duration,
    grace: Duration,
}

impl NodeBuilder {
    /// Serve `pool` under `name`, for requests of type `Req` sent as JSON:
    /// `.pool::<PyCall>("embed", pool)`. The name is what callers ask for;
    /// several nodes may serve pools of the same name, and callers spread
    /// their calls over them.
    ///
    /// A pool served here should not also register itself in the same
    /// registry under the same name from several nodes (pool names are
    /// unique there; endpoints are not).
    pub fn pool<Req>(
        mut self,
        name: impl Into<String>,
        pool: impl Servable<Req, Response: Serialize>,
    ) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
    {
        self.pools.push((name.into(), Json::<Req, _>::new(pool)));
        self
    }

    /// Also serve streams of the pool served as `name` (with
    /// [`pool`](Self::pool)), for requests of type `Req`:
    /// `.streams::<PyCall>("py", pool)` for a Python pool's generator
    /// handlers. Callers read them with
    /// [`RemotePool::stream`](crate::RemotePool::stream): each item as it
    /// comes, with back-pressure (a slow reader slows the producer), under
    /// one deadline for the whole stream; a stream the caller drops is
    /// cancelled on the node.
    pub fn streams<Req>(
        mut self,
        name: impl Into<String>,
        pool: impl Streams<Req, Item: Serialize>,
    ) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
    {
        self.streams.insert(name.into(), Json::<Req, _>::new(pool));
        self
    }

    /// Require callers to present `token` (compared in constant time).
    /// Without one the node serves anyone who can reach it, and says so
    /// in a warning when it starts.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Serve over TLS with this certificate and key
    /// (`Identity::from_pem(cert, key)`); the endpoint is then published
    /// as `https://`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, identity: tonic::transport::Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The URL callers should use (default: the bound address, e.g.
    /// `http://127.0.0.1:7400`). Needed when binding `0.0.0.0` or behind
    /// address translation.
    pub fn advertise(mut self, url: impl Into<String>) -> Self {
        self.advertise = Some(url.into());
        self
    }

    /// The largest request accepted (default 256 MiB,
    /// [`DEFAULT_MAX_REQUEST_BYTES`]); larger ones are
    /// refused with [`CallError::TooLarge`](crate::CallError::TooLarge).
    pub fn max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n;
        self
    }

    /// At most one load update per pool per `d` (default 100 ms).
    pub fn load_interval(mut self, d: Duration) -> Self {
        self.load_interval = d;
        self
    }

    /// How long [`Node::shutdown`] lets calls under way finish (default
    /// 10 s) after the endpoints are withdrawn.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Listen on `addr` (port 0 picks a free one), publish every pool's
    /// endpoint, and serve in the background until [`Node::shutdown`] (or
    /// the `Node` is dropped).
    pub async fn serve(self, addr: SocketAddr) -> Result<Node, NodeError> {
        if self.pools.is_empty() {
            return Err(NodeError::NoPools);
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;
        let node = self.registry.node().to_string();
        let url = self.url(bound)?;

        let mut pools = HashMap::new();
        let mut publishers = Vec::new();
        let mut streams = self.streams;
        for (name, pool) in self.pools {
            let stream = streams.remove(&name);
            let changed = Arc::new(Notify::new());
            publishers.push(Publisher {
                registry: Arc::clone(&self.registry),
                entry: EndpointEntry {
                    service: name.clone(),
                    node: node.clone(),
                    addr: url.clone(),
                    load: Load::default(),
                },
                pool: Arc::clone(&pool),
                changed: Arc::clone(&changed),
                interval: self.load_interval,
                idle_check: self.idle_check,
            });
            let slot = Slot {
                pool,
                stream,
                changed,
            };
            if pools.insert(name.clone(), slot).is_some() {
                return Err(NodeError::DuplicatePool(name));
            }
        }
        if let Some(name) = streams.into_keys().next() {
            return Err(NodeError::StreamsWithoutPool(name));
        }
        let names: Vec<String> = pools.keys().cloned().collect();

        let builder = || {
            Server::builder()
                .initial_stream_window_size(crate::wire::STREAM_WINDOW)
                .initial_connection_window_size(crate::wire::CONNECTION_WINDOW)
                .max_frame_size(crate::wire::MAX_FRAME)
        };
        #[cfg(feature = "tls")]
        let server = match self.identity {
            Some(identity) => builder()
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| NodeError::Tls(e.to_string()))?,
            None => builder(),
        };
        #[cfg(not(feature = "tls"))]
        let server = builder();
        if self.token.is_none() {
            tracing::warn!(%node, %url,
                "serving WITHOUT a token: anyone who can reach this address can call its pools \
                 (set NodeBuilder::token)");
        }
        let svc = NodeService {
            shared: Arc::new(Shared {
                node: node.clone(),
                pools,
                token: self.token,
                max_request_bytes: self.max_request_bytes,
            }),
        };

        // Published before the first caller can look: a node that cannot
        // say where it is serves nobody (and leaves nothing behind).
        let mut refused = None;
        for p in &mut publishers {
            if let Err(e) = p.publish().await {
                refused = Some(e);
                break;
            }
        }
        if let Some(e) = refused {
            for p in &publishers {
                // Withdrawing one never published is no error.
                let _ = self.registry.remove_endpoint(&p.entry.service, &node).await;
            }
            return Err(e.into());
        }
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let serving = tokio::spawn(server.tcp_nodelay(true).serve_with_incoming_shutdown(
            svc,
            incoming,
            drain.clone().cancelled_owned(),
        ));
        let publishing: Vec<_> = publishers
            .into_iter()
            .map(|p| tokio::spawn(p.run(stop.clone())))
            .collect();
        tracing::info!(%node, %url, pools = ?names, "node serving");
        let task = tokio::spawn(
            Lifecycle {
                registry: self.registry,
                node: node.clone(),
                names,
                publishing,
                serving,
                drain,
                grace: self.grace,
            }
            .run(stop.clone()),
        );
        Ok(Node {
            name: node,
            addr: bound,
            url,
            stop,
            task: Some(task),
        })
    }

    fn url(&self, bound: SocketAddr) -> Result<String, NodeError> {
        if let Some(url) = &self.advertise {
            return Ok(url.clone());
        }
        if bound.ip().is_unspecified() {
            return Err(NodeError::Address(format!(
                "bound to {bound}, which callers cannot dial; set NodeBuilder::advertise \
                 to the URL they should use"
            )));
        }
        #[cfg(feature = "tls")]
        let scheme = if self.identity.is_some() {
            "https"
        } else {
            "http"
        };
        #[cfg(not(feature = "tls"))]
        let scheme = "http";
        Ok(format!("{scheme}://{bound}"))
    }
}

/// A node serving pools; [`shutdown`](Node::shutdown) ends it cleanly.
/// Dropping it does the same in the background.
pub struct Node {
    name: String,
    addr: SocketAddr,
    url: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Node {
    /// Settings for a node that publishes its endpoints in `registry`
    /// under the registry's node name.
    pub fn builder(registry: Arc<dyn Registry>) -> NodeBuilder {
        NodeBuilder {
            registry,
            pools: Vec::new(),
            streams: HashMap::new(),
            token: None,
            #[cfg(feature = "tls")]
            identity: None,
            advertise: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            load_interval: Duration::from_millis(100),
            idle_check: Duration::from_secs(1),
            grace: Duration::from_secs(10),
        }
    }

    /// The node's name (its registry's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL it publishes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Withdraw the endpoints (callers stop choosing this node), let calls
    /// under way finish within the grace, then stop.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What runs until the node stops, and the order it stops in.
struct Lifecycle {
    registry: Arc<dyn Registry>,
    node: String,
    names: Vec<String>,
    publishing: Vec<JoinHandle<()>>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
    drain: CancellationToken,
    grace: Duration,
}

impl Lifecycle {
    async fn run(mut self, stop: CancellationToken) {
        tokio::select! {
            () = stop.cancelled() => {}
            ended = &mut self.serving => {
                tracing::error!(node = %self.node, outcome = ?ended, "node server ended on its own");
            }
        }
        // No load update may land after the withdrawal.
        for p in self.publishing {
            let _ = p.await;
        }
        for name in &self.names {
            if let Err(e) = self.registry.remove_endpoint(name, &self.node).await {
                tracing::warn!(node = %self.node, pool = %name, error = %e,
                    "endpoint not withdrawn; it goes when the node's lease runs out");
            }
        }
        self.drain.cancel();
        if tokio::time::timeout(self.grace, &mut self.serving)
            .await
            .is_err()
        {
            tracing::warn!(node = %self.node, grace = ?self.grace,
                "calls still under way after the shutdown grace; cut off");
            self.serving.abort();
        }
        tracing::info!(node = %self.node, "node stopped");
    }
}
