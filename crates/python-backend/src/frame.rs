//! Framing: a frame is a big-endian `u32` word, then the body it announces.
//!
//! The word's low 31 bits are the body's size; its top bit says whether the
//! body carries raw attachments (binary payloads) besides its JSON:
//!
//! ```text
//! plain:        word = size            body = JSON
//! attachments:  word = size | 1 << 31  body = u32 count, count × u32 length,
//!                                             JSON, attachment 0, attachment 1…
//! ```
//!
//! All integers are big-endian. The JSON's length is what is left of the
//! body after the table and the attachments.
//!
//! A table entry with its top bit ([`SHARED_FLAG`]) set is an attachment in
//! shared memory (protocol 6, see `shm`): its part of the body is not the
//! bytes but a descriptor of [`DESCRIPTOR_LEN`] bytes (`u64` offset, `u64`
//! length) into the sender's region. The decoder only checks the length;
//! the region's owner checks the offset and reads. A plain frame is exactly a
//! frame of protocol 1, so a ready frame from any version of the bridge can
//! be read, and a version mismatch is reported as one.
//!
//! The decoder keeps its state outside any future, so a read that is
//! cancelled part-way loses nothing: the next read picks up where it
//! stopped. It checks the size against the maximum before buffering the
//! body, and the table against the size before trusting it, so a corrupt or
//! hostile header can neither make it panic nor make it allocate much more
//! than it has received: every buffer grows with the bytes that arrive (at
//! most doubling), and never past the part of the frame it holds, so a
//! maximum-size frame allocates its size once, not twice.
//!
//! Large parts are read straight from the pipe into their own buffers, so an
//! attachment reaches its `Vec` with no copy in between; small frames are
//! read whole into one staging buffer and split from there.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes of the frame word.
pub const HEADER_LEN: usize = 4;

/// The frame word's flag for a body with attachments.
pub const ATTACHMENTS_FLAG: u32 = 1 << 31;

/// A table entry's flag for an attachment in shared memory.
pub const SHARED_FLAG: u32 = 1 << 31;

/// Bytes of a shared-memory descriptor: a `u64` offset and a `u64` length.
pub const DESCRIPTOR_LEN: usize = 16;

/// The largest body the frame word can announce.
pub const MAX_BODY: usize = (ATTACHMENTS_FLAG - 1) as usize;

/// How much is read from the pipe into the staging buffer at once, and the
/// size from which a part of a frame is read straight into its own buffer.
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
    /// A frame's attachment table does not fit its size.
    BadTable {
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => write!(
                f,
                "a frame of {size} bytes was announced, over the max frame size of {max}"
            ),
            FrameError::Truncated { have } => {
                write!(f, "the stream ended {have} bytes into a frame")
            }
            FrameError::BadTable { reason } => write!(f, "a frame's attachment table {reason}"),
        }
    }
}

/// One decoded frame: its JSON and its attachments, in table order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The JSON part.
    pub json: Vec<u8>,
    /// The raw attachments.
    pub attachments: Vec<Vec<u8>>,
    /// Which attachments are shared-memory descriptors, in table order.
    pub shared: Vec<usize>,
}

impl Frame {
    /// Bytes of JSON and attachments together.
    #[cfg(any(test, feature = "testing"))]
    pub fn size(&self) -> usize {
        self.json.len() + self.attachments.iter().map(Vec::len).sum::<usize>()
    }
}

/// The frame being assembled: where the next body byte goes.
#[derive(Debug)]
struct Partial {
    /// Body bytes announced.
    size: usize,
    /// The count and table, until the layout is known.
    table: Vec<u8>,
    /// Lengths of the JSON and of each attachment, once the table is in.
    layout: Option<Vec<usize>>,
    /// Which attachments are shared-memory descriptors.
    shared: Vec<usize>,
    /// The parts filled so far: JSON first, then the attachments.
    parts: Vec<Vec<u8>>,
}

impl Partial {
    fn new(size: usize, flagged: bool) -> Result<Self, FrameError> {
        if flagged && size < 4 {
            return Err(FrameError::BadTable {
                reason: format!("does not fit a frame of {size} bytes"),
            });
        }
        let mut partial = Partial {
            size,
            table: Vec::new(),
            layout: None,
            shared: Vec::new(),
            parts: Vec::new(),
        };
        if !flagged {
            partial.lay_out(vec![size]);
        }
        Ok(partial)
    }

    fn lay_out(&mut self, layout: Vec<usize>) {
        self.layout = Some(layout);
        self.parts.push(Vec::new());
    }

    /// Body bytes taken so far: what the table and the parts hold.
    fn taken(&self) -> usize {
        self.table.len() + self.parts.iter().map(Vec::len).sum::<usize>()
    }

    /// Bytes of the body still to come.
    fn missing(&self) -> usize {
        self.size - self.taken()
    }

    /// How long the table is: the count word, then one word per
    /// attachment once the count is known.
    fn table_len(&self) -> usize {
        match self.table.get(..4) {
            Some(count) => 4 + 4 * word(count) as usize,
            None => 4,
        }
    }

    /// The buffer the next body bytes go to and how many it still takes,
    /// or `None` once the frame is complete.
    fn target(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        let Some(layout) = &self.layout else {
            let want = self.table_len() - self.table.len();
            return Some((&mut self.table, want));
        };
        // Step over full parts (empty attachments are full at once).
        while self.parts.len() < layout.len()
            && self.parts.last().map(Vec::len) == Some(layout[self.parts.len() - 1])
        {
            self.parts.push(Vec::new());
        }
        let index = self.parts.len() - 1;
        let want = layout[index] - self.parts[index].len();
        (want > 0).then(|| (&mut self.parts[index], want))
    }

    /// Take up to `bytes.len()` body bytes; returns how many were taken.
    fn take(&mut self, bytes: &[u8]) -> Result<usize, FrameError> {
        let Some((dest, want)) = self.target() else {
            return Ok(0);
        };
        let n = want.min(bytes.len());
        grow(dest, n, want);
        dest.extend_from_slice(&bytes[..n]);
        self.check_table()?;
        Ok(n)
    }

    /// After bytes went to the target: once the table is complete, check
    /// it and lay out the parts.
    fn check_table(&mut self) -> Result<(), FrameError> {
        if self.layout.is_none() && self.table.len() >= 4 {
            let table_len = self.table_len();
            if table_len > self.size {
                return Err(FrameError::BadTable {
                    reason: format!(
                        "of {} attachments does not fit a frame of {} bytes",
                        (table_len - 4) / 4,
                        self.size
                    ),
                });
            }
            if self.table.len() == table_len {
                let (layout, shared) = layout(self.size, &self.table)?;
                self.shared = shared;
                self.lay_out(layout);
            }
        }
        Ok(())
    }

    fn is_complete(&mut self) -> bool {
        self.target().is_none()
    }

    fn finish(mut self) -> Frame {
        let json = self.parts.remove(0);
        Frame {
            json,
            attachments: self.parts,
            shared: self.shared,
        }
    }
}

/// A big-endian word from four bytes.
fn word(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The lengths of the JSON and the attachments a table announces, checked
/// against the body size, and which attachments are descriptors.
fn layout(size: usize, table: &[u8]) -> Result<(Vec<usize>, Vec<usize>), FrameError> {
    let count = word(table) as usize;
    let mut shared = Vec::new();
    let mut lengths = Vec::with_capacity(count);
    for (i, w) in table[4..].chunks_exact(4).enumerate() {
        let entry = word(w);
        let len = (entry & !SHARED_FLAG) as usize;
        if entry & SHARED_FLAG != 0 {
            if len != DESCRIPTOR_LEN {
                return Err(FrameError::BadTable {
                    reason: format!(
                        "gives shared-memory attachment {i} a descriptor of {len} bytes, not {DESCRIPTOR_LEN}"
                    ),
                });
            }
            shared.push(i);
        }
        lengths.push(len);
    }
    let total = lengths
        .iter()
        .try_fold(table.len(), |sum, &len| sum.checked_add(len))
        .filter(|&total| total <= size)
        .ok_or_else(|| FrameError::BadTable {
            reason: format!(
                "announces {count} attachments of {} bytes, more than the frame's {size}",
                lengths.iter().map(|&l| l as u128).sum::<u128>()
            ),
        })?;
    let mut parts = Vec::with_capacity(count + 1);
    parts.push(size - total);
    parts.extend(lengths);
    Ok((parts, shared))
}

/// Make room in `dest` for `n` more bytes of a part that still takes `want`:
/// at least double what it holds (so growth is amortized), but never past
/// the part's end, so a buffer ends exactly as large as its part.
fn grow(dest: &mut Vec<u8>, n: usize, want: usize) {
    if dest.capacity() - dest.len() >= n {
        return;
    }
    let target = dest.len().max(n).max(CHUNK.min(want)).min(want);
    dest.reserve_exact(target);
}

/// Splits a byte stream into frames. It never holds more than the frame
/// being assembled (grown as its bytes arrive) plus one read chunk.
#[derive(Debug)]
pub struct Decoder {
    /// Staging for small reads; only `start..end` holds unread bytes. Kept
    /// at its size so reads do not re-zero memory.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    partial: Option<Partial>,
}

impl Decoder {
    /// A decoder that rejects frames whose body is over `max` bytes.
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
            partial: None,
        }
    }

    /// Append raw bytes to the staging buffer (the worker reads into it
    /// from the pipe instead).
    #[cfg(any(test, feature = "testing"))]
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

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.partial.is_none() {
                let Some(head) = self.pending().get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let head = word(head);
                let size = (head & !ATTACHMENTS_FLAG) as usize;
                if size > self.max {
                    return Err(FrameError::TooLarge {
                        size: size as u64,
                        max: self.max,
                    });
                }
                self.start += HEADER_LEN;
                self.partial = Some(Partial::new(size, head & ATTACHMENTS_FLAG != 0)?);
            }
            let partial = self.partial.as_mut().expect("a frame in progress");
            if !partial.is_complete() {
                let (start, end) = (self.start, self.end);
                let took = partial.take(&self.buf[start..end])?;
                self.start += took;
                if !partial.is_complete() {
                    if self.start == self.end {
                        self.reset_staging();
                        return Ok(None);
                    }
                    continue;
                }
            }
            let frame = self.partial.take().expect("a frame in progress").finish();
            if self.start == self.end {
                self.reset_staging();
            }
            return Ok(Some(frame));
        }
    }

    fn reset_staging(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// The body size of the frame being assembled, if one is.
    pub fn frame_size(&self) -> Option<usize> {
        self.partial.as_ref().map(|p| p.size)
    }

    /// Bytes of an unfinished frame, for the end-of-stream report.
    pub fn buffered(&self) -> usize {
        let partial = self.partial.as_ref().map_or(0, |p| p.taken() + HEADER_LEN);
        partial + self.end - self.start
    }

    /// Poll `reader` until a whole frame is in. `Ok(None)` means a clean end
    /// of stream (between frames).
    pub fn poll_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<Result<Option<Frame>, FrameError>>> {
        loop {
            match self.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(Ok(Ok(Some(frame)))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Ok(Err(e))),
            }
            let direct = matches!(
                self.partial.as_mut().and_then(Partial::target),
                Some((_, want)) if want >= CHUNK && self.start == self.end
            );
            let polled = if direct {
                // A large part, with nothing staged: straight into its buffer.
                let partial = self.partial.as_mut().expect("a frame in progress");
                let (dest, want) = partial.target().expect("a part in progress");
                let n = want.min(dest.len().max(CHUNK));
                grow(dest, n, want);
                let mut limited = dest.limit(n);
                match poll_read_into(reader, cx, &mut limited) {
                    Poll::Ready(Ok(got)) if got > 0 => match partial.check_table() {
                        Ok(()) => Poll::Ready(Ok(got)),
                        Err(e) => return Poll::Ready(Ok(Err(e))),
                    },
                    other => other,
                }
            } else {
                // Never past the frame in progress, so a large frame's
                // parts are not staged and then copied.
                let want = self
                    .partial
                    .as_ref()
                    .map_or(CHUNK, |p| p.missing().clamp(1, CHUNK));
                let room = self.make_room(want);
                let mut rb = ReadBuf::new(&mut room[..want]);
                let polled = Pin::new(&mut *reader).poll_read(cx, &mut rb);
                let got = rb.filled().len();
                self.end += got;
                polled.map_ok(|()| got)
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    let have = self.buffered();
                    return Poll::Ready(Ok(if have == 0 {
                        Ok(None)
                    } else {
                        Err(FrameError::Truncated { have })
                    }));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// Read once from `reader` into `buf`'s spare room (not zeroed first);
/// returns how many bytes arrived.
fn poll_read_into<R: AsyncRead + Unpin, B: BufMut>(
    reader: &mut R,
    cx: &mut Context<'_>,
    buf: &mut B,
) -> Poll<std::io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(reader), cx, buf)
}

/// One frame ready to write: the word, the table and the JSON in `head`,
/// then the attachments as they are (shared, not copied).
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Frame word, attachment table and JSON.
    pub(crate) head: Vec<u8>,
    /// The attachments, written after `head`.
    pub(crate) attachments: Vec<Bytes>,
}

impl Outbound {
    /// Mark attachment `index` (its part already a descriptor) as one in
    /// shared memory.
    pub(crate) fn mark_shared(&mut self, index: usize) {
        let at = HEADER_LEN + 4 + 4 * index;
        let entry = word(&self.head[at..at + 4]) | SHARED_FLAG;
        self.head[at..at + 4].copy_from_slice(&entry.to_be_bytes());
    }

    /// Bytes of the whole frame, header included.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Encode one frame: reserve the word and table, let `write` fill in the
/// JSON, then patch the sizes in. `Ok(Err(size))` if the body would be over
/// `max` (or over what the word can say); nothing is written then.
pub(crate) fn encode_with<E>(
    max: usize,
    attachments: &[Bytes],
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Result<Outbound, usize>, E> {
    let table = if attachments.is_empty() {
        0
    } else {
        4 + 4 * attachments.len()
    };
    let mut head = Vec::with_capacity(128 + table);
    head.resize(HEADER_LEN + table, 0);
    write(&mut head)?;
    let blobs = attachments.iter().map(Bytes::len).sum::<usize>();
    let size = head.len() - HEADER_LEN + blobs;
    if size > max.min(MAX_BODY) || attachments.iter().any(|a| a.len() > u32::MAX as usize) {
        return Ok(Err(size));
    }
    let mut word = size as u32;
    if !attachments.is_empty() {
        word |= ATTACHMENTS_FLAG;
        let count = attachments.len() as u32;
        head[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&count.to_be_bytes());
        for (i, a) in attachments.iter().enumerate() {
            let at = HEADER_LEN + 4 + 4 * i;
            head[at..at + 4].copy_from_slice(&(a.len() as u32).to_be_bytes());
        }
    }
    head[..HEADER_LEN].copy_from_slice(&word.to_be_bytes());
    Ok(Ok(Outbound {
        head,
        attachments: attachments.to_vec(),
    }))
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

    fn flat(out: &Outbound) -> Vec<u8> {
        let mut v = out.head.clone();
        for a in &out.attachments {
            v.extend_from_slice(a);
        }
        v
    }

    fn with_attachments(json: &[u8], attachments: &[&[u8]]) -> Vec<u8> {
        let attachments: Vec<Bytes> = attachments
            .iter()
            .map(|a| Bytes::copy_from_slice(a))
            .collect();
        let out = encode_with::<()>(usize::MAX, &attachments, |v| {
            v.extend_from_slice(json);
            Ok(())
        })
        .unwrap()
        .unwrap();
        flat(&out)
    }

    #[test]
    fn splits_frames_across_arbitrary_chunk_boundaries() {
        let mut bytes = Vec::new();
        for i in 0..50u8 {
            if i % 3 == 0 {
                bytes.extend(with_attachments(&[i; 3], &[&vec![i; i as usize * 5], b""]));
            } else {
                bytes.extend(frame(&vec![i; i as usize * 7]));
            }
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
                if i % 3 == 0 {
                    assert_eq!(f.json, vec![i as u8; 3]);
                    assert_eq!(f.attachments, vec![vec![i as u8; i * 5], vec![]]);
                } else {
                    assert_eq!(f.json, vec![i as u8; i * 7]);
                    assert!(f.attachments.is_empty());
                }
            }
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn rejects_oversized_header_before_buffering() {
        let mut d = Decoder::new(100);
        d.extend(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                size: MAX_BODY as u64,
                max: 100
            })
        );
        let mut d = Decoder::new(100);
        d.extend(&[0x80, 0, 0, 101]);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::TooLarge { size: 101, .. })
        ));
    }

    #[test]
    fn rejects_tables_that_do_not_fit_the_frame() {
        // A count whose table is longer than the frame.
        let mut d = Decoder::new(1 << 20);
        d.extend(&[0x80, 0, 0, 8, 0, 0, 1, 0]);
        d.extend(&[0; 8]);
        assert!(matches!(d.next_frame(), Err(FrameError::BadTable { .. })));
        // Attachment lengths that add up to more than the frame.
        let mut d = Decoder::new(1 << 20);
        d.extend(&[
            0x80, 0, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        assert!(matches!(d.next_frame(), Err(FrameError::BadTable { .. })));
        // A flagged frame too small to hold even the count.
        let mut d = Decoder::new(1 << 20);
        d.extend(&[0x80, 0, 0, 2, 0, 0]);
        assert!(matches!(d.next_frame(), Err(FrameError::BadTable { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.gen_range(0..200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let max = rng.gen_range(0..64);
            let mut d = Decoder::new(max);
            for piece in bytes.chunks(rng.gen_range(1..9)) {
                d.extend(piece);
                while let Ok(Some(f)) = d.next_frame() {
                    assert!(f.size() <= max);
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
        assert_eq!(first.unwrap().unwrap().unwrap().json, b"hello");
        let second = std::future::poll_fn(|cx| d.poll_frame(&mut reader, cx)).await;
        assert_eq!(second.unwrap(), Err(FrameError::Truncated { have: 5 }));
    }

    #[tokio::test]
    async fn large_attachments_arrive_whole_and_sized_exactly() {
        let big = vec![7u8; 3 * CHUNK + 11];
        let mut bytes = with_attachments(b"{}", &[&big, b"tail"]);
        bytes.extend(frame(b"next"));
        let mut reader: &[u8] = &bytes;
        let mut d = Decoder::new(8 * CHUNK);
        let first = std::future::poll_fn(|cx| d.poll_frame(&mut reader, cx))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.json, b"{}");
        assert_eq!(first.attachments[0], big);
        assert_eq!(first.attachments[0].capacity(), big.len());
        assert_eq!(first.attachments[1], b"tail");
        let second = std::future::poll_fn(|cx| d.poll_frame(&mut reader, cx)).await;
        assert_eq!(second.unwrap().unwrap().unwrap().json, b"next");
    }

    #[test]
    fn encode_enforces_the_limit() {
        let ok = encode_with::<()>(5, &[], |v| {
            v.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(flat(&ok), frame(b"abc"));
        let too_big = encode_with::<()>(2, &[], |v| {
            v.extend_from_slice(b"abc");
            Ok(())
        });
        assert!(matches!(too_big, Ok(Err(3))));
        // Attachments count against the limit: 4 (count) + 4 (length) + 2 + 3.
        let att = [Bytes::from_static(b"xyz")];
        let over = encode_with::<()>(12, &att, |v| {
            v.extend_from_slice(b"{}");
            Ok(())
        });
        assert!(matches!(over, Ok(Err(13))));
        let fits = encode_with::<()>(13, &att, |v| {
            v.extend_from_slice(b"{}");
            Ok(())
        })
        .unwrap()
        .unwrap();
        let mut d = Decoder::new(13);
        d.extend(&flat(&fits));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.json.as_slice(), f.attachments),
            (&b"{}"[..], vec![b"xyz".to_vec()])
        );
    }
}
