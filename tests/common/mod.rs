//! An in-process worker whose every behaviour a test can choose, and a
//! factory that counts what it made and what was shut down, so tests can
//! prove that no worker is lost, doubled or leaked.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cenote::{Call, CallCtx, Factory, Worker, WorkerCtx};

/// What one call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Answer at once.
    Ok,
    /// Answer with an error; the worker stays healthy.
    Err,
    /// Sleep, then answer.
    Slow(Duration),
    /// Sleep, then answer with an error.
    SlowErr(Duration),
    /// Never answer.
    Hang,
    /// Die: the answer is an error and the worker is broken afterwards.
    Crash,
    /// Panic inside the call (the worker's own bug).
    Panic,
    /// Count one more call of session `n` in this worker's memory and
    /// answer the count: state that only the session's own worker has.
    Bump(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TestError {
    #[error("the call failed on purpose")]
    Failed,
    #[error("the worker crashed")]
    Crashed,
    #[error("start failed on purpose (attempt {0})")]
    StartFailed(u32),
    #[error("recycle failed on purpose")]
    RecycleFailed,
}

/// How `recycle` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    Ok,
    Err,
    Hang,
}

/// Shared counters and switches for one factory and all its workers.
#[derive(Debug)]
pub struct Book {
    pub created: AtomicU64,
    pub shut_down: AtomicU64,
    /// Ids of workers currently inside a call: a second entry for the same id
    /// means two callers held one worker.
    pub in_call: Mutex<HashSet<u64>>,
    pub double_use: AtomicBool,
    /// Fail this many more start attempts.
    pub fail_starts: AtomicUsize,
    /// Each start takes this long (ms).
    pub start_ms: AtomicU64,
    pub recycle: Mutex<Recycle>,
    /// Each recycle takes this long (ms) before its outcome.
    pub recycle_ms: AtomicU64,
    pub recycles: AtomicU64,
    /// Workers retire after this many tasks (0 = never).
    pub quota: AtomicU64,
    /// Calls still running in the background after their caller dropped them.
    pub abandoned_running: AtomicUsize,
    /// Workers are made broken: beyond use before their first call.
    pub born_broken: AtomicBool,
    /// The items of every batch served (`Call<Vec<Item>>`), in order.
    pub batches: Mutex<Vec<Vec<u64>>>,
    /// Each batch takes this long (ms) before it answers.
    pub batch_ms: AtomicU64,
}

impl Default for Book {
    fn default() -> Self {
        Book {
            created: AtomicU64::new(0),
            shut_down: AtomicU64::new(0),
            in_call: Mutex::new(HashSet::new()),
            double_use: AtomicBool::new(false),
            fail_starts: AtomicUsize::new(0),
            start_ms: AtomicU64::new(0),
            recycle: Mutex::new(Recycle::Ok),
            recycle_ms: AtomicU64::new(0),
            recycles: AtomicU64::new(0),
            quota: AtomicU64::new(0),
            abandoned_running: AtomicUsize::new(0),
            born_broken: AtomicBool::new(false),
            batches: Mutex::new(Vec::new()),
            batch_ms: AtomicU64::new(0),
        }
    }
}

impl Book {
    /// The sizes of the batches served so far.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// Workers made and not yet shut down.
    pub fn alive(&self) -> u64 {
        self.created.load(Ordering::SeqCst) - self.shut_down.load(Ordering::SeqCst)
    }
}

pub struct TestWorker {
    pub id: u64,
    book: Arc<Book>,
    broken: bool,
    served: u64,
    /// A call was cut off mid-way and has not been cleaned up by recycle.
    dirty: bool,
    down: bool,
    /// Calls counted per session (`Op::Bump`).
    sessions: HashMap<u64, u64>,
}

impl Worker for TestWorker {
    type Error = TestError;

    fn is_broken(&mut self) -> bool {
        self.broken
    }

    async fn recycle(&mut self) -> Result<(), TestError> {
        self.book.recycles.fetch_add(1, Ordering::SeqCst);
        let mode = *self.book.recycle.lock().unwrap();
        let ms = self.book.recycle_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match mode {
            Recycle::Ok => {
                tokio::task::yield_now().await;
                self.dirty = false;
                Ok(())
            }
            Recycle::Err => Err(TestError::RecycleFailed),
            Recycle::Hang => std::future::pending().await,
        }
    }

    fn retire_reason(&self) -> Option<cenote::Retire> {
        let quota = self.book.quota.load(Ordering::SeqCst);
        (quota > 0 && self.served >= quota).then_some(cenote::Retire::Tasks(quota))
    }

    async fn shutdown(mut self, _grace: Duration) {
        self.down = true;
        self.book.shut_down.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        // A worker dropped without shutdown is a leak the tests must see.
        if !self.down {
            self.book.shut_down.fetch_add(1, Ordering::SeqCst);
            eprintln!("worker {} dropped without shutdown", self.id);
        }
    }
}

/// Leaves the in-call set when the call ends, however it ends.
struct InCall<'a>(&'a Book, u64);
impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.0.in_call.lock().unwrap().remove(&self.1);
    }
}

impl Call<Op> for TestWorker {
    type Response = u64;

    async fn call(&mut self, op: Op, _ctx: CallCtx) -> Result<u64, TestError> {
        if self.dirty {
            // Handed out before its abandoned call was cleaned up.
            self.book.double_use.store(true, Ordering::SeqCst);
        }
        if !self.book.in_call.lock().unwrap().insert(self.id) {
            self.book.double_use.store(true, Ordering::SeqCst);
        }
        let _in = InCall(&self.book, self.id);
        self.dirty = true;
        self.served += 1;
        let out = match op {
            Op::Ok => Ok(self.id),
            Op::Err => Err(TestError::Failed),
            Op::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(self.id)
            }
            Op::SlowErr(d) => {
                tokio::time::sleep(d).await;
                Err(TestError::Failed)
            }
            Op::Hang => std::future::pending().await,
            Op::Crash => {
                self.broken = true;
                Err(TestError::Crashed)
            }
            Op::Panic => panic!("worker {} panicked on purpose", self.id),
            Op::Bump(session) => {
                let n = self.sessions.entry(session).or_insert(0);
                *n += 1;
                Ok(*n)
            }
        };
        self.dirty = false;
        out
    }
}

/// One item of a batch (`Call<Vec<Item>>`): the batch takes
/// `Book::batch_ms`, then answers each item in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// Answered with its value.
    Echo(u64),
    /// Answered with an error in its place; the rest of the batch is not.
    Fail(u64),
    /// The batch never answers.
    Hang(u64),
    /// The worker dies mid-batch.
    Crash(u64),
    /// The batch answers one result too few.
    Short(u64),
}

impl Item {
    pub fn value(self) -> u64 {
        match self {
            Item::Echo(v) | Item::Fail(v) | Item::Hang(v) | Item::Crash(v) | Item::Short(v) => v,
        }
    }
}

impl Call<Vec<Item>> for TestWorker {
    type Response = Vec<Result<u64, TestError>>;

    async fn call(&mut self, items: Vec<Item>, _ctx: CallCtx) -> Result<Self::Response, TestError> {
        if !self.book.in_call.lock().unwrap().insert(self.id) {
            self.book.double_use.store(true, Ordering::SeqCst);
        }
        let _in = InCall(&self.book, self.id);
        self.served += 1;
        self.book
            .batches
            .lock()
            .unwrap()
            .push(items.iter().map(|i| i.value()).collect());
        let ms = self.book.batch_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if items.iter().any(|i| matches!(i, Item::Hang(_))) {
            std::future::pending::<()>().await;
        }
        if items.iter().any(|i| matches!(i, Item::Crash(_))) {
            self.broken = true;
            return Err(TestError::Crashed);
        }
        let short = items.iter().any(|i| matches!(i, Item::Short(_)));
        let mut out: Vec<_> = items
            .into_iter()
            .map(|i| match i {
                Item::Fail(_) => Err(TestError::Failed),
                other => Ok(other.value()),
            })
            .collect();
        if short {
            out.pop();
        }
        Ok(out)
    }
}

#[derive(Clone, Default)]
pub struct TestFactory {
    pub book: Arc<Book>,
}

impl Factory for TestFactory {
    type Worker = TestWorker;

    async fn create(&self, ctx: WorkerCtx) -> Result<TestWorker, TestError> {
        let ms = self.book.start_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let fail = self
            .book
            .fail_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(TestError::StartFailed(ctx.attempt));
        }
        self.book.created.fetch_add(1, Ordering::SeqCst);
        Ok(TestWorker {
            id: ctx.id.0,
            book: Arc::clone(&self.book),
            broken: self.book.born_broken.load(Ordering::SeqCst),
            served: 0,
            dirty: false,
            down: false,
            sessions: HashMap::new(),
        })
    }
}

#[allow(unused_imports)]
pub use cenote_testkit::eventually;

/// A small pool config for tests: fast backoff, short timeouts.
pub fn builder(
    f: TestFactory,
    size: usize,
) -> cenote::PoolBuilder<TestFactory, cenote::Lifo, cenote::Fifo> {
    cenote::Pool::<TestFactory>::builder(f)
        .name("test")
        .size(size)
        .checkout_timeout(Duration::from_secs(5))
        .call_timeout(Duration::from_secs(5))
        .recycle_timeout(Duration::from_millis(500))
        .shutdown_grace(Duration::from_millis(500))
        .start_backoff(cenote::Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
        })
        .health_interval(None)
}

/// The default-strategy pool over test workers.
pub type TestPool = cenote::Pool<TestFactory>;

/// A factory and a pool of `size` of its workers, with [`builder`]'s
/// test settings.
pub async fn pool_of(size: usize) -> (TestFactory, TestPool) {
    let f = TestFactory::default();
    let pool = builder(f.clone(), size).build().await.unwrap();
    (f, pool)
}

/// [`pool_of`] with `tune` applied to the builder first.
pub async fn pool_with(
    size: usize,
    tune: impl FnOnce(
        cenote::PoolBuilder<TestFactory, cenote::Lifo, cenote::Fifo>,
    ) -> cenote::PoolBuilder<TestFactory, cenote::Lifo, cenote::Fifo>,
) -> (TestFactory, TestPool) {
    let f = TestFactory::default();
    let pool = tune(builder(f.clone(), size)).build().await.unwrap();
    (f, pool)
}

/// Close `pool` and check that it left nothing behind: its counts agree
/// to the end, and every worker `f` made was shut down.
pub async fn close_clean<I: cenote::strategy::IdleStrategy, W: cenote::strategy::WaitStrategy>(
    pool: cenote::Pool<TestFactory, I, W>,
    f: &TestFactory,
) {
    pool.check_invariants().unwrap();
    pool.close().await;
    assert_eq!(f.book.alive(), 0);
}

/// A call's result as a test sees it.
pub type CallResult = Result<u64, cenote::Error<TestError>>;

/// Start `n` concurrent `op` calls, each with its own deadline.
pub fn spawn_calls(
    pool: &TestPool,
    n: usize,
    op: Op,
    timeout: Duration,
) -> Vec<tokio::task::JoinHandle<CallResult>> {
    (0..n)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move {
                p.call_with(op, cenote::CallOptions::default().timeout(timeout))
                    .await
            })
        })
        .collect()
}
