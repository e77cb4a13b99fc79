//! What both protocol engines (`session`, one call at a time, and `mux`,
//! many at once) do alike with a bridge's frames: encode a call, write a
//! frame whole, tell a message from a broken bridge.

use std::io::IoSlice;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::error::PythonError;
use crate::frame::{encode_with, Frame, FrameError, Outbound};
use crate::protocol::{Incoming, Outgoing};
use crate::request::PyCall;

use super::spin::Polled;

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

/// The message a frame read gave, or how the bridge broke.
pub(super) fn incoming(polled: Polled) -> Result<Incoming, Broken> {
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
    let Frame { json, attachments } = frame;
    Incoming::parse(&json, attachments).map_err(|e| {
        let shown = String::from_utf8_lossy(&json[..json.len().min(80)]).into_owned();
        Broken::Protocol(format!(
            "sent a frame that is not a protocol message ({e}): {shown:?}"
        ))
    })
}

/// The frame of call `id` for `call`; an error the caller can act on if it
/// cannot be sent (too large, or not encodable).
pub(super) fn encode_call(
    max_frame: usize,
    id: u64,
    call: &PyCall,
    stream: bool,
) -> Result<Outbound, PythonError> {
    let encoded = encode_with(max_frame, call.attachments(), |buf| {
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
    match encoded {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(size)) => Err(PythonError::RequestTooLarge {
            function: call.function.clone(),
            size,
            max: max_frame,
        }),
        Err(e) => Err(PythonError::BadRequest(format!(
            "arguments for {} cannot be encoded: {e}",
            call.function
        ))),
    }
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
