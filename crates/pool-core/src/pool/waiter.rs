//! A caller waiting in the waiter queue, and the Drop that makes giving up
//! safe at any moment.
//!
//! The queue holds the sending half of a oneshot; the caller holds
//! [`Waiting`]. A waiter is popped under the pool lock and sent its worker
//! just after the lock is released (see `Delivery`). So when a `Waiting` is
//! dropped unfinished, it takes the lock and finds one of two things:
//!
//! * its entry is still queued: it removes it (by key) and nothing
//!   of it remains;
//! * its entry was popped: a worker is on its way. It closes its receiver,
//!   which makes a send that has not happened yet fail (the sender then
//!   gives the worker to someone else), and takes a worker that was already
//!   sent and passes it on itself.
//!
//! Either way no worker is lost and no entry lingers until a later pop.
//! There is no timer per waiter: each waiter carries its deadline, and the
//! pool's maintenance tick turns away those past it (at most 1/16 of
//! `checkout_timeout` late). Only a checkout that sets its own, shorter
//! timeout pays for a timer of its own.

use std::time::Instant;

use tokio::sync::oneshot;

use super::handoff::Grant;
use super::shared::{Shared, Wk};
use crate::error::Error;
use crate::queue::{QueueKey, Strategy};
use crate::worker::Factory;

/// Borrows the pool rather than holding an `Arc`: every wait would
/// otherwise bump a reference count that all callers contend on.
pub(crate) struct Waiting<'a, F: Factory, I: Strategy, W: Strategy> {
    shared: &'a Shared<F, I, W>,
    key: QueueKey,
    rx: oneshot::Receiver<Grant<Wk<F>>>,
    done: bool,
}

impl<'a, F: Factory, I: Strategy, W: Strategy> Waiting<'a, F, I, W> {
    pub fn new(
        shared: &'a Shared<F, I, W>,
        key: QueueKey,
        rx: oneshot::Receiver<Grant<Wk<F>>>,
    ) -> Self {
        Waiting {
            shared,
            key,
            rx,
            done: false,
        }
    }

    /// Wait for a worker, or for the reason there will be none (including
    /// the deadline passing). `own_deadline` is a checkout's own timeout,
    /// timed here rather than by the maintenance tick.
    pub async fn grant(mut self, own_deadline: Option<Instant>) -> Grant<Wk<F>> {
        let got = match own_deadline {
            None => (&mut self.rx).await,
            Some(deadline) => {
                let timer = tokio::time::sleep_until(deadline.into());
                tokio::select! {
                    got = &mut self.rx => got,
                    () = timer => {
                        let timed_out = self.shared.lock().time_out_waiter(self.key);
                        if let Some(err) = timed_out {
                            self.done = true;
                            return Err(err);
                        }
                        // Popped just now: its worker is being sent.
                        (&mut self.rx).await
                    }
                }
            }
        };
        self.done = true;
        // Every queued sender is sent to before it is dropped; a vanished
        // sender can only mean the pool itself is gone.
        got.unwrap_or(Err(Error::Closed))
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Drop for Waiting<'_, F, I, W> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.shared.lock().remove_waiter(self.key) {
            return;
        }
        self.rx.close();
        if let Ok(Ok((live, at))) = self.rx.try_recv() {
            let next = self.shared.lock().hand_off(live, at);
            self.shared.deliver(next);
        }
    }
}
