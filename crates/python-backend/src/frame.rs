//! Framing: a u32 big-endian length, then that many bytes of payload.
//!
//! The decoder keeps its buffer outside any future, so a read that is
//! cancelled part-way loses nothing: the next read picks up where it stopped.
//! It checks every length against the maximum frame size *before* buffering
//! the payload, so a corrupt or hostile header can neither make it allocate
//! more than that maximum nor make it panic.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// How much is read from the pipe at once.
const CHUNK: usize = 64 * 1024;

/// Why the byte stream cannot be decoded any further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A header announced a frame over the maximum size.
    TooLarge {
        /// The announced size.
        size: u64,
        /// The maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    Truncated {
        /// Bytes of the partial frame that arrived.
        have: usize,
    },
}

/// Splits a byte stream into frames, never holding more than one maximum-size
/// frame plus one read chunk.
#[derive(Debug)]
pub struct Decoder {
    /// Storage; only `start..end` holds unread bytes. Kept at its size so
    /// reads do not re-zero memory.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl Decoder {
    /// A decoder that rejects frames larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// Append raw bytes (the caller's chunks are bounded).
    pub fn extend(&mut self, bytes: &[u8]) {
        let room = self.make_room(bytes.len());
        room[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    /// Free space for at least `want` more bytes after `end`, moving unread
    /// bytes to the front first.
    fn make_room(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = self.end + want;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        &mut self.buf[self.end..]
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = self.pending();
        let Some(head) = pending.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        if size_usize > self.max {
            return Err(FrameError::TooLarge {
                size: u64::from(size),
                max: self.max,
            });
        }
        let end = HEADER_LEN.saturating_add(size_usize);
        let Some(payload) = pending.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += end;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
            // Do not keep a once-needed large buffer for the worker's life.
            if self.buf.len() > 4 * CHUNK {
                self.buf = Vec::new();
            }
        }
        Ok(Some(payload))
    }

    /// How many bytes to ask the reader for next: never past one full frame
    /// beyond what is buffered, so a large frame does not over-allocate.
    fn want(&self) -> usize {
        let pending = self.pending();
        if let Some(head) = pending.get(..HEADER_LEN) {
            let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let missing = (HEADER_LEN + size).saturating_sub(pending.len());
            missing.clamp(1, CHUNK)
        } else {
            CHUNK
        }
    }

    /// Bytes of an unfinished frame, for the end-of-stream report.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Poll `reader` until a whole frame is buffered. `Ok(None)` means a
    /// clean end of stream (between frames).
    pub fn poll_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<Result<Option<Vec<u8>>, FrameError>>> {
        loop {
            match self.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(Ok(Ok(Some(frame)))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Ok(Err(e))),
            }
            let want = self.want();
            let room = self.make_room(want);
            let mut rb = ReadBuf::new(&mut room[..want]);
            let polled = Pin::new(&mut *reader).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            self.end += got;
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if got == 0 => {
                    let have = self.buffered();
                    return Poll::Ready(Ok(if have == 0 {
                        Ok(None)
                    } else {
                        Err(FrameError::Truncated { have })
                    }));
                }
                Poll::Ready(Ok(())) => {}
            }
        }
    }
}

/// Encode one frame: reserve the header, let `write` fill the payload, then
/// patch the length in. Fails if the payload exceeds `max`.
pub fn encode_with<E>(
    max: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Result<Vec<u8>, usize>, E> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; HEADER_LEN]);
    write(&mut out)?;
    let size = out.len() - HEADER_LEN;
    let Ok(size32) = u32::try_from(size) else {
        return Ok(Err(size));
    };
    if size > max {
        return Ok(Err(size));
    }
    out[..HEADER_LEN].copy_from_slice(&size32.to_be_bytes());
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn splits_frames_across_arbitrary_chunk_boundaries() {
        let mut bytes = Vec::new();
        for i in 0..50u8 {
            bytes.extend(frame(&vec![i; i as usize * 7]));
        }
        for chunk in [1, 2, 3, 5, 64, 1000] {
            let mut d = Decoder::new(1 << 20);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.extend(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 50);
            for (i, f) in got.iter().enumerate() {
                assert_eq!(f, &vec![i as u8; i * 7]);
            }
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn rejects_oversized_header_before_buffering() {
        let mut d = Decoder::new(100);
        d.extend(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                size: u32::MAX as u64,
                max: 100
            })
        );
        assert!(d.want() <= CHUNK);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.gen_range(0..200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut d = Decoder::new(rng.gen_range(0..64));
            for piece in bytes.chunks(rng.gen_range(1..9)) {
                d.extend(piece);
                while let Ok(Some(f)) = d.next_frame() {
                    assert!(f.len() <= 64);
                }
            }
        }
    }

    #[tokio::test]
    async fn reads_from_an_async_reader_and_reports_truncation() {
        let mut bytes = frame(b"hello");
        bytes.extend_from_slice(&[0, 0, 0, 9, b'x']);
        let mut reader: &[u8] = &bytes;
        let mut d = Decoder::new(1024);
        let first = std::future::poll_fn(|cx| d.poll_frame(&mut reader, cx)).await;
        assert_eq!(first.unwrap().unwrap().unwrap(), b"hello");
        let second = std::future::poll_fn(|cx| d.poll_frame(&mut reader, cx)).await;
        assert_eq!(second.unwrap(), Err(FrameError::Truncated { have: 5 }));
    }

    #[test]
    fn encode_enforces_the_limit() {
        let ok = encode_with::<()>(5, |v| {
            v.extend_from_slice(b"abc");
            Ok(())
        });
        assert_eq!(ok, Ok(Ok(frame(b"abc"))));
        let too_big = encode_with::<()>(2, |v| {
            v.extend_from_slice(b"abc");
            Ok(())
        });
        assert_eq!(too_big, Ok(Err(3)));
    }
}
