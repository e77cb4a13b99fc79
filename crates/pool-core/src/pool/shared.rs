//! `Shared`: the part of a pool that its handles, its guards and its
//! background tasks all hold, and the four paths a worker takes through it:
//!
//! * **return** ([`Shared::put_back`]) — a guard is dropped: count it, then
//!   either recycle the worker (its operation was cut off), kill it (its call
//!   ran past the deadline), or let it re-enter service;
//! * **re-enter** ([`Shared::reenter`]) — check the worker and give it to the
//!   next waiter or the idle queue, or retire or discard it;
//! * **discard** ([`Shared::discard`]) — the worker is broken: shut it down and
//!   pass its slot to a replacement;
//! * **arrive** ([`Shared::arrive`]) — a start task made a worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry_writer::RegistryWriter;
use super::state::{Delivery, Leaving, Live, State};
use crate::config::PoolConfig;
use crate::queue::{Queue, Strategy};
use crate::registry::WorkerState;
use crate::worker::{Factory, Worker, WorkerId};

pub(crate) type Wk<F> = <F as Factory>::Worker;
pub(crate) type WkError<F> = <Wk<F> as Worker>::Error;

/// How a checked-out worker came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// Its user finished with it.
    Clean,
    /// It was dropped while an operation was in flight: recycle before reuse.
    Interrupted,
    /// Its call passed the deadline: kill it.
    Kill,
}

/// Why a worker is being discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// `is_broken` said so, or its recycle or health check failed.
    Broken,
    /// Its call ran past the deadline.
    TimedOut,
}

/// A worker's shutdown under way; wait for it, or let it run.
pub(crate) struct Stopped(oneshot::Receiver<()>);

impl Stopped {
    /// Resolves once the worker's `shutdown` has returned.
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// One ended checkout, for the totals and the latency histograms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    pub waited: Duration,
    pub ran: Duration,
    pub returned: std::time::Instant,
}

/// Where a returning guard sends its worker, without knowing the pool's
/// factory or strategy types.
pub(crate) trait Home<W: Worker>: Send + Sync {
    fn put_back(self: Arc<Self>, live: Live<W>, how: Return, served: Served);
}

pub(crate) struct Shared<F: Factory, I: Strategy, W: Strategy> {
    pub name: Arc<str>,
    pub config: PoolConfig,
    pub factory: F,
    pub state: Mutex<State<Wk<F>, I, W>>,
    pub rt: Handle,
    /// Every task the pool spawns, so `close` can wait for all of them.
    pub tasks: TaskTracker,
    /// Cancelled when `close` begins: starts and recycles stop.
    pub closing: CancellationToken,
    /// Cancelled when the close grace runs out: in-flight calls are cut off.
    pub kill: CancellationToken,
    /// Woken whenever a worker leaves `busy`, `starting` or `stopping`, for
    /// `close` to see the pool empty out.
    pub drained: Notify,
    pub registry: Option<RegistryWriter>,
    next_id: AtomicU64,
}

impl<F: Factory, I: Strategy, W: Strategy> Shared<F, I, W> {
    pub fn new(
        config: PoolConfig,
        factory: F,
        rt: Handle,
        registry: Option<RegistryWriter>,
    ) -> Self {
        Shared {
            name: Arc::from(config.name.as_str()),
            state: Mutex::new(State::new(config.size, config.max_overflow)),
            config,
            factory,
            rt,
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            kill: CancellationToken::new(),
            drained: Notify::new(),
            registry,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State<Wk<F>, I, W>> {
        self.state.lock()
    }

    pub fn next_id(&self) -> WorkerId {
        WorkerId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Run `fut` on the pool's runtime, tracked for `close`.
    pub fn spawn<Fut>(&self, fut: Fut)
    where
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(fut, &self.rt);
    }

    /// Tell the registry about a worker, if the pool has one.
    pub fn publish(&self, meta: &super::state::Meta, state: WorkerState) {
        if let Some(reg) = &self.registry {
            reg.put_worker(meta, state);
        }
    }

    /// Re-enter service: the worker is counted busy and no operation is
    /// outstanding on it.
    ///
    /// `served` is the checkout that just ended, if any: it is recorded under
    /// the same lock acquisition, keeping the common return to one lock.
    pub fn reenter(self: &Arc<Self>, mut live: Live<Wk<F>>, served: Option<Served>) {
        if live.worker.is_broken() {
            if let Some(s) = served {
                self.lock().record(s);
            }
            return self.discard(live, Discard::Broken);
        }
        let wants_out = live.worker.retire_reason();
        let free_since = served.map_or_else(std::time::Instant::now, |s| s.returned);
        let mut st = self.lock();
        if let Some(s) = served {
            st.record(s);
        }
        if st.closed {
            drop(st);
            return self.stop_busy(live, Duration::ZERO);
        }
        if live.meta.retiring {
            if st.retire_debt > 0 {
                // Its replacement is already serving.
                st.retire_debt -= 1;
                drop(st);
                return self.stop_busy(live, self.config.shutdown_grace);
            }
            let next = st.hand_off(live, free_since);
            drop(st);
            return self.deliver(next);
        }
        if st.live() > st.capacity() {
            // The pool was shrunk while this worker was out.
            drop(st);
            tracing::info!(pool = %self.name, worker = %live.meta.id, "worker retired: pool shrunk");
            return self.stop_busy(live, self.config.shutdown_grace);
        }
        if let Some(reason) = wants_out {
            st.totals.retired += 1;
            if st.live() > st.size {
                // An overflow worker: no replacement needed.
                drop(st);
                tracing::info!(pool = %self.name, worker = %live.meta.id, %reason, "overflow worker retired");
                return self.stop_busy(live, self.config.shutdown_grace);
            }
            // Keep serving until a warm replacement is up.
            live.meta.retiring = true;
            st.retiring += 1;
            let slot = st.take_slot();
            drop(st);
            tracing::info!(pool = %self.name, worker = %live.meta.id, %reason, "worker retiring; starting its replacement");
            self.publish(&live.meta, WorkerState::Retiring);
            self.start(slot, false);
            st = self.lock();
        }
        let next = st.hand_off(live, free_since);
        drop(st);
        self.deliver(next);
    }

    /// Send a worker promised to a waiter, outside the lock. If that waiter
    /// gave up meanwhile, the worker goes to the next one or to the idle queue.
    pub fn deliver(&self, mut next: Option<Delivery<Wk<F>>>) {
        while let Some(delivery) = next.take() {
            if let Err((back, at)) = delivery.send() {
                next = self.lock().hand_off(back, at);
            }
        }
    }

    /// A busy worker is beyond use: shut it down and, unless the pool is
    /// closing or shrinking, pass its slot to a replacement.
    pub fn discard(self: &Arc<Self>, live: Live<Wk<F>>, why: Discard) {
        let Live { worker, meta, slot } = live;
        let mut st = self.lock();
        st.busy -= 1;
        match why {
            Discard::Broken => st.totals.crashes += 1,
            Discard::TimedOut => {}
        }
        let replace = if meta.retiring {
            // Its replacement is starting or serving already.
            st.retiring -= 1;
            st.retire_debt = st.retire_debt.saturating_sub(1);
            false
        } else {
            !st.closed
                && st.live() <= st.capacity()
                && (st.live() <= st.size || !st.waiters.is_empty())
        };
        let replacement = if replace {
            st.totals.restarts += 1;
            Some(st.reuse_slot(slot))
        } else {
            st.free_slot(slot);
            if st.nobody_can_serve() {
                if let Some(err) = st.last_start_error.clone() {
                    st.fail_waiters(|| crate::Error::Start(err.clone()));
                }
            }
            None
        };
        st.stopping += 1;
        let closed = st.closed;
        drop(st);
        tracing::warn!(pool = %self.name, worker = %meta.id, pid = ?meta.pid, reason = ?why, replace, "worker discarded");
        if closed {
            self.drained.notify_waiters();
        }
        let _ = self.stop_worker(worker, meta, Duration::ZERO);
        if let Some(slot) = replacement {
            self.start(slot, true);
        }
    }

    /// A start task made a worker (it is counted `starting`).
    pub fn arrive(self: &Arc<Self>, live: Live<Wk<F>>) {
        let mut st = self.lock();
        st.starting -= 1;
        st.busy += 1;
        st.last_start_error = None;
        if st.closed {
            drop(st);
            return self.stop_busy(live, Duration::ZERO);
        }
        // A replacement for a retiring worker: retire one now if one is idle,
        // else the next retiring worker to come back stops.
        let mut retired = None;
        if st.retiring > st.retire_debt {
            let mut first = true;
            let found = st.idle.extract(&mut |l: &mut Live<Wk<F>>| {
                let take = first && l.meta.retiring;
                first &= !take;
                take
            });
            match found.into_iter().next() {
                Some(old) => {
                    retired = Some(st.release(old));
                }
                None => st.retire_debt += 1,
            }
        }
        let next = st.hand_off(live, std::time::Instant::now());
        drop(st);
        self.deliver(next);
        if let Some(old) = retired {
            let _ = self.stop_idle(old);
        }
    }

    /// Shut down a busy worker for good and give back its slot.
    pub fn stop_busy(self: &Arc<Self>, live: Live<Wk<F>>, grace: Duration) {
        let out = {
            let mut st = self.lock();
            st.busy -= 1;
            st.release(live)
        };
        self.drained.notify_waiters();
        let _ = self.stop_worker(out.worker, out.meta, grace);
    }

    /// Shut down a worker taken out of the idle queue, its slot already given
    /// back ([`State::release`]) under the lock that took it out.
    pub fn stop_idle(self: &Arc<Self>, out: Leaving<Wk<F>>) -> Stopped {
        self.stop_worker(out.worker, out.meta, self.config.shutdown_grace)
    }

    /// Shut `worker` down in the background; the caller already counted it
    /// `stopping`, under the lock that took its slot away.
    fn stop_worker(
        self: &Arc<Self>,
        worker: Wk<F>,
        meta: super::state::Meta,
        grace: Duration,
    ) -> Stopped {
        self.publish(&meta, WorkerState::Retiring);
        let (down, rx) = oneshot::channel();
        let me = Arc::clone(self);
        self.spawn(async move {
            worker.shutdown(grace).await;
            me.lock().stopping -= 1;
            me.drained.notify_waiters();
            if let Some(reg) = &me.registry {
                reg.remove_worker(meta.id);
            }
            tracing::debug!(pool = %me.name, worker = %meta.id, pid = ?meta.pid, "worker shut down");
            let _ = down.send(());
        });
        Stopped(rx)
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Home<Wk<F>> for Shared<F, I, W> {
    fn put_back(self: Arc<Self>, mut live: Live<Wk<F>>, how: Return, served: Served) {
        live.meta.tasks += 1;
        live.meta.idle_since = served.returned;
        tracing::trace!(pool = %self.name, worker = %live.meta.id, ?how, "worker returned");
        match how {
            Return::Clean => self.reenter(live, Some(served)),
            Return::Interrupted => {
                self.lock().record(served);
                self.recycle(live)
            }
            Return::Kill => {
                {
                    let mut st = self.lock();
                    st.record(served);
                    st.totals.call_timeouts += 1;
                    st.totals.timeouts += 1;
                }
                self.discard(live, Discard::TimedOut)
            }
        }
    }
}
