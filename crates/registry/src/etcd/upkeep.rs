//! The two background tasks of an [`EtcdRegistry`](super::EtcdRegistry):
//! keeping the lease alive (and re-establishing it after an outage), and
//! following etcd's changes for watchers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cenote_core::RegistryEvent;
use etcd_client::{Compare, CompareOp, EventType, GetOptions, TxnOp, WatchOptions, WatchStream};
use tokio::sync::watch;

use super::keys::encode;
use super::{lock, Inner};

/// First wait before retrying etcd after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between retries: an outage's end is noticed this fast.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// Keep the lease alive; when that fails, report it, then retry with capped
/// backoff until a new lease holds everything this node owns again.
pub(crate) async fn keep_lease(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let failure = tokio::select! {
            reason = refresh_until_failure(&inner) => Some(reason),
            () = inner.repair.notified() => None,
            _ = stop.changed() => return,
        };
        let reason = match failure {
            Some(reason) => reason,
            // A write failed or was cut off while the lease was fine: move
            // everything to a new lease, quietly if etcd answers.
            None => {
                let attempt = tokio::select! {
                    r = reestablish(&inner) => r,
                    _ = stop.changed() => return,
                };
                match attempt {
                    Ok(()) => {
                        tracing::debug!(node = %inner.node,
                            "a registry write failed; this node's entries were written again on a new lease");
                        continue;
                    }
                    Err(reason) => reason,
                }
            }
        };
        inner.connected.store(false, Ordering::SeqCst);
        tracing::warn!(node = %inner.node, %reason, "etcd registry disconnected; retrying in the background");
        let _ = inner.events.send(RegistryEvent::Disconnected { reason });
        let mut backoff = BACKOFF_START;
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            let attempt = tokio::select! {
                r = reestablish(&inner) => r,
                _ = stop.changed() => return,
            };
            match attempt {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(node = %inner.node, error = %e, ?backoff, "etcd still unavailable");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        inner.connected.store(true, Ordering::SeqCst);
        tracing::info!(node = %inner.node, lease = inner.lease.load(Ordering::SeqCst),
            "etcd registry reconnected; this node's entries written again");
        // Whatever changed while we were away reaches watchers first.
        inner.resync.notify_one();
        let _ = inner.events.send(RegistryEvent::Reconnected);
    }
}

/// Refresh the lease every third of its TTL; returns why it stopped working.
async fn refresh_until_failure(inner: &Inner) -> String {
    let id = inner.lease.load(Ordering::SeqCst);
    let (mut keeper, mut answers) =
        match within(inner.op_timeout, inner.client.clone().lease_keep_alive(id)).await {
            Ok(pair) => pair,
            Err(e) => return e,
        };
    let every = Duration::from_millis(inner.ttl.unsigned_abs().saturating_mul(1000) / 3);
    loop {
        if let Err(e) = within(inner.op_timeout, keeper.keep_alive()).await {
            return e;
        }
        match within(inner.op_timeout, answers.message()).await {
            Ok(Some(answer)) if answer.ttl() > 0 => {}
            Ok(Some(_)) => return format!("lease {id} expired or is unknown to etcd"),
            Ok(None) => return "keep-alive stream closed".into(),
            Err(e) => return e,
        }
        tokio::time::sleep(every).await;
    }
}

/// Take a new lease and write every owned entry under it, then drop the old
/// lease. Holds the write gate throughout, so no other write can land on
/// the old lease meanwhile.
async fn reestablish(inner: &Inner) -> Result<(), String> {
    let _gate = inner.gate.write().await;
    let old = inner.lease.load(Ordering::SeqCst);
    let lease = within(
        inner.op_timeout,
        inner.client.clone().lease_grant(inner.ttl, None),
    )
    .await?
    .id();
    inner.lease.store(lease, Ordering::SeqCst);
    let owned = lock(&inner.owned).clone();
    for (name, pool) in &owned.pools {
        if !rewrite_pool(inner, old, name, pool).await? {
            // Someone else took the name while we were away: theirs stands.
            tracing::error!(node = %inner.node, pool = %name,
                "pool name was taken by another node while etcd was unreachable; \
                 this node's pool is no longer registered");
            let mut owned = lock(&inner.owned);
            owned.pools.remove(name);
            owned.workers.retain(|(p, _), _| p != name);
        }
    }
    let owned = lock(&inner.owned).clone();
    for ((pool, id), worker) in &owned.workers {
        inner
            .put(inner.keys.worker(pool, *id), worker)
            .await
            .map_err(|e| e.to_string())?;
    }
    for ((service, node), endpoint) in &owned.endpoints {
        inner
            .put(inner.keys.endpoint(service, node), endpoint)
            .await
            .map_err(|e| e.to_string())?;
    }
    // The old lease holds nothing of ours now; drop it if it still exists.
    let _ = within(inner.op_timeout, inner.client.clone().lease_revoke(old)).await;
    Ok(())
}

/// Write one of our pools again without taking a name someone else holds:
/// the key must be absent, or still on our old lease (a short outage).
/// Returns false if another node holds the name.
async fn rewrite_pool(
    inner: &Inner,
    old_lease: i64,
    name: &str,
    pool: &cenote_core::PoolEntry,
) -> Result<bool, String> {
    let key = inner.keys.pool(name);
    let value = encode(pool).map_err(|e| e.to_string())?;
    for guard in [
        Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        Compare::lease(key.clone(), CompareOp::Equal, old_lease),
    ] {
        let txn = etcd_client::Txn::new().when([guard]).and_then([TxnOp::put(
            key.clone(),
            value.clone(),
            Some(inner.with_lease()),
        )]);
        if within(inner.op_timeout, inner.client.clone().txn(txn))
            .await?
            .succeeded()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Follows every change under the prefix and turns it into registry events.
///
/// It keeps a mirror of the raw entries it has seen, so after any break in
/// the watch (an outage, a compaction, etcd restarting empty) it re-reads
/// everything, reports the difference as Up/Down events, and watches again
/// from the revision it read at: watchers miss nothing but transient states.
pub(crate) struct Follower {
    inner: Arc<Inner>,
    mirror: BTreeMap<String, Vec<u8>>,
    stream: WatchStream,
}

impl Follower {
    /// Read everything once (silently: a watch reports changes from now
    /// on) and start watching right after that read.
    pub async fn start(inner: Arc<Inner>) -> Result<Follower, String> {
        let mut mirror = BTreeMap::new();
        let revision = resync(&inner, &mut mirror, false).await?;
        let stream = open_watch(&inner, revision + 1).await?;
        Ok(Follower {
            inner,
            mirror,
            stream,
        })
    }

    /// Forward changes until `stop`, re-reading and re-watching after any
    /// break, with capped backoff.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let reason = tokio::select! {
                reason = follow(&self.inner, &mut self.mirror, &mut self.stream) => reason,
                () = self.inner.resync.notified() => "etcd registry reconnected".to_string(),
                _ = stop.changed() => return,
            };
            tracing::debug!(node = %self.inner.node, %reason, "etcd watch ended; reading again");
            let mut backoff = BACKOFF_START;
            loop {
                let attempt = tokio::select! {
                    r = async {
                        let revision = resync(&self.inner, &mut self.mirror, true).await?;
                        open_watch(&self.inner, revision + 1).await
                    } => r,
                    _ = stop.changed() => return,
                };
                match attempt {
                    Ok(stream) => {
                        self.stream = stream;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(node = %self.inner.node, error = %e, ?backoff,
                            "etcd watch not re-established yet");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            // The lease task got through: try at once.
                            () = self.inner.resync.notified() => {}
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }
}

/// Read everything under the prefix into `mirror`; with `report`, send the
/// difference from what the mirror held as events (deletions first, workers
/// before their pools; then additions, pools before their workers). Returns
/// the revision the read was made at.
async fn resync(
    inner: &Inner,
    mirror: &mut BTreeMap<String, Vec<u8>>,
    report: bool,
) -> Result<i64, String> {
    let resp = within(
        inner.op_timeout,
        inner
            .client
            .clone()
            .get(inner.keys.root(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let now: BTreeMap<String, Vec<u8>> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect();
    if report {
        // Key order puts `pools/` before `workers/`, and a pool's workers
        // after one another: reverse it for deletions.
        for key in mirror.keys().rev().filter(|k| !now.contains_key(*k)) {
            send(inner, inner.keys.event(key, None));
        }
        for (key, value) in &now {
            if mirror.get(key) != Some(value) {
                send(inner, inner.keys.event(key, Some(value)));
            }
        }
    }
    *mirror = now;
    Ok(revision)
}

/// Watch the prefix from `revision` on.
async fn open_watch(inner: &Inner, revision: i64) -> Result<WatchStream, String> {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision);
    within(
        inner.op_timeout,
        inner.client.clone().watch(inner.keys.root(), Some(opts)),
    )
    .await
}

/// Forward watch answers until the watch breaks; returns why.
async fn follow(
    inner: &Inner,
    mirror: &mut BTreeMap<String, Vec<u8>>,
    stream: &mut WatchStream,
) -> String {
    loop {
        let answer = match stream.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => return "watch stream closed".into(),
            Err(e) => return e.to_string(),
        };
        if answer.canceled() {
            return format!(
                "watch cancelled by etcd ({}; compacted at revision {})",
                answer.cancel_reason(),
                answer.compact_revision()
            );
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    send(inner, inner.keys.event(&key, Some(kv.value())));
                    mirror.insert(key, kv.value().to_vec());
                }
                EventType::Delete => {
                    send(inner, inner.keys.event(&key, None));
                    mirror.remove(&key);
                }
            }
        }
    }
}

fn send(inner: &Inner, event: Option<RegistryEvent>) {
    if let Some(event) = event {
        // No receivers is fine: nobody watches.
        let _ = inner.events.send(event);
    }
}
