//! The wire contract between a caller and a node, in one place.
//!
//! Three gRPC methods: [`CALL_PATH`], unary, [`STREAM_PATH`], its
//! server-streaming twin, and [`HOLDS_PATH`], which finds a session. A call's message is the request's
//! body, its answer the response's: JSON, followed by the raw byte strings
//! its placeholders stand for when it has any (see [`BYTES`] for the
//! layout; raw bytes in gRPC framing, see [`RawCodec`]). Everything else
//! travels in metadata:
//!
//! | header | meaning |
//! |---|---|
//! | `cenote-pool-bin` | the pool's name (UTF-8) |
//! | `cenote-remaining-us` | time left until the call's deadline, in µs — never a wall-clock instant, since clocks differ between machines |
//! | `cenote-checkout-us` | the checkout timeout, in µs |
//! | `cenote-timeout-us` | the call timeout (once a worker is in hand), in µs |
//! | `cenote-priority` | the waiter priority |
//! | `cenote-session-bin` | the session's key (UTF-8), when the call has one |
//! | `cenote-session-mode` | `hint`, `strict` or `fail_fast` (default `hint`) |
//! | `authorization` | `Bearer <token>`, when the node wants one |
//!
//! A failure is a gRPC status whose details are a [`CallError`] as JSON.
//! A status without them was raised by the transport itself and is read by
//! its code: `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED` is
//! [`CallError::TooLarge`] (a message past the frame limit),
//! `UNAUTHENTICATED` is [`CallError::Unauthorized`], any other is
//! [`CallError::NodeLost`]. A client in another language needs nothing else.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use cenote_core::{AffinityMode, CallOptions, PriorityLevel};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::error::CallError;

/// HTTP/2 settings both sides use. Large payloads cross in few frames, and
/// the windows (how much may be in flight unacknowledged) let a 16 MiB
/// body cross with few pauses for the receiver's go-ahead, while still
/// bounding what a stream whose reader is slow holds: one stream window.
pub(crate) const MAX_FRAME: u32 = 1 << 20;
pub(crate) const STREAM_WINDOW: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 32 << 20;

/// A call: unary.
pub const CALL_PATH: &str = "/cenote.node.v1.Node/Call";

/// Whether a node holds a session: unary. Its request is a call's
/// metadata (the pool and the session key) with a `null` body; its answer
/// `true` or `false`. A caller asks this of every node serving the pool
/// before a strict session's first call from it, so the session is found
/// wherever it lives.
pub const HOLDS_PATH: &str = "/cenote.node.v1.Node/Holds";

/// A stream: server-streaming. Its request is a call's (the same body and
/// metadata); each answer message is one item's body, and an error ends
/// the stream as a status, after the items already sent.
pub const STREAM_PATH: &str = "/cenote.node.v1.Node/Stream";

const POOL: &str = "cenote-pool-bin";
const REMAINING: &str = "cenote-remaining-us";
const CHECKOUT: &str = "cenote-checkout-us";
const TIMEOUT: &str = "cenote-timeout-us";
const PRIORITY: &str = "cenote-priority";
const SESSION: &str = "cenote-session-bin";
const SESSION_MODE: &str = "cenote-session-mode";
const AUTHORIZATION: &str = "authorization";

pub use crate::body::BYTES;

/// Passes message bytes through untouched: bodies are encoded and decoded
/// by the caller and the node themselves, so a body that does not decode
/// gets a typed [`CallError::BadRequest`], not a transport error. A body
/// goes out in parts (its header, its JSON, its byte strings), each
/// written once into the gRPC frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<Bytes>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<Bytes>;
    type Error = Status;

    fn encode(&mut self, parts: Vec<Bytes>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(crate::body::len(&parts));
        for part in parts {
            dst.put(part);
        }
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What travels in a call's metadata besides the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallHeaders {
    pub pool: String,
    pub opts: CallOptions,
    /// Time left until the call's deadline, if it has one.
    pub remaining: Option<Duration>,
}

impl CallHeaders {
    pub fn write(&self, md: &mut MetadataMap) {
        md.insert_bin(POOL, MetadataValue::from_bytes(self.pool.as_bytes()));
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(d) = self.remaining {
            md.insert(REMAINING, micros(d).into());
        }
        if let Some(d) = self.opts.checkout.timeout {
            md.insert(CHECKOUT, micros(d).into());
        }
        if let Some(d) = self.opts.timeout {
            md.insert(TIMEOUT, micros(d).into());
        }
        if self.opts.checkout.priority != 0 {
            md.insert(PRIORITY, self.opts.checkout.priority.into());
        }
        if let Some(affinity) = &self.opts.checkout.affinity {
            md.insert_bin(
                SESSION,
                MetadataValue::from_bytes(affinity.key.as_str().as_bytes()),
            );
            let mode = match affinity.mode {
                AffinityMode::Hint => "hint",
                AffinityMode::Strict => "strict",
                AffinityMode::FailFast => "fail_fast",
            };
            md.insert(SESSION_MODE, MetadataValue::from_static(mode));
        }
    }

    /// Read a call's metadata; anything malformed is a `BadRequest` naming
    /// the header.
    pub fn read(md: &MetadataMap) -> Result<Self, CallError> {
        let bad = |what: &str| CallError::BadRequest {
            message: format!("header {what} is missing or malformed"),
        };
        let pool = md
            .get_bin(POOL)
            .and_then(|v| v.to_bytes().ok())
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .ok_or_else(|| bad(POOL))?;
        let micros = |key: &str| -> Result<Option<Duration>, CallError> {
            md.get(key)
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(Duration::from_micros)
                        .ok_or_else(|| bad(key))
                })
                .transpose()
        };
        let priority = md
            .get(PRIORITY)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.parse::<PriorityLevel>().ok())
                    .ok_or_else(|| bad(PRIORITY))
            })
            .transpose()?
            .unwrap_or(0);
        let mut opts = CallOptions::default().priority(priority);
        if let Some(key) = md.get_bin(SESSION) {
            let key = key
                .to_bytes()
                .ok()
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .ok_or_else(|| bad(SESSION))?;
            let mode = match md.get(SESSION_MODE).map(|v| v.to_str()) {
                None | Some(Ok("hint")) => AffinityMode::Hint,
                Some(Ok("strict")) => AffinityMode::Strict,
                Some(Ok("fail_fast")) => AffinityMode::FailFast,
                Some(_) => return Err(bad(SESSION_MODE)),
            };
            opts = opts.affinity(key, mode);
        }
        opts.timeout = micros(TIMEOUT)?;
        opts.checkout.timeout = micros(CHECKOUT)?;
        Ok(CallHeaders {
            pool,
            opts,
            remaining: micros(REMAINING)?,
        })
    }
}

/// Put `token` on a call.
pub(crate) fn write_token(md: &mut MetadataMap, token: &str) -> Result<(), CallError> {
    let value =
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| CallError::BadRequest {
            message: "the token must be visible ASCII".into(),
        })?;
    md.insert(AUTHORIZATION, value);
    Ok(())
}

/// Whether a call carries `token`, compared in constant time so the
/// answer's timing says nothing about how much of a guess was right.
pub(crate) fn has_token(md: &MetadataMap, token: &str) -> bool {
    let Some(given) = md.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A [`CallError`] as the status a node answers with: a fitting code (for
/// generic gRPC tooling) and the error itself as JSON details.
pub(crate) fn error_status(e: &CallError) -> Status {
    let code = match e {
        CallError::CheckoutTimeout { .. } | CallError::CallTimeout { .. } => Code::DeadlineExceeded,
        CallError::Saturated { .. } => Code::ResourceExhausted,
        CallError::Closed | CallError::Start { .. } => Code::Unavailable,
        CallError::Worker { .. } | CallError::Crashed { .. } => Code::Aborted,
        CallError::UnknownPool { .. } | CallError::NoNode { .. } => Code::NotFound,
        CallError::Unauthorized { .. } => Code::Unauthenticated,
        CallError::TooLarge { .. } => Code::OutOfRange,
        CallError::BadRequest { .. } | CallError::BadResponse { .. } => Code::InvalidArgument,
        CallError::NodeLost { .. } => Code::Unavailable,
        CallError::AffinityLost { .. } => Code::FailedPrecondition,
        CallError::Busy { .. } => Code::ResourceExhausted,
    };
    let details = serde_json::to_vec(e).unwrap_or_default();
    Status::with_details(code, e.to_string(), Bytes::from(details))
}

/// The [`CallError`] a status from `node` stands for: the node's own error
/// if it sent one, otherwise the transport's, by code.
pub(crate) fn status_error(status: &Status, node: &str) -> CallError {
    if let Ok(e) = serde_json::from_slice::<CallError>(status.details()) {
        return e;
    }
    match status.code() {
        // Raised by tonic when a message passes the frame limit.
        Code::OutOfRange | Code::ResourceExhausted => CallError::TooLarge {
            detail: status.message().to_string(),
        },
        Code::Unauthenticated => CallError::Unauthorized {
            node: node.to_string(),
        },
        _ => CallError::NodeLost {
            node: node.to_string(),
            reason: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let sent = CallHeaders {
            pool: "embed/é".into(),
            opts: CallOptions::default()
                .timeout(Duration::from_millis(250))
                .checkout_timeout(Duration::from_micros(1500))
                .priority(-3)
                .affinity("user-é", AffinityMode::Strict),
            remaining: Some(Duration::from_millis(251)),
        };
        let mut md = MetadataMap::new();
        sent.write(&mut md);
        assert_eq!(CallHeaders::read(&md).unwrap(), sent);

        let bare = CallHeaders {
            pool: "p".into(),
            opts: CallOptions::default(),
            remaining: None,
        };
        let mut md = MetadataMap::new();
        bare.write(&mut md);
        assert_eq!(CallHeaders::read(&md).unwrap(), bare);
    }

    #[test]
    fn malformed_headers_are_bad_requests_naming_the_header() {
        let mut md = MetadataMap::new();
        assert!(
            matches!(CallHeaders::read(&md), Err(CallError::BadRequest { message }) if message.contains(POOL))
        );
        md.insert_bin(POOL, MetadataValue::from_bytes(b"p"));
        md.insert(PRIORITY, "high".parse().unwrap());
        assert!(
            matches!(CallHeaders::read(&md), Err(CallError::BadRequest { message }) if message.contains(PRIORITY))
        );
        md.remove(PRIORITY);
        md.insert_bin(SESSION, MetadataValue::from_bytes(b"k"));
        md.insert(SESSION_MODE, "always".parse().unwrap());
        assert!(
            matches!(CallHeaders::read(&md), Err(CallError::BadRequest { message }) if message.contains(SESSION_MODE))
        );
        md.remove(SESSION_MODE);
        assert!(CallHeaders::read(&md)
            .unwrap()
            .opts
            .checkout
            .affinity
            .is_some());
        md.insert(REMAINING, "-5".parse().unwrap());
        assert!(
            matches!(CallHeaders::read(&md), Err(CallError::BadRequest { message }) if message.contains(REMAINING))
        );
    }

    #[test]
    fn tokens_must_match_exactly() {
        let mut md = MetadataMap::new();
        assert!(!has_token(&md, "s3cret"));
        write_token(&mut md, "s3cret").unwrap();
        assert!(has_token(&md, "s3cret"));
        assert!(!has_token(&md, "s3cre"));
        assert!(!has_token(&md, "s3cret!"));
        assert!(!has_token(&md, "S3cret"));
        assert!(write_token(&mut md, "new\nline").is_err());
    }

    #[test]
    fn errors_survive_a_status_and_transport_failures_map_by_code() {
        let e = CallError::Saturated { waiting: 7 };
        assert_eq!(status_error(&error_status(&e), "n"), e);
        let lost = status_error(&Status::unavailable("connection refused"), "n1");
        assert!(matches!(lost, CallError::NodeLost { node, .. } if node == "n1"));
        let big = status_error(&Status::out_of_range("found 9 bytes, limit 4"), "n1");
        assert!(matches!(big, CallError::TooLarge { detail } if detail.contains("limit 4")));
        // Details that are not ours count as no details.
        let odd = Status::with_details(Code::Internal, "x", Bytes::from_static(b"\x00garbage"));
        assert!(matches!(
            status_error(&odd, "n"),
            CallError::NodeLost { .. }
        ));
    }
}
