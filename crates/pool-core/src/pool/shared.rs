//! `Shared`: the part of a pool that its handles, its guards and its
//! background tasks all hold, and the paths a worker takes through it:
//!
//! * **return** ([`Shared::put_back`]) — a guard is dropped: count it, then
//!   either cancel what it left in flight (its call was dropped or ran past
//!   its deadline; see `recycle`), kill it (its user asked), or let it
//!   re-enter service;
//! * **re-enter** ([`Shared::reenter`]) — check the worker, then let the
//!   state decide: next waiter, idle queue, retire, or stop;
//! * **discard** ([`Shared::discard`]) — the worker is broken or was killed:
//!   shut it down and start a replacement if one is wanted.
//!
//! Each path asks the worker what it needs to know first (outside the
//! lock), lets [`State`] decide under the lock, then carries out the
//! returned [`Effects`] after the lock is released.

use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry_writer::RegistryWriter;
use super::state::{Effects, Reentry, State};
use crate::clock::Stamp;
use crate::config::PoolConfig;
use crate::live::{Held, Leaving, Live, Meta, Served, StopReason};
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::registry::WorkerState;
use crate::worker::{Factory, Worker};

pub(crate) use crate::worker::{ErrorOf as WkError, WorkerOf as Wk};

/// How a checked-out worker came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// Its user finished with it.
    Clean,
    /// It was dropped while an operation was in flight: cancel the
    /// operation (or recycle the worker) before reuse.
    Interrupted,
    /// Its call passed the deadline: cancel it, or kill the worker.
    Late,
    /// Its user asked for it to be killed.
    Kill,
}

/// A worker's shutdown under way; wait for it, or let it run.
pub(crate) struct Stopped(oneshot::Receiver<()>);

impl Stopped {
    /// Resolves once the worker's `shutdown` has returned.
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Where a returning guard sends its worker, without knowing the pool's
/// factory or strategy types, and what a guard's calls need from the pool.
pub(crate) trait Home<W: Worker>: Send + Sync {
    /// A guard gave `live` back, as `how`; its caller waited `waited_ns`
    /// for it and had it from `taken`.
    fn put_back(self: Arc<Self>, live: Live<W>, how: Return, waited_ns: u64, taken: Stamp);
    /// The deadline for a call that gives none: the pool's `call_timeout`.
    fn call_timeout(&self) -> Duration;
    /// Cancelled when the close grace runs out: in-flight calls are cut off.
    fn kill_signal(&self) -> &CancellationToken;
    fn name(&self) -> &str;
}

pub(crate) struct Shared<F: Factory, I: IdleStrategy, W: WaitStrategy> {
    pub name: Arc<str>,
    pub config: PoolConfig,
    pub factory: F,
    state: Mutex<State<Wk<F>, I, W>>,
    pub rt: Handle,
    /// Every task the pool spawns, so `close` can wait for all of them.
    pub tasks: TaskTracker,
    /// Cancelled when `close` begins: starts and recycles stop. Each start's
    /// own token is a child of it.
    pub closing: CancellationToken,
    /// Cancelled when the close grace runs out: in-flight calls are cut off.
    pub kill: CancellationToken,
    /// Woken whenever a worker leaves `busy`, `starting` or `stopping`, or
    /// a start fails, for `close` to see the pool empty out and `build` to
    /// see its warm workers up ([`wait_until`](Shared::wait_until)).
    pub drained: Notify,
    pub registry: Option<RegistryWriter>,
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Shared<F, I, W> {
    pub fn new(
        config: PoolConfig,
        factory: F,
        rt: Handle,
        registry: Option<RegistryWriter>,
    ) -> Self {
        Shared {
            name: Arc::from(config.name.as_str()),
            state: Mutex::new(State::new(&config)),
            config,
            factory,
            rt,
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            kill: CancellationToken::new(),
            drained: Notify::new(),
            registry,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State<Wk<F>, I, W>> {
        self.state.lock()
    }

    /// Run `fut` on the pool's runtime, tracked for `close`.
    pub fn spawn<Fut>(&self, fut: Fut)
    where
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(fut, &self.rt);
    }

    /// Tell the registry about a worker, if the pool has one.
    pub fn publish(&self, meta: &Meta, state: WorkerState) {
        if let Some(reg) = &self.registry {
            reg.put_worker(meta, state);
        }
    }

    /// Wait until `done` holds for the state, or `deadline`; whether it held.
    pub async fn wait_until(
        &self,
        deadline: tokio::time::Instant,
        done: impl Fn(&State<Wk<F>, I, W>) -> bool,
    ) -> bool {
        loop {
            let changed = self.drained.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.lock());
            }
        }
    }

    /// Carry out what the state decided: deliver, stop, start.
    pub fn apply(self: &Arc<Self>, fx: Effects<Wk<F>>) {
        wake(fx.wake);
        let stopped_some = !fx.stop.is_empty();
        for out in fx.stop {
            let _ = self.stop_worker(out);
        }
        if stopped_some {
            self.drained.notify_waiters();
        }
        for ticket in fx.start {
            self.start(ticket);
        }
    }

    /// Re-enter service: the worker is counted busy and no operation is
    /// outstanding on it.
    ///
    /// `served` is the checkout that just ended, if any: it is recorded under
    /// the same lock acquisition, keeping the common return to one lock.
    #[inline]
    pub fn reenter(self: &Arc<Self>, live: Live<Wk<F>>, served: Option<Served>) {
        let mut live = live;
        if live.meta.lane {
            return self.lane_back(live, served);
        }
        if live.worker.is_broken() {
            if let Some(s) = served {
                self.lock().record(s);
            }
            return self.discard(live, StopReason::Broken);
        }
        let wants_out = live.worker.retire_reason();
        let free_since = served.map_or_else(Stamp::now, |s| s.returned);
        let fx = {
            let mut st = self.lock();
            if let Some(s) = served {
                st.record(s);
            }
            live.meta.idle_since = free_since;
            st.reenter(live, wants_out, free_since, &self.closing)
        };
        match fx {
            Reentry::Served(waiter) => wake(waiter),
            Reentry::Decided(fx) => self.apply(fx),
        }
    }

    /// A lane is back from a call that ended (see `state::lanes`): its
    /// worker lends it on or re-enters service; a broken lane takes its
    /// worker out of service. The lane itself is dropped after the lock.
    #[cold]
    fn lane_back(self: &Arc<Self>, mut lane: Live<Wk<F>>, served: Option<Served>) {
        let broken = lane.worker.is_broken();
        let at = served.map_or_else(Stamp::now, |s| s.returned);
        let fx = {
            let mut st = self.lock();
            if let Some(s) = served {
                st.record(s);
            }
            if broken {
                st.discard_lane(lane.meta.id, StopReason::Broken, &self.closing)
            } else {
                st.lane_returned(lane.meta.id, at, &self.closing)
            }
        };
        drop(lane);
        self.apply(fx);
    }

    /// A busy worker is beyond use, or was killed: shut it down and start a
    /// replacement if one is wanted. For a lane, its worker.
    pub fn discard(self: &Arc<Self>, live: Live<Wk<F>>, reason: StopReason) {
        let fx = {
            let mut st = self.lock();
            if live.meta.lane {
                st.discard_lane(live.meta.id, reason, &self.closing)
            } else {
                st.discard(live, reason, &self.closing)
            }
        };
        self.apply(fx);
    }

    /// Shut down `out` in the background; it is counted `stopping` until
    /// its shutdown returns.
    pub fn stop_worker(self: &Arc<Self>, out: Leaving<Wk<F>>) -> Stopped {
        let Leaving { live, reason } = out;
        let Held { worker, meta } = *live;
        let grace = if reason.graceful() {
            self.config.shutdown_grace
        } else {
            Duration::ZERO
        };
        match &reason {
            StopReason::Broken | StopReason::Killed => {
                tracing::warn!(pool = %self.name, worker = %meta.id, pid = ?meta.pid, ?reason, "worker discarded")
            }
            _ => {
                tracing::info!(pool = %self.name, worker = %meta.id, pid = ?meta.pid, ?reason, "worker leaving the pool")
            }
        }
        self.publish(&meta, WorkerState::Retiring);
        let (down, rx) = oneshot::channel();
        let me = Arc::clone(self);
        self.spawn(async move {
            worker.shutdown(grace).await;
            me.lock().stopped();
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

/// Wake a waiter that was left a worker, once the lock is released.
fn wake(waiter: Option<Waker>) {
    if let Some(waker) = waiter {
        waker.wake();
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Home<Wk<F>> for Shared<F, I, W> {
    fn put_back(self: Arc<Self>, mut live: Live<Wk<F>>, how: Return, waited_ns: u64, taken: Stamp) {
        let served = Served {
            waited_ns,
            taken,
            returned: Stamp::now(),
        };
        live.meta.tasks += 1;
        tracing::trace!(pool = %self.name, worker = %live.meta.id, ?how, "worker returned");
        match how {
            Return::Clean => self.reenter(live, Some(served)),
            Return::Interrupted | Return::Late => {
                let late = how == Return::Late;
                {
                    let mut st = self.lock();
                    st.record(served);
                    if late {
                        st.count_call_timeout();
                    }
                }
                self.cancel(live, late)
            }
            Return::Kill => {
                {
                    let mut st = self.lock();
                    st.record(served);
                    st.count_call_timeout();
                }
                self.discard(live, StopReason::Killed)
            }
        }
    }

    fn call_timeout(&self) -> Duration {
        self.config.call_timeout
    }

    fn kill_signal(&self) -> &CancellationToken {
        &self.kill
    }

    fn name(&self) -> &str {
        &self.name
    }
}
