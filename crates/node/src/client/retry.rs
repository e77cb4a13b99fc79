//! Opt-in retries for idempotent remote calls: the core's one retry policy
//! ([`cenote_core::Retry`]) over [`CallError`], whose retries go to another
//! node.

use crate::error::CallError;

/// How [`RemotePool::call_retry`](crate::RemotePool::call_retry) retries:
/// `RemoteRetry::new(attempts)` retries what [`CallError::is_transient`]
/// calls transient (a lost node first of all), with the core's backoff.
pub type RemoteRetry = cenote_core::Retry<CallError>;

impl cenote_core::Transient for CallError {
    fn is_transient(&self) -> bool {
        CallError::is_transient(self)
    }
}
