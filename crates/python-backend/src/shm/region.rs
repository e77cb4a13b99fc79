//! One shared-memory region: an anonymous `memfd` file, sealed so that it
//! can never shrink, and this process's mapping of it.
//!
//! Why a memfd: it has no name in any shared namespace (nothing in
//! `/dev/shm` to leak or collide), it lives exactly as long as the last fd
//! or mapping of it, and it can be sealed. `F_SEAL_SHRINK` means a mapping
//! can never run past the file's end, so the peer cannot make a reader
//! fault (SIGBUS) by truncating it; `F_SEAL_SEAL` means the peer cannot add
//! seals of its own (a `F_SEAL_GROW` or `F_SEAL_WRITE` to stall the host).
//! Growing stays allowed, for whichever side owns the region's allocator.
//!
//! The peer can write into the pages while this side reads them: reads copy
//! bytes out through raw pointers and never hand out a reference into the
//! mapping, so at worst a misbehaving peer garbles its own payload.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// Mappings and sizes are kept in multiples of this (and of the page size).
pub(crate) const GRAIN: usize = 2 << 20;

/// A memfd region and this side's mapping of (a prefix of) it.
pub(crate) struct Region {
    fd: OwnedFd,
    map: Option<(NonNull<u8>, usize)>,
}

// SAFETY: the mapping is owned by the region (unmapped once, in Drop or when
// replaced); access goes through `&mut self` or copies via raw pointers.
unsafe impl Send for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd.as_raw_fd())
            .field("mapped", &self.mapped())
            .finish()
    }
}

impl Region {
    /// A new, empty region (close-on-exec; the worker gets it by an
    /// explicit `dup2` or `SCM_RIGHTS`).
    pub(crate) fn new(name: &CStr) -> io::Result<Region> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on our own descriptor.
        if unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Region { fd, map: None })
    }

    /// The descriptor, to give to the worker.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Bytes mapped here.
    pub(crate) fn mapped(&self) -> usize {
        self.map.map_or(0, |(_, len)| len)
    }

    /// The file's size now (the peer may have grown it).
    pub(crate) fn file_size(&self) -> io::Result<usize> {
        // SAFETY: a plain C struct, for which all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `st`, which is large enough.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.st_size as usize)
    }

    /// Grow the file to `size` bytes (never shrinks it), map all of it, and
    /// touch the new pages now so that no payload pays their faults later.
    pub(crate) fn grow(&mut self, size: usize) -> io::Result<()> {
        let old = self.file_size()?;
        if size > old {
            // SAFETY: ftruncate on our own descriptor; the seal forbids
            // only shrinking.
            if unsafe { libc::ftruncate(self.fd.as_raw_fd(), size as libc::off_t) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.map_all(true)?;
        Ok(())
    }

    /// Map the whole file as it is now (the peer grew it), populated.
    pub(crate) fn map_all(&mut self, write: bool) -> io::Result<()> {
        let size = self.file_size()?;
        if size == self.mapped() {
            return Ok(());
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh shared mapping of our memfd; the file is at least
        // `size` long and can never shrink (F_SEAL_SHRINK), so no access
        // within it faults.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                prot,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if write {
            // Pages of a fresh file are allocated on first write: allocate
            // them all now, in one call (best effort: older kernels lack it).
            // SAFETY: advice on the mapping just made.
            unsafe { libc::madvise(ptr, size, libc::MADV_POPULATE_WRITE) };
        }
        self.unmap();
        self.map = NonNull::new(ptr.cast()).map(|p| (p, size));
        Ok(())
    }

    fn unmap(&mut self) {
        if let Some((ptr, len)) = self.map.take() {
            // SAFETY: a mapping this region made, not referenced past this.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
        }
    }

    /// Copy `bytes` in at `offset`. The range must be mapped.
    pub(crate) fn write(&mut self, offset: usize, bytes: &[u8]) {
        let (ptr, len) = self.map.expect("a mapped region");
        assert!(offset
            .checked_add(bytes.len())
            .is_some_and(|end| end <= len));
        // SAFETY: in bounds (checked above) of a live mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr().add(offset), bytes.len())
        };
    }

    /// Copy `len` bytes out from `offset`. The range must be mapped.
    pub(crate) fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        let (ptr, mapped) = self.map.expect("a mapped region");
        assert!(offset.checked_add(len).is_some_and(|end| end <= mapped));
        let mut out = Vec::with_capacity(len);
        prefault(out.as_mut_ptr(), len);
        // SAFETY: in bounds (checked above) of a live mapping; `out` has
        // room for `len` bytes, all written before set_len.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr().add(offset), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        out
    }

    /// The flag byte at `offset` (see `blocks`), read with acquire order:
    /// what the peer did before it cleared a flag is seen after.
    pub(crate) fn flag(&self, offset: usize) -> u8 {
        self.flag_cell(offset)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Set the flag byte at `offset`, with release order: what this side
    /// did with the block before is done before the peer sees it.
    pub(crate) fn set_flag(&self, offset: usize, value: u8) {
        self.flag_cell(offset)
            .store(value, std::sync::atomic::Ordering::Release)
    }

    fn flag_cell(&self, offset: usize) -> &std::sync::atomic::AtomicU8 {
        let (ptr, len) = self.map.expect("a mapped region");
        assert!(offset < len);
        // SAFETY: in bounds of a live mapping that outlives `&self`; an
        // AtomicU8 has the size and alignment of a byte.
        unsafe {
            &*ptr
                .as_ptr()
                .add(offset)
                .cast::<std::sync::atomic::AtomicU8>()
        }
    }
}

/// Fresh memory of `len` bytes at `ptr`, about to be written whole: for a
/// large buffer, ask for huge pages and allocate every page in one call.
/// Page by page, the first write to each of a 64 MiB buffer's 16,384 pages
/// would trap into the kernel: that cost more than the copy itself.
/// Advice only: whatever the kernel declines, the copy still works.
fn prefault(ptr: *mut u8, len: usize) {
    const LARGE: usize = 4 << 20;
    const PAGE: usize = 4096;
    if len < LARGE {
        return;
    }
    let start = (ptr as usize).div_ceil(PAGE) * PAGE;
    let end = (ptr as usize + len) / PAGE * PAGE;
    let (at, span) = (start as *mut libc::c_void, end - start);
    // SAFETY: advice on whole pages inside an allocation this process owns
    // and has not handed out; neither changes its contents.
    unsafe {
        libc::madvise(at, span, libc::MADV_HUGEPAGE);
        libc::madvise(at, span, libc::MADV_POPULATE_WRITE);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.unmap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_reads_back_and_refuses_to_shrink() {
        let mut r = Region::new(c"cenote-test").unwrap();
        assert_eq!(r.mapped(), 0);
        r.grow(GRAIN).unwrap();
        assert_eq!(r.mapped(), GRAIN);
        r.write(100, b"hello");
        r.grow(2 * GRAIN).unwrap();
        assert_eq!(r.read(100, 5), b"hello", "kept across a remap");
        r.set_flag(7, 1);
        assert_eq!(r.flag(7), 1);
        // SAFETY: ftruncate on the region's own fd, to check the seal.
        let rc = unsafe { libc::ftruncate(r.fd().as_raw_fd(), 10) };
        assert!(rc < 0, "a sealed region must not shrink");
        assert_eq!(r.file_size().unwrap(), 2 * GRAIN);
    }
}
