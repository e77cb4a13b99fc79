//! How a worker reaches a caller who is waiting for one, without an
//! allocation per wait.
//!
//! A waiting caller owns one cell in a slab ([`Cells`]) that lives in the
//! pool's state, and a waiter queue holds a small
//! [`Waiter`](crate::Waiter) naming that cell. The cell also records where
//! the waiter is queued ([`Place`]): the pool's waiter queue, or the queue
//! of callers pinned to one session worker, which it may move between.
//! Whoever serves the waiter (a returning worker, a start that arrived, the
//! maintenance tick turning it away, its worker leaving) takes it out of its
//! queue and *deposits* the outcome in its cell under the pool's lock,
//! clearing its place, then wakes the caller's task. The caller collects the
//! outcome the next time it is polled, under the lock.
//!
//! Because depositing and collecting both happen under the lock, a caller
//! that gives up (its future dropped) finds, under the lock, either a place
//! (its entry still queued: it removes it) or an outcome deposited (a
//! worker: it passes it on to the next waiter). Nothing is lost and nothing
//! lingers. Freed cells are reused, so once the slab has grown to the most
//! callers ever waiting at once, waiting allocates nothing.

use crate::clock::Stamp;
use std::task::Waker;

use crate::entry::CellId;
use crate::error::Error;
use crate::live::Live;
use crate::worker::{Worker, WorkerId};

/// What a waiter gets: a worker (already counted busy) with the instant it
/// was handed over — the end of the caller's wait, stamped by the giver so
/// the waiter need not read the clock — or the reason it will never get one.
pub(crate) type Grant<Wk> = Result<(Live<Wk>, Stamp), Error<<Wk as Worker>::Error>>;

/// Where a queued waiter is, under the key its queue gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place<K> {
    /// The pool's waiter queue.
    General(K),
    /// The queue of callers waiting for one session worker.
    Pinned(WorkerId, K),
}

/// Where one waiting caller's outcome is left for it.
struct Cell<Wk: Worker, K> {
    waker: Option<Waker>,
    grant: Option<Grant<Wk>>,
    /// Where it is queued; `None` once it left its queue.
    place: Option<Place<K>>,
}

/// The slab of cells of the callers waiting now.
pub(crate) struct Cells<Wk: Worker, K> {
    cells: Vec<Cell<Wk, K>>,
    free: Vec<CellId>,
}

impl<Wk: Worker, K> Default for Cells<Wk, K> {
    fn default() -> Self {
        Cells {
            cells: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<Wk: Worker, K: Copy> Cells<Wk, K> {
    /// A cell for a caller about to wait, woken through `waker`; its place
    /// is set once it is queued. `None` if 4 billion callers wait already.
    pub fn open(&mut self, waker: &Waker) -> Option<CellId> {
        let cell = Cell {
            waker: Some(waker.clone()),
            grant: None,
            place: None,
        };
        match self.free.pop() {
            Some(at) => {
                self.cells[at.index()] = cell;
                Some(at)
            }
            None => {
                let at = CellId::new(u32::try_from(self.cells.len()).ok()?);
                self.cells.push(cell);
                Some(at)
            }
        }
    }

    /// The caller of cell `at` is queued at `place` now.
    pub fn set_place(&mut self, at: CellId, place: Place<K>) {
        self.cells[at.index()].place = Some(place);
    }

    /// Where the caller of cell `at` is queued, if it still is.
    pub fn place(&self, at: CellId) -> Option<Place<K>> {
        self.cells[at.index()].place
    }

    /// Leave `grant` for the caller of cell `at`, who has left its queue;
    /// returns its waker, to be woken (after the lock is released, on the
    /// hot path).
    pub fn deposit(&mut self, at: CellId, grant: Grant<Wk>) -> Option<Waker> {
        let cell = &mut self.cells[at.index()];
        cell.grant = Some(grant);
        cell.place = None;
        cell.waker.take()
    }

    /// The caller of cell `at` is polled: its outcome if one was left (the
    /// cell is then freed), else its waker is remembered.
    pub fn collect(&mut self, at: CellId, waker: &Waker) -> Option<Grant<Wk>> {
        let cell = &mut self.cells[at.index()];
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

    /// The caller of cell `at` gives up, already out of its queue: free the
    /// cell, returning an outcome that was left in it.
    pub fn close(&mut self, at: CellId) -> Option<Grant<Wk>> {
        let grant = self.cells[at.index()].grant.take();
        self.cells[at.index()].place = None;
        self.release(at);
        grant
    }

    fn release(&mut self, at: CellId) {
        self.cells[at.index()].waker = None;
        self.free.push(at);
    }
}
