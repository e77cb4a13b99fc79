//! Opt-in retries for idempotent remote calls: the remote counterpart of
//! [`cenote_core::RetryPolicy`], over [`CallError`], whose retries go to
//! another node.

use std::sync::Arc;
use std::time::Duration;

use cenote_core::Backoff;

use crate::error::CallError;

/// How [`RemotePool::call_retry`](crate::RemotePool::call_retry) retries.
#[derive(Clone)]
pub struct RemoteRetry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait between attempts (with ±20% jitter).
    pub backoff: Backoff,
    /// Which errors are retried.
    pub retry_if: Arc<dyn Fn(&CallError) -> bool + Send + Sync>,
}

impl RemoteRetry {
    /// `attempts` in all, 10 ms backoff doubling to 1 s, retrying what
    /// [`CallError::is_transient`] calls transient (a lost node first of
    /// all).
    pub fn new(attempts: u32) -> Self {
        RemoteRetry {
            attempts: attempts.max(1),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
            },
            retry_if: Arc::new(CallError::is_transient),
        }
    }

    /// Set the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Choose which errors are retried.
    pub fn retry_if(mut self, f: impl Fn(&CallError) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(f);
        self
    }
}

impl std::fmt::Debug for RemoteRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRetry")
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}
