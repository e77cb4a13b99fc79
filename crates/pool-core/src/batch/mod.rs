//! Adaptive batching: many callers' items in one worker call, with no wait
//! when a worker is free.
//!
//! [`Pool::batched`](crate::Pool::batched) gives a [`Batched`] handle whose
//! [`call`](Batched::call) sends one item and resolves with that item's
//! result. Behind it, one dispatcher task per handle repeats three steps:
//!
//! 1. wait until an item is in line (and, with [`BatchConfig::max_wait`],
//!    until the line holds `max_size` items or its oldest has waited that
//!    long);
//! 2. check out a worker, as any caller does;
//! 3. take up to `max_size` items from the line and send them, as one
//!    `Vec`, in one [`Call`](crate::Call) on that worker, in a task of
//!    their own; then go back to 1.
//!
//! So a batch leaves as soon as a worker is free, with whatever is in line:
//! at low load an item goes alone and at once, and under load items gather
//! while every worker is busy, so batches grow by themselves. That is the
//! difference from a fixed window (Ray Serve's `batch_wait_timeout_s`,
//! Triton's `max_queue_delay`), which makes a lone item wait for company
//! that is not coming; `max_wait` offers the window to those who want
//! bigger batches at some latency.
//!
//! Items wait in a queue of the pool's own wait strategy (`line.rs`), so
//! the strategy decides which items make the next batch: `Priority` the
//! most urgent, `Deadline` the nearest deadline, FIFO the oldest.
//!
//! Each item keeps its own options ([`ItemOptions`]): an item whose caller
//! gives up before it is sent leaves the line at once; one that gives up
//! after has its result dropped (and a batch whose callers all gave up is
//! cancelled on its worker). A batch's deadline is its earliest item's,
//! enforced once, by the checkout that carries it, as any call's
//! ([`Checkout::call_in`](crate::Checkout::call_in)).
//!
//! What is not here: sessions. A batch goes to whichever worker is free, so
//! an item cannot ask for a session's worker; [`ItemOptions`] does not
//! offer it.

mod dispatch;
mod error;
mod line;
mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

pub use error::BatchError;
pub use status::BatchStatus;

use dispatch::Batcher;
use line::{Line, Pending, Refused};

use crate::error::{ConfigError, Error};
use crate::pool::{CallOptions, Pool};
use crate::queue::{IdleStrategy, PriorityLevel, WaitStrategy};
use crate::worker::{Call, Factory};

/// What a worker answers a batch with: one result per item, in the items'
/// order. An `Err` in an item's place fails that item alone
/// ([`BatchError::Item`]).
pub trait BatchAnswer: Send + 'static {
    /// One item's result.
    type Output: Send + 'static;
    /// One item's error.
    type Error;
    /// The results, in the items' order.
    fn into_results(self) -> Vec<Result<Self::Output, Self::Error>>;
}

impl<T: Send + 'static, E: Send + 'static> BatchAnswer for Vec<Result<T, E>> {
    type Output = T;
    type Error = E;

    fn into_results(self) -> Vec<Result<T, E>> {
        self
    }
}

/// A worker that serves a batch of `Item`s: it implements
/// [`Call<Vec<Item>>`](crate::Call) and answers a `Vec` of per-item
/// results in order, `Vec<Result<Output, Self::Error>>`. Implemented for
/// every such worker; nothing to write.
pub trait BatchCall<Item>: Call<Vec<Item>> {
    /// One item's result.
    type Output: Send + 'static;

    /// The answer's results, in the items' order.
    fn results(answer: Self::Response) -> Vec<Result<Self::Output, Self::Error>>;
}

impl<Wr, Item> BatchCall<Item> for Wr
where
    Wr: Call<Vec<Item>>,
    Wr::Response: BatchAnswer<Error = Wr::Error>,
{
    type Output = <Wr::Response as BatchAnswer>::Output;

    fn results(answer: Self::Response) -> Vec<Result<Self::Output, Self::Error>> {
        answer.into_results()
    }
}

/// How a [`Batched`] handle gathers items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    max_size: usize,
    max_wait: Option<Duration>,
}

impl BatchConfig {
    /// The most items in one batch.
    pub const MAX_SIZE_LIMIT: usize = 1 << 20;

    /// Batches of at most `max_size` items, sent as soon as a worker is
    /// free (no window).
    pub fn new(max_size: usize) -> Self {
        BatchConfig {
            max_size,
            max_wait: None,
        }
    }

    /// Hold a batch back until it has `max_size` items or its oldest item
    /// has waited `wait`, even with a worker free: bigger batches at low
    /// load, paid in latency. Off by default.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// The most items in one batch.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_size == 0 || self.max_size > Self::MAX_SIZE_LIMIT {
            return Err(ConfigError(format!(
                "BatchConfig max_size is {}; it must be between 1 and {}",
                self.max_size,
                Self::MAX_SIZE_LIMIT
            )));
        }
        Ok(())
    }
}

/// One item's options: its deadlines and its priority, as a call's are
/// (see [`CallOptions`]), without a session, which a batch cannot honour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemOptions {
    call: CallOptions,
}

impl ItemOptions {
    /// The deadline of the batch call that carries this item, counted from
    /// when it is sent (default: the pool's `call_timeout`). A batch's
    /// deadline is its earliest item's.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.call = self.call.timeout(d);
        self
    }

    /// How long the item may wait in line to be sent (default: the pool's
    /// `checkout_timeout`). Past it: [`Error::CheckoutTimeout`].
    pub fn checkout_timeout(mut self, d: Duration) -> Self {
        self.call = self.call.checkout_timeout(d);
        self
    }

    /// The item's whole allowance, waiting in line included.
    pub fn budget(mut self, d: Duration) -> Self {
        self.call = self.call.budget(d);
        self
    }

    /// Its priority in line (higher goes first, under a `Priority` wait
    /// strategy).
    pub fn priority(mut self, p: PriorityLevel) -> Self {
        self.call = self.call.priority(p);
        self
    }
}

use crate::worker::{ErrorOf as WkError, WorkerOf as Wk};
/// One item's result, as its caller gets it.
type Answer<F, Item> = Result<<Wk<F> as BatchCall<Item>>::Output, BatchError<WkError<F>>>;

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Pool<F, I, W> {
    /// A handle that sends items to this pool's workers in batches: see
    /// [`Batched`]. Each worker must serve a `Vec<Item>` with one result
    /// per item ([`BatchCall`]). Handles are independent: each has its own
    /// line and dispatcher, and shares the pool's workers with every other
    /// caller.
    pub fn batched<Item: Send + 'static>(
        &self,
        config: BatchConfig,
    ) -> Result<Batched<F, I, W, Item>, ConfigError>
    where
        Wk<F>: BatchCall<Item>,
    {
        config.validate()?;
        Ok(Batched {
            handle: Arc::new(Handle {
                batcher: Arc::new(Batcher {
                    pool: self.clone(),
                    line: Mutex::new(Line::new(config.max_size)),
                    arrived: Notify::new(),
                    config,
                    stop: CancellationToken::new(),
                }),
                started: Once::new(),
            }),
        })
    }
}

/// Items sent to a pool in batches ([`Pool::batched`]): each
/// [`call`](Batched::call) resolves with its own item's result.
///
/// Cloning is cheap and every clone shares one line. When the last clone
/// is dropped, its dispatcher ends; batches already sent finish. It is a
/// `tower::Service<Item>` too.
pub struct Batched<F: Factory, I: IdleStrategy, W: WaitStrategy, Item>
where
    Wk<F>: BatchCall<Item>,
{
    handle: Arc<Handle<F, I, W, Item>>,
}

/// Stops the dispatcher when the last [`Batched`] clone goes.
struct Handle<F: Factory, I: IdleStrategy, W: WaitStrategy, Item>
where
    Wk<F>: BatchCall<Item>,
{
    batcher: Arc<Batcher<F, I, W, Item>>,
    /// The dispatcher is spawned by the first call, inside the runtime.
    started: Once,
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item> Drop for Handle<F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    fn drop(&mut self) {
        self.batcher.stop.cancel();
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item> Clone for Batched<F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    fn clone(&self) -> Self {
        Batched {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item: Send + 'static> Batched<F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    /// Send `item` in the next batch a worker takes, under the pool's
    /// `checkout_timeout` (to be sent) and `call_timeout` (for its batch).
    pub async fn call(&self, item: Item) -> Answer<F, Item> {
        self.call_with(item, ItemOptions::default()).await
    }

    /// [`call`](Self::call) with this item's own deadlines and priority.
    ///
    /// Dropping the future before the item is sent takes it out of line;
    /// after, its result is dropped when it comes.
    pub async fn call_with(&self, item: Item, opts: ItemOptions) -> Answer<F, Item> {
        let batcher = &self.handle.batcher;
        self.handle
            .started
            .call_once(|| drop(tokio::spawn(Arc::clone(batcher).run())));
        let budget = batcher.pool.budget(&opts.call);
        let (reply, mut answer) = oneshot::channel();
        let pending = Pending {
            item,
            budget,
            reply,
        };
        let pushed = batcher
            .line
            .lock()
            .push(pending, opts.call.checkout.priority);
        let key = match pushed {
            Ok(key) => key,
            Err(Refused::Closed) => return Err(Error::Closed.into()),
            Err(Refused::Full(waiting)) => return Err(Error::Saturated { waiting }.into()),
        };
        batcher.arrived.notify_one();
        let mut place = InLine {
            batcher,
            key: Some(key),
        };
        tokio::select! {
            biased;
            sent = &mut answer => return place.answered(sent),
            () = tokio::time::sleep_until(budget.checkout_deadline().to_instant()) => {}
        }
        if place.leave() {
            return Err(Error::CheckoutTimeout {
                waited: budget.checkout_timeout(),
                last_start_error: None,
            }
            .into());
        }
        // Sent just now: its batch's deadline bounds the rest.
        let sent = answer.await;
        place.answered(sent)
    }

    /// The batcher's counts: batches sent, their mean, p99 and largest
    /// size, items waiting, and items whose callers gave up.
    pub fn status(&self) -> BatchStatus {
        self.handle.batcher.line.lock().status()
    }

    /// The pool the items go to.
    pub fn pool(&self) -> &Pool<F, I, W> {
        &self.handle.batcher.pool
    }
}

/// An item's place in line, left when its caller gives up before the item
/// is sent.
struct InLine<'a, F: Factory, I: IdleStrategy, W: WaitStrategy, Item>
where
    Wk<F>: BatchCall<Item>,
{
    batcher: &'a Batcher<F, I, W, Item>,
    key: Option<<W::Queue as crate::queue::Queue<crate::entry::Waiter>>::Key>,
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item> InLine<'_, F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    /// Leave the line; `false` if the item was sent already.
    fn leave(&mut self) -> bool {
        self.key
            .take()
            .is_some_and(|key| self.batcher.line.lock().leave(key))
    }

    fn answered(
        &mut self,
        sent: Result<Answer<F, Item>, oneshot::error::RecvError>,
    ) -> Answer<F, Item> {
        self.key = None;
        // A batch task that ended without answering was cut off with its
        // runtime: the pool is going away.
        sent.unwrap_or_else(|_| Err(Error::Closed.into()))
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item> Drop for InLine<'_, F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    fn drop(&mut self) {
        self.leave();
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item: Send + 'static>
    tower_service::Service<Item> for Batched<F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    type Response = <Wk<F> as BatchCall<Item>>::Output;
    type Error = BatchError<WkError<F>>;
    type Future = Pin<Box<dyn Future<Output = Answer<F, Item>> + Send>>;

    /// Always ready: items wait in the batcher's line.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: Item) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.call(item).await })
    }
}
