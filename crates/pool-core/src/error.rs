//! The errors a caller of a pool can see. Each says what happened and what to
//! do about it; the worker's own error is carried, not flattened to a string.

use std::sync::Arc;
use std::time::Duration;

/// Why `get`, `call` or an administrative operation failed.
///
/// `E` is the worker's own error type ([`Worker::Error`](crate::Worker::Error)).
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// No worker became free within the checkout timeout (the pool's
    /// `checkout_timeout`, or the one given for this checkout).
    #[error("no worker became free within {waited:?}{}", start_note(.last_start_error))]
    CheckoutTimeout {
        /// How long the caller waited.
        waited: Duration,
        /// The latest start failure, if workers are failing to start: the
        /// likely reason nobody was served.
        last_start_error: Option<Arc<StartError<E>>>,
    },
    /// `max_waiters` callers were already waiting; this one was turned away at once.
    #[error("pool saturated: {waiting} callers already waiting (max_waiters); retry later or raise max_waiters")]
    Saturated {
        /// How many were waiting.
        waiting: usize,
    },
    /// The pool is closed (or closing) and takes no new work.
    #[error("pool is closed")]
    Closed,
    /// No worker is running and the latest attempt to start one failed; the
    /// pool keeps retrying with backoff.
    #[error("no worker could be started: {0}")]
    Start(Arc<StartError<E>>),
    /// The call ran past its deadline (the pool's `call_timeout`, or the
    /// one given for this call). The caller is told at once; the call is
    /// then cancelled on its worker, which serves on if it lets go within
    /// `cancel_grace` and is killed and replaced if not.
    #[error("call did not finish within {0:?}; it was cancelled")]
    CallTimeout(Duration),
    /// The worker answered with an error and stays in service.
    #[error(transparent)]
    Worker(E),
    /// The worker died during the call (it was found broken right after it);
    /// it is being replaced. Safe to retry for idempotent calls.
    #[error("worker died during the call and is being replaced: {0}")]
    Crashed(E),
    /// A strict session's worker is gone, and with it the session's state:
    /// the call was not moved to another worker. Start the session over
    /// ([`Pool::forget_affinity`](crate::Pool::forget_affinity), then call
    /// again) or use a new key.
    #[error("session {key:?} lost its worker, which {reason}; start the session over (forget_affinity) or use a new key")]
    AffinityLost {
        /// The session.
        key: crate::AffinityKey,
        /// What happened to its worker.
        reason: crate::AffinityLoss,
    },
    /// A fail-fast session's worker is serving another call (or no worker is
    /// free for a new session), and fail-fast does not wait. Retry later, or
    /// use `AffinityMode::Strict` to wait.
    #[error("session {key:?}: its worker is busy and the call asked not to wait (AffinityMode::FailFast)")]
    Busy {
        /// The session.
        key: crate::AffinityKey,
    },
}

/// Why one worker start failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E: std::error::Error + 'static> {
    /// The factory returned an error.
    #[error(transparent)]
    Failed(E),
    /// The factory did not finish within `create_timeout`.
    #[error("worker start did not finish within {0:?} (create_timeout)")]
    TimedOut(Duration),
}

fn start_note<E: std::fmt::Display>(e: &Option<Arc<E>>) -> String {
    match e {
        Some(e) => format!(" (workers are failing to start: {e})"),
        None => String::new(),
    }
}

/// What a caller that cannot see a worker's error type is told it is: a
/// short, stable name to match on, sent beside the message. A node can
/// serve a pool only if its worker's error type implements this.
pub trait ErrorKind {
    /// The kind, e.g. `"ValueError"` for a Python exception, or a variant
    /// name.
    fn kind(&self) -> String;

    /// Whether the error says a request or its answer passed a size limit,
    /// so that a caller on another node sees the same `TooLarge` its own
    /// transport would give for a message past its limit. No, by default.
    fn is_too_large(&self) -> bool {
        false
    }
}

impl ErrorKind for std::io::Error {
    /// The [`std::io::ErrorKind`], e.g. `"NotFound"`.
    fn kind(&self) -> String {
        format!("{:?}", std::io::Error::kind(self))
    }
}

impl ErrorKind for std::convert::Infallible {
    fn kind(&self) -> String {
        match *self {}
    }
}

/// A configuration value that cannot work, found when the pool is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pool configuration: {0}")]
pub struct ConfigError(pub String);

/// `build` failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration value cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry refused the pool (e.g. its name is taken).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// `build` must run inside a tokio runtime: the pool spawns its starts,
    /// recycles and maintenance there.
    #[error("a cenote pool must be built inside a tokio runtime")]
    NoRuntime,
}
