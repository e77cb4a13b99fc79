//! [`Checkout`]: a worker on loan to one caller, returned when dropped, and
//! the one place a call's deadline is enforced.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use super::shared::{Home, Return};
use crate::clock::Stamp;
use crate::error::Error;
use crate::live::Live;
use crate::worker::{Call, CallCtx, Worker, WorkerId};

/// A worker checked out of a pool. Derefs to the worker; dropping it gives
/// the worker back.
///
/// What happens on drop depends on how the worker was left:
/// * nothing in flight: it goes to the next waiter or the idle queue;
/// * dropped while a call was running (the caller was cancelled), or its
///   call ran past its deadline: the worker is asked to
///   [cancel](crate::Worker::cancel) the call, and serves again once it has
///   let go; one that does not within `cancel_grace` (or cannot cancel) is
///   killed and replaced after a late call, recycled after a dropped one;
/// * after [`taint`](Checkout::taint): as after a dropped call; after
///   [`kill_on_return`](Checkout::kill_on_return): it is killed and
///   replaced.
///
/// What the guard itself knows ([`id`](Checkout::id),
/// [`waited`](Checkout::waited)...) is read through associated functions,
/// `Checkout::id(&guard)`, so they never hide the worker's own methods.
pub struct Checkout<W: Worker> {
    /// Moved out by Drop, and only there: a `ManuallyDrop` rather than an
    /// `Option`, so no check of it is left in every access and in the
    /// guard's drop glue (the checkout's hot path).
    loan: ManuallyDrop<Loan<W>>,
    /// Nanoseconds the caller waited.
    waited_ns: u64,
    taken: Stamp,
    /// How the worker goes back if the guard drops now.
    left: Return,
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
            left: Return::Clean,
        }
    }

    /// The worker's id in its pool.
    pub fn id(this: &Self) -> WorkerId {
        this.live().meta.id
    }

    /// The worker's OS process id, where it has one.
    pub fn pid(this: &Self) -> Option<u32> {
        this.live().meta.pid
    }

    /// How long the caller waited for this worker.
    pub fn waited(this: &Self) -> Duration {
        Duration::from_nanos(this.waited_ns)
    }

    /// Checkouts of this worker that ended before this one.
    pub fn tasks_served(this: &Self) -> u64 {
        this.live().meta.tasks
    }

    /// Serve one request under the pool's `call_timeout`, exactly as
    /// [`Pool::call`](crate::Pool::call) does once it holds a worker.
    pub async fn call<Req>(&mut self, req: Req) -> Result<W::Response, Error<W::Error>>
    where
        W: Call<Req>,
    {
        let ctx = self.call_ctx();
        self.call_in(req, ctx).await
    }

    /// Serve one request, which must finish within `limit` from now.
    pub async fn call_within<Req>(
        &mut self,
        req: Req,
        limit: Duration,
    ) -> Result<W::Response, Error<W::Error>>
    where
        W: Call<Req>,
    {
        self.call_in(req, CallCtx::within(limit)).await
    }

    /// Serve one request by `ctx`'s deadline (a [`CallBudget`]'s
    /// [`start`](crate::CallBudget::start)). This is where a call's deadline is
    /// enforced, by one timer:
    ///
    /// * Past the deadline the call is cut off and [`Error::CallTimeout`]
    ///   returned at once; when this guard drops, the worker is asked to
    ///   cancel the call (see [`Checkout`]).
    /// * A worker that answers with an error stays: [`Error::Worker`]; one
    ///   that broke during the call is replaced: [`Error::Crashed`].
    /// * If this future is dropped before it finishes, the call is cancelled
    ///   the same way when the guard drops.
    /// * When the pool's close grace runs out, the call is cut off with
    ///   [`Error::Closed`].
    ///
    /// [`CallBudget`]: crate::CallBudget
    pub async fn call_in<Req>(
        &mut self,
        req: Req,
        ctx: CallCtx,
    ) -> Result<W::Response, Error<W::Error>>
    where
        W: Call<Req>,
    {
        let Loan { live, home } = &mut *self.loan;
        self.left = Return::Interrupted;
        let outcome = tokio::select! {
            biased;
            r = tokio::time::timeout_at(ctx.deadline(), live.worker.call(req, ctx)) => r,
            // The close grace ran out: cut the call off; the guard's drop
            // (in flight, pool closed) ends the worker.
            () = home.kill_signal().cancelled() => return Err(Error::Closed),
        };
        let Ok(answered) = outcome else {
            tracing::debug!(pool = %home.name(), worker = %live.meta.id, limit = ?ctx.timeout(),
                "call ran past its deadline; cancelling it");
            self.left = Return::Late;
            return Err(Error::CallTimeout(ctx.timeout()));
        };
        self.left = Return::Clean;
        match answered {
            Ok(resp) => Ok(resp),
            Err(e) if live.worker.is_broken() => Err(Error::Crashed(e)),
            Err(e) => Err(Error::Worker(e)),
        }
    }

    /// The context a call made now through `DerefMut` would get: the pool's
    /// `call_timeout` from now.
    pub fn call_ctx(&self) -> CallCtx {
        CallCtx::within(self.home().call_timeout())
    }

    /// Mark the worker as left mid-operation by code that used it directly
    /// through `DerefMut`: the operation is cancelled (or the worker
    /// recycled, if it cannot cancel) before it serves again.
    pub fn taint(&mut self) {
        // A call cut off at its deadline, or a kill asked for, stays so.
        if self.left == Return::Clean {
            self.left = Return::Interrupted;
        }
    }

    /// Mark the worker to be killed and replaced when this guard drops:
    /// for code that used it through `DerefMut` and ran past a deadline of
    /// its own. It counts as a call timeout.
    pub fn kill_on_return(&mut self) {
        self.left = Return::Kill;
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
        // The return is stamped on the other side of the call: the guard's
        // drop, inlined wherever a guard goes out of scope, stays small.
        home.put_back(live, self.left, self.waited_ns, self.taken);
    }
}

impl<W: Worker + std::fmt::Debug> std::fmt::Debug for Checkout<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("worker", &self.loan.live.worker)
            .field("waited", &Checkout::waited(self))
            .finish()
    }
}
