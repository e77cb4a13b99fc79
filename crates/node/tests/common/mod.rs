//! Shared helpers for the node tests: an in-process worker whose every
//! answer a test chooses, pools of it, and deadline-bound waits.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cenote_core::{Call, CallCtx, Factory, Pool, Registry, Worker, WorkerCtx};
use cenote_node::{ErrorKind, Node, NodeBuilder};
use cenote_registry::LocalRegistry;
use cenote_strategies::{Fifo, Lifo};
use serde::{Deserialize, Serialize};

/// What one call does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// Answer with the text.
    Echo(String),
    /// Sleep this many milliseconds, then answer with the node's name.
    Sleep(u64),
    /// Answer with the node's name.
    Whoami,
    /// Fail with this message; the worker stays.
    Fail(String),
    /// Die during the call.
    Crash,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Failed(String),
    #[error("the worker crashed")]
    Crashed,
}

impl ErrorKind for JobError {
    fn kind(&self) -> String {
        match self {
            JobError::Failed(_) => "Failed".into(),
            JobError::Crashed => "Crashed".into(),
        }
    }
}

pub struct JobWorker {
    node: Arc<str>,
    broken: bool,
}

impl Worker for JobWorker {
    type Error = JobError;

    fn is_broken(&mut self) -> bool {
        self.broken
    }

    async fn shutdown(self, _grace: Duration) {}
}

impl Call<Job> for JobWorker {
    type Response = String;

    async fn call(&mut self, job: Job, _ctx: CallCtx) -> Result<String, JobError> {
        match job {
            Job::Echo(text) => Ok(text),
            Job::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(self.node.to_string())
            }
            Job::Whoami => Ok(self.node.to_string()),
            Job::Fail(message) => Err(JobError::Failed(message)),
            Job::Crash => {
                self.broken = true;
                Err(JobError::Crashed)
            }
        }
    }
}

/// Makes workers that know which node they run on.
pub struct Jobs {
    pub node: Arc<str>,
}

impl Factory for Jobs {
    type Worker = JobWorker;

    async fn create(&self, _ctx: WorkerCtx) -> Result<JobWorker, JobError> {
        Ok(JobWorker {
            node: Arc::clone(&self.node),
            broken: false,
        })
    }
}

pub type JobPool = Pool<Jobs, Lifo, Fifo>;

/// A pool of `size` job workers on `node`.
pub async fn job_pool(node: &str, size: usize) -> JobPool {
    Pool::builder(Jobs { node: node.into() })
        .name(node)
        .size(size)
        .build()
        .await
        .expect("build a job pool")
}

/// A node named after its registry serving `pool` as "jobs" on a free
/// loopback port.
pub async fn serve_jobs(registry: Arc<dyn Registry>, pool: JobPool) -> Node {
    jobs_node(registry, pool)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve")
}

pub fn jobs_node(registry: Arc<dyn Registry>, pool: JobPool) -> NodeBuilder {
    Node::builder(registry)
        .token("test-token")
        .load_interval(Duration::from_millis(20))
        .pool::<Job>("jobs", pool)
}

/// Node `node`'s view of an in-process registry shared by a test's nodes
/// and callers.
pub fn as_node(registry: &LocalRegistry, node: &str) -> Arc<dyn Registry> {
    Arc::new(registry.as_node(node))
}

#[allow(unused_imports)]
pub use cenote_testkit::eventually_async;

/// Collects every log line written through [`Logs::subscriber`], for tests
/// that check what a node says.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// A subscriber that writes lines up to `level` here, without colour.
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish()
    }

    /// Everything collected so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
