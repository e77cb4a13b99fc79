//! Pipe capacity for large frames.
//!
//! A Linux pipe holds 64 KiB by default, so a large frame crosses it in
//! 64 KiB steps, each a wake-up of the reader and of the writer: moving
//! 1 MiB costs sixteen round trips of the scheduler on both sides. While a
//! frame of [`LARGE`] bytes or more moves, the pipe is grown to [`GROWN`]
//! (`F_SETPIPE_SZ`), which lifted 1 MiB echoes from about 300 to about
//! 500 MB/s here (`cargo bench --bench python -- --payloads-only`).
//!
//! It is shrunk back as soon as the frame has crossed (the pipe from the
//! bridge once the frame is read, the pipe to it once the bridge answers,
//! having read the request whole), because pipe capacity is charged to the
//! user: past `/proc/sys/fs/pipe-user-pages-soft` (64 MiB by default) an
//! unprivileged user's new pipes get one page, which would slow every later
//! worker, so idle workers must not sit on grown pipes. A pipe that cannot
//! be grown (that limit, an old kernel) or shrunk (it still holds more than
//! the default) stays as it is and is tried again at the next frame:
//! capacity is an optimisation, never an error.

use std::os::fd::{AsRawFd, RawFd};

/// Frames from this size on grow the pipe.
pub(super) const LARGE: usize = 256 << 10;

/// The capacity while large frames move.
const GROWN: libc::c_int = 1 << 20;

/// The capacity otherwise (the kernel's default).
const DEFAULT: libc::c_int = 64 << 10;

/// One pipe's capacity, as the session last set it.
#[derive(Debug, Default)]
pub(super) struct Capacity {
    grown: bool,
}

impl Capacity {
    /// A frame of `size` bytes is about to move through the pipe `end` is
    /// an end of (0: none is moving any more).
    pub(super) fn fit(&mut self, end: &impl AsRawFd, size: usize) {
        let large = size >= LARGE;
        if large != self.grown && set(end.as_raw_fd(), if large { GROWN } else { DEFAULT }) {
            self.grown = large;
        }
    }
}

/// Set the pipe's capacity; false if the kernel refused.
fn set(fd: RawFd, bytes: libc::c_int) -> bool {
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours; `fd`
    // is borrowed from an open pipe end for the call.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(fd: RawFd) -> libc::c_int {
        // SAFETY: F_GETPIPE_SZ reads the pipe's size; `fd` is open.
        unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) }
    }

    #[test]
    fn grows_for_large_frames_and_shrinks_after() {
        let (reader, writer) = std::io::pipe().unwrap();
        let mut cap = Capacity::default();
        let before = capacity(writer.as_raw_fd());
        cap.fit(&writer, 100);
        assert_eq!(
            capacity(writer.as_raw_fd()),
            before,
            "small frames leave it"
        );
        cap.fit(&writer, LARGE);
        if cap.grown {
            assert_eq!(capacity(reader.as_raw_fd()), GROWN);
        }
        cap.fit(&writer, 10);
        assert!(!cap.grown);
        assert_eq!(capacity(reader.as_raw_fd()), DEFAULT);
    }

    #[test]
    fn a_full_pipe_is_not_shrunk_below_its_contents() {
        use std::io::Write;
        let (_reader, mut writer) = std::io::pipe().unwrap();
        let mut cap = Capacity::default();
        cap.fit(&writer, LARGE);
        if !cap.grown {
            return; // the kernel refused to grow it: nothing to check
        }
        writer.write_all(&vec![0u8; 200 << 10]).unwrap();
        cap.fit(&writer, 10);
        assert!(cap.grown, "still holding 200 KiB, it stays grown");
        assert_eq!(capacity(writer.as_raw_fd()), GROWN);
    }
}
