//! File descriptors the host makes for its Python processes: pipes, the
//! fork server's socket, and the one extra fd a process is started with.
//!
//! Every descriptor is close-on-exec when made, so a process started
//! meanwhile by another thread inherits none of them; the one a process
//! must have is put on its fd 3 by [`inherit_as_fd3`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::process::Command;

/// Start `cmd` with `fd` as its fd 3 (a fork server's control socket, a
/// worker's cancel pipe). The caller closes its own copy once spawned.
///
/// When `fd` already is 3 (the host had fds 0-2 only, and this was the
/// lowest free number), `dup2` does nothing, not even clear close-on-exec,
/// so the descriptor would vanish at exec: then the flag is cleared
/// instead.
pub(crate) fn inherit_as_fd3(cmd: &mut Command, fd: &OwnedFd) {
    let fd = fd.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; the resulting fd 3 is
    // not close-on-exec, so the child inherits exactly this one descriptor
    // beyond its stdio.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A close-on-exec, non-blocking (host end) `SOCK_SEQPACKET` pair: the
/// host's end, the zygote's end.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both are fresh descriptors we own.
    let (host, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(host.as_raw_fd())?;
    Ok((host, theirs))
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
