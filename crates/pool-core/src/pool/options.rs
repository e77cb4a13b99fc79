//! Per-checkout and per-call options: what one caller may set for itself
//! instead of taking the pool's defaults.

use std::time::Duration;

use crate::affinity::{Affinity, AffinityKey, AffinityMode};
use crate::queue::PriorityLevel;

/// What `get` uses: the pool's defaults. A static, so a checkout borrows it
/// rather than owning (and dropping) options of its own.
pub(crate) static NO_CHECKOUT_OPTIONS: CheckoutOptions = CheckoutOptions {
    timeout: None,
    priority: 0,
    affinity: None,
};

/// What `call` uses: the pool's defaults (see [`NO_CHECKOUT_OPTIONS`]).
pub(crate) static NO_CALL_OPTIONS: CallOptions = CallOptions {
    timeout: None,
    budget: None,
    checkout: CheckoutOptions {
        timeout: None,
        priority: 0,
        affinity: None,
    },
};

/// Options for one [`Pool::get_with`](crate::Pool::get_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckoutOptions {
    /// How long this caller waits for a worker (default: the pool's
    /// `checkout_timeout`). Past it: [`Error::CheckoutTimeout`](crate::Error::CheckoutTimeout).
    pub timeout: Option<Duration>,
    /// The waiter priority, used when the waiter strategy is `Priority`
    /// (higher is served first; default 0).
    pub priority: PriorityLevel,
    /// The session this checkout belongs to, if any (see
    /// [`AffinityMode`]).
    pub affinity: Option<Affinity>,
}

impl CheckoutOptions {
    /// Wait at most `d` for a worker.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Set the waiter priority (higher is served first).
    pub fn priority(mut self, p: PriorityLevel) -> Self {
        self.priority = p;
        self
    }

    /// Belong to session `key`: be served by the worker that served it
    /// before, as hard as `mode` says.
    pub fn affinity(mut self, key: impl Into<AffinityKey>, mode: AffinityMode) -> Self {
        self.affinity = Some(Affinity {
            key: key.into(),
            mode,
        });
        self
    }
}

/// Options for one [`Pool::call_with`](crate::Pool::call_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The call's deadline once a worker is in hand (default: the pool's
    /// `call_timeout`). It is the call's only deadline: the worker learns it
    /// through [`CallCtx`](crate::CallCtx), and past it the call ends with
    /// [`Error::CallTimeout`](crate::Error::CallTimeout) and its worker is
    /// asked to cancel it (killed and replaced if it cannot).
    pub timeout: Option<Duration>,
    /// The whole call's allowance, waiting for a worker included, counted
    /// from when the call is made: it cuts both the checkout timeout and the
    /// call's deadline short (default: none). A node sets it from a remote
    /// caller's time left.
    pub budget: Option<Duration>,
    /// How the worker is checked out: checkout timeout, priority, session.
    pub checkout: CheckoutOptions,
}

impl CallOptions {
    /// Set the call's deadline, counted from when it has a worker.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// End the whole call, waiting for a worker included, within `d` of
    /// when it is made.
    pub fn budget(mut self, d: Duration) -> Self {
        self.budget = Some(d);
        self
    }

    /// Wait at most `d` for a worker.
    pub fn checkout_timeout(mut self, d: Duration) -> Self {
        self.checkout.timeout = Some(d);
        self
    }

    /// Set the waiter priority (higher is served first).
    pub fn priority(mut self, p: PriorityLevel) -> Self {
        self.checkout.priority = p;
        self
    }

    /// Belong to session `key`: be served by the worker that served it
    /// before, as hard as `mode` says.
    pub fn affinity(mut self, key: impl Into<AffinityKey>, mode: AffinityMode) -> Self {
        self.checkout = self.checkout.affinity(key, mode);
        self
    }
}
