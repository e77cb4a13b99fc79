//! Checkout: a caller takes an idle worker (its session's, if it has one),
//! or the pool grows for it.

use super::*;

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// Take the idle worker the strategy picks for `caller` (the one
    /// holding its session key, if idle); it is now busy.
    #[inline]
    pub fn take_idle(&mut self, caller: Caller<'_>) -> Option<Live<Wk>> {
        let IdleWorker(live) = self.idle.pop(caller)?;
        Some(self.lend(live, caller))
    }

    /// A worker out of the idle queue goes to `caller`: busy, and serving
    /// the caller's session from now on.
    #[inline]
    pub(super) fn lend(&mut self, mut live: Live<Wk>, caller: Caller<'_>) -> Live<Wk> {
        self.busy += 1;
        if live.meta.affine || caller.affinity().is_some() {
            self.lend_in_session(&mut live, caller);
        }
        if live.meta.lanes > 1 {
            return self.first_lane(live);
        }
        live
    }

    /// `lend`'s part for session workers and session callers.
    #[cold]
    pub(super) fn lend_in_session(&mut self, live: &mut Live<Wk>, caller: Caller<'_>) {
        if live.meta.affine {
            self.sessions.set_idle(live.meta.id, false);
        }
        if let Some(a) = caller.affinity() {
            self.bind(&a.key, &mut live.meta, caller.arrival());
        }
    }

    /// Worker `meta` serves session `key` from now on.
    pub(super) fn bind(&mut self, key: &AffinityKey, meta: &mut Meta, now: Stamp) {
        let how = self.sessions.bind(key, meta, now);
        self.tally.bound(how);
    }

    /// Route a caller with a session key: to its idle worker, to wait for
    /// its busy one, to fail, or to any worker.
    pub fn route_session(&mut self, caller: Caller<'_>) -> SessionRoute<Wk> {
        let Some(a) = caller.affinity() else {
            return SessionRoute::Any;
        };
        let (key, mode) = (&a.key, a.mode);
        match self.sessions.route(key, caller.arrival()) {
            Route::New => SessionRoute::Any,
            Route::Lost(_) if !mode.is_strict() => SessionRoute::Any,
            Route::Lost(reason) => {
                self.tally.affinity_lost();
                SessionRoute::Failed(Error::AffinityLost {
                    key: key.clone(),
                    reason,
                })
            }
            Route::Idle(owner) => match self.take_owner(caller, owner) {
                Some(live) => SessionRoute::Served(live),
                None => SessionRoute::Any,
            },
            Route::Busy(owner) => match self.lane_for_session(owner, caller) {
                Some(lane) => SessionRoute::Served(lane),
                None => self.wait_for_session(owner, caller, mode),
            },
        }
    }

    /// A session caller whose worker is busy: waits for it, fails, or takes
    /// any worker, as its mode says.
    fn wait_for_session(
        &mut self,
        owner: WorkerId,
        caller: Caller<'_>,
        mode: AffinityMode,
    ) -> SessionRoute<Wk> {
        let key = match caller.affinity() {
            Some(a) => &a.key,
            None => return SessionRoute::Any,
        };
        match mode {
            AffinityMode::FailFast => SessionRoute::Failed(Error::Busy { key: key.clone() }),
            AffinityMode::Strict => SessionRoute::Wait {
                owner,
                hint_until: None,
            },
            AffinityMode::Hint if self.hint_wait.is_zero() => SessionRoute::Any,
            AffinityMode::Hint => SessionRoute::Wait {
                owner,
                hint_until: Some((caller.arrival() + self.hint_wait).min(caller.deadline())),
            },
        }
    }

    /// Take idle worker `owner` for `caller`, whose key it holds, through
    /// the idle queue, which must serve it (its contract). A queue that
    /// serves another breaks it; the pool still keeps its promise.
    pub(super) fn take_owner(&mut self, caller: Caller<'_>, owner: WorkerId) -> Option<Live<Wk>> {
        let picked = self.idle.pop(caller)?;
        if picked.id() == owner {
            return Some(self.lend(picked.0, caller));
        }
        tracing::error!(strategy = I::NAME, worker = %owner, served = %picked.id(),
            "idle queue served another worker than the one holding the caller's session key: \
             it breaks the Queue contract (run cenote_core::conformance on it)");
        self.idle.push(picked);
        let IdleWorker(live) = self
            .idle
            .take_matching(1, &mut |w: &mut IdleWorker<Wk>| w.id() == owner)
            .pop()?;
        Some(self.lend(live, caller))
    }

    /// A caller found no idle worker: start one for it if there is room and
    /// the starts under way do not already cover the callers waiting.
    #[inline]
    pub fn grow_for_waiter(&mut self, parent: &CancellationToken) -> Option<StartTicket> {
        if self.starts.len() > self.waiters.len() {
            return None;
        }
        self.begin_start(None, parent)
    }

    /// Forget session `key`: its next call starts a new session on any
    /// worker. Whether it was remembered.
    pub fn forget_session(&mut self, key: &AffinityKey) -> bool {
        self.sessions.forget(key)
    }

    /// Whether session `key` is remembered here.
    pub fn holds_session(&self, key: &AffinityKey) -> bool {
        self.sessions.holds(key)
    }

    /// Turn a caller away because `max_waiters` are waiting; how many are.
    pub fn reject(&mut self) -> usize {
        self.tally.rejected();
        self.waiting()
    }
}
