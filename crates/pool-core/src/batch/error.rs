//! [`BatchError`]: why one item of a batched call failed.
//!
//! An item fails alone (the worker answered an error in its place), or with
//! its whole batch (the call failed, the worker crashed, the deadline
//! passed), or before it was ever sent (it waited past its checkout
//! timeout, or the pool closed). A batch's failure is shared by every item
//! that rode in it, so it is kept once, behind an `Arc`, rather than
//! requiring the worker's error type to be `Clone`.

use std::sync::Arc;

use crate::error::Error;

/// Why [`Batched::call`](crate::Batched::call) failed for one item.
///
/// `E` is the worker's own error type.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E: std::error::Error + 'static> {
    /// The worker answered an error for this item alone (a Python handler
    /// that put an exception in this item's place); the batch's other items
    /// have their own results.
    #[error("the worker failed this item: {0}")]
    Item(E),
    /// The item failed with its batch, or before it was sent: the batch's
    /// call failed as a whole ([`Error::Worker`]), its worker died
    /// ([`Error::Crashed`]), it ran past its deadline
    /// ([`Error::CallTimeout`]), or the item waited past its checkout
    /// timeout ([`Error::CheckoutTimeout`]), found the pool closed
    /// ([`Error::Closed`]) or no worker could be started
    /// ([`Error::Start`]). One error, shared by the batch's items.
    #[error("{0}")]
    Pool(Arc<Error<E>>),
    /// The worker answered a list of results of another length than the
    /// batch it was sent, so no result can be matched to its item: every
    /// item of the batch fails. A bug in the handler: it must answer one
    /// result per item, in order.
    #[error("the worker answered {answered} results for a batch of {sent} items; a batch handler must answer one result per item, in order")]
    WrongLength {
        /// Items in the batch.
        sent: usize,
        /// Results the worker answered.
        answered: usize,
    },
}

impl<E: std::error::Error + 'static> BatchError<E> {
    /// The pool's error, when the item failed with its batch or before it
    /// was sent.
    pub fn pool_error(&self) -> Option<&Error<E>> {
        match self {
            BatchError::Pool(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the item ran out of time: waiting to be sent
    /// (`CheckoutTimeout`) or in its batch's call (`CallTimeout`).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.pool_error(),
            Some(Error::CheckoutTimeout { .. } | Error::CallTimeout(_))
        )
    }
}

impl<E: std::error::Error + 'static> From<Error<E>> for BatchError<E> {
    fn from(e: Error<E>) -> Self {
        BatchError::Pool(Arc::new(e))
    }
}
