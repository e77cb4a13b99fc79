//! The messages that travel in frames between the worker and its bridge.
//!
//! Every message is a JSON object with `t` (its type) and `id` (the request it
//! belongs to; 0 for the ready frame and start errors). The bridge side of
//! this lives in `bridge.py`; the two must change together.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Protocol version the bridge announces in its ready frame.
pub const PROTOCOL: u32 = 1;

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
        functions: Vec<String>,
    },
    /// A call's return value.
    Result { id: u64, value: Value },
    /// A call (or the start, id 0) failed; `kind` says how.
    Error {
        id: u64,
        kind: String,
        type_name: String,
        message: String,
        traceback: String,
    },
    /// Answer to a ping.
    Pong { id: u64 },
    /// One item of a streamed call.
    Chunk { id: u64, data: Value },
    /// A streamed call finished.
    End { id: u64 },
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
    functions: Vec<String>,
    #[serde(default)]
    kind: String,
    #[serde(default, rename = "type")]
    type_name: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    traceback: String,
}

impl Incoming {
    /// Parse one frame's payload.
    pub fn parse(bytes: &[u8]) -> Result<Incoming, String> {
        let f: Flat<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(match &*f.t {
            "ready" => Incoming::Ready {
                pid: f.pid,
                version: f.version,
                protocol: f.protocol,
                functions: f.functions,
            },
            "result" => Incoming::Result {
                id: f.id,
                value: f.value,
            },
            "error" => Incoming::Error {
                id: f.id,
                kind: f.kind,
                type_name: f.type_name,
                message: f.message,
                traceback: f.traceback,
            },
            "pong" => Incoming::Pong { id: f.id },
            "chunk" => Incoming::Chunk {
                id: f.id,
                data: f.data,
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
            | Incoming::Error { id, .. }
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
            Incoming::Error { .. } => "error",
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
        })
        .unwrap();
        assert_eq!(s, r#"{"t":"call","id":7,"fn":"echo","args":{"x":1}}"#);
    }

    #[test]
    fn incoming_parses_each_kind() {
        let r = Incoming::parse(br#"{"t":"result","id":3,"value":[1]}"#).unwrap();
        assert_eq!(r.id(), 3);
        assert!(matches!(r, Incoming::Result { value, .. } if value == serde_json::json!([1])));
        let e = Incoming::parse(
            br#"{"t":"error","id":4,"kind":"raised","type":"ValueError","message":"m\"q","traceback":"tb"}"#,
        )
        .unwrap();
        assert!(e.is_terminal());
        assert!(
            matches!(e, Incoming::Error { type_name, message, .. } if type_name == "ValueError" && message == "m\"q")
        );
        let c = Incoming::parse(br#"{"t":"chunk","id":5,"data":1}"#).unwrap();
        assert!(!c.is_terminal());
        assert!(Incoming::parse(br#"{"t":"bogus","id":1}"#).is_err());
        assert!(Incoming::parse(br#"{"id":1}"#).is_err());
        assert!(Incoming::parse(b"\xff\x00garbage").is_err());
        let r = Incoming::parse(
            br#"{"t":"ready","id":0,"pid":9,"version":"3.11","protocol":1,"functions":["f"]}"#,
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
}
