//! Starts: the only way a worker enters the pool, and the crash budget
//! that holds restarts back.

use super::*;

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// Count a new start if there is room under the cap.
    pub(super) fn begin_start(
        &mut self,
        replaces: Option<WorkerId>,
        is_restart: bool,
        parent: &CancellationToken,
    ) -> Option<StartTicket> {
        if self.closed || self.live() >= self.capacity() {
            return None;
        }
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        let cancel = parent.child_token();
        self.starts.insert(
            id,
            Start {
                cancel: cancel.clone(),
                failing: false,
                replaces,
            },
        );
        Some(StartTicket {
            id,
            cancel,
            is_restart,
        })
    }

    /// The warm workers a new pool starts with.
    pub fn start_warm(&mut self, parent: &CancellationToken) -> Vec<StartTicket> {
        (0..self.size)
            .filter_map(|_| self.begin_start(None, false, parent))
            .collect()
    }

    /// Cancel start `id`: it no longer counts as starting but as stopping,
    /// until its task ends.
    pub(super) fn cancel_start(&mut self, id: WorkerId) {
        if let Some(start) = self.starts.remove(&id) {
            if let Some(old) = start.replaces {
                // The retiring worker serves on and asks again on its next return.
                self.retiring.remove(&old);
            }
            start.cancel.cancel();
            self.stopping += 1;
        }
    }

    /// A start made its worker. It joins the pool (to a waiter or the idle
    /// queue), retiring the worker it replaces; or, if its start was
    /// cancelled or the pool closed, it is shut down.
    pub fn arrive(&mut self, id: WorkerId, live: Live<Wk>, now: Stamp) -> Effects<Wk> {
        let mut fx = Effects::default();
        let Some(start) = self.starts.remove(&id) else {
            // Cancelled: already counted stopping.
            fx.stop.push(Leaving {
                live,
                reason: StopReason::Unneeded,
            });
            return fx;
        };
        self.last_start_error = None;
        self.busy += 1;
        if self.closed {
            fx.stop.push(self.leave_busy(live, StopReason::AfterClose));
            return fx;
        }
        if let Some(old) = start.replaces {
            if let Some(replaced) = self.retiring.get_mut(&old) {
                *replaced = true;
                let found = self.take_idle_where(1, &mut |l| l.meta.id == old);
                for idle in found {
                    fx.stop.push(self.leave(idle, StopReason::Replaced));
                }
            }
        }
        fx.wake = self.hand_off(live, now);
        fx
    }

    /// A start attempt failed; the start retries after a backoff. While
    /// nobody can serve, waiters are told why.
    pub fn start_failed(&mut self, id: WorkerId, err: Arc<StartError<Wk::Error>>) {
        self.totals.start_failures += 1;
        self.totals.restarts += 1;
        if let Some(start) = self.starts.get_mut(&id) {
            start.failing = true;
        }
        self.last_start_error = Some(Arc::clone(&err));
        if self.nobody_can_serve() {
            self.fail_waiters(|| Error::Start(Arc::clone(&err)));
        }
    }

    /// A start's task ended without a worker (the pool closed, or the start
    /// was cancelled).
    pub fn start_ended(&mut self, id: WorkerId) {
        if self.starts.contains_key(&id) {
            self.cancel_start(id);
        }
        self.stopped();
    }

    /// Record one restart against the crash budget; returns how long the
    /// restart must wait for the budget to have room.
    pub fn restart_delay(&mut self, budget: CrashBudget) -> Duration {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= budget.window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() < budget.max_restarts as usize {
            self.restarts.push_back(now);
            return Duration::ZERO;
        }
        let oldest = self.restarts.pop_front().unwrap_or(now);
        let ready_at = oldest + budget.window;
        self.restarts.push_back(ready_at);
        ready_at.saturating_duration_since(now)
    }

    /// Whether the crash budget is spent for the current window.
    pub(super) fn crash_looping(&self, budget: CrashBudget) -> bool {
        let now = Instant::now();
        let recent = self
            .restarts
            .iter()
            .filter(|t| t.checked_add(budget.window).is_some_and(|end| end > now))
            .count();
        recent >= budget.max_restarts as usize
    }
}
