//! The pool: one handle type, [`Pool`], over the pieces in this module.
//!
//! Data takes one path through it. A caller's [`get`](Pool::get) takes an idle
//! worker or queues as a waiter ([`waiter`]); the worker comes back when its
//! [`Checkout`] drops ([`checkout`]) and re-enters service through
//! [`shared`], the only place that decides between "next waiter", "idle",
//! "recycle" ([`recycle`]), "replace" and "retire". Workers are made only by
//! start tasks ([`start`]); counts are kept honest by slot tokens ([`state`]).

mod builder;
mod checkout;
mod recycle;
mod registry_writer;
mod retry;
mod shared;
mod shutdown;
mod start;
mod state;
mod waiter;

use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;
use tokio::sync::oneshot;

pub use builder::PoolBuilder;
pub use checkout::Checkout;
pub use retry::{RetryIf, RetryPolicy};

use shared::{Home, Shared, Wk, WkError};
use waiter::Waiting;

use crate::error::Error;
use crate::queue::{Priority, Queue, Strategy};
use crate::status::Status;
use crate::worker::{Call, Factory, Worker, WorkerId};

/// Options for one [`Pool::call_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The call's deadline once a worker is in hand (default: the pool's
    /// `call_timeout`). Past it the worker is killed and replaced.
    pub timeout: Option<Duration>,
    /// The waiter priority, used when the waiter strategy is `Priority`.
    pub priority: Priority,
}

impl CallOptions {
    /// Set the call's deadline.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Set the waiter priority (higher is served first).
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
}

/// What [`Pool::retain`] shows the predicate about an idle worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: WorkerId,
    /// Its OS process id, where it has one.
    pub pid: Option<u32>,
    /// How long it has been running.
    pub age: Duration,
    /// Tasks it has served.
    pub tasks_served: u64,
    /// How long it has been idle.
    pub idle_for: Duration,
}

/// A pool of workers made by `F`, its idle workers ordered by strategy `I`
/// and its waiting callers by strategy `W`.
///
/// Cloning is cheap and every clone is the same pool. When the last clone is
/// dropped without [`close`](Pool::close), the pool closes itself in the
/// background, so no worker outlives it.
pub struct Pool<F: Factory, I: Strategy, W: Strategy> {
    owner: Arc<Owner<F, I, W>>,
}

/// Closes the pool when the last handle goes.
struct Owner<F: Factory, I: Strategy, W: Strategy> {
    shared: Arc<Shared<F, I, W>>,
}

impl<F: Factory, I: Strategy, W: Strategy> Clone for Pool<F, I, W> {
    fn clone(&self) -> Self {
        Pool {
            owner: Arc::clone(&self.owner),
        }
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Drop for Owner<F, I, W> {
    fn drop(&mut self) {
        let shared = Arc::clone(&self.shared);
        let rt = shared.rt.clone();
        // Fails only if the runtime is gone; then workers' own Drop (which
        // must kill their resource) is the last line.
        drop(rt.spawn(async move { shared.close().await }));
    }
}

/// What a caller does next after looking at the pool under its lock.
enum Next<'a, F: Factory, I: Strategy, W: Strategy> {
    Take(state::Live<Wk<F>>),
    Wait(Waiting<'a, F, I, W>),
}

impl<F: Factory, I: Strategy, W: Strategy> Pool<F, I, W> {
    /// Start building a pool around `factory`.
    pub fn builder(factory: F) -> PoolBuilder<F, I, W> {
        PoolBuilder::new(factory)
    }

    pub(crate) fn from_shared(shared: Arc<Shared<F, I, W>>) -> Self {
        Pool {
            owner: Arc::new(Owner { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared<F, I, W>> {
        &self.owner.shared
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// Check out a worker, waiting up to `checkout_timeout`.
    pub async fn get(&self) -> Result<Checkout<Wk<F>>, Error<WkError<F>>> {
        self.get_with_priority(0).await
    }

    /// Check out a worker; with a `Priority` waiter strategy, higher
    /// priorities are served first.
    pub async fn get_with_priority(
        &self,
        priority: Priority,
    ) -> Result<Checkout<Wk<F>>, Error<WkError<F>>> {
        let shared = self.shared();
        let asked = Instant::now();
        loop {
            // An idle worker is taken without a second look at the clock.
            let (mut live, taken) = match self.take_or_queue(priority, asked)? {
                Next::Take(live) => (live, asked),
                Next::Wait(waiting) => waiting.grant().await?,
            };
            if live.worker.is_broken() {
                shared.discard(live, shared::Discard::Broken);
                continue;
            }
            tracing::trace!(pool = %shared.name, worker = %live.meta.id, "worker checked out");
            let home: Arc<dyn Home<Wk<F>>> = Arc::clone(shared) as _;
            return Ok(Checkout::new(
                live,
                home,
                taken.duration_since(asked),
                taken,
            ));
        }
    }

    fn take_or_queue(
        &self,
        priority: Priority,
        asked: Instant,
    ) -> Result<Next<'_, F, I, W>, Error<WkError<F>>> {
        let shared = self.shared();
        let mut st = shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if let Some(live) = st.idle.pop() {
            st.busy += 1;
            return Ok(Next::Take(live));
        }
        if st.nobody_can_serve() {
            if let Some(err) = &st.last_start_error {
                return Err(Error::Start(Arc::clone(err)));
            }
        }
        if st.waiters.len() >= shared.config.max_waiters {
            st.totals.rejected += 1;
            let waiting = st.waiters.len();
            tracing::debug!(pool = %shared.name, waiting, "caller rejected: pool saturated");
            return Err(Error::Saturated { waiting });
        }
        if st.should_grow() {
            let slot = st.take_slot();
            drop(st);
            tracing::debug!(pool = %shared.name, "no idle worker: starting one on demand");
            shared.start(slot, false);
            st = shared.lock();
            // The new worker may not be up yet; re-check idle as a worker may
            // have come back meanwhile.
            if let Some(live) = st.idle.pop() {
                st.busy += 1;
                return Ok(Next::Take(live));
            }
        }
        let (tx, rx) = oneshot::channel();
        let deadline = asked + shared.config.checkout_timeout;
        let key = st.push_waiter(tx, asked, deadline, priority);
        Ok(Next::Wait(Waiting::new(shared, key, rx)))
    }

    /// Check out a worker, serve `req`, give the worker back, under the
    /// pool's `call_timeout`.
    pub async fn call<Req>(
        &self,
        req: Req,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        self.call_with(req, CallOptions::default()).await
    }

    /// [`call`](Pool::call) with a waiter priority.
    pub async fn call_with_priority<Req>(
        &self,
        req: Req,
        priority: Priority,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        self.call_with(req, CallOptions::default().priority(priority))
            .await
    }

    /// [`call`](Pool::call) with its own deadline and priority.
    ///
    /// Past the deadline the call is cut off and its worker killed and
    /// replaced ([`Error::CallTimeout`]). If the caller drops this future
    /// early, the worker is recycled before it serves again.
    pub async fn call_with<Req>(
        &self,
        req: Req,
        opts: CallOptions,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        let shared = self.shared();
        let limit = opts.timeout.unwrap_or(shared.config.call_timeout);
        let mut guard = self.get_with_priority(opts.priority).await?;
        let deadline = tokio::time::Instant::now() + limit;
        let outcome = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, guard.call(req)) => r,
            // The close grace ran out: cut the call off; the guard's drop
            // (in flight, pool closed) kills the worker.
            () = shared.kill.cancelled() => return Err(Error::Closed),
        };
        let broken = matches!(outcome, Ok(Err(_))) && guard.is_broken();
        match outcome {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if !broken => Err(Error::Worker(e)),
            // A worker that broke only once the deadline had passed ran into
            // it: a stalled runtime can find a worker's own backstop deadline
            // (set later than this one) expired before this one is polled.
            Ok(Err(e)) if tokio::time::Instant::now() < deadline => Err(Error::Crashed(e)),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(pool = %shared.name, worker = %guard.id(), ?limit, "call timed out; killing its worker");
                guard.kill_on_return();
                Err(Error::CallTimeout(limit))
            }
        }
    }

    /// A snapshot of sizes, totals and latency percentiles.
    pub fn status(&self) -> Status {
        let shared = self.shared();
        let st = shared.lock();
        Status {
            name: shared.name.to_string(),
            size: st.size,
            max_overflow: st.max_overflow,
            live: st.slots(),
            idle: st.idle.len(),
            busy: st.busy,
            overflow: st.live().saturating_sub(st.size),
            starting: st.starting,
            retiring: st.retiring,
            stopping: st.stopping,
            waiting: st.waiters.len(),
            closed: st.closed,
            crash_looping: st.crash_looping(shared.config.crash_budget),
            totals: st.totals.clone(),
            wait: st.metrics.wait(),
            run: st.metrics.run(),
        }
    }

    /// Check the pool's internal counts against each other (for tests and
    /// debugging): slots held == starting + idle + busy, no idle worker while
    /// callers wait, and the like. Returns what disagrees.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.shared().lock().check()
    }

    /// Change the warm size. Growing starts the new workers at once;
    /// shrinking shuts idle workers down now and busy ones when they return.
    pub fn resize(&self, size: usize) -> Result<(), crate::ConfigError> {
        let shared = self.shared();
        let (slots, surplus) = {
            let mut st = shared.lock();
            if size + st.max_overflow == 0 {
                return Err(crate::ConfigError(
                    "size + max_overflow must be at least 1, or no caller can ever be served"
                        .into(),
                ));
            }
            if st.closed {
                return Ok(());
            }
            st.size = size;
            let missing = size.saturating_sub(st.live());
            let slots: Vec<_> = (0..missing).map(|_| st.take_slot()).collect();
            let mut excess = st.live().saturating_sub(st.capacity());
            let surplus = st.idle.extract(&mut |_| {
                let take = excess > 0;
                excess -= usize::from(take);
                take
            });
            (slots, st.release_all(surplus))
        };
        tracing::info!(pool = %shared.name, size, starting = slots.len(), stopping = surplus.len(), "pool resized");
        for slot in slots {
            shared.start(slot, false);
        }
        for out in surplus {
            let _ = shared.stop_idle(out);
        }
        Ok(())
    }

    /// Grow the warm size by `n`, starting `n` workers now.
    pub fn add_workers(&self, n: usize) {
        let size = self.shared().lock().size;
        // Growing never breaks `size + max_overflow >= 1`.
        let _ = self.resize(size + n);
    }

    /// Take up to `n` idle workers out of the pool, lowering the warm size
    /// accordingly, and wait until each is shut down. Returns how many.
    pub async fn remove_idle_workers(&self, n: usize) -> usize {
        let shared = self.shared();
        let removed = {
            let mut st = shared.lock();
            let mut left = n.min(st.size);
            let removed = st.idle.extract(&mut |_| {
                let take = left > 0;
                left -= usize::from(take);
                take
            });
            st.size -= removed.len();
            st.release_all(removed)
        };
        let count = removed.len();
        self.stop_and_wait(removed).await;
        tracing::info!(pool = %shared.name, removed = count, "idle workers removed");
        count
    }

    /// Shut down every idle worker for which `keep` is false, wait for it,
    /// then start replacements up to the warm size. Returns how many went.
    pub async fn retain(&self, mut keep: impl FnMut(&WorkerInfo) -> bool) -> usize {
        let shared = self.shared();
        let now = std::time::Instant::now();
        let removed = {
            let mut st = shared.lock();
            let out = st.idle.extract(&mut |l: &mut state::Live<Wk<F>>| {
                !keep(&WorkerInfo {
                    id: l.meta.id,
                    pid: l.meta.pid,
                    age: now.duration_since(l.meta.started),
                    tasks_served: l.meta.tasks,
                    idle_for: now.duration_since(l.meta.idle_since),
                })
            });
            st.release_all(out)
        };
        let count = removed.len();
        self.stop_and_wait(removed).await;
        let size = shared.lock().size;
        let _ = self.resize(size);
        count
    }

    async fn stop_and_wait(&self, workers: Vec<state::Leaving<Wk<F>>>) {
        let shared = self.shared();
        let down: Vec<_> = workers
            .into_iter()
            .map(|out| shared.stop_idle(out).wait())
            .collect();
        let bound = shared.config.shutdown_grace + Duration::from_secs(5);
        let _ = tokio::time::timeout(bound, futures::future::join_all(down)).await;
    }

    /// Stop taking work, let in-flight work finish within `shutdown_grace`,
    /// then kill what is left and wait for every worker to be shut down.
    pub async fn close(&self) {
        self.shared().close().await;
    }
}

impl<F: Factory, I: Strategy, W: Strategy> std::fmt::Debug for Pool<F, I, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("idle", &I::NAME)
            .field("waiters", &W::NAME)
            .finish()
    }
}
