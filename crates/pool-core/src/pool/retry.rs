//! Opt-in retries for idempotent calls.
//!
//! A call that failed because of the pool or the worker's death — not because
//! the worker answered with an error — can often simply be tried again on
//! another worker. [`RetryPolicy`] says how many times, how long to wait in
//! between, and which errors qualify.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::shared::{Wk, WkError};
use super::{CallOptions, Pool};
use crate::config::Backoff;
use crate::error::Error;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::worker::{Call, Factory};

/// An error that says whether it is worth another attempt: what a
/// [`Retry`] retries by default.
pub trait Transient {
    /// Whether trying again (on another worker, another node) may succeed.
    fn is_transient(&self) -> bool;
}

impl<E: std::error::Error + 'static> Transient for Error<E> {
    /// The worker died ([`Error::Crashed`]), the call or the checkout timed
    /// out, the pool was saturated, or no worker could start. An error the
    /// worker answered with ([`Error::Worker`]) and `Closed` are final.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Crashed(_)
                | Error::CallTimeout(_)
                | Error::CheckoutTimeout { .. }
                | Error::Saturated { .. }
                | Error::Start(_)
        )
    }
}

/// Decides whether a pool call's error is worth another attempt.
pub type RetryIf<E> = Arc<dyn Fn(&Error<E>) -> bool + Send + Sync>;

/// How a failed call is tried again: attempts, the wait between them, and
/// which errors qualify. One type for every kind of call: `Err` is the
/// error a call fails with (a pool's [`Error`]; a remote call's error in
/// the node crate).
pub struct Retry<Err> {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait between attempts (with ±20% jitter).
    pub backoff: Backoff,
    /// Which errors are retried.
    pub retry_if: Arc<dyn Fn(&Err) -> bool + Send + Sync>,
}

/// How [`Pool::call_retry`] retries a failed call.
pub type RetryPolicy<E> = Retry<Error<E>>;

impl<Err> Clone for Retry<Err> {
    fn clone(&self) -> Self {
        Retry {
            attempts: self.attempts,
            backoff: self.backoff,
            retry_if: Arc::clone(&self.retry_if),
        }
    }
}

impl<Err> std::fmt::Debug for Retry<Err> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl<Err: Transient + 'static> Retry<Err> {
    /// `attempts` in all, 10 ms backoff doubling to 1 s, retrying what is
    /// [transient](Transient).
    pub fn new(attempts: u32) -> Self {
        Retry {
            attempts: attempts.max(1),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
            },
            retry_if: Arc::new(Err::is_transient),
        }
    }
}

impl<Err> Retry<Err> {
    /// Set the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Choose which errors are retried.
    pub fn retry_if(mut self, f: impl Fn(&Err) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(f);
        self
    }

    /// Run `attempt` until it succeeds, fails with an error this policy
    /// does not retry, or the attempts run out; `what` names the call in
    /// the debug event of each retry.
    pub async fn run<T, Fut>(&self, what: &str, mut attempt: impl FnMut() -> Fut) -> Result<T, Err>
    where
        Fut: Future<Output = Result<T, Err>>,
        Err: std::fmt::Display,
    {
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(e) if tried < self.attempts && (self.retry_if)(&e) => {
                    tracing::debug!(what, attempt = tried, error = %e, "retrying call");
                    tokio::time::sleep(self.backoff.jittered(tried)).await;
                    tried += 1;
                }
                done => return done,
            }
        }
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Pool<F, I, W> {
    /// [`call_with`](Pool::call_with), tried again under `policy` while it
    /// fails with an error the policy retries. Only for idempotent requests:
    /// a call cut off by its deadline may have had effects.
    pub async fn call_retry<Req: Clone>(
        &self,
        req: Req,
        opts: CallOptions,
        policy: &RetryPolicy<WkError<F>>,
    ) -> Result<<Wk<F> as Call<Req>>::Response, Error<WkError<F>>>
    where
        Wk<F>: Call<Req>,
    {
        policy
            .run(self.name(), || self.call_with(req.clone(), opts.clone()))
            .await
    }
}
