//! [`CallError`]: one typed error for a call to a pool, whether the pool is
//! in this process or on another node, so callers handle both the same way
//! (and a tower stack over either has one error type).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a call failed. The pool's own errors keep their meaning across the
/// wire; the rest say what went wrong between caller and node.
///
/// It is a serde type: this is exactly what a node sends back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CallError {
    /// No worker became free within the checkout timeout.
    #[error("no worker became free within {waited:?}{}", note(.start_error))]
    CheckoutTimeout {
        /// How long the call waited for a worker.
        waited: Duration,
        /// The latest worker start failure, if workers are failing to start.
        start_error: Option<String>,
    },
    /// `max_waiters` callers were already waiting; this one was turned away.
    #[error("pool saturated: {waiting} callers already waiting; retry later, elsewhere, or raise max_waiters")]
    Saturated {
        /// How many were waiting.
        waiting: usize,
    },
    /// The pool is closed or closing.
    #[error("pool is closed")]
    Closed,
    /// No worker is running and the latest start failed.
    #[error("no worker could be started: {message}")]
    Start {
        /// The start error.
        message: String,
    },
    /// The call ran past its deadline (the worker that ran it was killed and
    /// is being replaced), or no answer came back before it.
    #[error("call did not finish within {after:?}")]
    CallTimeout {
        /// The deadline it had.
        after: Duration,
    },
    /// The worker answered with an error of its own and stays in service.
    #[error("worker error ({kind}): {message}")]
    Worker {
        /// What kind of error (see [`ErrorKind`](cenote_core::ErrorKind)), e.g. a Python exception
        /// type such as `ValueError`.
        kind: String,
        /// Its message.
        message: String,
    },
    /// The worker died during the call and is being replaced.
    #[error("worker died during the call ({kind}): {message}")]
    Crashed {
        /// What kind of error (see [`ErrorKind`](cenote_core::ErrorKind)).
        kind: String,
        /// Its message.
        message: String,
    },
    /// The node went away during the call (or could not be reached): its
    /// process died, its connection broke, or it stopped answering. The
    /// call may or may not have run.
    #[error("node {node:?} lost: {reason}")]
    NodeLost {
        /// The node called.
        node: String,
        /// What the transport said.
        reason: String,
    },
    /// No live node serves this pool (none published it, every one was
    /// lost, or the registry has been unreachable for longer than a lease).
    #[error("no node serves pool {pool:?}: {reason}")]
    NoNode {
        /// The pool asked for.
        pool: String,
        /// Why none could be chosen.
        reason: String,
    },
    /// The node serves no pool of that name.
    #[error("node {node:?} serves no pool named {pool:?}")]
    UnknownPool {
        /// The pool asked for.
        pool: String,
        /// The node asked.
        node: String,
    },
    /// The node wants a token this caller did not give (or gave wrong).
    #[error("node {node:?} refused the call: missing or wrong token")]
    Unauthorized {
        /// The node that refused.
        node: String,
    },
    /// The request (or the answer) is over the frame limit.
    #[error("message too large: {detail}")]
    TooLarge {
        /// Sizes, as the refusing side gave them.
        detail: String,
    },
    /// The node could not make sense of the request: its body does not
    /// decode into the pool's request type, or its call options are bad.
    #[error("bad request: {message}")]
    BadRequest {
        /// What was wrong.
        message: String,
    },
    /// The answer does not decode into the response type asked for.
    #[error("bad response: {message}")]
    BadResponse {
        /// What was wrong.
        message: String,
    },
    /// A strict session's worker is gone, and its state with it (see
    /// `cenote_core::Error::AffinityLost`): start the session over.
    #[error("session {key:?} lost its worker, which {reason}")]
    AffinityLost {
        /// The session.
        key: String,
        /// What happened to its worker.
        reason: cenote_core::AffinityLoss,
    },
    /// A fail-fast session's worker is busy (see `cenote_core::Error::Busy`).
    #[error("session {key:?}: its worker is busy and the call asked not to wait")]
    Busy {
        /// The session.
        key: String,
    },
}

fn note(start_error: &Option<String>) -> String {
    match start_error {
        Some(e) => format!(" (workers are failing to start: {e})"),
        None => String::new(),
    }
}

impl CallError {
    /// True for failures another attempt (on another node) may get past:
    /// the node or worker died, a deadline or the queue ran out, the pool
    /// could not start or is closing, or the node did not know the pool. An
    /// error the worker answered with, a refused token, a request too large
    /// or malformed are final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::CheckoutTimeout { .. }
                | CallError::Saturated { .. }
                | CallError::Closed
                | CallError::Start { .. }
                | CallError::CallTimeout { .. }
                | CallError::Crashed { .. }
                | CallError::NodeLost { .. }
                | CallError::UnknownPool { .. }
        )
    }
}

impl<E: std::error::Error + cenote_core::ErrorKind + 'static> From<cenote_core::Error<E>>
    for CallError
{
    fn from(e: cenote_core::Error<E>) -> Self {
        use cenote_core::Error as P;
        match e {
            P::CheckoutTimeout {
                waited,
                last_start_error,
            } => CallError::CheckoutTimeout {
                waited,
                start_error: last_start_error.map(|e| e.to_string()),
            },
            P::Saturated { waiting } => CallError::Saturated { waiting },
            P::Closed => CallError::Closed,
            P::Start(e) => CallError::Start {
                message: e.to_string(),
            },
            P::CallTimeout(after) => CallError::CallTimeout { after },
            P::Worker(e) if e.is_too_large() => CallError::TooLarge {
                detail: e.to_string(),
            },
            P::Worker(e) => CallError::Worker {
                kind: e.kind(),
                message: e.to_string(),
            },
            P::Crashed(e) => CallError::Crashed {
                kind: e.kind(),
                message: e.to_string(),
            },
            P::AffinityLost { key, reason } => CallError::AffinityLost {
                key: key.to_string(),
                reason,
            },
            P::Busy { key } => CallError::Busy {
                key: key.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_errors_keep_their_meaning() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such model");
        let e = CallError::from(cenote_core::Error::Worker(io));
        assert_eq!(
            e,
            CallError::Worker {
                kind: "NotFound".into(),
                message: "no such model".into()
            }
        );
        assert!(!e.is_transient());
        let e = CallError::from(cenote_core::Error::<std::io::Error>::CallTimeout(
            Duration::from_millis(5),
        ));
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "call did not finish within 5ms");
    }

    #[test]
    fn errors_round_trip_as_json() {
        let all = [
            CallError::CheckoutTimeout {
                waited: Duration::from_micros(1500),
                start_error: Some("spawn failed".into()),
            },
            CallError::Closed,
            CallError::Worker {
                kind: "ValueError".into(),
                message: "bad".into(),
            },
            CallError::NodeLost {
                node: "n1".into(),
                reason: "reset".into(),
            },
        ];
        for e in all {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<CallError>(&json).unwrap(),
                e,
                "{json}"
            );
        }
        let tagged = serde_json::to_value(CallError::Closed).unwrap();
        assert_eq!(tagged, serde_json::json!({"error": "closed"}));
    }
}
