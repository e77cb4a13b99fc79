//! What both protocol engines (`session`, one call at a time, and `mux`,
//! many at once) do alike with a bridge's frames: encode a call (its large
//! bytes into the worker's shared memory), write a frame whole, tell a
//! message from a broken bridge (its large bytes read out of shared
//! memory, every descriptor checked).

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::error::PythonError;
use bytes::Bytes;

use crate::frame::{encode_with, Frame, FrameError, Outbound, DESCRIPTOR_LEN};
use crate::protocol::{Incoming, Outgoing};
use crate::request::PyCall;
use crate::shm::{Placed, Shm};

use super::spin::Polled;

/// How a worker's frames are encoded and read: the largest frame, and the
/// worker's shared-memory regions if it has them.
pub(super) struct Codec {
    pub max_frame: usize,
    pub shm: Option<Arc<Shm>>,
}

/// How long to wait for a dying process to finish exiting before killing it
/// and reporting.
pub(super) const EXIT_WAIT: Duration = Duration::from_millis(250);

/// How reading a bridge's frames ended, when it did not give a message.
pub(super) enum Broken {
    /// End of stream, an I/O error or a frame cut short: the process died.
    Died,
    /// Bytes that are not a protocol message: what was wrong.
    Protocol(String),
}

/// The message a frame read gave, or how the bridge broke. Attachments in
/// shared memory are read out of `shm` (a bridge that sends one without
/// regions, or a bad descriptor, breaks the protocol).
pub(super) fn incoming(polled: Polled, shm: Option<&Shm>) -> Result<Incoming, Broken> {
    let frame = match polled {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) | Err(_) | Ok(Err(FrameError::Truncated { .. })) => return Err(Broken::Died),
        Ok(Err(FrameError::TooLarge { size, max })) => {
            return Err(Broken::Protocol(format!(
                "announced a frame of {size} bytes, over the max frame size of {max}"
            )))
        }
        Ok(Err(e @ FrameError::BadTable { .. })) => return Err(Broken::Protocol(e.to_string())),
    };
    let Frame {
        json,
        mut attachments,
        shared,
    } = frame;
    for i in shared {
        let Some(shm) = shm else {
            return Err(Broken::Protocol(
                "sent bytes in shared memory, but it was given no region".into(),
            ));
        };
        attachments[i] = shm.take(&attachments[i]).map_err(Broken::Protocol)?;
    }
    Incoming::parse(&json, attachments).map_err(|e| {
        let shown = String::from_utf8_lossy(&json[..json.len().min(80)]).into_owned();
        Broken::Protocol(format!(
            "sent a frame that is not a protocol message ({e}): {shown:?}"
        ))
    })
}

/// The frame of call `id` for `call`, its bytes of `shm`'s threshold or
/// more in the worker's region; an error the caller can act on if it cannot
/// be sent (too large, or not encodable).
pub(super) fn encode_call(
    max_frame: usize,
    shm: Option<&Shm>,
    id: u64,
    call: &PyCall,
    stream: bool,
) -> Result<Outbound, PythonError> {
    let (attachments, placed) = place_large(shm, max_frame, call.attachments());
    // The bytes placed still count against the limit, as if inline.
    let moved: usize = placed.iter().map(|&(_, len, _)| len - DESCRIPTOR_LEN).sum();
    let encoded = encode_with(max_frame.saturating_sub(moved), &attachments, |buf| {
        serde_json::to_writer(
            buf,
            &Outgoing::Call {
                id,
                function: &call.function,
                args: &call.args,
                kwargs: call.kwargs.as_ref(),
                stream,
                batch: call.is_batch(),
            },
        )
    });
    let failed = match encoded {
        Ok(Ok(mut frame)) => {
            for &(i, _, _) in &placed {
                frame.mark_shared(i);
            }
            return Ok(frame);
        }
        Ok(Err(size)) => PythonError::RequestTooLarge {
            function: call.function.clone(),
            size: size + moved,
            max: max_frame,
        },
        Err(e) => PythonError::BadRequest(format!(
            "arguments for {} cannot be encoded: {e}",
            call.function
        )),
    };
    // Not sent: the blocks placed are free again.
    for &(_, _, p) in &placed {
        shm.expect("placed in a region").take_back(p);
    }
    Err(failed)
}

/// `attachments` as they go out: those of the threshold or more put in
/// `shm`'s region and replaced by their descriptors, listed with their
/// index and length. Nothing is placed if the bytes alone are over
/// `max_frame` (the call fails as too large) or no region has room (the
/// pipe carries them).
fn place_large(
    shm: Option<&Shm>,
    max_frame: usize,
    attachments: &[Bytes],
) -> (Vec<Bytes>, Vec<(usize, usize, Placed)>) {
    let Some(shm) = shm else {
        return (attachments.to_vec(), Vec::new());
    };
    let large = |a: &Bytes| a.len() >= shm.threshold();
    if !attachments.iter().any(large)
        || attachments.iter().map(Bytes::len).sum::<usize>() > max_frame
    {
        return (attachments.to_vec(), Vec::new());
    }
    let mut placed = Vec::new();
    let out = attachments
        .iter()
        .enumerate()
        .map(|(i, a)| match large(a).then(|| shm.place(a)).flatten() {
            Some((descriptor, p)) => {
                placed.push((i, a.len(), p));
                descriptor
            }
            None => a.clone(),
        })
        .collect();
    (out, placed)
}

/// Write all of `frame`, its JSON and attachments in vectored writes.
pub(super) async fn write_whole(stdin: &mut pipe::Sender, frame: &Outbound) -> std::io::Result<()> {
    let (total, mut written) = (frame.len(), 0);
    while written < total {
        let slices = unwritten(frame, written);
        match stdin.write_vectored(&slices).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => written += n,
        }
    }
    Ok(())
}

/// The most slices one vectored write is given (the OS takes at most
/// `IOV_MAX`, 1024 on Linux; the rest follow in the next write).
const MAX_SLICES: usize = 256;

/// The parts of `frame` from byte `from` on, for a vectored write.
pub(super) fn unwritten(frame: &Outbound, mut from: usize) -> Vec<IoSlice<'_>> {
    let parts = std::iter::once(&frame.head[..]).chain(frame.attachments.iter().map(|a| &a[..]));
    let mut slices = Vec::with_capacity(MAX_SLICES.min(1 + frame.attachments.len()));
    for part in parts {
        if from >= part.len() {
            from -= part.len();
            continue;
        }
        slices.push(IoSlice::new(&part[from..]));
        from = 0;
        if slices.len() == MAX_SLICES {
            break;
        }
    }
    slices
}
