//! [`PoolBuilder`]: configuration with defaults, then `build`, which starts the
//! warm workers concurrently.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::registry_writer::RegistryWriter;
use super::shared::Shared;
use super::Pool;
use crate::config::{Backoff, CrashBudget, PoolConfig};
use crate::error::BuildError;
use crate::queue::{IdleStrategy, WaitStrategy};
use crate::registry::{PoolEntry, Registry};
use crate::worker::Factory;

/// Builds a [`Pool`]. Every setting has a default (see [`PoolConfig`]).
pub struct PoolBuilder<F: Factory, I: IdleStrategy, W: WaitStrategy> {
    factory: F,
    config: PoolConfig,
    registry: Option<Arc<dyn Registry>>,
    _strategies: PhantomData<fn() -> (I, W)>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> PoolBuilder<F, I, W> {
    /// A builder with the default configuration.
    pub fn new(factory: F) -> Self {
        PoolBuilder {
            factory,
            config: PoolConfig::default(),
            registry: None,
            _strategies: PhantomData,
        }
    }

    /// Replace the whole configuration.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// The pool's name (tracing, status, registry).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    setters! {
        /// Warm workers, started concurrently by `build`.
        size: usize;
        /// Extra workers made on demand, retired after `overflow_idle`.
        max_overflow: usize;
        /// How long an overflow worker may sit idle before it is retired.
        overflow_idle: Duration;
        /// Past this many waiting callers, `get` fails at once with `Saturated`.
        max_waiters: usize;
        /// How long `get` waits for a worker.
        checkout_timeout: Duration;
        /// Deadline for one worker start.
        create_timeout: Duration;
        /// Deadline for one recycle or health check.
        recycle_timeout: Duration;
        /// Default deadline for `call`.
        call_timeout: Duration;
        /// How long a worker may take to let go of a late or dropped call
        /// before it is killed (default 250 ms; zero: kill at once).
        cancel_grace: Duration;
        /// Backoff between failed starts.
        start_backoff: Backoff;
        /// Crash-loop budget.
        crash_budget: CrashBudget;
        /// Health-check idle workers unused this long (`None`: never).
        health_interval: Option<Duration>;
        /// How long `close` lets in-flight work finish.
        shutdown_grace: Duration;
        /// Whether `build` waits for the warm workers (default true).
        wait_for_warm: bool;
        /// The most session keys remembered (least recently used forgotten first).
        affinity_capacity: usize;
        /// Forget a session key unused this long (`None`: never by age).
        affinity_ttl: Option<Duration>;
        /// How long a `Hint` session call waits for its busy worker.
        affinity_hint_wait: Duration;
    }

    /// Register the pool and its workers in `registry`.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Use another strategy for idle workers.
    pub fn idle_strategy<I2: IdleStrategy>(self) -> PoolBuilder<F, I2, W> {
        PoolBuilder {
            factory: self.factory,
            config: self.config,
            registry: self.registry,
            _strategies: PhantomData,
        }
    }

    /// Use another strategy for waiting callers.
    pub fn wait_strategy<W2: WaitStrategy>(self) -> PoolBuilder<F, I, W2> {
        PoolBuilder {
            factory: self.factory,
            config: self.config,
            registry: self.registry,
            _strategies: PhantomData,
        }
    }

    /// Validate the configuration, register the pool, and start `size`
    /// workers concurrently. With `wait_for_warm` (the default) it returns
    /// once each warm worker is up or has failed its first start; a failing
    /// start does not fail the build — the pool runs degraded and keeps
    /// retrying.
    pub async fn build(self) -> Result<Pool<F, I, W>, BuildError> {
        self.config.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let registry = match self.registry {
            Some(reg) => {
                let entry = PoolEntry {
                    name: self.config.name.clone(),
                    node: reg.node().to_string(),
                    idle_strategy: I::NAME.to_string(),
                    wait_strategy: W::NAME.to_string(),
                    size: self.config.size,
                    max_overflow: self.config.max_overflow,
                };
                Some(RegistryWriter::start(reg, entry, &rt).await?)
            }
            None => None,
        };
        let wait = self.config.wait_for_warm;
        let create_timeout = self.config.create_timeout;
        let shared = Arc::new(Shared::new(self.config, self.factory, rt, registry));
        let warm = shared.lock().start_warm(&shared.closing);
        for ticket in warm {
            shared.start(ticket);
        }
        shared.spawn_maintenance();
        let pool = Pool::from_shared(Arc::clone(&shared));
        if wait {
            shared.wait_warm(create_timeout).await;
        }
        tracing::info!(pool = %shared.name, status = ?pool.status(), "pool built");
        Ok(pool)
    }
}

impl<F: Factory, I: IdleStrategy, W: WaitStrategy> Shared<F, I, W> {
    /// Wait until no start is in its first attempt any more, bounded by
    /// `limit` plus a margin.
    async fn wait_warm(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit + Duration::from_millis(100);
        self.wait_until(deadline, |st| st.warm_settled()).await;
    }
}
