//! Starts: the only way a worker enters the pool, each held back by the
//! crash guard while the pool is crash-looping.

use super::*;

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// Count a new start if there is room under the cap.
    #[inline]
    pub(super) fn begin_start(
        &mut self,
        replaces: Option<WorkerId>,
        parent: &CancellationToken,
    ) -> Option<StartTicket> {
        // Asked by every caller that queues: at the cap, decided inline.
        if self.closed || self.live() >= self.capacity() {
            return None;
        }
        Some(self.count_start(replaces, parent))
    }

    /// `begin_start` with room under the cap.
    fn count_start(
        &mut self,
        replaces: Option<WorkerId>,
        parent: &CancellationToken,
    ) -> StartTicket {
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        let cancel = parent.child_token();
        self.starts.insert(
            id,
            Start {
                cancel: cancel.clone(),
                failures: 0,
                retry_at: None,
                replaces,
            },
        );
        StartTicket { id, cancel }
    }

    /// The warm workers a new pool starts with.
    pub fn start_warm(&mut self, parent: &CancellationToken) -> Vec<StartTicket> {
        (0..self.size)
            .filter_map(|_| self.begin_start(None, parent))
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
            self.lend_spare();
        }
    }

    /// A start made its worker, in `took`. It joins the pool (to a waiter
    /// or the idle queue), retiring the worker it replaces; or, if its start
    /// was cancelled or the pool closed, it is shut down.
    pub fn arrive(
        &mut self,
        ticket: StartTicket,
        live: Live<Wk>,
        now: Stamp,
        took: Duration,
    ) -> Effects<Wk> {
        self.tally.created(took);
        let mut fx = Effects::default();
        let Some(start) = self.starts.remove(&ticket.id) else {
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

    /// A start attempt failed; the start retries at `retry_at`. While
    /// nobody can serve, waiters that waiting cannot help are told why (see
    /// [`start_error`](State::start_error)).
    pub fn start_failed(
        &mut self,
        ticket: &StartTicket,
        err: Arc<StartError<Wk::Error>>,
        retry_at: Stamp,
    ) {
        self.tally.start_failed();
        self.crash_guard.charge(1);
        if let Some(start) = self.starts.get_mut(&ticket.id) {
            start.failures += 1;
            start.retry_at = Some(retry_at);
        }
        self.last_start_error = Some(Arc::clone(&err));
        self.fail_hopeless_waiters(&err);
    }

    /// A start's next attempt is about to run.
    pub fn start_retrying(&mut self, ticket: &StartTicket) {
        if let Some(start) = self.starts.get_mut(&ticket.id) {
            start.retry_at = None;
        }
    }

    /// A start's task ended without a worker (the pool closed, or the start
    /// was cancelled).
    pub fn start_ended(&mut self, ticket: StartTicket) {
        if self.starts.contains_key(&ticket.id) {
            self.cancel_start(ticket.id);
        }
        self.stopped();
    }

    /// How long a start must wait before its next attempt, for the crash
    /// budget to have room (zero: none).
    pub fn crash_wait(&mut self) -> Duration {
        self.crash_guard.wait()
    }
}
