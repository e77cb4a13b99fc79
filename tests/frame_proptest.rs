//! Property tests for the Python wire's frame decoder
//! (`cenote::python::FrameDecoder`): random bytes, truncated frames, huge
//! length prefixes and frames whose payload is not a protocol message, fed
//! whole or split at random chunk boundaries, directly or through an async
//! reader that stalls at random.
//!
//! Properties: it never panics; it never buffers more than one maximum-size
//! frame plus the chunk being fed; a hostile length prefix allocates nothing
//! near the size it announces; valid frames always come back intact and in
//! order; a stream cut mid-frame is reported as truncated with the exact
//! number of bytes that arrived.
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

use cenote::python::{FrameDecoder, FrameError};
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes of the length prefix.
const HEADER: usize = 4;
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
    frames: Vec<Vec<u8>>,
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
                    assert!(f.len() <= max, "frame of {} over max {max}", f.len());
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
fn read_all(max: usize, reader: &mut Trickle) -> (Vec<Vec<u8>>, Result<(), FrameError>, usize) {
    let mut d = FrameDecoder::new(max);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut frames = Vec::new();
    // Every poll either makes progress or stalls once; bound the loop anyway.
    for _ in 0..1_000_000 {
        match d.poll_frame(reader, &mut cx) {
            Poll::Pending => continue,
            Poll::Ready(Err(e)) => panic!("the test reader does not fail: {e}"),
            Poll::Ready(Ok(Ok(Some(f)))) => {
                assert!(f.len() <= max);
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
        prop_assert_eq!(&fed.frames, &frames);
        prop_assert_eq!(fed.buffered, 0);
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
            prop_assert_eq!(fed.frames, vec![vec![7u8; len]]);
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

    /// Random bytes that mostly look like frames: small headers, random
    /// bodies; the same guarantees, and the decoder agrees with a model.
    #[test]
    fn near_miss_frames_match_a_model(
        parts in prop::collection::vec((0u32..80, prop::collection::vec(any::<u8>(), 0..80)), 0..20),
        max in 0usize..64,
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut stream = Vec::new();
        for (len, body) in &parts {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend_from_slice(body);
        }
        // The model: walk the stream as the format says.
        let mut want = Vec::new();
        let mut want_err = None;
        let mut at = 0;
        while at + HEADER <= stream.len() {
            let len = u32::from_be_bytes(stream[at..at + HEADER].try_into().unwrap()) as usize;
            if len > max {
                want_err = Some(FrameError::TooLarge { size: len as u64, max });
                break;
            }
            if at + HEADER + len > stream.len() {
                break;
            }
            want.push(stream[at + HEADER..at + HEADER + len].to_vec());
            at += HEADER + len;
        }
        let fed = feed(max, &split(&stream, &cuts));
        prop_assert_eq!(&fed.frames, &want);
        prop_assert_eq!(&fed.error, &want_err);
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
        tail in prop::collection::vec(any::<u8>(), 0..256),
        byte_by_byte in any::<bool>(),
    ) {
        let size = (max as u64 + excess).min(u64::from(u32::MAX));
        prop_assume!(size > max as u64);
        let mut stream = (size as u32).to_be_bytes().to_vec();
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
        prop_assert_eq!(fed.frames, bodies);
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
        prop_assert_eq!(&got, &complete);
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

/// A frame of the maximum size read through `poll_frame`: the largest
/// allocation stays within a small factor of the frame itself.
#[test]
fn a_max_size_frame_allocates_about_its_size() {
    let max = 4 << 20;
    let payload = vec![9u8; max];
    let mut reader = Trickle {
        data: encode(&payload),
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
    assert!(frames[0] == payload);
    eprintln!(
        "largest allocation reading a {max}-byte frame: {largest} bytes ({:.2}x)",
        largest as f64 / max as f64
    );
    // One copy for the buffer (amortised growth may round it up to twice
    // its need) and one for the frame handed out.
    assert!(
        largest <= 2 * (max + HEADER + READ_CHUNK),
        "allocated {largest} bytes for a {max}-byte frame"
    );
}
