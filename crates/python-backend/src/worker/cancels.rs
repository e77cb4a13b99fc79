//! The cancel pipe: how the host asks a bridge to abandon a request.
//!
//! A bridge serving a call is busy running the handler, on its main thread,
//! and reads no frames. So cancels do not travel on the frame pipe but on
//! a pipe of their own, read by a thread of the bridge that does nothing
//! else (see `bridge.py`). A cancel is the request's id, 8 bytes
//! big-endian: a pipe write that small is atomic, so ids never interleave.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::fds::{pipe_pair, set_nonblocking};

/// The host's (write) end of a bridge's cancel pipe.
#[derive(Debug)]
pub(crate) struct CancelPipe(OwnedFd);

impl CancelPipe {
    /// A new pipe: the host's end, and the read end the bridge gets as its
    /// fd 3.
    pub fn new() -> io::Result<(CancelPipe, OwnedFd)> {
        let (read, write) = pipe_pair()?;
        Ok((CancelPipe::from_write_end(write)?, read))
    }

    /// The host's end of a pipe made elsewhere (by the fork server's host
    /// side).
    pub fn from_write_end(fd: OwnedFd) -> io::Result<CancelPipe> {
        set_nonblocking(fd.as_raw_fd())?;
        Ok(CancelPipe(fd))
    }

    /// Ask the bridge to cancel request `id`. Never blocks: a full pipe
    /// (thousands of unread ids) means the bridge stopped reading it, which
    /// is an error like a closed one.
    pub fn send(&self, id: u64) -> io::Result<()> {
        let bytes = id.to_be_bytes();
        // SAFETY: write(2) from a live buffer of `bytes.len()` bytes to a
        // descriptor this pipe owns.
        let n = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                bytes.as_ptr().cast::<libc::c_void>(),
                bytes.len(),
            )
        };
        match n {
            8 => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            // Unreachable: a write of at most PIPE_BUF bytes is all or nothing.
            _ => Err(io::Error::other("a cancel was written in part")),
        }
    }
}
