//! Property tests for the Python wire's frame decoder
//! (`cenote::python::FrameDecoder`): random bytes, truncated frames, huge
//! length prefixes, attachment tables that lie, and frames whose payload is
//! not a protocol message, fed whole or split at random chunk boundaries,
//! directly or through an async reader that stalls at random.
//!
//! Properties: it never panics; it never buffers more than one maximum-size
//! frame plus the chunk being fed; a hostile length prefix or table
//! allocates nothing near the size it announces; valid frames, with or
//! without attachments, always come back intact and in order; a table that
//! does not fit its frame is refused; a stream cut mid-frame is reported as
//! truncated with the exact number of bytes that arrived.
//!
//! The message parser (`protocol::Incoming`) is private to the backend, so
//! frames with wrong JSON are checked here to come back intact from the
//! decoder; what the worker does with them (a protocol error, the worker
//! killed and replaced) is covered against real python3 by
//! `crates/python-backend/tests/bad_input.rs` and
//! `tests/chaos_python.rs::garbage_frames_get_the_worker_replaced`.

#![cfg(feature = "python")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};

use cenote::python::{Frame, FrameDecoder, FrameError};
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes of the length prefix.
const HEADER: usize = 4;
/// The frame word's flag for a body with attachments.
const FLAG: u32 = 1 << 31;

/// A table entry's flag for a shared-memory descriptor, and its length.
const SHARED: usize = 1 << 31;
const DESCRIPTOR_LEN: usize = 16;
/// The decoder's read chunk (`frame.rs`): the most it asks a reader for.
const READ_CHUNK: usize = 64 * 1024;

// ------------------------------------------------ allocation accounting

/// Records the largest single allocation made by a thread while it is
/// tracking, so a test can bound what the decoder asks the allocator for.
struct Peak;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; the
// bookkeeping touches only const-initialised thread locals (no allocation).
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// The largest single allocation `f` made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

// ------------------------------------------------------------- helpers

fn encode(payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len())
        .expect("test payloads are small")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

/// A frame whose body is an attachment table, `json`, then `attachments`.
fn encode_attached(json: &[u8], attachments: &[Vec<u8>]) -> Vec<u8> {
    let mut body = (attachments.len() as u32).to_be_bytes().to_vec();
    for a in attachments {
        body.extend_from_slice(&(a.len() as u32).to_be_bytes());
    }
    body.extend_from_slice(json);
    for a in attachments {
        body.extend_from_slice(a);
    }
    let mut v = (body.len() as u32 | FLAG).to_be_bytes().to_vec();
    v.extend(body);
    v
}

/// A frame with no attachments, as the decoder hands it out.
fn plain(json: &[u8]) -> Frame {
    Frame {
        json: json.to_vec(),
        attachments: Vec::new(),
        shared: Vec::new(),
    }
}

/// Split `bytes` at the given cut points (taken modulo its length).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
        .collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// What feeding a stream through `extend`/`next_frame` produced.
#[derive(Debug)]
struct Fed {
    frames: Vec<Frame>,
    error: Option<FrameError>,
    buffered: usize,
}

/// Feed `chunks` one by one, draining frames after each, stopping at the
/// first error (as the worker does: it kills the process). Checks the
/// buffering bound at every step.
fn feed(max: usize, chunks: &[&[u8]]) -> Fed {
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    for chunk in chunks {
        let before = d.buffered();
        d.extend(chunk);
        assert_eq!(d.buffered(), before + chunk.len());
        assert!(
            d.buffered() <= max + HEADER + chunk.len(),
            "buffered {} with max {max} after a chunk of {}",
            d.buffered(),
            chunk.len()
        );
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.size() <= max, "frame of {} over max {max}", f.size());
                    frames.push(f);
                }
                Ok(None) => break,
                Err(error) => {
                    return Fed {
                        frames,
                        error: Some(error),
                        buffered: d.buffered(),
                    }
                }
            }
        }
        // Between chunks at most one unfinished frame is held.
        assert!(
            d.buffered() < max + HEADER || d.buffered() < HEADER,
            "holds {} bytes between chunks with max {max}",
            d.buffered()
        );
    }
    Fed {
        frames,
        error: None,
        buffered: d.buffered(),
    }
}

/// An async reader that hands out `data` in the given chunk sizes and stalls
/// (returns Pending after waking itself) where told, never twice in a row.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    stalls: Vec<bool>,
    step: usize,
    stalled: bool,
    largest_read: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = &mut *self;
        me.largest_read = me.largest_read.max(buf.remaining());
        let step = me.step;
        me.step += 1;
        let stall = !me.stalled && me.stalls.get(step % me.stalls.len().max(1)) == Some(&true);
        me.stalled = stall;
        if stall {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let size = me
            .sizes
            .get(step % me.sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let n = size.min(buf.remaining()).min(me.data.len() - me.pos);
        buf.put_slice(&me.data[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Read frames with `poll_frame` until end of stream or an error, polling by
/// hand; returns the frames and how the stream ended.
fn read_all(max: usize, reader: &mut Trickle) -> (Vec<Frame>, Result<(), FrameError>, usize) {
    let mut d = FrameDecoder::new(max);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut frames = Vec::new();
    // Every poll either makes progress or stalls once; bound the loop anyway.
    for _ in 0..1_000_000 {
        match d.poll_frame(reader, &mut cx) {
            Poll::Pending => continue,
            Poll::Ready(Err(e)) => panic!("the test reader does not fail: {e}"),
            Poll::Ready(Ok(Ok(Some(f)))) => {
                assert!(f.size() <= max);
                frames.push(f);
            }
            Poll::Ready(Ok(Ok(None))) => return (frames, Ok(()), d.buffered()),
            Poll::Ready(Ok(Err(e))) => return (frames, Err(e), d.buffered()),
        }
        assert!(d.buffered() <= max + HEADER + READ_CHUNK);
    }
    panic!("poll_frame made no progress");
}

// ----------------------------------------------------------- strategies

fn payloads(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=max), 0..12)
}

/// Payloads a protocol parser must reject: not JSON, JSON of the wrong
/// shape, unknown message types, wrong field types, truncated JSON, invalid
/// UTF-8.
fn wrong_json() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"hello".to_vec()),
        Just(b"{".to_vec()),
        Just(b"null".to_vec()),
        Just(b"[1,2,3]".to_vec()),
        Just(br#"{"t":"bogus","id":1}"#.to_vec()),
        Just(br#"{"t":"result","id":"seven"}"#.to_vec()),
        Just(br#"{"t":"error","id":1}"#.to_vec()),
        Just(br#"{"id":1,"value":2}"#.to_vec()),
        Just(b"\xff\xfe\xfd".to_vec()),
        "[ -~]{0,64}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
        // A real message cut short.
        (0usize..37).prop_map(|n| br#"{"t":"result","id":3,"value":[1,2,3]}"#[..n].to_vec()),
    ]
}

proptest! {
    // Failures print their minimal input; no regression files are written.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Valid frames split anywhere come back intact, in order, nothing left.
    #[test]
    fn valid_frames_survive_any_split(
        frames in payloads(300),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f)).collect();
        let fed = feed(300, &split(&stream, &cuts));
        prop_assert_eq!(fed.error, None);
        prop_assert_eq!(fed.frames, frames.iter().map(|f| plain(f)).collect::<Vec<_>>());
        prop_assert_eq!(fed.buffered, 0);
    }

    /// Frames with attachments (empty ones included), mixed with plain
    /// frames and split anywhere, come back intact and in order.
    #[test]
    fn frames_with_attachments_survive_any_split(
        frames in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..60),
             prop::option::of(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..5))),
            0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (json, attachments) in &frames {
            match attachments {
                Some(attachments) => {
                    stream.extend(encode_attached(json, attachments));
                    want.push(Frame { json: json.clone(), attachments: attachments.clone(), shared: Vec::new() });
                }
                None => {
                    stream.extend(encode(json));
                    want.push(plain(json));
                }
            }
        }
        let fed = feed(1000, &split(&stream, &cuts));
        prop_assert_eq!(fed.error, None);
        prop_assert_eq!(fed.frames, want);
        prop_assert_eq!(fed.buffered, 0);
    }

    /// Tables whose entries mark shared-memory descriptors: each is listed
    /// in `shared` when it is 16 bytes, and any other length refuses the
    /// frame (the region's owner, not the decoder, checks what it names).
    #[test]
    fn descriptors_are_listed_and_their_length_checked(
        entries in prop::collection::vec((any::<bool>(), 0usize..40), 0..6),
        bad in prop::option::of(0usize..6),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut entries = entries;
        for e in &mut entries {
            if e.0 {
                e.1 = DESCRIPTOR_LEN;
            }
        }
        let refused = bad.is_some_and(|i| i < entries.len() && entries[i].0);
        if refused {
            entries[bad.unwrap()].1 = DESCRIPTOR_LEN + 1;
        }
        let json = b"{}";
        let parts: usize = entries.iter().map(|e| e.1).sum();
        let size = 4 + 4 * entries.len() + json.len() + parts;
        let mut stream = (size as u32 | FLAG).to_be_bytes().to_vec();
        stream.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for &(shared, len) in &entries {
            let word = len as u32 | if shared { FLAG } else { 0 };
            stream.extend_from_slice(&word.to_be_bytes());
        }
        stream.extend_from_slice(json);
        for (i, &(_, len)) in entries.iter().enumerate() {
            stream.extend(std::iter::repeat_n(i as u8, len));
        }
        let fed = feed(1 << 20, &split(&stream, &cuts));
        if refused {
            prop_assert!(matches!(fed.error, Some(FrameError::BadTable { .. })), "{:?}", fed.error);
            prop_assert!(fed.frames.is_empty());
        } else {
            prop_assert_eq!(fed.error, None);
            let shared: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].0).collect();
            let attachments: Vec<Vec<u8>> = entries.iter().enumerate().map(|(i, &(_, len))| vec![i as u8; len]).collect();
            prop_assert_eq!(fed.frames, vec![Frame { json: json.to_vec(), attachments, shared }]);
        }
    }

    /// Attachment tables of any count and lengths: refused exactly when they
    /// do not fit their frame, never a panic, and the frames that fit are
    /// split as the table says.
    #[test]
    fn tables_are_checked_against_their_frame(
        count in 0u32..8,
        lengths in prop::collection::vec(0u32..64, 8),
        huge in prop::option::of(0usize..8),
        body_len in 0usize..300,
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut lengths: Vec<u32> = lengths[..count as usize].to_vec();
        if let Some(i) = huge {
            if let Some(l) = lengths.get_mut(i) {
                *l = u32::MAX - 3;
            }
        }
        let table = 4 + 4 * count as usize;
        let size = table + body_len;
        let mut stream = (size as u32 | FLAG).to_be_bytes().to_vec();
        stream.extend_from_slice(&count.to_be_bytes());
        for l in &lengths {
            stream.extend_from_slice(&l.to_be_bytes());
        }
        stream.extend((0..body_len).map(|i| i as u8));
        let fed = feed(1 << 20, &split(&stream, &cuts));
        let parts: u64 = lengths.iter().map(|&l| u64::from(l)).sum();
        if parts > body_len as u64 {
            prop_assert!(matches!(fed.error, Some(FrameError::BadTable { .. })), "{:?}", fed.error);
            prop_assert!(fed.frames.is_empty());
        } else {
            prop_assert_eq!(fed.error, None);
            let json_len = body_len - parts as usize;
            let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
            let mut at = json_len;
            let attachments: Vec<Vec<u8>> = lengths.iter().map(|&l| {
                let part = body[at..at + l as usize].to_vec();
                at += l as usize;
                part
            }).collect();
            prop_assert_eq!(fed.frames, vec![Frame { json: body[..json_len].to_vec(), attachments, shared: Vec::new() }]);
        }
    }

    /// Frames of exactly the maximum size are accepted; one byte over is not.
    #[test]
    fn the_limit_is_exact(max in 0usize..2048, over in any::<bool>()) {
        let len = if over { max + 1 } else { max };
        let stream = encode(&vec![7u8; len]);
        let fed = feed(max, &[&stream]);
        if over {
            prop_assert_eq!(fed.error, Some(FrameError::TooLarge { size: len as u64, max }));
            prop_assert!(fed.frames.is_empty());
        } else {
            prop_assert_eq!(fed.error, None);
            prop_assert_eq!(fed.frames, vec![plain(&vec![7u8; len])]);
        }
    }

    /// Random bytes: no panic, frames within the limit, bounded buffering.
    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        max in 0usize..600,
        cuts in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        let fed = feed(max, &split(&bytes, &cuts));
        if let Some(FrameError::TooLarge { size, max: m }) = fed.error {
            prop_assert!(size > max as u64);
            prop_assert_eq!(m, max);
        }
        prop_assert!(fed.buffered <= bytes.len());
    }

    /// Random bytes that mostly look like frames: small headers, with or
    /// without the attachments flag, random bodies (so random tables); the
    /// same guarantees, and the decoder agrees with a model.
    #[test]
    fn near_miss_frames_match_a_model(
        parts in prop::collection::vec((0u32..80, any::<bool>(), prop::collection::vec(any::<u8>(), 0..80)), 0..20),
        max in 0usize..64,
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut stream = Vec::new();
        for (len, flagged, body) in &parts {
            let word = if *flagged { len | FLAG } else { *len };
            stream.extend_from_slice(&word.to_be_bytes());
            stream.extend_from_slice(body);
        }
        // The model: walk the stream as the format says.
        let mut want = Vec::new();
        let mut want_err = None;
        let mut at = 0;
        while at + HEADER <= stream.len() {
            let word = u32::from_be_bytes(stream[at..at + HEADER].try_into().unwrap());
            let len = (word & !FLAG) as usize;
            if len > max {
                want_err = Some(FrameError::TooLarge { size: len as u64, max });
                break;
            }
            let body = at + HEADER;
            let word_at = |i: usize| u32::from_be_bytes(stream[i..i + 4].try_into().unwrap()) as usize;
            if word & FLAG == 0 {
                if body + len > stream.len() {
                    break;
                }
                want.push(plain(&stream[body..body + len]));
            } else {
                let bad = Some(FrameError::BadTable { reason: String::new() });
                if len < 4 {
                    want_err = bad;
                    break;
                }
                if body + 4 > stream.len() {
                    break;
                }
                let table = 4 + 4 * word_at(body);
                if table > len {
                    want_err = bad;
                    break;
                }
                if body + table > stream.len() {
                    break;
                }
                let entries: Vec<usize> = (0..(table - 4) / 4).map(|i| word_at(body + 4 + 4 * i)).collect();
                // A flagged entry is a shared-memory descriptor: 16 bytes.
                let shared: Vec<usize> = (0..entries.len()).filter(|&i| entries[i] & SHARED != 0).collect();
                let lengths: Vec<usize> = entries.iter().map(|&e| e & !SHARED).collect();
                if shared.iter().any(|&i| lengths[i] != DESCRIPTOR_LEN) || lengths.iter().sum::<usize>() > len - table {
                    want_err = bad;
                    break;
                }
                if body + len > stream.len() {
                    break;
                }
                let mut next = body + len - lengths.iter().sum::<usize>();
                let json = stream[body + table..next].to_vec();
                let attachments = lengths.iter().map(|&l| {
                    next += l;
                    stream[next - l..next].to_vec()
                }).collect();
                want.push(Frame { json, attachments, shared });
            }
            at = body + len;
        }
        let fed = feed(max, &split(&stream, &cuts));
        prop_assert_eq!(&fed.frames, &want);
        // Table errors are compared by kind; their reasons are prose.
        let kind = |e: &Option<FrameError>| match e {
            Some(FrameError::BadTable { .. }) => Some(FrameError::BadTable { reason: String::new() }),
            other => other.clone(),
        };
        prop_assert_eq!(kind(&fed.error), want_err.clone());
        if want_err.is_none() {
            prop_assert_eq!(fed.buffered, stream.len() - at);
        }
    }

    /// A huge length prefix is refused as soon as its 4 bytes are in,
    /// without allocating anything near the announced size.
    #[test]
    fn huge_length_prefix_is_refused_without_allocating(
        max in 0usize..(1 << 20),
        excess in 1u64..=u64::from(u32::MAX),
        flagged in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..256),
        byte_by_byte in any::<bool>(),
    ) {
        let size = (max as u64 + excess).min(u64::from(FLAG - 1));
        prop_assume!(size > max as u64);
        let word = size as u32 | if flagged { FLAG } else { 0 };
        let mut stream = word.to_be_bytes().to_vec();
        stream.extend_from_slice(&tail);
        let chunks: Vec<&[u8]> = if byte_by_byte {
            stream.chunks(1).collect()
        } else {
            vec![&stream[..]]
        };
        let (fed, largest) = largest_allocation(|| feed(max, &chunks));
        prop_assert_eq!(fed.error, Some(FrameError::TooLarge { size, max }));
        prop_assert!(fed.frames.is_empty());
        prop_assert!(largest <= 4 * stream.len() + 64, "allocated {} bytes for a {}-byte stream", largest, stream.len());
    }

    /// Frames whose payload is not a protocol message still come back
    /// intact (the decoder does not judge payloads; the worker does).
    #[test]
    fn wrong_json_frames_come_back_intact(
        bodies in prop::collection::vec(wrong_json(), 1..10),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| encode(b)).collect();
        let fed = feed(1024, &split(&stream, &cuts));
        prop_assert_eq!(fed.error, None);
        prop_assert_eq!(fed.frames, bodies.iter().map(|b| plain(b)).collect::<Vec<_>>());
    }

    /// Through `poll_frame` on a reader that trickles and stalls: the same
    /// frames, and a stream cut mid-frame reports exactly what arrived.
    #[test]
    fn async_reader_truncation_is_exact(
        frames in payloads(200),
        cut_into_last in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        sizes in prop::collection::vec(1usize..300, 1..16),
        stalls in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let mut stream: Vec<u8> = frames.iter().flat_map(|f| encode(f)).collect();
        let mut complete = frames.clone();
        let mut partial = 0;
        if truncate {
            if let Some(last) = complete.pop() {
                let whole = HEADER + last.len();
                partial = 1 + cut_into_last.index(whole - 1); // 1..whole bytes
                let keep = stream.len() - whole + partial;
                stream.truncate(keep);
                if partial == whole {
                    // Not truncated after all: the whole last frame arrived.
                    complete.push(last);
                    partial = 0;
                }
            }
        }
        let mut reader = Trickle { data: stream, pos: 0, sizes, stalls, step: 0, stalled: false, largest_read: 0 };
        let (got, end, buffered) = read_all(200, &mut reader);
        prop_assert_eq!(got, complete.iter().map(|f| plain(f)).collect::<Vec<_>>());
        if partial == 0 {
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(buffered, 0);
        } else {
            prop_assert_eq!(end, Err(FrameError::Truncated { have: partial }));
        }
        // It never asks for more than the rest of a frame or one chunk.
        prop_assert!(reader.largest_read <= READ_CHUNK);
    }
}

/// A header announcing a frame just under the limit, followed by a trickle:
/// the decoder's memory grows with the bytes that arrive, not with the size
/// announced.
#[test]
fn announced_size_is_not_preallocated() {
    let max = 16 << 20;
    let mut data = u32::try_from(max - 1).unwrap().to_be_bytes().to_vec();
    data.extend_from_slice(&[1u8; 1000]);
    let mut reader = Trickle {
        data,
        pos: 0,
        sizes: vec![100],
        stalls: vec![false],
        step: 0,
        stalled: false,
        largest_read: 0,
    };
    let ((frames, end, buffered), largest) = largest_allocation(|| read_all(max, &mut reader));
    assert!(frames.is_empty());
    assert_eq!(end, Err(FrameError::Truncated { have: 1004 }));
    assert_eq!(buffered, 1004);
    // The buffer holds what arrived plus at most one read chunk of room.
    assert!(
        largest <= 2 * (1004 + READ_CHUNK),
        "allocated {largest} bytes for 1004 that arrived"
    );
}

/// The same for a table announcing an attachment just under the limit:
/// nothing near the announced size is allocated before it arrives.
#[test]
fn announced_attachment_is_not_preallocated() {
    let max = 16 << 20;
    let mut data = encode_attached(b"{}", &[vec![0u8; max - 20]]);
    data.truncate(1004);
    let mut reader = Trickle {
        data,
        pos: 0,
        sizes: vec![100],
        stalls: vec![false],
        step: 0,
        stalled: false,
        largest_read: 0,
    };
    let ((frames, end, _), largest) = largest_allocation(|| read_all(max, &mut reader));
    assert!(frames.is_empty());
    assert_eq!(end, Err(FrameError::Truncated { have: 1004 }));
    assert!(
        largest <= 2 * (1004 + READ_CHUNK),
        "allocated {largest} bytes for 1004 that arrived"
    );
}

/// A frame of the maximum size read through `poll_frame`, as JSON and as an
/// attachment: its buffer is allocated at its size, once, not at twice it
/// (the staging buffer of one read chunk aside).
#[test]
fn a_max_size_frame_allocates_its_size() {
    let max = 4 << 20;
    let payload = vec![9u8; max];
    // Count, one length and 9 bytes of JSON: the body is exactly `max`.
    let attached = vec![vec![8u8; max - 17]];
    for (data, json_only) in [
        (encode(&payload), true),
        (encode_attached(b"[1,2,3,4]", &attached), false),
    ] {
        let mut reader = Trickle {
            data,
            pos: 0,
            sizes: vec![READ_CHUNK],
            stalls: vec![false],
            step: 0,
            stalled: false,
            largest_read: 0,
        };
        let ((frames, end, _), largest) = largest_allocation(|| read_all(max, &mut reader));
        assert_eq!(end, Ok(()));
        assert_eq!(frames.len(), 1);
        if json_only {
            assert!(frames[0].json == payload);
        } else {
            assert_eq!(frames[0].json, b"[1,2,3,4]");
            assert!(frames[0].attachments == attached);
        }
        eprintln!(
            "largest allocation reading a {max}-byte frame: {largest} bytes ({:.2}x)",
            largest as f64 / max as f64
        );
        assert!(
            largest <= max + HEADER,
            "allocated {largest} bytes for a {max}-byte frame"
        );
    }
}
