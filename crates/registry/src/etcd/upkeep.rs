//! The two background tasks of an [`EtcdRegistry`](super::EtcdRegistry):
//! keeping the lease alive (and re-establishing it after an outage), and
//! forwarding etcd's changes to watchers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cenote_core::RegistryEvent;
use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;

use super::{lock, within, Inner};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Keep the lease alive; when that fails, report it, then retry with capped
/// backoff until a new lease holds everything this node owns again.
pub(crate) async fn keep_lease(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let reason = tokio::select! {
            reason = refresh_until_failure(&inner) => reason,
            _ = stop.changed() => return,
        };
        tracing::warn!(node = %inner.node, %reason, "etcd registry disconnected; retrying");
        let _ = inner.events.send(RegistryEvent::Disconnected { reason });
        let mut backoff = BACKOFF_START;
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            match reestablish(&inner).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(node = %inner.node, error = %e, ?backoff, "etcd still unavailable");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        tracing::info!(node = %inner.node, "etcd registry reconnected; entries written again");
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
    let every = Duration::from_secs(inner.ttl as u64) / 3;
    loop {
        if let Err(e) = within(inner.op_timeout, keeper.keep_alive()).await {
            return e;
        }
        match within(inner.op_timeout, answers.message()).await {
            Ok(Some(answer)) if answer.ttl() > 0 => {}
            Ok(Some(_)) => return format!("lease {id} expired"),
            Ok(None) => return "keep-alive stream closed".into(),
            Err(e) => return e,
        }
        tokio::time::sleep(every).await;
    }
}

/// Take a new lease and write every owned entry under it.
async fn reestablish(inner: &Inner) -> Result<(), String> {
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
        inner
            .put(inner.keys.pool(name), pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    for (key, worker) in &owned.workers {
        inner
            .put(key.clone(), worker)
            .await
            .map_err(|e| e.to_string())?;
    }
    // The old lease holds nothing of ours now; drop it if it still exists.
    let _ = within(inner.op_timeout, inner.client.clone().lease_revoke(old)).await;
    Ok(())
}

/// Watch the prefix and turn etcd's events into registry events, re-watching
/// after a failure.
pub(crate) async fn forward_changes(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_START;
    loop {
        let reason = tokio::select! {
            reason = forward_until_failure(&inner) => reason,
            _ = stop.changed() => return,
        };
        tracing::debug!(node = %inner.node, %reason, "etcd watch ended; watching again");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn forward_until_failure(inner: &Inner) -> String {
    let opts = WatchOptions::new().with_prefix();
    let (_watcher, mut changes) = match within(
        inner.op_timeout,
        inner.client.clone().watch(inner.keys.root(), Some(opts)),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => return e,
    };
    loop {
        let answer = match changes.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => return "watch stream closed".into(),
            Err(e) => return e.to_string(),
        };
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value()),
                EventType::Delete => None,
            };
            if let Some(ev) = inner.keys.event(key, value) {
                let _ = inner.events.send(ev);
            }
        }
    }
}
