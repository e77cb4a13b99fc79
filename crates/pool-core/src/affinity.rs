//! Session affinity, as a caller asks for it: a key naming its session and
//! how hard to hold on to the worker that served the session before.
//!
//! A worker that keeps state between calls (a loaded model, a conversation,
//! an open transaction) serves a session correctly only if the session's
//! calls reach it. The pool remembers which worker last served each key
//! (a bounded map: `affinity_capacity` keys, each forgotten after
//! `affinity_ttl` unused) and routes the key's calls there:
//!
//! * [`AffinityMode::Hint`]: prefer that worker; if it is busy, wait for it
//!   up to the pool's `affinity_hint_wait`, then take any worker (which then
//!   serves the key from then on). For caches: a miss costs time, not
//!   correctness.
//! * [`AffinityMode::Strict`]: wait for that worker (up to the checkout
//!   timeout). If it is gone (crashed, retired, removed) the call fails with
//!   [`Error::AffinityLost`](crate::Error::AffinityLost); the session is never
//!   moved to another worker behind the caller's back.
//! * [`AffinityMode::FailFast`]: as `Strict`, but never wait: a busy worker
//!   is [`Error::Busy`](crate::Error::Busy) at once.
//!
//! Keys die with their worker: once it leaves, its keys are *lost*, and every
//! strict or fail-fast call with one fails with `AffinityLost` until the
//! caller starts the session over with
//! [`Pool::forget_affinity`](crate::Pool::forget_affinity) (or the key ages
//! out of the map). A key never seen before (or forgotten) starts a session
//! on whichever worker the idle strategy picks.

use std::fmt;
use std::sync::Arc;

/// The name of one session. Cheap to clone (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityKey(Arc<str>);

impl AffinityKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Clones of this key alive: how the conformance checks see whether a
    /// queue still holds a waiter.
    #[cfg(feature = "conformance")]
    pub(crate) fn strong_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AffinityKey {
    fn from(s: &str) -> Self {
        AffinityKey(Arc::from(s))
    }
}

impl From<String> for AffinityKey {
    fn from(s: String) -> Self {
        AffinityKey(Arc::from(s))
    }
}

impl From<u64> for AffinityKey {
    fn from(n: u64) -> Self {
        AffinityKey::from(n.to_string())
    }
}

/// How hard a call holds on to its session's worker. See the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AffinityMode {
    /// Prefer the session's worker; wait for it at most `affinity_hint_wait`,
    /// then take any worker.
    #[default]
    Hint,
    /// Wait for the session's worker; fail with `AffinityLost` if it is gone.
    Strict,
    /// Take the session's worker if it is idle now; otherwise fail at once
    /// (`Busy`, or `AffinityLost` if it is gone).
    FailFast,
}

impl AffinityMode {
    /// Whether the session must never move to another worker.
    pub fn is_strict(self) -> bool {
        !matches!(self, AffinityMode::Hint)
    }
}

/// A call's session key and mode, as set by
/// [`CheckoutOptions::affinity`](crate::CheckoutOptions::affinity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Affinity {
    /// The session.
    pub key: AffinityKey,
    /// How hard to hold on to its worker.
    pub mode: AffinityMode,
}

/// Why a session's worker is gone, as [`Error::AffinityLost`](crate::Error::AffinityLost)
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AffinityLoss {
    /// The worker crashed, failed a health check, or was killed at a call
    /// deadline.
    Crashed,
    /// The worker was retired and replaced (task quota, memory, lifetime).
    Recycled,
    /// The worker was taken out: `remove_idle_workers`, `retain`, a shrink,
    /// or idle overflow retirement.
    Removed,
    /// The pool closed.
    Closed,
    /// The worker was on another node, which is gone (its process died,
    /// its lease expired, or a call to it was lost with it): a caller of
    /// remote pools reports this (`cenote-node`).
    NodeLost,
}

impl fmt::Display for AffinityLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AffinityLoss::Crashed => "crashed",
            AffinityLoss::Recycled => "was recycled",
            AffinityLoss::Removed => "was removed",
            AffinityLoss::Closed => "was shut down with the pool",
            AffinityLoss::NodeLost => "was on a node that is gone",
        })
    }
}
