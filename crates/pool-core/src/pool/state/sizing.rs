//! Sizing, maintenance and close: what takes idle workers out.

use super::*;

impl<Wk: Worker, I: IdleStrategy, W: WaitStrategy> State<Wk, I, W> {
    /// Set the warm size. Shrinking takes idle workers above the new cap
    /// out now and cancels starts no longer needed (failing ones first, then
    /// the newest); busy workers above it stop as they come back. Growing
    /// starts the missing warm workers.
    pub fn resize(&mut self, size: usize, parent: &CancellationToken) -> Effects<Wk> {
        let mut fx = Effects::default();
        if self.closed {
            return fx;
        }
        self.size = size;
        let ceiling = self.capacity().max(self.busy);
        while self.live() > ceiling {
            if let Some(live) = self.take_idle_where(1, &mut |_| true).pop() {
                fx.stop.push(self.leave(live, StopReason::Shrunk));
                continue;
            }
            let victim = self
                .starts
                .iter()
                .find(|(_, s)| s.failures > 0)
                .or_else(|| self.starts.iter().next_back())
                .map(|(id, _)| *id);
            match victim {
                Some(id) => self.cancel_start(id),
                None => break,
            }
        }
        while self.settled_live() < self.size {
            match self.begin_start(None, parent) {
                Some(ticket) => fx.start.push(ticket),
                None => break,
            }
        }
        self.lend_spare();
        fx
    }

    /// Take up to `n` idle workers out for good, lowering the warm size by
    /// as many.
    pub fn remove_idle(&mut self, n: usize) -> Vec<Leaving<Wk>> {
        let taken = self.take_idle_where(n.min(self.size), &mut |_| true);
        self.size -= taken.len();
        taken
            .into_iter()
            .map(|live| self.leave(live, StopReason::Removed))
            .collect()
    }

    /// Take out every idle worker `drop_it` picks.
    pub fn remove_idle_where(
        &mut self,
        drop_it: &mut dyn FnMut(&Live<Wk>) -> bool,
    ) -> Vec<Leaving<Wk>> {
        let out = self.take_idle_where(usize::MAX, &mut |l| drop_it(l));
        out.into_iter()
            .map(|l| self.leave(l, StopReason::Removed))
            .collect()
    }

    // ---- maintenance and close ----

    /// One maintenance pass over the idle workers: broken ones and those due
    /// a health check go busy (to be discarded or recycled), overflow
    /// workers idle past `overflow_idle` leave; waiters past their deadline
    /// are turned away. The exported gauges are sampled here.
    pub fn maintain(
        &mut self,
        now: Stamp,
        overflow_idle: Duration,
        health: Option<Duration>,
    ) -> Maintenance<Wk> {
        let mut fx = Effects::default();
        self.expire_waiters(now);
        self.sessions.expire(now);
        let broken = self.take_idle_where(usize::MAX, &mut |l| l.worker.is_broken());
        self.busy += broken.len();
        let excess = self.settled_live().saturating_sub(self.size);
        let idle_too_long = self.take_idle_where(excess, &mut |l| {
            now.since(l.meta.idle_since) >= overflow_idle
        });
        for live in idle_too_long {
            fx.stop.push(self.leave(live, StopReason::IdleOverflow));
        }
        let due = match health {
            Some(every) => self.take_idle_where(usize::MAX, &mut |l| {
                now.since(l.meta.idle_since.max(l.meta.checked_at)) >= every
            }),
            None => Vec::new(),
        };
        self.busy += due.len();
        self.sample_levels();
        Maintenance {
            broken,
            due,
            effects: fx,
        }
    }

    /// Mark the pool closed, turn every waiter away with `Closed`, and take
    /// the idle workers out. Starts end through their cancel tokens.
    pub fn close(&mut self) -> Vec<Leaving<Wk>> {
        self.closed = true;
        self.fail_waiters(|| Error::Closed);
        let idle = self.take_idle_where(usize::MAX, &mut |_| true);
        idle.into_iter()
            .map(|live| self.leave(live, StopReason::Closed))
            .collect()
    }
}
