//! Per-checkout and per-call options: what one caller may set for itself
//! instead of taking the pool's defaults.

use std::time::Duration;

use crate::queue::PriorityLevel;

/// Options for one [`Pool::get_with`](crate::Pool::get_with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckoutOptions {
    /// How long this caller waits for a worker (default: the pool's
    /// `checkout_timeout`). Past it: [`Error::CheckoutTimeout`](crate::Error::CheckoutTimeout).
    pub timeout: Option<Duration>,
    /// The waiter priority, used when the waiter strategy is `Priority`
    /// (higher is served first; default 0).
    pub priority: PriorityLevel,
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
}

/// Options for one [`Pool::call_with`](crate::Pool::call_with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The call's deadline once a worker is in hand (default: the pool's
    /// `call_timeout`). It is the call's only deadline: the worker learns it
    /// through [`CallCtx`](crate::CallCtx), and past it the worker is killed
    /// and replaced ([`Error::CallTimeout`](crate::Error::CallTimeout)).
    pub timeout: Option<Duration>,
    /// How the worker is checked out: checkout timeout and priority.
    pub checkout: CheckoutOptions,
}

impl CallOptions {
    /// Set the call's deadline, counted from when it has a worker.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
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
}
