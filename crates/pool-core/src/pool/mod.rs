//! The pool: one handle type, [`Pool`], over the pieces in this module.
//!
//! Data takes one path through it. A caller's [`get`](Pool::get) takes an idle
//! worker or queues as a waiter ([`waiter`]); the worker comes back when its
//! [`Checkout`] drops ([`checkout`]) and re-enters service through
//! [`shared`], which asks the worker what it needs to know and carries out
//! what [`state`] decides under the pool's lock: "next waiter", "idle",
//! "cancel" or "recycle" ([`recycle`]), "replace" or "retire". Workers are
//! made only by start tasks ([`start`]), each holding a ticket the state
//! counted. A call's time is resolved once ([`budget`]) and enforced once,
//! by its checkout. A worker that serves many callers at once is lent
//! through lanes (see `state::lanes`, which says why that design).

mod budget;
mod builder;
mod checkout;
mod handoff;
mod options;
mod recycle;
mod registry_writer;
mod retry;
mod service;
mod sessions;
mod shared;
mod shutdown;
mod start;
mod state;
mod waiter;

use std::sync::Arc;
use std::time::Duration;

pub use budget::CallBudget;
pub use builder::PoolBuilder;
pub use checkout::Checkout;
pub use options::{CallOptions, CheckoutOptions};
pub use retry::{Retry, RetryIf, RetryPolicy, Transient};
pub use service::PoolService;

use shared::{Shared, Wk, WkError};
use waiter::Acquire;

use crate::affinity::AffinityKey;
use crate::clock::Stamp;
use crate::error::Error;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::registry::Load;
use crate::status::Status;
use crate::worker::{Call, Factory, WorkerId};

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
pub struct Pool<F: Factory, I: IdleStrategy, W: WaitStrategy> {
    owner: Arc<Owner<F, I, W>>,
}

/// Closes the pool when the last handle goes.
struct Owner<F: Factory, I: IdleStrategy, W: WaitStrategy> {
    shared: Arc<Shared<F, I, W>>,
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Clone for Pool<F, I, W> {
    fn clone(&self) -> Self {
        Pool {
            owner: Arc::clone(&self.owner),
        }
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Drop for Owner<F, I, W> {
    fn drop(&mut self) {
        let shared = Arc::clone(&self.shared);
        let rt = shared.rt.clone();
        // Fails only if the runtime is gone; then workers' own Drop (which
        // must kill their resource) is the last line.
        drop(rt.spawn(async move { shared.close().await }));
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Pool<F, I, W> {
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

    /// The factory that makes the pool's workers: for what it reports about
    /// itself (a Python pool's start mode, say).
    pub fn factory(&self) -> &F {
        &self.shared().factory
    }

    /// Check out a worker, waiting up to the pool's `checkout_timeout`.
    pub async fn get(&self) -> Result<Checkout<Wk<F>>, Error<WkError<F>>> {
        self.get_by_ref(&options::NO_CHECKOUT_OPTIONS).await
    }

    /// Check out a worker with options for this checkout: its own timeout
    /// (instead of `checkout_timeout`), its waiter priority (used by a
    /// `Priority` waiter strategy; higher is served first), and its session
    /// (served by the worker that served the session before; see
    /// [`AffinityMode`](crate::AffinityMode)).
    pub async fn get_with(
        &self,
        opts: CheckoutOptions,
    ) -> Result<Checkout<Wk<F>>, Error<WkError<F>>> {
        self.get_by_ref(&opts).await
    }

    /// `get_with` by reference: `get` passes shared defaults, so its future
    /// owns nothing to drop.
    async fn get_by_ref(
        &self,
        opts: &CheckoutOptions,
    ) -> Result<Checkout<Wk<F>>, Error<WkError<F>>> {
        // The budget is not kept across the wait: only what `Acquire` took.
        let acquire = self.checkout(opts, &CallBudget::of_checkout(opts, &self.shared().config));
        acquire.await
    }

    /// Check out a worker for one call of `opts`, whose time is `budget`
    /// (see [`budget`](Pool::budget)): it waits until the budget's checkout
    /// deadline. For code that serves a call another way than
    /// [`call_with`](Pool::call_with) (a stream, say), then runs it by
    /// [`CallBudget::start`].
    pub async fn get_for(
        &self,
        opts: &CallOptions,
        budget: &CallBudget,
    ) -> Result<Checkout<Wk<F>>, Error<WkError<F>>> {
        self.checkout(&opts.checkout, budget).await
    }

    /// Wait for a worker until `budget`'s checkout deadline, taken once: a
    /// worker found broken is replaced, and the caller waits on for another
    /// within the same deadline (see [`Acquire`]).
    fn checkout<'a>(
        &'a self,
        opts: &'a CheckoutOptions,
        budget: &CallBudget,
    ) -> Acquire<'a, F, I, W> {
        Acquire::new(
            self.shared(),
            opts,
            budget.asked(),
            budget.checkout_timeout(),
        )
    }

    /// A call's time, resolved from its options and this pool's config:
    /// the one place `checkout_timeout`, `call_timeout` and a call's own
    /// values meet. [`call_with`](Pool::call_with) uses it; so does
    /// anything that checks out a worker to serve one call another way (a
    /// stream, a node's server), through [`get_for`](Pool::get_for) and
    /// [`CallBudget::start`].
    pub fn budget(&self, opts: &CallOptions) -> CallBudget {
        CallBudget::resolve(opts, &self.shared().config)
    }

    /// Check out a worker, serve `req`, give the worker back, under the
    /// pool's `checkout_timeout` and `call_timeout`.
    pub async fn call<Req>(
        &self,
        req: Req,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        self.call_by_ref(req, &options::NO_CALL_OPTIONS).await
    }

    /// [`call`](Pool::call) with options for this call: its deadline, its
    /// checkout timeout, its whole budget, its waiter priority, its session.
    ///
    /// The deadline is the call's only one: the worker learns it (through
    /// [`CallCtx`](crate::CallCtx)); past it the call ends with
    /// [`Error::CallTimeout`] at once, and its worker is asked to cancel it
    /// (see [`Checkout`]). If the caller drops this future early, the call
    /// is cancelled the same way.
    pub async fn call_with<Req>(
        &self,
        req: Req,
        opts: CallOptions,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        self.call_by_ref(req, &opts).await
    }

    /// `call_with` by reference (see [`checkout`](Pool::checkout)).
    async fn call_by_ref<Req>(
        &self,
        req: Req,
        opts: &CallOptions,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        let budget = CallBudget::resolve(opts, &self.shared().config);
        let mut guard = self.checkout(&opts.checkout, &budget).await?;
        match budget.start() {
            Some(ctx) => guard.call_in(req, ctx).await,
            // Nothing left to run it in: the worker goes back unused rather
            // than be cut off by a deadline it never had a chance to meet.
            None => Err(Error::CallTimeout(Duration::ZERO)),
        }
    }

    /// Forget session `key`: its next call starts a new session on
    /// whichever worker the idle strategy picks (possibly the same one).
    /// After [`Error::AffinityLost`] this is how a strict session starts
    /// over; it also frees the key's entry early. Whether the key was
    /// remembered.
    pub fn forget_affinity(&self, key: impl Into<AffinityKey>) -> bool {
        self.shared().lock().forget_session(&key.into())
    }

    /// Whether this pool remembers session `key`: bound to a worker, or
    /// lost with one (its strict calls then fail with
    /// [`Error::AffinityLost`]). Not a use of the key. How a caller on
    /// another node finds which node holds a session.
    pub fn holds_session(&self, key: impl Into<AffinityKey>) -> bool {
        self.shared().lock().holds_session(&key.into())
    }

    /// A snapshot of sizes, totals and latency percentiles.
    pub fn status(&self) -> Status {
        let shared = self.shared();
        shared.lock().status(&shared.name)
    }

    /// The counts a node publishes as its load (idle, busy, waiting,
    /// live): one short lock, none of the percentiles [`status`](Pool::status)
    /// computes, so it can be read often.
    pub fn load(&self) -> Load {
        self.shared().lock().load()
    }

    /// Check the pool's internal counts against each other and against the
    /// hard cap (for tests, feature `testing`): returns what disagrees.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.shared().lock().check()
    }

    /// Change the warm size. `size + max_overflow` is a hard cap on the
    /// workers the pool holds: at every instant
    /// `idle + starting + busy <= max(size + max_overflow, busy)`.
    ///
    /// * Growing starts the missing warm workers at once.
    /// * Shrinking takes effect at once for what is not in use: idle workers
    ///   above the new cap are shut down (gracefully, within
    ///   `shutdown_grace`), and starts no longer needed are cancelled (a
    ///   worker that arrives from one anyway is shut down on arrival). Busy
    ///   workers above the cap finish their checkout and are shut down as
    ///   they come back, never handed to another caller. Workers above the
    ///   new `size` but within the cap serve on as overflow and retire after
    ///   `overflow_idle` unused.
    ///
    /// Fails only if `size + max_overflow` would be 0. On a closed pool it
    /// does nothing.
    pub fn resize(&self, size: usize) -> Result<(), crate::ConfigError> {
        let shared = self.shared();
        if size + shared.config.max_overflow == 0 {
            return Err(crate::ConfigError(
                "size + max_overflow must be at least 1, or no caller can ever be served".into(),
            ));
        }
        let fx = shared.lock().resize(size, &shared.closing);
        tracing::info!(pool = %shared.name, size, starting = fx.start.len(), stopping = fx.stop.len(), "pool resized");
        shared.apply(fx);
        Ok(())
    }

    /// Grow the warm size by `n`, starting `n` workers now (as many as fit
    /// under the cap).
    pub fn add_workers(&self, n: usize) {
        let size = self.shared().lock().size();
        // Growing never breaks `size + max_overflow >= 1`.
        let _ = self.resize(size + n);
    }

    /// Take up to `n` idle workers out of the pool, lowering the warm size
    /// by as many, and wait until each is shut down. Returns how many.
    pub async fn remove_idle_workers(&self, n: usize) -> usize {
        let shared = self.shared();
        let removed = shared.lock().remove_idle(n);
        let count = removed.len();
        self.stop_and_wait(removed).await;
        tracing::info!(pool = %shared.name, removed = count, "idle workers removed");
        count
    }

    /// Shut down every idle worker for which `keep` is false, wait for it,
    /// then start replacements up to the warm size. Returns how many went.
    pub async fn retain(&self, mut keep: impl FnMut(&WorkerInfo) -> bool) -> usize {
        let shared = self.shared();
        let now = Stamp::now();
        let removed = shared
            .lock()
            .remove_idle_where(&mut |l: &crate::live::Live<Wk<F>>| {
                !keep(&WorkerInfo {
                    id: l.meta.id,
                    pid: l.meta.pid,
                    age: now.since(l.meta.started),
                    tasks_served: l.meta.tasks,
                    idle_for: now.since(l.meta.idle_since),
                })
            });
        let count = removed.len();
        self.stop_and_wait(removed).await;
        let fx = {
            let mut st = shared.lock();
            let size = st.size();
            st.resize(size, &shared.closing)
        };
        shared.apply(fx);
        count
    }

    async fn stop_and_wait(&self, workers: Vec<crate::live::Leaving<Wk<F>>>) {
        let shared = self.shared();
        let down: Vec<_> = workers
            .into_iter()
            .map(|out| shared.stop_worker(out).wait())
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

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> std::fmt::Debug for Pool<F, I, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("idle", &I::NAME)
            .field("waiters", &W::NAME)
            .finish()
    }
}
