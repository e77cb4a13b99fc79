//! The fork server ("zygote"): one Python process that imports the handler
//! module once and forks each worker from itself, so N heavy workers start
//! in about the time of one import and share its memory copy-on-write.
//!
//! How it works, host side:
//!
//! * The zygote is a fresh interpreter (`bridge.py --zygote`), so it has no
//!   thread of ours. Its control channel is one end of a
//!   `socketpair(AF_UNIX, SOCK_SEQPACKET)`, as its fd 3: no address, no
//!   authentication to get wrong, and message boundaries for free.
//! * It imports the preload modules and the handler, checks that forking is
//!   safe (one thread, no CUDA, no event loop), runs `gc.collect();
//!   gc.freeze()`, and says `ready` — or `unsafe` with the reason, and the
//!   factory falls back to spawning.
//! * A worker start sends `fork{id, shm}` with four fds (the worker's stdin,
//!   stdout, stderr and cancel pipe ends, by `SCM_RIGHTS`), six with its two
//!   shared-memory regions (`shm` is then their threshold), and closes its
//!   own copies of them at once, or end-of-file would never reach either side. The
//!   zygote forks, puts the child in its own process group (both sides call
//!   `setpgid`, so the group exists before the host hears the pid), and
//!   answers `forked{id, pid}`. From there the child is a bridge like any
//!   other: it says `ready` on its own stdout.
//! * The zygote is the workers' parent, so only it can see and reap their
//!   exits. It reports `exit{pid, status}` first, after killing the dead
//!   worker's group, and reaps only when this host answers `reap{pid}`. The
//!   host marks the worker exited (under a lock that every kill it sends
//!   takes) before it answers: so no signal of this host can reach a pid
//!   the kernel has handed to someone else.
//!
//! No orphans: when this host dies, even by SIGKILL, the kernel closes its
//! end of the socket; the zygote sees end-of-file, kills every worker's
//! group, reaps them and exits. When the zygote dies, each worker's
//! watchdog sees its parent change within 200 ms and kills its own group;
//! the next start launches a new zygote (the pool's start backoff paces
//! it). `PR_SET_PDEATHSIG` is not used for the zygote: it follows the
//! parent *thread*, and tokio's threads come and go.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::command;
use crate::config::PythonConfig;
use crate::error::{Exit, PythonError};
use crate::fds::{self, pipe_pair, socketpair};
use crate::process::{Forked, Leader, Process};
use crate::shm::Shm;

/// The largest control message either side sends.
const MAX_MESSAGE: usize = 64 * 1024;

/// What the zygote sends.
#[derive(Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Message {
    Ready,
    Unsafe {
        reason: String,
    },
    Error {
        #[serde(rename = "type")]
        type_name: String,
        message: String,
    },
    Forked {
        id: u64,
        pid: u32,
    },
    ForkFailed {
        id: u64,
        message: String,
    },
    Exit {
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// The host's end of the control socket, and what is waiting on it.
struct Link {
    sock: AsyncFd<OwnedFd>,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    next_id: u64,
    /// Fork requests waiting for their pid.
    pending: HashMap<u64, oneshot::Sender<Result<Arc<Forked>, String>>>,
    /// Workers forked and not yet reported exited.
    workers: HashMap<u32, Weak<Forked>>,
    /// The zygote went away: no fork can be asked for.
    closed: bool,
}

/// A worker just forked: its pid and the host's ends of its pipes.
pub(crate) struct Child {
    pub pid: u32,
    pub forked: Arc<Forked>,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    /// The write end of its cancel pipe.
    pub cancels: OwnedFd,
}

/// How a zygote start ended.
pub(crate) enum Started {
    /// Serving forks.
    Ready(Box<Zygote>),
    /// It imported the handler, but forking it would not be safe.
    Unsafe(String),
}

/// A running fork server.
pub(crate) struct Zygote {
    pid: u32,
    link: Arc<Link>,
    /// The zygote process; dropping it kills it (its workers follow).
    process: tokio::sync::Mutex<Process>,
    reader: JoinHandle<()>,
}

impl Zygote {
    /// Launch a zygote for `config`'s handler and wait until it is ready,
    /// unsafe to fork, or failed (then the start error says why, as a
    /// spawned worker's would).
    pub async fn start(config: &PythonConfig, interpreter: &Path) -> Result<Started, PythonError> {
        let spawn_error = |source| PythonError::Spawn {
            interpreter: interpreter.to_path_buf(),
            source: Arc::new(source),
        };
        let (host, theirs) = socketpair().map_err(spawn_error)?;
        let mut cmd = command::zygote(interpreter, config);
        fds::inherit_from_fd3(&mut cmd, &[theirs.as_raw_fd()]);
        let mut child = cmd.spawn().map_err(spawn_error)?;
        drop(theirs);
        let Some(pid) = child.id() else {
            return Err(spawn_error(io::Error::other("the fork server has no pid")));
        };
        let stderr = child.stderr.take();
        let label: Arc<str> = Arc::from(format!("fork-server/{pid}"));
        let mut process = Process::adopt(
            Leader::Child(child),
            pid,
            stderr,
            label,
            config.stderr_tail_lines,
        );
        // SAFETY: the AsyncFd owns the descriptor (an OwnedFd), so it stays
        // open exactly as long as it is registered.
        let sock = unsafe { AsyncFd::register(host) }.map_err(|e| spawn_error(e.into_parts().1))?;
        let link = Arc::new(Link {
            sock,
            state: Mutex::new(LinkState::default()),
        });
        let mut buf = vec![0u8; MAX_MESSAGE];
        let first = tokio::time::timeout(config.startup_timeout, link.recv(&mut buf)).await;
        let startup = |message: String, process: &Process| PythonError::Startup {
            pid,
            message,
            stderr_tail: process.tail(),
        };
        let outcome = match first {
            Ok(Ok(Some(Message::Ready))) => {
                let reader = tokio::spawn(read(Arc::clone(&link), buf));
                return Ok(Started::Ready(Box::new(Zygote {
                    pid,
                    link,
                    process: tokio::sync::Mutex::new(process),
                    reader,
                })));
            }
            Ok(Ok(Some(Message::Unsafe { reason }))) => Ok(Started::Unsafe(reason)),
            Ok(Ok(Some(Message::Error { type_name, message }))) => Err(format!(
                "handler module {} failed to import in the fork server ({type_name}): {message}",
                config.handler.describe()
            )),
            Ok(Ok(Some(_))) => Err("the fork server sent something before ready".into()),
            Ok(Ok(None)) | Ok(Err(_)) => Err("the fork server exited before it was ready".into()),
            Err(_) => {
                process.kill_and_reap().await;
                return Err(PythonError::StartupTimeout {
                    pid,
                    after: config.startup_timeout,
                    stderr_tail: process.tail(),
                });
            }
        };
        let exit = process.kill_and_reap().await;
        outcome.map_err(|m| startup(format!("{m} ({exit})"), &process))
    }

    /// The zygote's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stop it: end-of-file on its socket makes it kill what workers it
    /// still has and exit; it is killed if it does not within `grace`, and
    /// reaped either way.
    pub async fn shut_down(&self, grace: Duration) {
        // Closed on purpose: no fork is asked for any more, and the reader
        // need not warn when it sees end-of-file.
        self.link.state.lock().closed = true;
        // SAFETY: shutdown(2) on the socket this link owns; the descriptor
        // stays open (and registered) until the link is dropped.
        unsafe {
            libc::shutdown(self.link.sock.as_raw_fd(), libc::SHUT_RDWR);
        }
        let mut process = self.process.lock().await;
        process.wait_exit(grace).await;
        let exit = process.kill_and_reap().await;
        tracing::debug!(pid = self.pid, %exit, "fork server shut down");
    }

    /// Whether it still takes fork requests.
    pub fn alive(&self) -> bool {
        !self.link.state.lock().closed
    }

    /// Fork one worker, with `shm`'s regions if given; `limit` bounds the
    /// wait for its pid.
    pub async fn fork(&self, limit: Duration, shm: Option<&Shm>) -> Result<Child, PythonError> {
        let fail = |message: String| PythonError::Startup {
            pid: self.pid,
            message: format!("the fork server could not fork a worker: {message}"),
            stderr_tail: crate::error::StderrTail::default(),
        };
        let (stdin_r, stdin_w) = pipe_pair().map_err(|e| fail(e.to_string()))?;
        let (stdout_r, stdout_w) = pipe_pair().map_err(|e| fail(e.to_string()))?;
        let (stderr_r, stderr_w) = pipe_pair().map_err(|e| fail(e.to_string()))?;
        let (cancels_r, cancels_w) = pipe_pair().map_err(|e| fail(e.to_string()))?;
        let (id, answer) = {
            let mut st = self.link.state.lock();
            if st.closed {
                return Err(fail("it is gone".into()));
            }
            st.next_id += 1;
            let id = st.next_id;
            let (tx, rx) = oneshot::channel();
            st.pending.insert(id, tx);
            (id, rx)
        };
        let threshold = shm.map_or(0, Shm::threshold);
        let request = format!("{{\"t\":\"fork\",\"id\":{id},\"shm\":{threshold}}}");
        let mut fds = vec![
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            cancels_r.as_raw_fd(),
        ];
        fds.extend(shm.iter().flat_map(|s| s.fds()));
        let sent = self.link.send(request.as_bytes(), &fds).await;
        // The worker's ends now live in the zygote (and the worker); ours
        // must close, or neither side ever sees end-of-file.
        drop((stdin_r, stdout_w, stderr_w, cancels_r));
        if let Err(e) = sent {
            self.link.state.lock().pending.remove(&id);
            return Err(fail(e.to_string()));
        }
        let forked = match tokio::time::timeout(limit, answer).await {
            Ok(Ok(Ok(forked))) => forked,
            Ok(Ok(Err(message))) => return Err(fail(message)),
            Ok(Err(_)) => return Err(fail("it went away".into())),
            Err(_) => {
                self.link.state.lock().pending.remove(&id);
                return Err(fail(format!("no answer within {limit:?}")));
            }
        };
        let io = |e: io::Error| fail(e.to_string());
        Ok(Child {
            pid: forked.pid(),
            forked,
            stdin: pipe::Sender::from_owned_fd(stdin_w).map_err(io)?,
            stdout: pipe::Receiver::from_owned_fd(stdout_r).map_err(io)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_r).map_err(io)?,
            cancels: cancels_w,
        })
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // The process's own Drop kills it; its workers' watchdogs follow.
        self.reader.abort();
    }
}

/// Dispatch what the zygote sends until it goes away.
async fn read(link: Arc<Link>, mut buf: Vec<u8>) {
    loop {
        let msg = match link.recv(&mut buf).await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => break,
        };
        match msg {
            Message::Forked { id, pid } => {
                let forked = Arc::new(Forked::new(pid));
                let mut st = link.state.lock();
                st.workers.insert(pid, Arc::downgrade(&forked));
                if let Some(tx) = st.pending.remove(&id) {
                    // A start that gave up drops the worker's pipes: it
                    // sees end-of-file and exits.
                    let _ = tx.send(Ok(forked));
                }
            }
            Message::ForkFailed { id, message } => {
                if let Some(tx) = link.state.lock().pending.remove(&id) {
                    let _ = tx.send(Err(message));
                }
            }
            Message::Exit { pid, code, signal } => {
                let exit = match (code, signal) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(s)) => Exit::Signal(s),
                    _ => Exit::Unknown,
                };
                let worker = link.state.lock().workers.remove(&pid);
                if let Some(forked) = worker.and_then(|w| w.upgrade()) {
                    forked.record(exit);
                }
                // Only now may the zygote reap it: no kill of ours can
                // reach the pid any more.
                let reap = format!("{{\"t\":\"reap\",\"pid\":{pid}}}");
                if link.send(reap.as_bytes(), &[]).await.is_err() {
                    break;
                }
            }
            Message::Ready | Message::Unsafe { .. } | Message::Error { .. } => {
                tracing::warn!("fork server sent an unexpected message after ready");
            }
        }
    }
    // The zygote is gone: its workers' watchdogs end them, and no report
    // will come for them.
    let (pending, workers, expected) = {
        let mut st = link.state.lock();
        let expected = st.closed;
        st.closed = true;
        (
            std::mem::take(&mut st.pending),
            std::mem::take(&mut st.workers),
            expected,
        )
    };
    drop(pending);
    for forked in workers.values().filter_map(Weak::upgrade) {
        forked.record(Exit::Unknown);
    }
    if !expected {
        tracing::warn!("fork server gone; the next worker start launches a new one");
    }
}

impl Link {
    /// One message from the zygote, read into `buf` (reused across
    /// messages); `None` at end-of-file.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Message>> {
        let n = loop {
            let mut guard = self.sock.readable().await?;
            let got = guard.try_io(|sock| {
                // SAFETY: `buf` is valid for `buf.len()` bytes.
                let n =
                    unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match got {
                Ok(result) => break result?,
                Err(_would_block) => continue,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Send one message, with `fds` attached.
    async fn send(&self, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
        loop {
            let mut guard = self.sock.writable().await?;
            match guard.try_io(|sock| send_with_fds(sock.as_raw_fd(), msg, fds)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// `sendmsg(2)` of `msg` with `fds` as `SCM_RIGHTS`.
fn send_with_fds(sock: RawFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; if fds.is_empty() { 0 } else { space }];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the
    // sendmsg call, and the control buffer is CMSG_SPACE bytes for one
    // header carrying `fds`.
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if !fds.is_empty() {
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
        if libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
