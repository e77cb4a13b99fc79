//! Shared test helpers: a real etcd server (see [`etcd`]) and deadline-bound
//! waits. Also included by the workspace's own `tests/registry_pool.rs`.
#![allow(dead_code)]

mod etcd;

#[allow(unused_imports)]
pub use etcd::{alive, EtcdServer};

use std::time::Duration;

/// Poll an async condition until it holds or `limit` passes; true if it held.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond().await
}
