//! Starting a bare Python bridge by hand (the raw-frame tests, the bare
//! bridge of the benches): its cancel pipe on fd 3, as cenote-python
//! passes it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 made both; each is owned once from here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The `pre_exec` hook that makes `fd` the child's fd 3, inheritable: for
/// `unsafe { cmd.pre_exec(fd3(fd)) }`. When `fd` already is 3, `dup2`
/// would do nothing (not even clear close-on-exec), so the flag is cleared
/// instead.
pub fn fd3(fd: RawFd) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    move || {
        // SAFETY: dup2 and fcntl are async-signal-safe, as pre_exec needs.
        let rc = unsafe {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            }
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
