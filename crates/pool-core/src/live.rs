//! The records a pool keeps beside each worker, and the shapes a worker
//! takes as it moves through the pool: [`Live`] while it serves, [`Leaving`]
//! once it is out of service and only its shutdown is left.
//!
//! Only the pool's state turns one into the other, under the pool's lock, so every
//! change of shape is also a change of count.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::affinity::{AffinityKey, AffinityLoss};
use crate::clock::Stamp;
use crate::worker::{Retire, WorkerId};

/// What the pool remembers about a worker besides the worker itself.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: WorkerId,
    pub pid: Option<u32>,
    pub started: Stamp,
    pub started_unix_ms: u64,
    pub tasks: u64,
    /// When a caller last gave it back (or it started): overflow retirement
    /// counts from here.
    pub idle_since: Stamp,
    /// When it last passed a health check (or started).
    pub checked_at: Stamp,
    /// The session keys it serves (see `sessions`); may also hold keys
    /// forgotten or moved since, until they are pruned.
    pub keys: HashSet<AffinityKey>,
    /// It has served a session: the session table tracks it (whether it is
    /// idle, who waits for it) until it leaves. Checked on the hot path
    /// instead of a map lookup.
    pub affine: bool,
    /// How many callers it serves at once ([`Worker::capacity`]): 1, a
    /// checkout holds it alone; more, callers get lanes of it.
    ///
    /// [`Worker::capacity`]: crate::Worker::capacity
    pub lanes: usize,
    /// This record is a lane's, not its worker's: the lane goes back to its
    /// worker (of the same id) when its caller is done.
    pub lane: bool,
}

impl Meta {
    pub fn new(id: WorkerId, pid: Option<u32>) -> Self {
        let stamp = Stamp::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Meta {
            id,
            pid,
            started: stamp,
            started_unix_ms: unix,
            tasks: 0,
            idle_since: stamp,
            checked_at: stamp,
            keys: HashSet::new(),
            affine: false,
            lanes: 1,
            lane: false,
        }
    }

    /// The record a lane of this worker carries to its caller: the
    /// worker's id, pid and times; no session keys (those stay the
    /// worker's).
    pub fn for_lane(&self) -> Self {
        Meta {
            id: self.id,
            pid: self.pid,
            started: self.started,
            started_unix_ms: self.started_unix_ms,
            tasks: self.tasks,
            idle_since: self.idle_since,
            checked_at: self.checked_at,
            keys: HashSet::new(),
            affine: false,
            lanes: 1,
            lane: true,
        }
    }
}

/// A running worker with its record: idle, busy, or just made.
///
/// Boxed once, when the worker joins the pool, so that the many moves of a
/// checkout (into the idle queue, out to a caller's guard, back) copy a
/// pointer instead of the worker and its record.
pub(crate) type Live<Wk> = Box<Held<Wk>>;

/// What a [`Live`] holds.
pub(crate) struct Held<Wk> {
    pub worker: Wk,
    pub meta: Meta,
}

/// Why a worker leaves service. It decides how the worker is shut down
/// ([`StopReason::graceful`]) and what the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// It broke: crashed, failed a recycle or a health check. Charged to
    /// the crash budget.
    Broken,
    /// The pool killed it: a call it ran did not let go when cancelled (or
    /// it cannot cancel), or its user asked. Not charged.
    Killed,
    /// It asked to retire (quota, memory, lifetime).
    Retired(Retire),
    /// Its retirement replacement is serving.
    Replaced,
    /// The pool was shrunk below the workers it had.
    Shrunk,
    /// An overflow worker sat idle past `overflow_idle`.
    IdleOverflow,
    /// Taken out by `remove_idle_workers` or `retain`.
    Removed,
    /// Idle when the pool closed.
    Closed,
    /// Came back (or arrived from a start) after the pool closed.
    AfterClose,
    /// Arrived from a start that was cancelled (the pool shrank meanwhile).
    Unneeded,
}

impl StopReason {
    /// What a session served by a worker leaving for this reason is told.
    pub fn loss(&self) -> AffinityLoss {
        match self {
            StopReason::Broken | StopReason::Killed => AffinityLoss::Crashed,
            StopReason::Retired(_) | StopReason::Replaced => AffinityLoss::Recycled,
            StopReason::Shrunk
            | StopReason::IdleOverflow
            | StopReason::Removed
            | StopReason::Unneeded => AffinityLoss::Removed,
            StopReason::Closed | StopReason::AfterClose => AffinityLoss::Closed,
        }
    }

    /// Whether the worker gets `shutdown_grace` to finish cleanly, or is
    /// killed at once.
    pub fn graceful(&self) -> bool {
        !matches!(
            self,
            StopReason::Broken | StopReason::Killed | StopReason::AfterClose
        )
    }
}

/// A worker out of service, already counted `stopping`: all that is left is
/// to shut it down.
pub(crate) struct Leaving<Wk> {
    pub live: Live<Wk>,
    pub reason: StopReason,
}

/// One ended checkout, for the totals and the latency histograms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    /// Nanoseconds from `get` to a worker in hand.
    pub waited_ns: u64,
    /// When the worker was in hand.
    pub taken: Stamp,
    /// When it came back.
    pub returned: Stamp,
}

impl Served {
    /// Nanoseconds from a worker in hand to its return (scaled under the
    /// pool's lock rather than in the guard's drop, which stays small enough
    /// to be inlined where the guard goes out of scope).
    #[inline]
    pub fn ran_ns(&self) -> u64 {
        self.returned.nanos_since(self.taken)
    }
}
