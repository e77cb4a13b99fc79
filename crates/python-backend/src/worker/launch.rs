//! Starting a worker: spawn the bridge, wait for its ready frame, and turn
//! whatever else comes first into a start error that says why.
//!
//! A start has failure modes of its own (no interpreter, a handler module
//! that does not import, no ready frame in time) and errors of its own for
//! them, so it is kept apart from the session that serves calls afterwards.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use tokio::net::unix::pipe;

use crate::command;
use crate::config::PythonConfig;
use crate::error::PythonError;
use crate::fds;
use crate::process::{Leader, Process};
use crate::protocol::{ErrorFrame, ErrorKind, Incoming, PROTOCOL};
use crate::shm::Shm;
use crate::zygote::Zygote;

use super::cancels::CancelPipe;
use super::session::Session;
use super::wire::Codec;
use super::PythonWorker;

/// What the bridge said when it became ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The bridge's pid (also its process group id).
    pub pid: u32,
    /// The Python version, e.g. `3.11.7`.
    pub version: String,
    /// How many calls the process serves at once
    /// (`PythonConfig::concurrency`).
    pub concurrency: usize,
    /// The handler module's public functions: exactly the names a call may
    /// use (classes and modules are neither listed nor callable).
    pub functions: Vec<String>,
}

impl PythonWorker {
    /// Launch one worker as a fresh interpreter and wait for its ready
    /// frame. Used by the factory; `interpreter` is already resolved.
    pub(crate) async fn start(
        config: &PythonConfig,
        interpreter: &Path,
        label: Arc<str>,
    ) -> Result<Self, PythonError> {
        let session = spawn(config, interpreter, label)?;
        PythonWorker::ready(session, config).await
    }

    /// Fork one worker from `zygote` and wait for its ready frame.
    pub(crate) async fn fork(
        config: &PythonConfig,
        zygote: &Arc<Zygote>,
        label: Arc<str>,
    ) -> Result<Self, PythonError> {
        let shm = regions(config, &label);
        let child = zygote.fork(config.startup_timeout, shm.as_deref()).await?;
        let proc = Process::adopt(
            Leader::Forked {
                forked: child.forked,
                _server: Arc::clone(zygote) as Arc<dyn std::any::Any + Send + Sync>,
            },
            child.pid,
            Some(child.stderr),
            Arc::clone(&label),
            config.stderr_tail_lines,
        );
        let cancels =
            CancelPipe::from_write_end(child.cancels).map_err(|e| PythonError::Spawn {
                interpreter: config.interpreter.clone(),
                source: Arc::new(e),
            })?;
        let session = Session::new(
            label,
            child.pid,
            proc,
            child.stdin,
            child.stdout,
            cancels,
            Codec {
                max_frame: config.max_frame_size,
                shm,
            },
        );
        PythonWorker::ready(session, config).await
    }

    async fn ready(mut session: Session, config: &PythonConfig) -> Result<Self, PythonError> {
        let ready = handshake(&mut session, config).await?;
        // Not before: the ready frame takes milliseconds, a spin would only
        // run out.
        session.set_read_spin(config.read_spin);
        tracing::debug!(worker = %session.label(), pid = ready.pid, version = %ready.version, "python worker ready");
        PythonWorker::new(session, ready, config)
    }
}

/// Spawn the bridge and open a session on its pipes.
fn spawn(
    config: &PythonConfig,
    interpreter: &Path,
    label: Arc<str>,
) -> Result<Session, PythonError> {
    let spawn_error = |source| PythonError::Spawn {
        interpreter: interpreter.to_path_buf(),
        source: Arc::new(source),
    };
    let (cancels, theirs) = CancelPipe::new().map_err(spawn_error)?;
    let shm = regions(config, &label);
    let mut inherited = vec![theirs.as_raw_fd()];
    inherited.extend(shm.iter().flat_map(|s| s.fds()));
    let threshold = shm.as_ref().map_or(0, |s| s.threshold());
    let mut cmd = command::bridge(interpreter, config, threshold);
    fds::inherit_from_fd3(&mut cmd, &inherited);
    let mut child = cmd.spawn().map_err(spawn_error)?;
    drop(theirs);
    let (Some(pid), Some(stdin), Some(stdout)) =
        (child.id(), child.stdin.take(), child.stdout.take())
    else {
        return Err(spawn_error(std::io::Error::other(
            "the process came up without a pid or without its pipes",
        )));
    };
    let stdin = stdin
        .into_owned_fd()
        .and_then(pipe::Sender::from_owned_fd)
        .map_err(spawn_error)?;
    let stdout = stdout
        .into_owned_fd()
        .and_then(pipe::Receiver::from_owned_fd)
        .map_err(spawn_error)?;
    let stderr = child.stderr.take();
    let proc = Process::adopt(
        Leader::Child(child),
        pid,
        stderr,
        Arc::clone(&label),
        config.stderr_tail_lines,
    );
    Ok(Session::new(
        label,
        pid,
        proc,
        stdin,
        stdout,
        cancels,
        Codec {
            max_frame: config.max_frame_size,
            shm,
        },
    ))
}

/// A new worker's shared-memory regions, if the config asks for them and
/// the system gives them (else its bytes all go through the pipe).
fn regions(config: &PythonConfig, label: &str) -> Option<Arc<Shm>> {
    let threshold = config.shm_threshold?;
    match Shm::new(threshold.max(1), config.max_frame_size) {
        Ok(shm) => Some(Arc::new(shm)),
        Err(e) => {
            tracing::warn!(worker = %label, error = %e, "no shared-memory region (memfd_create failed): large bytes go through the pipe");
            None
        }
    }
}

/// Wait for the ready frame, within the startup timeout. Anything else
/// first is a start error naming its cause; the process is then gone.
async fn handshake(session: &mut Session, config: &PythonConfig) -> Result<ReadyInfo, PythonError> {
    let pid = session.pid();
    let limit = config.startup_timeout;
    let Ok(first) = tokio::time::timeout(limit, session.read_frame()).await else {
        session.kill_and_reap().await;
        return Err(PythonError::StartupTimeout {
            pid,
            after: limit,
            stderr_tail: session.tail(),
        });
    };
    match first {
        Ok(Incoming::Ready {
            pid: reported,
            version,
            protocol,
            concurrency,
            functions,
        }) => {
            if protocol != PROTOCOL {
                session.kill_and_reap().await;
                return Err(PythonError::Startup {
                    pid,
                    message: format!(
                        "its bridge speaks wire protocol {protocol}, and this cenote-python \
                         speaks {PROTOCOL}; run the bridge script of the same cenote-python \
                         version (cenote_python::bridge_script())"
                    ),
                    stderr_tail: session.tail(),
                });
            }
            if concurrency != config.calls_at_once() {
                session.kill_and_reap().await;
                return Err(PythonError::Startup {
                    pid,
                    message: format!(
                        "its bridge serves {concurrency} calls at once, and the pool asked for {}",
                        config.calls_at_once()
                    ),
                    stderr_tail: session.tail(),
                });
            }
            if reported != pid {
                tracing::warn!(worker = %session.label(), pid, reported, "bridge reports another pid than the one spawned");
            }
            Ok(ReadyInfo {
                pid,
                version,
                concurrency,
                functions,
            })
        }
        Ok(Incoming::Error(ErrorFrame {
            kind: ErrorKind::Import,
            type_name,
            message,
            ..
        })) => {
            session.collect_exit().await;
            Err(PythonError::Startup {
                pid,
                message: format!(
                    "handler module {} failed to import ({type_name}): {message}",
                    config.handler.describe()
                ),
                stderr_tail: session.tail(),
            })
        }
        Ok(other) => Err(session
            .violation(format!("expected a ready frame, got {}", other.kind()))
            .await),
        Err(PythonError::Crashed {
            status,
            stderr_tail,
            ..
        }) => Err(PythonError::Startup {
            pid,
            message: format!("python exited ({status}) before it was ready"),
            stderr_tail,
        }),
        Err(e) => Err(e),
    }
}
