//! The OS process behind a worker: in its own process group, killed by
//! group, reaped exactly once, and its stderr pumped into tracing.
//!
//! The leader is never reaped before its group is killed: while it is an
//! unreaped zombie its pid (the group id) cannot be reused, so a group kill
//! can only reach processes this worker started.
//!
//! A process is either this host's own child ([`Leader::Child`], spawn
//! mode) or a child of the fork server ([`Leader::Forked`]). The fork
//! server is its parent, so it reports the exit and reaps only once this
//! host has seen the report (see `zygote`): the same guarantee, kept by the
//! process that can keep it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Exit, StderrTail};

/// A worker forked by the zygote, as far as exits go: the zygote reports
/// its exit and reaps it only after this host has recorded the report.
pub(crate) struct Forked {
    pid: u32,
    exit: Mutex<Option<Exit>>,
    changed: Notify,
}

impl Forked {
    /// A worker just forked, whose exit is not reported yet.
    pub fn new(pid: u32) -> Self {
        Forked {
            pid,
            exit: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit the zygote reported, if any.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.lock()
    }

    /// Run `kill` (a signal to the worker or its group) only while the
    /// worker is known unreaped.
    pub fn while_unreaped(&self, kill: impl FnOnce()) {
        let exit = self.exit.lock();
        if exit.is_none() {
            kill();
        }
    }

    /// Wait for the exit report, up to `limit`.
    pub async fn wait(&self, limit: Duration) -> Exit {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if let Some(exit) = self.exit() {
                return exit;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::error!(
                    pid = self.pid,
                    "no exit report from the fork server within {limit:?}"
                );
                return self.exit().unwrap_or(Exit::Unknown);
            }
        }
    }

    /// The fork server reported the exit.
    pub fn record(&self, exit: Exit) {
        let mut slot = self.exit.lock();
        if slot.is_none() {
            *slot = Some(exit);
        }
        drop(slot);
        self.changed.notify_waiters();
    }
}

/// Longest stderr line kept or logged; longer lines are split.
const MAX_LINE: usize = 4096;

/// Who can wait for the leader.
pub(crate) enum Leader {
    /// This host spawned it.
    Child(Child),
    /// The fork server forked it and reports its exit; it is kept running
    /// for as long as a worker of it lives (a worker may outlive the factory
    /// that made it).
    Forked {
        forked: Arc<Forked>,
        /// The fork server, kept alive while the worker is: it is the one
        /// that reports the exit and reaps.
        _server: Arc<dyn std::any::Any + Send + Sync>,
    },
}

/// One process group, led by the bridge.
pub(crate) struct Process {
    leader: Leader,
    pid: u32,
    /// Set once reaped: no signal may be sent to the pid after that.
    reaped: Option<Exit>,
    stderr: Option<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Take ownership of a freshly started leader (in its own process
    /// group) and start pumping `stderr`.
    pub fn adopt(
        leader: Leader,
        pid: u32,
        stderr: Option<impl AsyncRead + Unpin + Send + 'static>,
        label: Arc<str>,
        tail_lines: usize,
    ) -> Self {
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(tail_lines)));
        let stderr = stderr
            .map(|err| tokio::spawn(pump_stderr(err, label, pid, Arc::clone(&tail), tail_lines)));
        Process {
            leader,
            pid,
            reaped: None,
            stderr,
            tail,
        }
    }

    /// The last stderr lines seen so far.
    pub fn tail(&self) -> StderrTail {
        StderrTail(self.tail.lock().iter().cloned().collect())
    }

    /// Has the leader exited? Looks without reaping (`WNOWAIT`), so the pid
    /// stays reserved for a later group kill. One syscall.
    pub fn exited(&self) -> Option<Exit> {
        if let Some(exit) = self.reaped {
            return Some(exit);
        }
        if let Leader::Forked { forked, .. } = &self.leader {
            return forked.exit();
        }
        let pid: libc::id_t = self.pid;
        // SAFETY: `info` is a plain C struct that waitid fills in; zeroed is
        // a valid initial value for it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t; WNOWAIT leaves the child
        // waitable, WNOHANG makes the call non-blocking.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            // ECHILD: already reaped by someone else; treat as gone.
            return Some(Exit::Unknown);
        }
        // SAFETY: waitid filled `info` (or left it zeroed: si_pid 0).
        let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
        if who == 0 {
            return None;
        }
        Some(match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
            _ => Exit::Unknown,
        })
    }

    /// SIGKILL the whole process group, unless the leader was reaped.
    pub fn kill_group(&self) {
        if self.reaped.is_none() {
            self.send(-1, libc::SIGKILL);
        }
    }

    /// Send a signal to the leader only (tests and diagnostics).
    pub fn signal(&self, sig: i32) {
        if self.reaped.is_none() {
            self.send(1, sig);
        }
    }

    /// `kill(2)` the leader (`sign` 1) or its group (`sign` -1), while it is
    /// known to be unreaped.
    fn send(&self, sign: libc::pid_t, sig: i32) {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        // SAFETY: kill(2) on our own child or its group; the unreaped leader
        // keeps both ids ours.
        let kill = || unsafe {
            libc::kill(sign * pid, sig);
        };
        match &self.leader {
            Leader::Child(_) => kill(),
            // Unreaped until the fork server's exit report, which it sends
            // before reaping and which this check sees under the same lock.
            Leader::Forked { forked, .. } => forked.while_unreaped(kill),
        }
    }

    /// Wait (without reaping) until the leader exits, up to `limit`.
    pub async fn wait_exit(&self, limit: Duration) -> Option<Exit> {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_micros(200);
        loop {
            if let Some(exit) = self.exited() {
                return Some(exit);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Kill the group, then reap the leader and let the stderr pump finish
    /// (bounded). Returns how the leader ended.
    pub async fn kill_and_reap(&mut self) -> Exit {
        let seen = self.exited();
        self.kill_group();
        let exit = self.reap(Duration::from_secs(5)).await;
        self.finish_stderr(Duration::from_millis(300)).await;
        // A status seen before our SIGKILL is the true cause.
        match seen {
            Some(Exit::Unknown) | None => exit,
            Some(s) => s,
        }
    }

    /// Reap the leader, bounded. Only after this is the pid released.
    async fn reap(&mut self, limit: Duration) -> Exit {
        if let Some(exit) = self.reaped {
            return exit;
        }
        let child = match &mut self.leader {
            Leader::Child(child) => child,
            Leader::Forked { forked, .. } => {
                let exit = forked.wait(limit).await;
                self.reaped = Some(exit);
                return exit;
            }
        };
        let exit = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(s)) => Exit::Signal(s),
                    _ => Exit::Unknown,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(pid = self.pid, error = %e, "could not reap python worker");
                Exit::Unknown
            }
            Err(_) => {
                tracing::error!(
                    pid = self.pid,
                    "python worker not reaped within {limit:?} of SIGKILL"
                );
                return Exit::Unknown;
            }
        };
        self.reaped = Some(exit);
        exit
    }

    /// Let the stderr pump read to end of file, so the tail is complete.
    pub async fn finish_stderr(&mut self, limit: Duration) {
        if let Some(mut task) = self.stderr.take() {
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Last resort: nothing of the group may outlive its worker. The
        // zombie leader is reaped by tokio's orphan queue (kill_on_drop), or
        // by the fork server once it has reported the exit.
        self.kill_group();
        if let Some(task) = self.stderr.take() {
            task.abort();
        }
    }
}

/// Read stderr line by line into tracing and the tail, until end of file.
async fn pump_stderr(
    mut err: impl AsyncRead + Unpin,
    label: Arc<str>,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let emit = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\r', '\n']);
        tracing::info!(target: "cenote_python::stderr", worker = %label, pid, "{text}");
        if keep > 0 {
            let mut t = tail.lock();
            if t.len() >= keep {
                t.pop_front();
            }
            t.push_back(text.to_string());
        }
    };
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line);
                line.clear();
            } else {
                line.push(b);
                if line.len() >= MAX_LINE {
                    emit(&line);
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}
