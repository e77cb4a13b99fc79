//! Opt-in retries for idempotent calls.
//!
//! A call that failed because of the pool or the worker's death — not because
//! the worker answered with an error — can often simply be tried again on
//! another worker. [`RetryPolicy`] says how many times, how long to wait in
//! between, and which errors qualify.

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Wk, WkError};
use super::{CallOptions, Pool};
use crate::config::Backoff;
use crate::error::Error;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::worker::{Call, Factory};

/// Decides whether an error is worth another attempt.
pub type RetryIf<E> = Arc<dyn Fn(&Error<E>) -> bool + Send + Sync>;

/// How [`Pool::call_retry`] retries a failed call.
pub struct RetryPolicy<E: std::error::Error + 'static> {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait between attempts (with ±20% jitter).
    pub backoff: Backoff,
    /// Which errors are retried.
    pub retry_if: RetryIf<E>,
}

impl<E: std::error::Error + 'static> Clone for RetryPolicy<E> {
    fn clone(&self) -> Self {
        RetryPolicy {
            attempts: self.attempts,
            backoff: self.backoff,
            retry_if: Arc::clone(&self.retry_if),
        }
    }
}

impl<E: std::error::Error + 'static> RetryPolicy<E> {
    /// `attempts` in all, 10 ms backoff doubling to 1 s, retrying what is
    /// transient: the worker died ([`Error::Crashed`]), the call or the
    /// checkout timed out, the pool was saturated, or no worker could start.
    /// An error the worker answered with ([`Error::Worker`]) and `Closed` are
    /// final.
    pub fn new(attempts: u32) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
            },
            retry_if: Arc::new(|e: &Error<E>| {
                matches!(
                    e,
                    Error::Crashed(_)
                        | Error::CallTimeout(_)
                        | Error::CheckoutTimeout { .. }
                        | Error::Saturated { .. }
                        | Error::Start(_)
                )
            }),
        }
    }

    /// Set the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Choose which errors are retried.
    pub fn retry_if(mut self, f: impl Fn(&Error<E>) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(f);
        self
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
        let mut attempt = 1;
        loop {
            match self.call_with(req.clone(), opts.clone()).await {
                Err(e) if attempt < policy.attempts && (policy.retry_if)(&e) => {
                    tracing::debug!(pool = %self.name(), attempt, error = %e, "retrying call");
                    tokio::time::sleep(policy.backoff.jittered(attempt)).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }
}
