//! A user-written idle strategy: the idle worker that served the fewest tasks
//! goes first, spreading wear. `tests/custom_strategy.rs` checks it.
use cenote::strategy::{Caller, IdleStrategy, IdleWorker, Queue};
use cenote::{Checkout, Factory, Pool, Worker, WorkerCtx};
use std::{collections::BTreeMap, convert::Infallible, time::Duration};

/// By (tasks served, arrival): O(log n); a session claim scans, O(n).
pub struct LeastTasksQueue<W>(BTreeMap<(u64, u64), IdleWorker<W>>, u64);

impl<W: Send + 'static> Queue<IdleWorker<W>> for LeastTasksQueue<W> {
    type Key = (u64, u64);
    fn push(&mut self, worker: IdleWorker<W>) -> Self::Key {
        self.1 += 1;
        let key = (worker.tasks_served(), self.1);
        self.0.insert(key, worker);
        key
    }

    fn pop(&mut self, caller: Caller<'_>) -> Option<IdleWorker<W>> {
        // The contract: the caller's session worker first, if it is idle.
        let session = caller.affinity().map(|a| &a.key);
        let claimed = session.and_then(|k| self.0.iter().find(|(_, w)| w.holds(k)));
        let key = *claimed.or_else(|| self.0.first_key_value())?.0;
        self.0.remove(&key)
    }

    fn remove(&mut self, key: Self::Key) -> Option<IdleWorker<W>> {
        self.0.remove(&key)
    }
    fn len(&self) -> usize {
        self.0.len()
    }

    fn take_matching(
        &mut self,
        limit: usize,
        pred: &mut dyn FnMut(&mut IdleWorker<W>) -> bool,
    ) -> Vec<IdleWorker<W>> {
        let picked = self.0.iter_mut().filter_map(|(k, w)| pred(w).then_some(*k));
        let keys: Vec<_> = picked.take(limit).collect();
        keys.iter().filter_map(|k| self.0.remove(k)).collect()
    }
}

impl<W> Default for LeastTasksQueue<W> {
    fn default() -> Self {
        LeastTasksQueue(BTreeMap::new(), 0)
    }
}

/// The strategy a pool is typed with: `Pool<F, LeastTasks, Fifo>`.
pub struct LeastTasks;
impl IdleStrategy for LeastTasks {
    type Queue<W: Send + 'static> = LeastTasksQueue<W>;
    const NAME: &'static str = "least-tasks";
}

struct Nop;
impl Worker for Nop {
    type Error = Infallible;
    async fn shutdown(self, _: Duration) {}
}
impl Factory for Nop {
    type Worker = Nop;
    async fn create(&self, _: WorkerCtx) -> Result<Nop, Infallible> {
        Ok(Nop)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool: Pool<Nop, LeastTasks, cenote::Fifo> = Pool::builder(Nop).size(3).build().await?;
    let mut served = BTreeMap::new();
    for _ in 0..12 {
        *served.entry(Checkout::id(&pool.get().await?)).or_insert(0) += 1; // LIFO: 12 on one
    }
    println!("checkouts per worker: {served:?}");
    pool.close().await;
    Ok(())
}
