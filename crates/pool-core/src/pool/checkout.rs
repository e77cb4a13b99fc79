//! [`Checkout`]: a worker on loan to one caller, returned when dropped.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use super::live::{Live, Served};
use super::shared::{Home, Return};
use crate::clock::Stamp;
use crate::error::Error;
use crate::worker::{Call, CallCtx, Worker, WorkerId};

/// A worker checked out of a pool. Derefs to the worker; dropping it gives
/// the worker back.
///
/// What happens on drop depends on how the worker was left:
/// * nothing in flight: it goes to the next waiter or the idle queue;
/// * dropped while [`call`](Checkout::call) was running (the caller was
///   cancelled), or after [`taint`](Checkout::taint): it is recycled before
///   anyone else gets it;
/// * its call passed its deadline: it is killed and replaced.
pub struct Checkout<W: Worker> {
    /// Moved out by Drop, and only there: a `ManuallyDrop` rather than an
    /// `Option`, so no check of it is left in every access and in the
    /// guard's drop glue (the checkout's hot path).
    loan: ManuallyDrop<Loan<W>>,
    /// Nanoseconds the caller waited.
    waited_ns: u64,
    taken: Stamp,
    in_flight: bool,
    kill: bool,
}

/// The worker and where it goes back to, moved out together on drop.
struct Loan<W: Worker> {
    live: Live<W>,
    home: Arc<dyn Home<W>>,
}

impl<W: Worker> Checkout<W> {
    pub(crate) fn new(live: Live<W>, home: Arc<dyn Home<W>>, waited_ns: u64, taken: Stamp) -> Self {
        Checkout {
            loan: ManuallyDrop::new(Loan { live, home }),
            waited_ns,
            taken,
            in_flight: false,
            kill: false,
        }
    }

    /// The worker's id in its pool.
    pub fn id(&self) -> WorkerId {
        self.live().meta.id
    }

    /// The worker's OS process id, where it has one.
    pub fn pid(&self) -> Option<u32> {
        self.live().meta.pid
    }

    /// How long the caller waited for this worker.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns)
    }

    /// Tasks this worker served before this checkout.
    pub fn tasks_served(&self) -> u64 {
        self.live().meta.tasks
    }

    /// Serve one request under the pool's `call_timeout`, exactly as
    /// [`Pool::call`](crate::Pool::call) does once it holds a worker.
    pub async fn call<Req>(&mut self, req: Req) -> Result<W::Response, Error<W::Error>>
    where
        W: Call<Req>,
    {
        let limit = self.home().call_timeout();
        self.call_within(req, limit).await
    }

    /// Serve one request, which must finish within `limit`.
    ///
    /// * Past the deadline the call is cut off and
    ///   [`Error::CallTimeout`] returned; the worker is killed and replaced
    ///   when this guard drops.
    /// * A worker that answers with an error stays: [`Error::Worker`]; one
    ///   that died during the call is replaced: [`Error::Crashed`].
    /// * If this future is dropped before it finishes, the worker is
    ///   recycled (its abandoned work finished or killed) before it serves
    ///   anyone else.
    /// * When the pool's close grace runs out, the call is cut off with
    ///   [`Error::Closed`].
    pub async fn call_within<Req>(
        &mut self,
        req: Req,
        limit: Duration,
    ) -> Result<W::Response, Error<W::Error>>
    where
        W: Call<Req>,
    {
        let ctx = CallCtx::within(limit);
        let deadline = ctx.deadline();
        let Loan { live, home } = &mut *self.loan;
        self.in_flight = true;
        let outcome = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, live.worker.call(req, ctx)) => r,
            // The close grace ran out: cut the call off; the guard's drop
            // (in flight, pool closed) ends the worker.
            () = home.kill_signal().cancelled() => return Err(Error::Closed),
        };
        self.in_flight = false;
        let broken = matches!(outcome, Ok(Err(_))) && live.worker.is_broken();
        match outcome {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if !broken => Err(Error::Worker(e)),
            // A worker that broke only once the deadline had passed ran into
            // it: a stalled runtime can find a worker's own backstop
            // (derived from the same deadline) expired before this timer.
            Ok(Err(e)) if tokio::time::Instant::now() < deadline => Err(Error::Crashed(e)),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(pool = %home.name(), worker = %live.meta.id, ?limit, "call timed out; killing its worker");
                self.kill = true;
                Err(Error::CallTimeout(limit))
            }
        }
    }

    /// The context a call made now through `DerefMut` would get: the pool's
    /// `call_timeout` from now. For worker methods outside [`Call`] (e.g.
    /// streams) that should honour the same deadline.
    pub fn call_ctx(&self) -> CallCtx {
        CallCtx::within(self.home().call_timeout())
    }

    /// Mark the worker as left mid-operation by code that used it directly
    /// through `DerefMut`: it will be recycled before it serves again.
    pub fn taint(&mut self) {
        self.in_flight = true;
    }

    /// Mark the worker to be killed and replaced when this guard drops:
    /// for code that used it through `DerefMut` and ran past a deadline of
    /// its own. It counts as a call timeout.
    pub fn kill_on_return(&mut self) {
        self.kill = true;
    }

    fn home(&self) -> &Arc<dyn Home<W>> {
        &self.loan.home
    }

    fn live(&self) -> &Live<W> {
        &self.loan.live
    }

    fn live_mut(&mut self) -> &mut Live<W> {
        &mut self.loan.live
    }
}

impl<W: Worker> Deref for Checkout<W> {
    type Target = W;

    fn deref(&self) -> &W {
        &self.live().worker
    }
}

impl<W: Worker> DerefMut for Checkout<W> {
    fn deref_mut(&mut self) -> &mut W {
        &mut self.live_mut().worker
    }
}

impl<W: Worker> Drop for Checkout<W> {
    fn drop(&mut self) {
        // SAFETY: `loan` is initialised from construction until here, and
        // nothing reads it after this line: drop runs once.
        let Loan { live, home } = unsafe { ManuallyDrop::take(&mut self.loan) };
        let how = if self.kill {
            Return::Kill
        } else if self.in_flight {
            Return::Interrupted
        } else {
            Return::Clean
        };
        let returned = Stamp::now();
        let served = Served {
            waited_ns: self.waited_ns,
            ran_ns: returned.nanos_since(self.taken),
            returned,
        };
        home.put_back(live, how, served);
    }
}

impl<W: Worker + std::fmt::Debug> std::fmt::Debug for Checkout<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("worker", &self.loan.live.worker)
            .field("waited", &self.waited())
            .finish()
    }
}
