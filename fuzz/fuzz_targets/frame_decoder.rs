//! Arbitrary bytes into the Python wire's frame decoder, split at arbitrary
//! chunk boundaries, under an arbitrary maximum frame size. Frame words with
//! the attachments flag (top bit) make the decoder read arbitrary tables.
//!
//! Input layout: byte 0 picks the maximum frame size (0..=255 scaled, or
//! the real default when 255), byte 1 the chunk size (1..=256); the rest is
//! the stream. Checked: no panic, no frame (JSON and attachments together)
//! over the maximum, the decoder never holds more than one maximum-size
//! frame plus the chunk being fed, a size error names a size over the
//! maximum, a table error comes only from a flagged frame, and table entries
//! flagged as shared-memory descriptors come out as 16-byte parts.
//!
//! The protocol message parser (`protocol::Incoming`) is private to
//! `cenote-python`, so frames are not parsed here; the worker's handling of
//! frames that are not protocol messages is tested against real python3
//! (`crates/python-backend/tests/bad_input.rs`, `tests/chaos_python.rs`).
#![no_main]

use cenote_python::{FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 4;

fuzz_target!(|data: &[u8]| {
    let [max_pick, chunk_pick, stream @ ..] = data else {
        return;
    };
    let max = if *max_pick == 255 {
        64 << 20
    } else {
        usize::from(*max_pick) * 16
    };
    let chunk = usize::from(*chunk_pick) + 1;
    let mut decoder = FrameDecoder::new(max);
    for piece in stream.chunks(chunk) {
        decoder.extend(piece);
        assert!(decoder.buffered() <= max + HEADER + piece.len());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.size() <= max);
                    // Entries flagged as shared-memory descriptors are
                    // listed once, in order, and are 16 bytes each: what
                    // the region's owner then checks against its region.
                    assert!(frame.shared.windows(2).all(|w| w[0] < w[1]));
                    for &i in &frame.shared {
                        assert_eq!(frame.attachments[i].len(), 16);
                    }
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { size, max: m }) => {
                    assert_eq!(m, max);
                    assert!(size > max as u64);
                    // The worker kills the process here; so do we.
                    return;
                }
                Err(FrameError::BadTable { .. }) => {
                    // The worker kills the process here too.
                    return;
                }
                Err(FrameError::Truncated { .. }) => {
                    unreachable!("next_frame never reports truncation")
                }
            }
        }
        assert!(decoder.buffered() < max + HEADER || decoder.buffered() < HEADER);
    }
});
