//! The messages that travel in frames between the worker and its bridge, and
//! the table of error kinds an error frame carries ([`ErrorKind`]), which
//! both sides share (as they share the exit codes of `exits.rs`).
//!
//! Every message is a JSON object with `t` (its type) and `id` (the request it
//! belongs to; 0 for the ready frame and start errors). A call, a result and
//! a stream chunk may also carry raw attachments (see `frame.rs` and
//! `attach`). The bridge side of this lives in `bridge.py`. The tables and
//! constants are kept only here: `bridge.rs` hands them to the script as
//! Python classes of the same names, so the two sides cannot disagree on a
//! kind, a code or the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::reply::Reply;

/// Protocol version the bridge announces in its ready frame; the worker
/// refuses to start on any other. 2: frames may carry attachments. 3: a
/// cancel pipe beside the frame pipes, and the `cancelled` error kind. 4: a
/// bridge serves up to `concurrency` calls at once, answering them in any
/// order, and says so in its ready frame. 5: a call may be a batch (one
/// list in, one list out), whose exception items come back as item errors.
/// 6: large bytes may travel through the worker's shared-memory regions
/// (fds 4 and 5), named in frames by descriptors (see `shm`).
pub const PROTOCOL: u32 = 6;

/// How a request failed, as the `kind` of an error frame. The bridge knows
/// each kind as `ErrorKind.<AS_STR_IN_CAPITALS>`, e.g. `ErrorKind.BAD_ARGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The handler module failed to import; sent once, instead of ready.
    Import,
    /// The call named no public function of the handler module.
    UnknownFunction,
    /// The arguments do not fit the function's signature.
    BadArgs,
    /// The handler raised an exception.
    Raised,
    /// The handler called `sys.exit()` (raised `SystemExit`); the bridge
    /// caught it and goes on serving.
    SystemExit,
    /// The result is not JSON-serializable.
    Unserializable,
    /// The result is over the max frame size.
    TooLarge,
    /// The frame itself was malformed (undecodable, unknown type, no
    /// function name).
    BadRequest,
    /// The call was cancelled, as the host asked (see `bridge.py`): its
    /// answer to a cancel.
    Cancelled,
}

impl ErrorKind {
    /// Every kind, in table order.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Import,
        ErrorKind::UnknownFunction,
        ErrorKind::BadArgs,
        ErrorKind::Raised,
        ErrorKind::SystemExit,
        ErrorKind::Unserializable,
        ErrorKind::TooLarge,
        ErrorKind::BadRequest,
        ErrorKind::Cancelled,
    ];

    /// The kind as it travels in a frame.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Import => "import",
            ErrorKind::UnknownFunction => "unknown_function",
            ErrorKind::BadArgs => "bad_args",
            ErrorKind::Raised => "raised",
            ErrorKind::SystemExit => "system_exit",
            ErrorKind::Unserializable => "unserializable",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// The kind a frame names; `None` for a name not in the table.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Worker → bridge.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Outgoing<'a> {
    /// Run `fn` with `args` (array: positional, object: keywords, null: none,
    /// anything else: one positional) and `kwargs`.
    Call {
        id: u64,
        #[serde(rename = "fn")]
        function: &'a str,
        args: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        kwargs: Option<&'a Map<String, Value>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        stream: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    /// Liveness check; answered with `pong`.
    Ping { id: u64 },
    /// Exit cleanly after the current frame.
    Shutdown { id: u64 },
}

/// Bridge → worker.
#[derive(Debug)]
pub enum Incoming {
    /// The handler module is imported; calls may start.
    Ready {
        pid: u32,
        version: String,
        protocol: u32,
        /// How many calls it serves at once.
        concurrency: usize,
        functions: Vec<String>,
    },
    /// A call's return value.
    Result { id: u64, value: Reply },
    /// A call (or the start, id 0) failed.
    Error(ErrorFrame),
    /// Answer to a ping.
    Pong { id: u64 },
    /// One item of a streamed call.
    Chunk { id: u64, data: Reply },
    /// A streamed call finished.
    End { id: u64 },
}

/// What an error frame carries.
#[derive(Debug)]
pub struct ErrorFrame {
    /// The request that failed (0: the start).
    pub id: u64,
    /// How it failed.
    pub kind: ErrorKind,
    /// The Python exception type, e.g. `ValueError`.
    pub type_name: String,
    /// The bridge's message (for `SystemExit`: the exit code's `repr`).
    pub message: String,
    /// The formatted Python traceback, where there is one.
    pub traceback: String,
}

/// Every field any incoming frame has, parsed in one pass (serde's
/// internally tagged enums buffer the whole object first, which costs
/// measurable time per call).
#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(borrow)]
    t: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    version: String,
    #[serde(default)]
    protocol: u32,
    #[serde(default)]
    concurrency: usize,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default, borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, rename = "type")]
    type_name: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    traceback: String,
}

impl Incoming {
    /// Parse one frame: its JSON, and the attachments that only a result
    /// or a chunk may carry.
    pub fn parse(json: &[u8], attachments: Vec<Vec<u8>>) -> Result<Incoming, String> {
        let f: Flat<'_> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if !attachments.is_empty() && !matches!(&*f.t, "result" | "chunk") {
            return Err(format!(
                "a {:?} frame carries {} attachments; only results and chunks may",
                f.t,
                attachments.len()
            ));
        }
        Ok(match &*f.t {
            "ready" => Incoming::Ready {
                pid: f.pid,
                version: f.version,
                protocol: f.protocol,
                concurrency: f.concurrency,
                functions: f.functions,
            },
            "result" => Incoming::Result {
                id: f.id,
                value: Reply::new(f.value, attachments),
            },
            "error" => Incoming::Error(ErrorFrame {
                id: f.id,
                kind: ErrorKind::parse(&f.kind)
                    .ok_or_else(|| format!("unknown error kind {:?}", f.kind))?,
                type_name: f.type_name,
                message: f.message,
                traceback: f.traceback,
            }),
            "pong" => Incoming::Pong { id: f.id },
            "chunk" => Incoming::Chunk {
                id: f.id,
                data: Reply::new(f.data, attachments),
            },
            "end" => Incoming::End { id: f.id },
            other => return Err(format!("unknown frame type {other:?}")),
        })
    }
}

impl Incoming {
    /// The request this frame answers (0 for ready).
    pub fn id(&self) -> u64 {
        match self {
            Incoming::Ready { .. } => 0,
            Incoming::Result { id, .. }
            | Incoming::Error(ErrorFrame { id, .. })
            | Incoming::Pong { id }
            | Incoming::Chunk { id, .. }
            | Incoming::End { id } => *id,
        }
    }

    /// Whether this frame ends its request (everything but a chunk).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Incoming::Chunk { .. })
    }

    /// The frame type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Incoming::Ready { .. } => "ready",
            Incoming::Result { .. } => "result",
            Incoming::Error(_) => "error",
            Incoming::Pong { .. } => "pong",
            Incoming::Chunk { .. } => "chunk",
            Incoming::End { .. } => "end",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_serializes_compactly() {
        let args = serde_json::json!({"x": 1});
        let s = serde_json::to_string(&Outgoing::Call {
            id: 7,
            function: "echo",
            args: &args,
            kwargs: None,
            stream: false,
            batch: false,
        })
        .unwrap();
        assert_eq!(s, r#"{"t":"call","id":7,"fn":"echo","args":{"x":1}}"#);
        let s = serde_json::to_string(&Outgoing::Call {
            id: 8,
            function: "embed",
            args: &serde_json::json!([["a", "b"]]),
            kwargs: None,
            stream: false,
            batch: true,
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"t":"call","id":8,"fn":"embed","args":[["a","b"]],"batch":true}"#
        );
    }

    #[test]
    fn incoming_parses_each_kind() {
        let r = Incoming::parse(br#"{"t":"result","id":3,"value":[1]}"#, vec![]).unwrap();
        assert_eq!(r.id(), 3);
        let Incoming::Result { value, .. } = r else {
            panic!("not a result: {r:?}")
        };
        assert_eq!(value.into_json("f").unwrap(), serde_json::json!([1]));
        let e = Incoming::parse(br#"{"t":"error","id":4,"kind":"raised","type":"ValueError","message":"m\"q","traceback":"tb"}"#, vec![])
        .unwrap();
        assert!(e.is_terminal());
        assert!(
            matches!(e, Incoming::Error(ErrorFrame { kind: ErrorKind::Raised, type_name, message, .. }) if type_name == "ValueError" && message == "m\"q")
        );
        let c = Incoming::parse(br#"{"t":"chunk","id":5,"data":1}"#, vec![]).unwrap();
        assert!(!c.is_terminal());
        assert!(Incoming::parse(br#"{"t":"bogus","id":1}"#, vec![]).is_err());
        assert!(Incoming::parse(br#"{"id":1}"#, vec![]).is_err());
        assert!(Incoming::parse(b"\xff\x00garbage", vec![]).is_err());
        let r = Incoming::parse(
            br#"{"t":"ready","id":0,"pid":9,"version":"3.11","protocol":1,"functions":["f"]}"#,
            vec![],
        )
        .unwrap();
        assert!(matches!(
            r,
            Incoming::Ready {
                pid: 9,
                protocol: 1,
                ..
            }
        ));
    }

    #[test]
    fn error_kinds_round_trip_and_unknown_kinds_are_refused() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::parse("Raised"), None);
        assert_eq!(ErrorKind::parse(""), None);
        // An error frame of a kind not in the table is not a protocol
        // message (the worker reports a protocol breach), never a panic.
        let e = Incoming::parse(
            br#"{"t":"error","id":4,"kind":"meltdown","message":"m"}"#,
            vec![],
        )
        .unwrap_err();
        assert!(e.contains("meltdown"), "{e}");
        assert!(Incoming::parse(br#"{"t":"error","id":4}"#, vec![]).is_err());
    }

    #[test]
    fn only_results_and_chunks_carry_attachments() {
        let r = Incoming::parse(br#"{"t":"result","id":3,"value":null}"#, vec![vec![1]]);
        assert!(matches!(r, Ok(Incoming::Result { .. })));
        let e = Incoming::parse(br#"{"t":"pong","id":3}"#, vec![vec![1]]).unwrap_err();
        assert!(e.contains("only results and chunks"), "{e}");
    }
}
