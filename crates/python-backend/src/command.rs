//! The command lines Python processes are launched with.
//!
//! Three kinds of processes are launched for a pool: the one-off probe that
//! resolves the interpreter (the factory's), each worker's bridge in spawn
//! mode, and the fork server (`bridge.py --zygote`) in fork-server mode. Both must see the
//! same env and working directory (pyenv picks versions by both), so both
//! are built here; the factory and the worker depend on this module and
//! never on each other's internals.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::config::{PythonConfig, THREAD_ENV};

/// `interpreter`, run in the workers' env and directory: the thread limits,
/// then the user's env (so it can override them), then the working dir.
pub(crate) fn python(interpreter: &Path, config: &PythonConfig) -> Command {
    let mut cmd = Command::new(interpreter);
    if let Some(n) = config.thread_limit {
        let n = n.to_string();
        for key in THREAD_ENV {
            cmd.env(key, &n);
        }
    }
    for (key, value) in &config.env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = &config.working_dir {
        cmd.current_dir(dir);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// `bridge.py` run by `interpreter` in its own process group:
/// `<interpreter> -u -c <bridge> ...`.
fn bridge_script(interpreter: &Path, config: &PythonConfig) -> Command {
    let mut cmd = python(interpreter, config);
    cmd.arg("-u")
        .arg("-c")
        .arg(crate::bridge::script())
        .process_group(0);
    cmd
}

/// The bridge for `config`'s handler, with piped stdio:
/// `... <handler> <max frame> <host pid> <concurrency> <shm threshold>`
/// (0: no shared-memory regions on fds 4 and 5).
pub(crate) fn bridge(interpreter: &Path, config: &PythonConfig, shm_threshold: usize) -> Command {
    let mut cmd = bridge_script(interpreter, config);
    cmd.arg(config.handler.arg())
        .arg(config.max_frame_size.to_string())
        .arg(std::process::id().to_string())
        .arg(config.calls_at_once().to_string())
        .arg(shm_threshold.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The fork server for `config`'s handler, its control socket to be put on
/// fd 3 by the caller:
/// `... --zygote <handler> <max frame> <host pid> <preload,...> <concurrency>`.
pub(crate) fn zygote(interpreter: &Path, config: &PythonConfig) -> Command {
    let mut cmd = bridge_script(interpreter, config);
    cmd.arg("--zygote")
        .arg(config.handler.arg())
        .arg(config.max_frame_size.to_string())
        .arg(std::process::id().to_string())
        .arg(config.preload.join(","))
        .arg(config.calls_at_once().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}
