//! Pool configuration, with defaults a long-lived process pool wants.

use std::time::Duration;

use crate::error::ConfigError;

/// Exponential backoff between failed worker starts: `initial`, doubled after
/// each failure, capped at `max`, with up to 20% jitter so slots do not retry
/// in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt` (1 = first retry), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// [`delay`](Self::delay) with ±20% jitter, so slots or callers that
    /// failed together do not retry together.
    pub fn jittered(&self, attempt: u32) -> Duration {
        use rand::Rng;
        self.delay(attempt)
            .mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
    }
}

/// The crash-loop guard: how many charged failures are allowed within
/// `window` before the pool holds every start back until the window has
/// room again, and reports a crash loop.
///
/// Charged are failures the pool did not choose: a failed start, and a
/// worker that broke on its own (crashed, failed a health check or a
/// recycle). A worker that breaks before it has finished a single call
/// counts twice, so a module that dies on every call is held back twice as
/// soon. Not charged are the pool's own decisions: killing a call that ran
/// past its deadline and did not let go, retirements, removals, shrinking,
/// idle overflow. Only real failure times are remembered; holding a start
/// back never pushes time into the window, so once it has room, starts
/// resume at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashBudget {
    /// Charged failures allowed per window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

/// Everything a pool can be told. Build it through
/// [`PoolBuilder`](crate::PoolBuilder); the fields are public for reading.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The pool's name: in tracing fields, status and the registry.
    pub name: String,
    /// Warm workers, started concurrently when the pool is built.
    pub size: usize,
    /// Extra workers made on demand when all are busy.
    pub max_overflow: usize,
    /// An idle overflow worker is retired after this long unused.
    pub overflow_idle: Duration,
    /// Past this many waiting callers, `get` fails at once with `Saturated`.
    pub max_waiters: usize,
    /// How long `get` waits for a worker. Every wait has a deadline.
    pub checkout_timeout: Duration,
    /// Deadline for one `Factory::create`.
    pub create_timeout: Duration,
    /// Deadline for one `Worker::recycle`.
    pub recycle_timeout: Duration,
    /// Deadline for one `Pool::call`, unless the call gives its own.
    pub call_timeout: Duration,
    /// How long a worker is given to let go of a call that ran past its
    /// deadline, or that its caller dropped, before it is killed and
    /// replaced (see [`Worker::cancel`](crate::Worker::cancel)). Zero: kill
    /// at once.
    pub cancel_grace: Duration,
    /// Backoff between failed starts of one slot.
    pub start_backoff: Backoff,
    /// Crash-loop budget.
    pub crash_budget: CrashBudget,
    /// Idle workers unused this long are health-checked with `recycle`
    /// (`None`: never).
    pub health_interval: Option<Duration>,
    /// How long `close` lets in-flight work finish before killing.
    pub shutdown_grace: Duration,
    /// Whether `build` waits until the warm workers are up (or have failed once).
    pub wait_for_warm: bool,
    /// The most session keys the pool remembers (which worker served each
    /// last); past it the least recently used is forgotten. Bounds memory
    /// whatever keys callers send.
    pub affinity_capacity: usize,
    /// A session key unused this long is forgotten (`None`: only
    /// `affinity_capacity` bounds the map).
    pub affinity_ttl: Option<Duration>,
    /// How long an [`AffinityMode::Hint`](crate::AffinityMode::Hint) call
    /// waits for its session's busy worker before it takes any worker.
    pub affinity_hint_wait: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: "pool".into(),
            size: 4,
            max_overflow: 0,
            overflow_idle: Duration::from_secs(10),
            max_waiters: 10_000,
            checkout_timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(30),
            recycle_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            cancel_grace: PoolConfig::DEFAULT_CANCEL_GRACE,
            start_backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            crash_budget: CrashBudget {
                max_restarts: 20,
                window: Duration::from_secs(10),
            },
            health_interval: Some(Duration::from_secs(5)),
            shutdown_grace: Duration::from_secs(5),
            wait_for_warm: true,
            affinity_capacity: 10_000,
            affinity_ttl: Some(Duration::from_secs(600)),
            affinity_hint_wait: Duration::from_millis(50),
        }
    }
}

impl PoolConfig {
    /// The default `cancel_grace`. A cancelled asyncio task or an
    /// interrupted handler confirms in well under a millisecond; 250 ms
    /// leaves room for a handler's own cleanup (closing a connection in a
    /// `finally`) while a worker that will not let go holds its slot only
    /// briefly before it is replaced.
    pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_millis(250);

    /// Reject values that cannot work, with a message naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if self.name.is_empty() {
            return fail("name must not be empty");
        }
        if self.size + self.max_overflow == 0 {
            return fail("size + max_overflow must be at least 1, or no caller can ever be served");
        }
        for (field, d) in [
            ("checkout_timeout", self.checkout_timeout),
            ("create_timeout", self.create_timeout),
            ("recycle_timeout", self.recycle_timeout),
            ("call_timeout", self.call_timeout),
            ("start_backoff.initial", self.start_backoff.initial),
        ] {
            if d.is_zero() {
                return fail(&format!("{field} must be greater than zero"));
            }
        }
        if self.start_backoff.max < self.start_backoff.initial {
            return fail("start_backoff.max must be at least start_backoff.initial");
        }
        if self.crash_budget.max_restarts == 0 || self.crash_budget.window.is_zero() {
            return fail("crash_budget needs max_restarts >= 1 and a non-zero window");
        }
        if self.health_interval.is_some_and(|d| d.is_zero()) {
            return fail("health_interval must be greater than zero (or None)");
        }
        if self.affinity_capacity == 0 {
            return fail("affinity_capacity must be at least 1");
        }
        if self.affinity_ttl.is_some_and(|d| d.is_zero()) {
            return fail("affinity_ttl must be greater than zero (or None)");
        }
        Ok(())
    }
}
