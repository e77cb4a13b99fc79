//! [`PythonFactory`]: makes [`PythonWorker`]s, resolving the interpreter once
//! and, in fork-server mode, keeping the fork server they are forked from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cenote_core::{Factory, WorkerCtx};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::command;
use crate::config::{PythonConfig, StartMode};
use crate::error::PythonError;
use crate::worker::PythonWorker;
use crate::zygote::{Started, Zygote};

/// How a factory's workers are being started, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartReport {
    /// [`StartMode::ForkServer`] or [`StartMode::Spawn`] once decided (at the
    /// first start); the configured mode before that.
    pub mode: StartMode,
    /// Why the fork server is not used although it was asked for (or
    /// `Auto` allowed it): the platform, threads left by the handler's
    /// import, CUDA, a running event loop...
    pub fallback: Option<String>,
    /// The fork server's pid, while one runs.
    pub fork_server_pid: Option<u32>,
}

/// The factory's fork-server state.
enum Server {
    /// No start has decided the mode yet.
    Undecided,
    /// Workers are spawned (asked for, or fallen back to).
    Spawn,
    /// Workers are forked from this zygote (`None` after it died, until the
    /// next start launches another).
    Fork(Option<Arc<Zygote>>),
}

/// Makes Python workers for a pool (or for direct use with
/// [`spawn`](PythonFactory::spawn)).
///
/// The interpreter is resolved to its real `sys.executable` on the first
/// start and reused: a pyenv-style shim would otherwise add ~60 ms to every
/// worker start. A failed resolution is not cached, so fixing the
/// environment fixes the next start.
pub struct PythonFactory {
    config: PythonConfig,
    interpreter: OnceCell<PathBuf>,
    server: tokio::sync::Mutex<Server>,
    report: Mutex<StartReport>,
    /// Its pool's `cenote.python.*` gauges, registered at the first start.
    #[cfg(feature = "metrics")]
    meters: std::sync::OnceLock<crate::metrics::Meters>,
}

impl std::fmt::Debug for PythonFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonFactory")
            .field("config", &self.config)
            .field("start", &*self.report.lock())
            .finish()
    }
}

impl PythonFactory {
    /// A factory for workers configured by `config`.
    pub fn new(config: PythonConfig) -> Self {
        let report = StartReport {
            mode: config.start_mode,
            fallback: None,
            fork_server_pid: None,
        };
        PythonFactory {
            config,
            interpreter: OnceCell::new(),
            server: tokio::sync::Mutex::new(Server::Undecided),
            report: Mutex::new(report),
            #[cfg(feature = "metrics")]
            meters: std::sync::OnceLock::new(),
        }
    }

    /// How workers are being started (fork server or spawn), and why the
    /// fork server is not used if it is not. Also logged as a warning when
    /// `Auto` or `ForkServer` falls back.
    pub fn start_mode(&self) -> StartReport {
        self.report.lock().clone()
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

    /// Start one worker outside any pool, in the configured start mode.
    /// `label` tags its tracing events.
    pub async fn spawn(&self, label: &str) -> Result<PythonWorker, PythonError> {
        let interpreter = self.interpreter().await?;
        let label: Arc<str> = Arc::from(label);
        match self.zygote(interpreter).await? {
            Some(zygote) => PythonWorker::fork(&self.config, &zygote, label).await,
            None => PythonWorker::start(&self.config, interpreter, label).await,
        }
    }

    /// The fork server to fork from, started (again) if need be; `None`
    /// when workers are spawned.
    async fn zygote(&self, interpreter: &Path) -> Result<Option<Arc<Zygote>>, PythonError> {
        let mut server = self.server.lock().await;
        match &*server {
            Server::Spawn => return Ok(None),
            Server::Fork(Some(z)) if z.alive() => return Ok(Some(Arc::clone(z))),
            Server::Undecided if self.config.start_mode == StartMode::Spawn => {
                *server = Server::Spawn;
                self.decided(StartMode::Spawn, None, None);
                return Ok(None);
            }
            Server::Undecided if !cfg!(target_os = "linux") => {
                *server = Server::Spawn;
                self.fall_back("the platform is not Linux".into());
                return Ok(None);
            }
            _ => {}
        }
        match Zygote::start(&self.config, interpreter).await? {
            Started::Ready(zygote) => {
                let zygote: Arc<Zygote> = Arc::from(zygote);
                tracing::info!(pid = zygote.pid(), handler = %self.config.handler.describe(), "fork server ready");
                self.decided(StartMode::ForkServer, None, Some(zygote.pid()));
                *server = Server::Fork(Some(Arc::clone(&zygote)));
                Ok(Some(zygote))
            }
            Started::Unsafe(reason) => {
                *server = Server::Spawn;
                self.fall_back(reason);
                Ok(None)
            }
        }
    }

    fn fall_back(&self, reason: String) {
        tracing::warn!(handler = %self.config.handler.describe(), %reason,
            "fork server not used: workers will be spawned");
        self.decided(StartMode::Spawn, Some(reason), None);
    }

    fn decided(&self, mode: StartMode, fallback: Option<String>, pid: Option<u32>) {
        *self.report.lock() = StartReport {
            mode,
            fallback,
            fork_server_pid: pid,
        };
    }
}

impl Factory for PythonFactory {
    type Worker = PythonWorker;

    async fn create(&self, ctx: WorkerCtx) -> Result<PythonWorker, PythonError> {
        let label = format!("{}/{}", ctx.pool, ctx.id);
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut worker = self.spawn(&label).await?;
        #[cfg(feature = "metrics")]
        {
            let meters = self
                .meters
                .get_or_init(|| crate::metrics::Meters::new(&ctx.pool));
            meters.start_mode(self.report.lock().mode);
            if let Some(pid) = cenote_core::Worker::pid(&worker) {
                worker.report_memory(meters.memory_of(pid));
            }
        }
        Ok(worker)
    }

    /// Stop the fork server, if one runs (its workers are already gone).
    async fn shutdown(&self) {
        let zygote = match &mut *self.server.lock().await {
            Server::Fork(z) => z.take(),
            _ => None,
        };
        if let Some(zygote) = zygote {
            zygote.shut_down(self.config.heartbeat_timeout).await;
            self.report.lock().fork_server_pid = None;
        }
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
