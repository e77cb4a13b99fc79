//! Calling: [`Remote`] follows the registry's endpoints;
//! [`RemotePool`] calls one pool on whichever node serves it best.

mod choose;
mod directory;
mod retry;
mod sessions;
mod stream;
mod transport;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cenote_core::{AffinityKey, CallOptions, Registry, RegistryError};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use directory::NodeInfo;
pub use retry::RemoteRetry;

use crate::body;
use crate::error::CallError;
use crate::wire::{CallHeaders, CALL_PATH, HOLDS_PATH};
use directory::{Directory, Pick};
use sessions::Sessions;
pub use stream::RemoteStream;
use transport::{send, Connector, Outgoing};

/// The default limit on a response's size: 256 MiB, the same as a Python
/// worker's frame limit (`PythonConfig::max_frame_size`), so an answer a
/// local pool gives also crosses a node.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Settings for a [`Remote`]; start with [`Remote::builder`].
pub struct RemoteBuilder {
    registry: Arc<dyn Registry>,
    token: Option<String>,
    connector: Connector,
    max_response_bytes: usize,
    eject_for: Option<Duration>,
    session_capacity: usize,
}

/// How many sessions a [`Remote`] remembers the node of, by default.
pub const DEFAULT_SESSION_CAPACITY: usize = 100_000;

impl RemoteBuilder {
    /// The token nodes want (see [`NodeBuilder::token`](crate::NodeBuilder::token)).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trust `ca` for nodes that serve over TLS (`https://` endpoints), and
    /// expect their certificates to name `domain` (default: the host in
    /// the endpoint's URL).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, ca: tonic::transport::Certificate, domain: Option<&str>) -> Self {
        let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(ca);
        if let Some(domain) = domain {
            tls = tls.domain_name(domain);
        }
        self.connector.tls = Some(tls);
        self
    }

    /// The largest response accepted (default 256 MiB,
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]); a larger one is
    /// [`CallError::TooLarge`].
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// How long to wait for a connection to a node (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connector.connect_timeout = d;
        self
    }

    /// While calls are under way, ping each node this often and give it up
    /// as lost when a ping goes unanswered this long (default 2 s). This
    /// bounds how long a node that hangs without closing its connection
    /// can hold a call that has no deadline.
    pub fn keepalive(mut self, d: Duration) -> Self {
        self.connector.keepalive = d;
        self
    }

    /// How long a node whose call was lost is left out of the choice
    /// (default: the registry's lease TTL, by which time a dead node's
    /// entry is gone, or 10 s without leases). It comes back sooner if it
    /// publishes its load again.
    pub fn eject_for(mut self, d: Duration) -> Self {
        self.eject_for = Some(d);
        self
    }

    /// How many sessions to remember the node of (default 100,000); past
    /// it, those unused longest are forgotten, and found again when next
    /// called: a strict one by asking the nodes, a hint by the hash (see
    /// [`RemotePool::call_with`]).
    pub fn session_capacity(mut self, n: usize) -> Self {
        self.session_capacity = n;
        self
    }

    /// Read every endpoint the registry holds and follow its changes.
    pub async fn connect(self) -> Result<Remote, RegistryError> {
        let lease_ttl = self.registry.lease_ttl();
        let eject_for = self
            .eject_for
            .or(lease_ttl)
            .unwrap_or(Duration::from_secs(10));
        let ask_timeout = self.connector.keepalive;
        let directory = Arc::new(Directory::new(self.connector, lease_ttl, eject_for));
        // Watch first, then list: what changes after the list is in the
        // watch, and applied after it.
        let mut events = self.registry.watch();
        for entry in self.registry.endpoints().await? {
            directory.upsert(entry);
        }
        let stop = CancellationToken::new();
        let follower = Arc::downgrade(&directory);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    () = stopped.cancelled() => return,
                };
                match (event, follower.upgrade()) {
                    (Some(event), Some(directory)) => directory.apply(event),
                    _ => return,
                }
            }
        });
        Ok(Remote {
            inner: Arc::new(Inner {
                directory,
                sessions: Sessions::new(self.session_capacity),
                ask_timeout,
                token: self.token,
                max_response_bytes: self.max_response_bytes,
                _follower: stop.drop_guard(),
            }),
        })
    }
}

/// A caller's view of the pools other nodes serve. Cloning is cheap and
/// every clone shares the view and the connections.
#[derive(Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

struct Inner {
    directory: Arc<Directory>,
    sessions: Sessions,
    /// How long a node has to say whether it holds a session.
    ask_timeout: Duration,
    token: Option<String>,
    max_response_bytes: usize,
    /// Stops following the registry when the last clone goes.
    _follower: DropGuard,
}

impl Remote {
    /// Settings for a caller that finds nodes through `registry`.
    pub fn builder(registry: Arc<dyn Registry>) -> RemoteBuilder {
        RemoteBuilder {
            registry,
            token: None,
            connector: Connector {
                #[cfg(feature = "tls")]
                tls: None,
                connect_timeout: Duration::from_secs(2),
                keepalive: Duration::from_secs(2),
            },
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            eject_for: None,
            session_capacity: DEFAULT_SESSION_CAPACITY,
        }
    }

    /// A caller with the default settings (no token, no TLS).
    pub async fn connect(registry: Arc<dyn Registry>) -> Result<Remote, RegistryError> {
        Remote::builder(registry).connect().await
    }

    /// The pool served as `name`, called with `Req` and answering `Resp`
    /// (both as JSON).
    pub fn pool<Req, Resp>(&self, name: &str) -> RemotePool<Req, Resp> {
        RemotePool {
            remote: self.clone(),
            name: name.into(),
            pinned: None,
            opts: CallOptions::default(),
            _types: PhantomData,
        }
    }

    /// A call or stream to `pool` on `node` ended, after `took`, with
    /// `bytes` sent and received and `error` if it failed: counted, and
    /// its node left out for a while if lost with it.
    fn ended(
        &self,
        pool: &str,
        node: &str,
        bytes: (usize, usize),
        error: Option<&CallError>,
        took: Duration,
    ) {
        crate::metrics::record(pool, node, bytes, error, took);
        if let Some(e) = error {
            self.note_lost(pool, node, e);
        }
    }

    /// A request to `pool` on `node` failed with `e`: if the node was lost
    /// with it, leave the node out for a while.
    fn note_lost(&self, pool: &str, node: &str, e: &CallError) {
        if let CallError::NodeLost { reason, .. } = e {
            tracing::warn!(%node, %pool, %reason,
                "call lost with its node; leaving the node out for a while");
            self.inner.directory.lost(node);
        }
    }

    /// The nodes serving `pool` as this caller sees them now.
    pub fn nodes(&self, pool: &str) -> Vec<NodeInfo> {
        self.inner.directory.nodes(pool)
    }
}

/// An answer, and the node that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered<T> {
    /// The response.
    pub value: T,
    /// The node that served the call.
    pub node: String,
}

/// One pool, served by any number of nodes. Cloning is cheap.
pub struct RemotePool<Req, Resp> {
    remote: Remote,
    name: Arc<str>,
    pinned: Option<Arc<str>>,
    opts: CallOptions,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for RemotePool<Req, Resp> {
    fn clone(&self) -> Self {
        RemotePool {
            remote: self.remote.clone(),
            name: Arc::clone(&self.name),
            pinned: self.pinned.clone(),
            opts: self.opts.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> RemotePool<Req, Resp> {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same pool, called only on `node` (while it serves the pool).
    pub fn on_node(&self, node: &str) -> Self {
        RemotePool {
            pinned: Some(node.into()),
            ..self.clone()
        }
    }

    /// The same pool, with `opts` for [`call`](Self::call) and for calls
    /// made through it as a tower `Service`.
    pub fn with_options(&self, opts: CallOptions) -> Self {
        RemotePool {
            opts,
            ..self.clone()
        }
    }

    /// Call with this handle's options (see [`with_options`](Self::with_options)).
    pub async fn call(&self, req: Req) -> Result<Resp, CallError> {
        self.call_with(req, self.opts.clone()).await
    }

    /// Call with `opts`: its checkout timeout, call timeout, whole budget,
    /// priority and session go to the node. The call's deadline is its
    /// budget ([`CallOptions::budget`]), else the sum of both timeouts when
    /// both are given: the node gets the time left (not a clock reading),
    /// and no answer by then is [`CallError::CallTimeout`].
    ///
    /// A call with a session ([`CallOptions::affinity`]) goes to the node
    /// that holds it, and that node's pool keeps it on its worker. A new
    /// session is placed by rendezvous hashing of its key over the nodes
    /// serving the pool (so nodes joining move few keys), and this caller
    /// remembers where, so a scale-up moves none of its sessions. Before a
    /// strict session's first call from this caller, the nodes are asked
    /// which holds it, so one started by another caller is found. If the
    /// node is gone, a `Strict` or `FailFast` session fails with
    /// [`CallError::AffinityLost`] (reason `NodeLost`) until
    /// [`forget_session`](Self::forget_session) starts it over: it never
    /// moves silently. A `Hint` session moves to the node the hash gives
    /// among those left, and starts over there. (The module
    /// `client/sessions.rs` explains the choice.)
    pub async fn call_with(&self, req: Req, opts: CallOptions) -> Result<Resp, CallError> {
        self.call_answered(req, opts).await.map(|a| a.value)
    }

    /// The node session `key` is on for this caller, or, if this caller has
    /// not called it yet (or forgot it), the node it would be placed on now.
    pub fn session_node(&self, key: impl Into<AffinityKey>) -> Option<String> {
        let inner = &self.remote.inner;
        let key = key.into();
        (inner.sessions.placed(&self.name, &key))
            .or_else(|| sessions::hashed(&inner.directory, &self.name, &key, &[]))
    }

    /// Forget where session `key` is: its next call starts it over on the
    /// node the hash gives. How a caller goes on after
    /// [`CallError::AffinityLost`].
    pub fn forget_session(&self, key: impl Into<AffinityKey>) {
        self.remote.inner.sessions.forget(&self.name, &key.into());
    }

    /// [`call_with`](Self::call_with), saying which node answered.
    pub async fn call_answered(
        &self,
        req: Req,
        opts: CallOptions,
    ) -> Result<Answered<Resp>, CallError> {
        let body = encode(&req)?;
        let (node, outcome) = self.attempt(body, opts, &[]).await;
        Ok(Answered {
            value: decode(outcome?)?,
            node: node.unwrap_or_default(),
        })
    }

    /// [`call_with`](Self::call_with), tried again under `policy` while it
    /// fails with an error the policy retries — each time on another node
    /// while there is one it has not failed on. Only for idempotent
    /// requests: a lost or timed-out call may have run.
    pub async fn call_retry(
        &self,
        req: Req,
        opts: CallOptions,
        policy: &RemoteRetry,
    ) -> Result<Resp, CallError> {
        let body = encode(&req)?;
        // Each retry avoids the nodes the call already failed on, while
        // there is another.
        let failed_on = std::sync::Mutex::new(Vec::new());
        let answer = policy
            .run(&self.name, || async {
                let avoid = failed_on.lock().map(|f| f.clone()).unwrap_or_default();
                let (node, outcome) = self.attempt(body.clone(), opts.clone(), &avoid).await;
                if outcome.is_err() {
                    if let Ok(mut f) = failed_on.lock() {
                        f.extend(node);
                    }
                }
                outcome
            })
            .await;
        decode(answer?)
    }

    /// Stream a generator's items from a node, with this handle's options
    /// (see [`stream_with`](Self::stream_with)).
    pub async fn stream(&self, req: Req) -> Result<RemoteStream<Resp>, CallError>
    where
        Resp: Send + 'static,
    {
        self.stream_with(req, self.opts.clone()).await
    }

    /// Stream the items a node's pool answers `req` with (served with
    /// [`NodeBuilder::streams`](crate::NodeBuilder::streams)), each decoded
    /// into `Resp` as it comes. The node is chosen as for a call (a
    /// session's node, for a call with one). One deadline covers the whole
    /// stream, as it does locally: past it, the last item is
    /// [`CallError::CallTimeout`]. Reading slowly slows the producer (the
    /// transport's flow control: what is in flight stays bounded), and
    /// dropping the stream cancels it on the node. A node lost mid-stream
    /// ends it with [`CallError::NodeLost`], after the items already
    /// received.
    pub async fn stream_with(
        &self,
        req: Req,
        opts: CallOptions,
    ) -> Result<RemoteStream<Resp>, CallError>
    where
        Resp: Send + 'static,
    {
        let body = encode(&req)?;
        self.locate(&opts).await?;
        let pick = self.route(&opts, &[])?;
        let (headers, deadline) = self.headers(opts);
        let size = body::len(&body);
        let started = tokio::time::Instant::now();
        let open = transport::open_stream(self.outgoing(&pick, body, &headers));
        let items = within(deadline, open).await.inspect_err(|e| {
            let took = started.elapsed();
            (self.remote).ended(&self.name, &pick.node, (size, 0), Some(e), took);
        })?;
        Ok(RemoteStream::new(
            items,
            pick,
            stream::Origin {
                remote: self.remote.clone(),
                pool: Arc::clone(&self.name),
                sent: size,
                started,
                deadline,
            },
        ))
    }

    /// Before a strict session's first call from this caller, find the
    /// node that holds it, if one does: ask every node serving the pool at
    /// once, and remember the one that says yes (see `sessions.rs`). A
    /// node that cannot answer fails the call, since the session may be
    /// there; it is left out, and the next call asks again.
    async fn locate(&self, opts: &CallOptions) -> Result<(), CallError> {
        let inner = &self.remote.inner;
        let Some(affinity) = &opts.checkout.affinity else {
            return Ok(());
        };
        if !affinity.mode.is_strict()
            || self.pinned.is_some()
            || inner.sessions.placed(&self.name, &affinity.key).is_some()
        {
            return Ok(());
        }
        let picks = inner.directory.pick_all(&self.name);
        if picks.len() < 2 {
            return Ok(()); // no other node it could be on
        }
        let headers = CallHeaders {
            pool: self.name.to_string(),
            opts: CallOptions::default().affinity(affinity.key.clone(), affinity.mode),
            remaining: Some(inner.ask_timeout),
        };
        let null = encode(&())?;
        let asks = picks.iter().map(|pick| async {
            let ask = send(self.outgoing(pick, null.clone(), &headers), HOLDS_PATH);
            // A node that cannot say in time is lost for now, as a call
            // it does not answer would be.
            within(Some(inner.ask_timeout), ask)
                .await
                .map_err(|e| match e {
                    CallError::CallTimeout { after } => CallError::NodeLost {
                        node: pick.node.clone(),
                        reason: format!(
                            "did not say within {after:?} whether it holds the session"
                        ),
                    },
                    e => e,
                })
        });
        let answers = futures::future::join_all(asks).await;
        let mut holders = Vec::new();
        let mut failed = None;
        for (pick, answer) in picks.iter().zip(answers) {
            match answer.and_then(decode::<bool>) {
                Ok(true) => holders.push(pick),
                Ok(false) => {}
                Err(e) => {
                    self.remote.note_lost(&self.name, &pick.node, &e);
                    failed.get_or_insert(e);
                }
            }
        }
        if inner.sessions.found(&self.name, &affinity.key, &holders) {
            return Ok(());
        }
        failed.map_or(Ok(()), Err)
    }

    /// The node for a call with `opts`: the pinned one, the session's, or
    /// the least loaded of two, preferring those not in `avoid`.
    fn route(&self, opts: &CallOptions, avoid: &[String]) -> Result<Pick, CallError> {
        let inner = &self.remote.inner;
        match (&opts.checkout.affinity, &self.pinned) {
            (Some(affinity), None) => {
                inner
                    .sessions
                    .route(&inner.directory, &self.name, affinity, avoid)
            }
            (_, pinned) => inner.directory.choose(&self.name, pinned.as_deref(), avoid),
        }
    }

    /// What the node is told of a call with `opts`, and its deadline: the
    /// call's one budget, its own whole allowance, else its checkout and
    /// call timeouts together. The node gets the time left.
    fn headers(&self, opts: CallOptions) -> (CallHeaders, Option<Duration>) {
        let deadline = opts
            .budget
            .or_else(|| opts.checkout.timeout.zip(opts.timeout).map(|(a, b)| a + b));
        let headers = CallHeaders {
            pool: self.name.to_string(),
            opts,
            remaining: deadline,
        };
        (headers, deadline)
    }

    /// A call or stream to `pick`, as it leaves.
    fn outgoing<'a>(
        &'a self,
        pick: &'a Pick,
        body: Vec<Bytes>,
        headers: &'a CallHeaders,
    ) -> Outgoing<'a> {
        let inner = &self.remote.inner;
        Outgoing {
            channel: pick.channel.clone(),
            node: &pick.node,
            body,
            headers,
            token: inner.token.as_deref(),
            max_response_bytes: inner.max_response_bytes,
        }
    }

    /// One call on one node; says which node, if one was chosen.
    async fn attempt(
        &self,
        body: Vec<Bytes>,
        opts: CallOptions,
        avoid: &[String],
    ) -> (Option<String>, Result<Bytes, CallError>) {
        if let Err(e) = self.locate(&opts).await {
            return (None, Err(e));
        }
        let pick = match self.route(&opts, avoid) {
            Ok(pick) => pick,
            Err(e) => return (None, Err(e)),
        };
        let (headers, deadline) = self.headers(opts);
        let size = body::len(&body);
        let sent = std::time::Instant::now();
        let call = send(self.outgoing(&pick, body, &headers), CALL_PATH);
        let outcome = within(deadline, call).await;
        let received = outcome.as_ref().map_or(0, Bytes::len);
        let error = outcome.as_ref().err();
        (self.remote).ended(
            &self.name,
            &pick.node,
            (size, received),
            error,
            sent.elapsed(),
        );
        (Some(pick.node.clone()), outcome)
    }
}

/// `answer`, or `CallTimeout` if it has not come `deadline` from now.
async fn within<T>(
    deadline: Option<Duration>,
    answer: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match deadline {
        Some(after) => tokio::time::timeout(after, answer)
            .await
            .unwrap_or(Err(CallError::CallTimeout { after })),
        None => answer.await,
    }
}

fn encode<T: Serialize>(req: &T) -> Result<Vec<Bytes>, CallError> {
    body::encode(req).map_err(|e| CallError::BadRequest {
        message: format!("the request does not encode as JSON: {e}"),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(answer: Bytes) -> Result<T, CallError> {
    body::decode(answer).map_err(|e| CallError::BadResponse {
        message: format!(
            "the answer does not decode into {}: {e}",
            std::any::type_name::<T>()
        ),
    })
}
