//! The dispatcher: one task per [`Batched`](crate::Batched) handle that
//! turns the line into batches (see the module header in `mod.rs` for the
//! three steps), and the task that sends one batch and hands its results
//! out.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::line::{Line, Pending};
use super::{Answer, BatchCall, BatchConfig, BatchError, Wk};
use crate::clock::Stamp;
use crate::error::Error;
use crate::pool::{Checkout, Pool};
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::worker::{CallCtx, Factory};

/// What a handle and its dispatcher share.
pub(crate) struct Batcher<F: Factory, I: IdleStrategy, W: WaitStrategy, Item>
where
    Wk<F>: BatchCall<Item>,
{
    pub pool: Pool<F, I, W>,
    pub line: Mutex<Line<W::Queue, Item, Answer<F, Item>>>,
    /// Woken when an item joins the line.
    pub arrived: Notify,
    pub config: BatchConfig,
    /// Cancelled when the last handle goes.
    pub stop: CancellationToken,
}

type Batch<F, Item> = Vec<Pending<Item, Answer<F, Item>>>;

impl<F: Factory, I: IdleStrategy, W: WaitStrategy, Item: Send + 'static> Batcher<F, I, W, Item>
where
    Wk<F>: BatchCall<Item>,
{
    /// The dispatcher's life: serve until the handles go or the pool
    /// closes, then tell whatever is still in line.
    pub(crate) async fn run(self: Arc<Self>) {
        self.serve().await;
        let left = self.line.lock().close();
        fail(left, Error::Closed);
    }

    async fn serve(self: &Arc<Self>) {
        let max = self.config.max_size;
        loop {
            if !self.until(|line| line.len() > 0, None).await {
                return;
            }
            if let Some(wait) = self.config.max_wait {
                let from = self.line.lock().oldest().unwrap_or_else(Stamp::now);
                if !self
                    .until(|line| line.len() >= max, Some(from + wait))
                    .await
                {
                    return;
                }
            }
            let worker = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                got = self.pool.get() => got,
            };
            let worker = match worker {
                Ok(worker) => worker,
                // Items time out by their own deadlines; keep asking.
                Err(Error::CheckoutTimeout { .. }) => continue,
                Err(Error::Closed) => return,
                // No worker can start (the pool gave up waiting for one),
                // or the pool turns callers away: the items in line are
                // told, as callers waiting on the pool would be.
                Err(e) => {
                    let waiting = self.line.lock().take(usize::MAX);
                    fail(waiting, e);
                    continue;
                }
            };
            let batch = self.line.lock().take(max);
            if batch.is_empty() {
                // Every item left while the worker was found: it goes back.
                continue;
            }
            tokio::spawn(Arc::clone(self).send(worker, batch));
        }
    }

    /// Wait until `ready` holds for the line, or `until` passes: `false`
    /// when the dispatcher must stop instead.
    async fn until(
        &self,
        ready: impl Fn(&Line<W::Queue, Item, Answer<F, Item>>) -> bool,
        until: Option<Stamp>,
    ) -> bool {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if ready(&self.line.lock()) {
                return true;
            }
            let timer = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at.to_instant()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = timer => return true,
                () = arrived => {}
            }
        }
    }

    /// Send one batch on `worker` and hand out its results. The batch's
    /// deadline is its earliest item's; an item with no time left is told
    /// so and left out. If every caller gives up meanwhile, the call is
    /// cancelled (dropping it does that, through the checkout).
    async fn send(self: Arc<Self>, mut worker: Checkout<Wk<F>>, batch: Batch<F, Item>) {
        let mut ctx: Option<CallCtx> = None;
        let mut items = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for pending in batch {
            let Some(own) = pending.budget.start() else {
                let _ = pending
                    .reply
                    .send(Err(Error::CallTimeout(Duration::ZERO).into()));
                continue;
            };
            if ctx.is_none_or(|c| own.deadline() < c.deadline()) {
                ctx = Some(own);
            }
            items.push(pending.item);
            replies.push(pending.reply);
        }
        let Some(ctx) = ctx else { return };
        let sent = items.len();
        self.line.lock().sent(sent);
        let all_gone = join_all(replies.iter_mut().map(|r| r.closed()));
        let outcome = tokio::select! {
            biased;
            outcome = worker.call_in(items, ctx) => outcome,
            _ = all_gone => Err(Error::CallTimeout(Duration::ZERO)),
        };
        // The worker goes back (or is cancelled) before results go out.
        drop(worker);
        let dropped =
            match outcome {
                Ok(answer) => {
                    let results = <Wk<F> as BatchCall<Item>>::results(answer);
                    if results.len() == sent {
                        count_gone(
                            replies.into_iter().zip(results).map(|(reply, result)| {
                                reply.send(result.map_err(BatchError::Item))
                            }),
                        )
                    } else {
                        let answered = results.len();
                        count_gone(replies.into_iter().map(|reply| {
                            reply.send(Err(BatchError::WrongLength { sent, answered }))
                        }))
                    }
                }
                Err(e) => {
                    let shared = Arc::new(e);
                    count_gone(
                        replies
                            .into_iter()
                            .map(|reply| reply.send(Err(BatchError::Pool(Arc::clone(&shared))))),
                    )
                }
            };
        if dropped > 0 {
            self.line.lock().dropped(dropped as u64);
        }
    }
}

/// How many sends found their caller gone.
fn count_gone<T>(sends: impl Iterator<Item = Result<(), T>>) -> usize {
    sends.filter(Result::is_err).count()
}

/// Tell every item of `batch` the same error.
fn fail<Item, T, E: std::error::Error + 'static>(
    batch: Vec<Pending<Item, Result<T, BatchError<E>>>>,
    e: Error<E>,
) {
    let shared = Arc::new(e);
    for pending in batch {
        let _ = pending
            .reply
            .send(Err(BatchError::Pool(Arc::clone(&shared))));
    }
}
