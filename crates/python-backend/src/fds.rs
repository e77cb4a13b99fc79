//! File descriptors the host makes for its Python processes: pipes, the
//! fork server's socket, and the one extra fd a process is started with.
//!
//! Every descriptor is close-on-exec when made, so a process started
//! meanwhile by another thread inherits none of them; the one a process
//! must have are put on its fds 3, 4, ... by [`inherit_from_fd3`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::process::Command;

/// Start `cmd` with `fds` as its fds 3, 4, ... (a fork server's control
/// socket; a worker's cancel pipe and shared-memory regions), which must
/// stay open until it is spawned. The caller closes its own copies then.
///
/// Each is first duplicated above the targets (`F_DUPFD_CLOEXEC` from 10),
/// so that moving one onto its number cannot close another still to be
/// moved; `dup2` onto a different number then leaves the target inheritable.
/// (`dup2` of a descriptor onto itself would do nothing, not even clear
/// close-on-exec, and the descriptor would vanish at exec.)
pub(crate) fn inherit_from_fd3(cmd: &mut Command, fds: &[RawFd]) {
    let fds = fds.to_vec();
    assert!(fds.len() <= 7, "fds 3 to 9 only");
    // SAFETY: fcntl and dup2 are async-signal-safe, and the closure
    // allocates nothing; the targets end up not close-on-exec, so the child
    // inherits exactly these descriptors beyond its stdio.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 7];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, &fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as libc::c_int) < 0 {
                    return Err(io::Error::last_os_error());
                }
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
