//! How a worker reaches a caller who is waiting for one: the waiter queue
//! holds a [`Waiter`] (the sending half of a oneshot, and the caller's
//! deadline); a worker promised to it under the lock becomes a [`Delivery`],
//! sent once the lock is released.

use std::time::Instant;

use tokio::sync::oneshot;

use super::live::Live;
use crate::error::Error;
use crate::worker::Worker;

/// What a waiter is sent: a worker (already counted busy) with the instant
/// it was handed over — the end of the caller's wait, stamped by the giver so
/// the waiter need not read the clock — or the reason it will never get one.
pub(crate) type Grant<Wk> = Result<(Live<Wk>, Instant), Error<<Wk as Worker>::Error>>;

/// A waiting caller, as the waiter queue holds it.
pub(crate) struct Waiter<Wk: Worker> {
    pub tx: oneshot::Sender<Grant<Wk>>,
    /// When it called `get`.
    pub asked: Instant,
    /// When it gives up: the maintenance tick turns it away with
    /// `CheckoutTimeout` (or its own timer, for a per-checkout timeout).
    pub deadline: Instant,
}

/// A worker promised to a waiter under the lock, to be sent after the lock
/// is released: sending wakes the waiter's task, and doing that under the
/// lock would make every other caller wait for the wake-up.
#[must_use = "a waiter popped from the queue must be sent its worker"]
pub(crate) struct Delivery<Wk: Worker> {
    pub tx: oneshot::Sender<Grant<Wk>>,
    pub live: Live<Wk>,
    pub at: Instant,
}

impl<Wk: Worker> Delivery<Wk> {
    /// Send the worker; if the waiter gave up meanwhile, get it back.
    pub fn send(self) -> Result<(), (Live<Wk>, Instant)> {
        match self.tx.send(Ok((self.live, self.at))) {
            Err(Ok(back)) => Err(back),
            _ => Ok(()),
        }
    }
}
