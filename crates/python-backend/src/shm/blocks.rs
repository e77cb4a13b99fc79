//! Blocks of a region: the allocator of the side that writes into it.
//!
//! A block is a [`HEADER`] then the payload, rounded up to [`ALIGN`]. The
//! header's first byte is the block's flag: the writer sets it to 1 when it
//! hands the block over (sends its descriptor), the reader clears it to 0
//! once done with the bytes. The writer frees a block when it sees the flag
//! cleared, on its next allocation ([`Blocks::sweep`]), so no message ever
//! travels back to free a block, and the two sides never wait for each
//! other. The same layout is used both ways: the host writes calls' bytes
//! into the region it gives the worker, and the worker writes results into
//! the other (`bridge.py` keeps its own copy of this allocator).

use std::collections::BTreeMap;

/// Bytes of a block's header: its flag, then padding to the alignment.
pub(crate) const HEADER: usize = 64;

/// Blocks start, and payloads are padded, at multiples of this.
pub(crate) const ALIGN: usize = 64;

/// The blocks handed over and not yet freed: their offsets and sizes.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    held: BTreeMap<usize, usize>,
}

impl Blocks {
    /// Bytes a block for a payload of `len` takes.
    pub(super) fn block_size(len: usize) -> usize {
        HEADER + len.div_ceil(ALIGN) * ALIGN
    }

    /// Free every block whose flag (read by `flag`) the reader cleared.
    pub(super) fn sweep(&mut self, flag: impl Fn(usize) -> u8) {
        self.held.retain(|&at, _| flag(at) != 0);
    }

    /// The lowest offset where a block of `size` fits below `end`.
    pub(super) fn fit(&self, size: usize, end: usize) -> Option<usize> {
        let mut from = 0;
        for (&at, &len) in &self.held {
            if at - from >= size {
                return Some(from);
            }
            from = at + len;
        }
        (end.checked_sub(from)? >= size).then_some(from)
    }

    /// Where the blocks held end: a region must be at least this large.
    pub(super) fn end(&self) -> usize {
        self.held.last_key_value().map_or(0, |(&at, &len)| at + len)
    }

    /// Record a block of `size` at `at` as handed over.
    pub(super) fn hold(&mut self, at: usize, size: usize) {
        self.held.insert(at, size);
    }

    /// Take back a block that was never handed over after all.
    pub(super) fn unhold(&mut self, at: usize) {
        self.held.remove(&at);
    }

    /// Blocks held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_reuses_what_the_reader_released() {
        let mut b = Blocks::default();
        let size = Blocks::block_size(100);
        assert_eq!(size, HEADER + 128);
        let a = b.fit(size, 1000).unwrap();
        b.hold(a, size);
        let c = b.fit(size, 1000).unwrap();
        assert_eq!(c, size, "after the first");
        b.hold(c, size);
        assert_eq!(b.fit(size, 2 * size + 10), None, "full");
        // The reader released the first block only.
        b.sweep(|at| u8::from(at != a));
        assert_eq!(b.len(), 1);
        assert_eq!(b.fit(size, 2 * size), Some(a), "the freed gap");
        assert_eq!(b.end(), 2 * size);
        b.unhold(c);
        assert_eq!(b.end(), 0);
    }
}
