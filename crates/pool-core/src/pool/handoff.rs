//! How a worker reaches a caller who is waiting for one, without an
//! allocation per wait.
//!
//! A waiting caller owns one [`Cell`] in a slab ([`Cells`]) that lives in the
//! pool's state, and the waiter queue holds a small [`Waiter`] naming that
//! cell. Whoever serves the waiter (a returning worker, a start that
//! arrived, the maintenance tick turning it away) pops it and *deposits* the
//! outcome in its cell under the pool's lock, then wakes the caller's task
//! once the lock is released. The caller collects the outcome the next time
//! it is polled, under the lock.
//!
//! Because depositing and collecting both happen under the lock, a caller
//! that gives up (its future dropped) finds, under the lock, either its
//! entry still queued (it removes it) or an outcome deposited (a worker: it
//! passes it on to the next waiter). Nothing is lost and nothing lingers.
//! Freed cells are reused, so once the slab has grown to the most callers
//! ever waiting at once, waiting allocates nothing.

use crate::clock::Stamp;
use std::task::Waker;

use super::live::Live;
use crate::error::Error;
use crate::worker::Worker;

/// What a waiter gets: a worker (already counted busy) with the instant it
/// was handed over — the end of the caller's wait, stamped by the giver so
/// the waiter need not read the clock — or the reason it will never get one.
pub(crate) type Grant<Wk> = Result<(Live<Wk>, Stamp), Error<<Wk as Worker>::Error>>;

/// A waiting caller, as the waiter queue holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    /// Its cell in [`Cells`].
    pub cell: usize,
    /// When it called `get`.
    pub asked: Stamp,
    /// When it gives up: the maintenance tick turns it away with
    /// `CheckoutTimeout` (or its own timer, for a per-checkout timeout).
    pub deadline: Stamp,
}

/// Where one waiting caller's outcome is left for it.
struct Cell<Wk: Worker> {
    waker: Option<Waker>,
    grant: Option<Grant<Wk>>,
}

/// The slab of cells of the callers waiting now.
pub(crate) struct Cells<Wk: Worker> {
    cells: Vec<Cell<Wk>>,
    free: Vec<usize>,
}

impl<Wk: Worker> Default for Cells<Wk> {
    fn default() -> Self {
        Cells {
            cells: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<Wk: Worker> Cells<Wk> {
    /// A cell for a caller about to wait, woken through `waker`.
    pub fn open(&mut self, waker: &Waker) -> usize {
        let cell = Cell {
            waker: Some(waker.clone()),
            grant: None,
        };
        match self.free.pop() {
            Some(at) => {
                self.cells[at] = cell;
                at
            }
            None => {
                self.cells.push(cell);
                self.cells.len() - 1
            }
        }
    }

    /// Leave `grant` for the caller of cell `at`; returns its waker, to be
    /// woken (after the lock is released, on the hot path).
    pub fn deposit(&mut self, at: usize, grant: Grant<Wk>) -> Option<Waker> {
        let cell = &mut self.cells[at];
        cell.grant = Some(grant);
        cell.waker.take()
    }

    /// The caller of cell `at` is polled: its outcome if one was left (the
    /// cell is then freed), else its waker is remembered.
    pub fn collect(&mut self, at: usize, waker: &Waker) -> Option<Grant<Wk>> {
        let cell = &mut self.cells[at];
        match cell.grant.take() {
            Some(grant) => {
                self.release(at);
                Some(grant)
            }
            None => {
                if !cell.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    cell.waker = Some(waker.clone());
                }
                None
            }
        }
    }

    /// Whether an outcome waits in cell `at` (so its entry left the queue).
    pub fn has_grant(&self, at: usize) -> bool {
        self.cells[at].grant.is_some()
    }

    /// The caller of cell `at` gives up: free the cell, returning an outcome
    /// that was left in it.
    pub fn close(&mut self, at: usize) -> Option<Grant<Wk>> {
        let grant = self.cells[at].grant.take();
        self.release(at);
        grant
    }

    fn release(&mut self, at: usize) {
        self.cells[at].waker = None;
        self.free.push(at);
    }
}
