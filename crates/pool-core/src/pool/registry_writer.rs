//! One ordered writer from a pool to its registry.
//!
//! Registry calls are async (etcd is remote) but a pool changes state in sync
//! code (a guard's Drop). Sending every change down one channel to one task
//! keeps them in order, so a worker's removal is never overtaken by an older
//! "ready", and keeps the registry off every caller's path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::live::Meta;
use crate::registry::{PoolEntry, Registry, WorkerEntry, WorkerState};
use crate::worker::WorkerId;

/// Deadline for one registry operation; a slow registry is logged, not waited on.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

enum Op {
    Put(WorkerEntry),
    Remove(WorkerId),
    Unregister(oneshot::Sender<()>),
}

pub(crate) struct RegistryWriter {
    tx: mpsc::UnboundedSender<Op>,
    pool: Arc<str>,
    node: String,
}

impl RegistryWriter {
    /// Register the pool (failing on a taken name) and start the writer task.
    pub async fn start(
        registry: Arc<dyn Registry>,
        entry: PoolEntry,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, crate::RegistryError> {
        registry.register_pool(entry.clone()).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
        let pool: Arc<str> = Arc::from(entry.name.as_str());
        let name = Arc::clone(&pool);
        let reg = Arc::clone(&registry);
        // Not in the pool's task tracker: `close` waits for the workers first,
        // then unregisters, which ends this task.
        rt.spawn(async move {
            while let Some(op) = rx.recv().await {
                let last = matches!(op, Op::Unregister(_));
                let (what, res) = match op {
                    Op::Put(e) => (
                        "put_worker",
                        tokio::time::timeout(OP_TIMEOUT, reg.put_worker(e)).await,
                    ),
                    Op::Remove(id) => (
                        "remove_worker",
                        tokio::time::timeout(OP_TIMEOUT, reg.remove_worker(&name, id)).await,
                    ),
                    Op::Unregister(done) => {
                        let res =
                            tokio::time::timeout(OP_TIMEOUT, reg.unregister_pool(&name)).await;
                        let _ = done.send(());
                        ("unregister_pool", res)
                    }
                };
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(pool = %name, op = what, error = %e, "registry write failed")
                    }
                    Err(_) => tracing::warn!(pool = %name, op = what, "registry write timed out"),
                }
                if last {
                    // The pool is gone from the registry; later writes
                    // (workers still shutting down) would resurrect it.
                    return;
                }
            }
        });
        Ok(RegistryWriter {
            tx,
            pool,
            node: registry.node().to_string(),
        })
    }

    pub fn put_worker(&self, meta: &Meta, state: WorkerState) {
        let _ = self.tx.send(Op::Put(WorkerEntry {
            pool: self.pool.to_string(),
            id: meta.id,
            node: self.node.clone(),
            pid: meta.pid,
            state,
            started_at_ms: meta.started_unix_ms,
            tasks_served: meta.tasks,
        }));
    }

    pub fn remove_worker(&self, id: WorkerId) {
        let _ = self.tx.send(Op::Remove(id));
    }

    /// Queue the pool's removal after every earlier write, and wait for it
    /// (bounded).
    pub async fn unregister(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Unregister(done)).is_ok() {
            let _ = tokio::time::timeout(OP_TIMEOUT * 2, wait).await;
        }
    }
}
