//! [`PythonFactory`]: makes [`PythonWorker`]s, resolving the interpreter once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cenote_core::{Factory, WorkerCtx};
use tokio::sync::OnceCell;

use crate::command;
use crate::config::PythonConfig;
use crate::error::PythonError;
use crate::worker::PythonWorker;

/// Makes Python workers for a pool (or for direct use with
/// [`spawn`](PythonFactory::spawn)).
///
/// The interpreter is resolved to its real `sys.executable` on the first
/// start and reused: a pyenv-style shim would otherwise add ~60 ms to every
/// worker start. A failed resolution is not cached, so fixing the
/// environment fixes the next start.
#[derive(Debug)]
pub struct PythonFactory {
    config: PythonConfig,
    interpreter: OnceCell<PathBuf>,
}

impl PythonFactory {
    /// A factory for workers configured by `config`.
    pub fn new(config: PythonConfig) -> Self {
        PythonFactory {
            config,
            interpreter: OnceCell::new(),
        }
    }

    /// The configuration workers are made with.
    pub fn config(&self) -> &PythonConfig {
        &self.config
    }

    /// The interpreter workers are launched with, resolved on first use.
    pub async fn interpreter(&self) -> Result<&Path, PythonError> {
        self.interpreter
            .get_or_try_init(|| resolve(&self.config))
            .await
            .map(PathBuf::as_path)
    }

    /// Start one worker outside any pool. `label` tags its tracing events.
    pub async fn spawn(&self, label: &str) -> Result<PythonWorker, PythonError> {
        let interpreter = self.interpreter().await?;
        PythonWorker::start(&self.config, interpreter, Arc::from(label)).await
    }
}

impl Factory for PythonFactory {
    type Worker = PythonWorker;

    async fn create(&self, ctx: WorkerCtx) -> Result<PythonWorker, PythonError> {
        let label = format!("{}/{}", ctx.pool, ctx.id);
        self.spawn(&label).await
    }
}

/// Ask the configured interpreter for `sys.executable`, in the workers' env
/// and directory (pyenv picks versions by both).
async fn resolve(config: &PythonConfig) -> Result<PathBuf, PythonError> {
    let asked = config.interpreter.clone();
    if !config.resolve_interpreter {
        return Ok(asked);
    }
    let mut cmd = command::python(&asked, config);
    cmd.args(["-c", "import sys; sys.stdout.write(sys.executable or '')"])
        .stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(config.startup_timeout, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Err(PythonError::Spawn {
                interpreter: asked,
                source: Arc::new(e),
            })
        }
        Err(_) => {
            return Err(PythonError::Interpreter {
                interpreter: asked,
                message: format!(
                    "it did not print sys.executable within {:?}",
                    config.startup_timeout
                ),
            })
        }
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(PythonError::Interpreter {
            interpreter: asked,
            message: format!(
                "`-c 'import sys; print(sys.executable)'` ended with {} and printed {path:?}; stderr: {}",
                out.status,
                stderr.trim()
            ),
        });
    }
    tracing::debug!(interpreter = %asked.display(), resolved = %path, "python interpreter resolved");
    Ok(PathBuf::from(path))
}
