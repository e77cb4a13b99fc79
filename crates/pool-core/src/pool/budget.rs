//! [`CallBudget`]: a call's time, resolved once.
//!
//! A call made through a pool has up to three bounds: how long it may wait
//! for a worker (`checkout_timeout`, or its own), how long it may run once
//! it has one (`call_timeout`, or its own), and, for a call whose whole life
//! is bounded ([`CallOptions::budget`], which a node sets from a remote
//! caller's time left), an end by which both must be over.
//!
//! They are resolved here and nowhere else: [`Pool::budget`](crate::Pool::budget)
//! is what `call_with`, streams and a node's server all ask. What follows
//! takes the resolved values as they are: the checkout waits until
//! [`checkout_deadline`](CallBudget::checkout_deadline) (taken once, however
//! many broken workers the checkout meets), and [`start`](CallBudget::start)
//! turns the rest into the [`CallCtx`] that the worker is told and that the
//! pool's one timer enforces ([`Checkout::call_in`](crate::Checkout::call_in)).
//! So a deadline changes type twice between [`CallOptions`] and the worker:
//! into a `CallBudget`, then into a `CallCtx`.

use std::time::Duration;

use super::options::{CallOptions, CheckoutOptions};
use crate::clock::Stamp;
use crate::config::PoolConfig;
use crate::worker::CallCtx;

/// A call's time: its wait for a worker and its run, resolved once from its
/// options and its pool's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    asked: Stamp,
    /// How long the checkout may wait, already cut short by `end`.
    wait: Duration,
    /// How long the call may run once it has a worker.
    limit: Duration,
    /// The end of the whole call, if it has one.
    end: Option<Stamp>,
}

impl CallBudget {
    /// Resolve `opts` against `config`, counting from now.
    pub fn resolve(opts: &CallOptions, config: &PoolConfig) -> Self {
        CallBudget::resolve_parts(&opts.checkout, opts.timeout, opts.budget, config)
    }

    /// The budget of a bare checkout (`get`, `get_with`): its wait, and the
    /// pool's `call_timeout` for what it runs.
    #[inline]
    pub(crate) fn of_checkout(opts: &CheckoutOptions, config: &PoolConfig) -> Self {
        CallBudget::resolve_parts(opts, None, None, config)
    }

    #[inline]
    fn resolve_parts(
        checkout: &CheckoutOptions,
        timeout: Option<Duration>,
        whole: Option<Duration>,
        config: &PoolConfig,
    ) -> Self {
        let asked = Stamp::now();
        let wait = checkout.timeout.unwrap_or(config.checkout_timeout);
        CallBudget {
            asked,
            wait: whole.map_or(wait, |b| wait.min(b)),
            limit: timeout.unwrap_or(config.call_timeout),
            end: whole.map(|b| asked + b),
        }
    }

    /// When the call asked for a worker.
    pub fn asked(&self) -> Stamp {
        self.asked
    }

    /// How long the checkout may wait for a worker.
    pub fn checkout_timeout(&self) -> Duration {
        self.wait
    }

    /// When the checkout stops waiting for a worker
    /// ([`Error::CheckoutTimeout`](crate::Error::CheckoutTimeout)).
    pub fn checkout_deadline(&self) -> Stamp {
        self.asked + self.wait
    }

    /// The call's own allowance once it has a worker, before the whole
    /// budget's end cuts it short.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The deadline of a call that starts now, as its worker is told it:
    /// `limit` from now, or the whole budget's end if that comes first.
    /// `None` when the whole budget is already spent: there is no time left
    /// to run the call in, so it should not be started.
    pub fn start(&self) -> Option<CallCtx> {
        let now = tokio::time::Instant::now();
        let Some(end) = self.end else {
            return Some(CallCtx::from_start(now, self.limit));
        };
        let left = end.since(Stamp::now());
        (!left.is_zero()).then(|| CallCtx::from_start(now, self.limit.min(left)))
    }

    /// Time left until the whole budget's end, if it has one.
    pub fn remaining(&self) -> Option<Duration> {
        self.end.map(|end| end.since(Stamp::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PoolConfig {
        PoolConfig {
            checkout_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            ..PoolConfig::default()
        }
    }

    #[test]
    fn the_pool_fills_in_what_the_call_leaves_unset() {
        let b = CallBudget::resolve(&CallOptions::default(), &config());
        assert_eq!(b.checkout_timeout(), Duration::from_secs(30));
        assert_eq!(b.limit(), Duration::from_secs(60));
        assert_eq!(b.remaining(), None);
        let ctx = b.start().unwrap();
        assert_eq!(ctx.timeout(), Duration::from_secs(60));
    }

    #[test]
    fn the_calls_own_values_win() {
        let opts = CallOptions::default()
            .timeout(Duration::from_millis(500))
            .checkout_timeout(Duration::from_millis(100));
        let b = CallBudget::resolve(&opts, &config());
        assert_eq!(b.checkout_timeout(), Duration::from_millis(100));
        assert_eq!(b.start().unwrap().timeout(), Duration::from_millis(500));
    }

    #[test]
    fn a_whole_budget_cuts_both_short() {
        let opts = CallOptions::default().budget(Duration::from_millis(200));
        let b = CallBudget::resolve(&opts, &config());
        assert_eq!(b.checkout_timeout(), Duration::from_millis(200));
        let ctx = b.start().unwrap();
        assert!(ctx.timeout() <= Duration::from_millis(200), "{ctx:?}");
        assert!(b.remaining().unwrap() <= Duration::from_millis(200));
        // A shorter call timeout stays the call's own.
        let opts = opts.timeout(Duration::from_millis(50));
        let b = CallBudget::resolve(&opts, &config());
        assert_eq!(b.start().unwrap().timeout(), Duration::from_millis(50));
    }

    #[test]
    fn a_spent_budget_starts_no_call() {
        let opts = CallOptions::default().budget(Duration::from_millis(1));
        let b = CallBudget::resolve(&opts, &config());
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(b.start(), None);
        assert_eq!(b.remaining(), Some(Duration::ZERO));
    }
}
