//! Shared memory for large payloads: bytes past a threshold cross between
//! the host and a worker through a region both map, not through the pipe.
//!
//! **Why.** A pipe moves a 64 MiB payload in 64 KiB–1 MiB steps, each a
//! copy into the kernel and one out, plus the page faults of fresh buffers
//! on both sides. A region that stays mapped (and touched) is written once
//! by the sender and read in place by the receiver.
//!
//! **The design.** Each worker has two regions ([`Region`]: an anonymous
//! memfd, sealed against shrinking), made by the host when it starts the
//! worker and given to it as fds 4 and 5 (by `dup2` when spawned, by
//! `SCM_RIGHTS` through the fork server when forked: a forked worker gets
//! its own, never the fork server's):
//! - **to the worker** (fd 4): the host allocates blocks in it for a call's
//!   large attachments and copies them in; the bridge hands the handler a
//!   read-only `memoryview` over the block, and clears the block's flag
//!   when the call ends (result, error, cancel), which frees it;
//! - **from the worker** (fd 5): the bridge allocates blocks for a
//!   result's large bytes (or `cenote.buffer(n)` gives the handler one to
//!   fill in place); the host checks the descriptor against the region,
//!   copies the bytes out (the caller gets ordinary memory, and the block
//!   is free again at once), and clears the flag.
//!
//! A frame names such an attachment by a descriptor (see `frame.rs`);
//! blocks are freed by flags in the region itself (see `blocks.rs`), so no
//! extra message crosses. Each side grows the region it allocates in (to
//! fit a larger payload, up to [`Shm::cap`]) and maps the other's again
//! when a descriptor points past its mapping. A payload that fits no block
//! under the cap goes through the pipe, as small ones do.
//!
//! **Lifetimes.** The regions are the worker's: when it goes, the host
//! drops its mapping and fd, and the kernel frees the pages once the
//! worker's are gone too, so nothing stays pinned after a crash or a
//! SIGKILL. A region keeps its size while its worker lives (its pages
//! stay touched, which is the point); it is mapped by both sides, so
//! memory-based recycling (which counts the pages only the worker maps)
//! does not count it.
//!
//! **Trust.** The host never trusts a descriptor: the offset must start a
//! block, the range must lie within the region and its cap, and the block
//! must be flagged as handed over; anything else is a protocol error and
//! the worker is replaced. Nothing is read out of bounds.

mod blocks;
mod region;

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::Bytes;
use parking_lot::Mutex;

use blocks::Blocks;
pub(crate) use blocks::{ALIGN, HEADER};
use region::Region;
pub(crate) use region::GRAIN;

use crate::frame::DESCRIPTOR_LEN;

/// One worker's two regions, and the size from which bytes use them.
#[derive(Debug)]
pub(crate) struct Shm {
    threshold: usize,
    cap: usize,
    to_worker: Mutex<Outbox>,
    from_worker: Mutex<Region>,
}

/// The region the host writes: it and its blocks.
#[derive(Debug)]
struct Outbox {
    region: Region,
    blocks: Blocks,
}

/// Where a call's attachment was put: its block, to take back if the call
/// is never sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed(usize);

impl Shm {
    /// Regions for a new worker: bytes of `threshold` or more go through
    /// them, up to `max_frame` per payload.
    pub(crate) fn new(threshold: usize, max_frame: usize) -> io::Result<Shm> {
        Ok(Shm {
            threshold,
            cap: Self::cap_for(max_frame),
            to_worker: Mutex::new(Outbox {
                region: Region::new(c"cenote-to-worker")?,
                blocks: Blocks::default(),
            }),
            from_worker: Mutex::new(Region::new(c"cenote-from-worker")?),
        })
    }

    /// The most a region may grow to: two payloads of the max frame size
    /// (so one call's bytes fit while another's are still held), rounded
    /// up to the mapping grain. The bridge computes the same.
    pub(crate) fn cap_for(max_frame: usize) -> usize {
        (2 * (max_frame + HEADER + ALIGN)).div_ceil(GRAIN) * GRAIN
    }

    /// The fds the worker gets, as its fds 4 and 5: open while this lives;
    /// spawning (`dup2`) or the fork request (`SCM_RIGHTS`) makes the
    /// worker's own copies.
    pub(crate) fn fds(&self) -> [RawFd; 2] {
        [
            self.to_worker.lock().region.fd().as_raw_fd(),
            self.from_worker.lock().fd().as_raw_fd(),
        ]
    }

    /// The size from which bytes go through shared memory.
    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }

    /// Put `bytes` in a block of the worker's region: its descriptor, or
    /// `None` if no block fits under the cap (the pipe carries it then).
    pub(crate) fn place(&self, bytes: &[u8]) -> Option<(Bytes, Placed)> {
        let size = Blocks::block_size(bytes.len());
        let mut out = self.to_worker.lock();
        let Outbox { region, blocks } = &mut *out;
        blocks.sweep(|at| region.flag(at));
        let at = match blocks.fit(size, region.mapped()) {
            Some(at) => at,
            None => {
                let want = (blocks.end() + size)
                    .max(2 * region.mapped())
                    .div_ceil(GRAIN)
                    * GRAIN;
                let want = want.min(self.cap);
                if want <= region.mapped() || region.grow(want).is_err() {
                    return None;
                }
                blocks.fit(size, region.mapped())?
            }
        };
        region.write(at + HEADER, bytes);
        region.set_flag(at, 1);
        blocks.hold(at, size);
        Some((descriptor(at + HEADER, bytes.len()), Placed(at)))
    }

    /// A placed block whose call was not sent after all is free again.
    pub(crate) fn take_back(&self, placed: Placed) {
        let mut out = self.to_worker.lock();
        out.region.set_flag(placed.0, 0);
        out.blocks.unhold(placed.0);
    }

    /// The bytes a descriptor from the worker names, copied out; the block
    /// is then free. An error says what is wrong with the descriptor.
    pub(crate) fn take(&self, descriptor: &[u8]) -> Result<Vec<u8>, String> {
        let (offset, len) = parse(descriptor)?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.cap)
            .ok_or_else(|| {
                format!(
                    "named {len} bytes at offset {offset} of its shared-memory region, \
                     past the region's limit of {} bytes",
                    self.cap
                )
            })?;
        if offset < HEADER || !(offset - HEADER).is_multiple_of(ALIGN) {
            return Err(format!(
                "named offset {offset} of its shared-memory region, which starts no block"
            ));
        }
        let mut region = self.from_worker.lock();
        if end > region.mapped() {
            let size = region.file_size().map_err(|e| e.to_string())?;
            if size > self.cap {
                return Err(format!(
                    "grew its shared-memory region to {size} bytes, over the limit of {}",
                    self.cap
                ));
            }
            if end > size {
                return Err(format!(
                    "named {len} bytes at offset {offset} of its shared-memory region, \
                     which holds {size}"
                ));
            }
            region.map_all(false).map_err(|e| e.to_string())?;
        }
        let block = offset - HEADER;
        if region.flag(block) != 1 {
            return Err(format!(
                "named the block at offset {offset} of its shared-memory region, \
                 which it had not handed over (or had already)"
            ));
        }
        let bytes = region.read(offset, len);
        region.set_flag(block, 0);
        Ok(bytes)
    }
}

/// The descriptor of `len` bytes at `offset`.
fn descriptor(offset: usize, len: usize) -> Bytes {
    let mut d = Vec::with_capacity(DESCRIPTOR_LEN);
    d.extend_from_slice(&(offset as u64).to_be_bytes());
    d.extend_from_slice(&(len as u64).to_be_bytes());
    Bytes::from(d)
}

/// A descriptor's offset and length.
fn parse(descriptor: &[u8]) -> Result<(usize, usize), String> {
    let (Ok(offset), Ok(len)) = (
        <[u8; 8]>::try_from(&descriptor[..8.min(descriptor.len())]),
        <[u8; 8]>::try_from(&descriptor[8.min(descriptor.len())..]),
    ) else {
        return Err(format!(
            "sent a shared-memory descriptor of {} bytes, not {DESCRIPTOR_LEN}",
            descriptor.len()
        ));
    };
    let as_usize = |b| usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX);
    Ok((as_usize(offset), as_usize(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's side of the from-worker region, as the bridge does it.
    fn worker_writes(shm: &Shm, at: usize, bytes: &[u8], flag: u8) -> Vec<u8> {
        let mut r = shm.from_worker.lock();
        if r.mapped() < at + HEADER + bytes.len() {
            r.grow(GRAIN).unwrap();
        }
        r.write(at + HEADER, bytes);
        r.set_flag(at, flag);
        descriptor(at + HEADER, bytes.len()).to_vec()
    }

    #[test]
    fn results_are_copied_out_and_their_blocks_freed() {
        let shm = Shm::new(1024, 1 << 20).unwrap();
        let d = worker_writes(&shm, 0, b"payload", 1);
        assert_eq!(shm.take(&d).unwrap(), b"payload");
        assert_eq!(shm.from_worker.lock().flag(0), 0, "freed for the worker");
        assert!(shm.take(&d).unwrap_err().contains("had not handed over"));
    }

    #[test]
    fn bad_descriptors_are_refused_without_reading() {
        let shm = Shm::new(1024, 1 << 20).unwrap();
        worker_writes(&shm, 0, b"x", 1);
        let cap = shm.cap;
        for (d, why) in [
            (descriptor(HEADER, cap), "past the region's limit"),
            (descriptor(usize::MAX - 3, 10), "past the region's limit"),
            (descriptor(3, 1), "starts no block"),
            (descriptor(HEADER + 1, 1), "starts no block"),
            (descriptor(cap - 64, 64), "which holds"),
            (Bytes::from_static(b"short"), "not 16"),
        ] {
            let err = shm.take(&d).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn calls_reuse_blocks_the_worker_released_and_grow_when_full() {
        let shm = Shm::new(1024, 8 << 20).unwrap();
        let big = vec![7u8; 3 << 20];
        let (_, a) = shm.place(&big).unwrap();
        let (_, b) = shm.place(&big).unwrap();
        assert_ne!(a.0, b.0);
        let grown = shm.to_worker.lock().region.mapped();
        // The worker released the first: the next one reuses its block.
        shm.to_worker.lock().region.set_flag(a.0, 0);
        let (d, c) = shm.place(&big).unwrap();
        assert_eq!(c.0, a.0);
        assert_eq!(shm.to_worker.lock().region.mapped(), grown);
        assert_eq!(parse(&d).unwrap(), (a.0 + HEADER, big.len()));
        assert_eq!(
            shm.to_worker.lock().region.read(a.0 + HEADER, 16),
            vec![7u8; 16]
        );
        // Past the cap nothing fits: the pipe carries it.
        assert!(shm.place(&vec![1u8; shm.cap]).is_none());
        shm.take_back(b);
        shm.take_back(c);
        assert_eq!(shm.to_worker.lock().blocks.end(), 0);
    }
}
