//! A caller waiting in the waiter queue, and the Drop that makes giving up
//! safe at any moment.
//!
//! The queue holds the sending half of a oneshot; the caller holds
//! [`Waiting`]. A worker is only ever sent to a waiter under the pool lock, at
//! the moment it is popped from the queue. So when a `Waiting` is dropped
//! unfinished, it takes the lock and finds exactly one of two things:
//!
//! * its entry is still queued: it removes it (by key, O(log n)) and nothing
//!   of it remains;
//! * its entry was popped: then the grant already sits in its receiver, and
//!   Drop passes that worker on to the next waiter or the idle queue.
//!
//! Either way no worker is lost and no entry lingers until a later pop.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::shared::{Shared, Wk};
use super::state::Grant;
use crate::queue::{Queue, QueueKey, Strategy};
use crate::worker::Factory;

pub(crate) struct Waiting<F: Factory, I: Strategy, W: Strategy> {
    shared: Arc<Shared<F, I, W>>,
    key: QueueKey,
    rx: oneshot::Receiver<Grant<Wk<F>>>,
    done: bool,
}

impl<F: Factory, I: Strategy, W: Strategy> Waiting<F, I, W> {
    pub fn new(
        shared: Arc<Shared<F, I, W>>,
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

    /// Wait for a grant until `deadline`; `None` if the deadline passed.
    pub async fn until(mut self, deadline: Instant) -> Option<Grant<Wk<F>>> {
        let got = tokio::time::timeout_at(deadline, &mut self.rx).await;
        match got {
            Ok(Ok(grant)) => {
                self.done = true;
                Some(grant)
            }
            // The sender is only dropped by `fail_waiters` after sending, or
            // never; treat a vanished sender like a timeout rather than hang.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

impl<F: Factory, I: Strategy, W: Strategy> Drop for Waiting<F, I, W> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        if st.waiters.remove(self.key).is_some() {
            return;
        }
        if let Ok(Ok(live)) = self.rx.try_recv() {
            st.hand_off(live);
        }
    }
}
